"""Reconstruction-aware choice of the units that go (structured OBS, graphprune/methods/refit_choice.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphprune
from graphprune.methods.refit_choice import Consumer, choose

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


def refit_error(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> float:
    """Mean squared error of the least-squares refit of ``y`` on the rows ``keep`` of ``x`` (brute force)."""
    w, *_ = np.linalg.lstsq(x[:, keep], y, rcond=None)
    return float(((y - x[:, keep] @ w) ** 2).sum() / len(x))


def problem(seed: int = 0, channels: int = 5, kappa: int = 2, outputs: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, channels * kappa)) @ rng.normal(size=(channels * kappa, channels * kappa))
    w = rng.normal(size=(channels * kappa, outputs))
    h = x.T @ x / len(x)
    energy = float(np.einsum("df,de,ef->", w, h, w))
    return x, w, Consumer(np.arange(channels), kappa, w, np.linalg.inv(h), energy)


def test_costs_are_the_refit_error_of_removing_each_channel():
    x, w, c = problem()
    y = x @ w
    brute = [refit_error(x, y, np.setdiff1d(np.arange(10), [2 * ch, 2 * ch + 1])) for ch in range(5)]
    np.testing.assert_allclose(c.costs(5) * c.energy, brute, rtol=1e-6)


def test_without_is_the_refit_of_the_rest():
    x, w, c = problem(1)
    y = x @ w
    rest = c.without(np.array([1, 3]))
    keep = np.array([0, 1, 4, 5, 8, 9])
    refit, *_ = np.linalg.lstsq(x[:, keep], y, rcond=None)
    np.testing.assert_allclose(rest.w, refit, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(rest.hinv, np.linalg.inv(x[:, keep].T @ x[:, keep] / len(x)), rtol=1e-6)
    np.testing.assert_array_equal(rest.units, [0, 2, 4])


def test_a_duplicated_channel_goes_before_a_small_unique_one():
    # channel 1 copies channel 0 (up to noise) and carries the largest weight; channel 3 is unique but small:
    # a score keeps 1 and drops 3, the refit rebuilds 1 from 0 at no cost
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 4))
    x[:, 1] = x[:, 0] + 1e-3 * rng.normal(size=500)
    w = np.array([[1.0], [3.0], [1.0], [0.3]])
    h = x.T @ x / len(x)
    c = Consumer(np.arange(4), 1, w, np.linalg.inv(h), float((w.T @ h @ w)[0, 0]))
    assert choose([c], 4, 1).tolist() in ([0], [1])
    assert 3 in choose([c], 4, 2)  # the second to go is the small unique one, not the other copy


def test_every_space_keeps_a_unit():
    # units 0 and 1 are the cheapest to lose, and the only units of one space (a Concat part): one stays
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 4))
    x[:, 1] = x[:, 0] + 1e-3 * rng.normal(size=500)
    w = np.array([[1e-3], [1e-3], [1.0], [2.0]])
    h = x.T @ x / len(x)
    c = Consumer(np.arange(4), 1, w, np.linalg.inv(h), float((w.T @ h @ w)[0, 0]))
    assert choose([c], 4, 2).tolist() == [0, 1]
    for steps in (1, 2):
        gone = choose([c], 4, 2, steps=steps, spaces=[np.array([0, 1]), np.arange(4)])
        assert len(gone) >= 1 and not {0, 1} <= set(gone.tolist())


def test_units_with_several_channels_are_costed_together():
    _, w, c = problem(3, channels=4)
    two = Consumer(np.array([0, 0, 1, 1]), c.kappa, c.w, c.hinv, c.energy)  # 2 units of 2 channels each
    assert two.costs(2).shape == (2,)
    np.testing.assert_allclose(two.costs(2), [c.costs(4)[:2].sum(), c.costs(4)[2:].sum()])


def test_choose_removes_exactly_the_count():
    _, _, c = problem(4, channels=8)
    for count in (1, 3, 7):
        gone = choose([c], 8, count, steps=2)
        assert len(gone) == count and len(set(gone.tolist())) == count


# ---- in the pipeline ------------------------------------------------------------------------------------


def passes_of(result) -> dict:
    return {p.name: p.stats for p in result.report.passes}


def test_the_choice_keeps_the_counts_and_verifies(exported):
    path = exported("resnet_basic")
    calib = np.random.default_rng(0).normal(size=(64, 3, 32, 32)).astype(np.float32)
    kw = dict(method="sampling", ratio=0.5, round_to=1, calib=calib, reconstruct=True)
    chosen = graphprune.prune(path, **kw)
    scored = graphprune.prune(path, **kw, reconstruct_choice="score", verify="off")
    assert chosen.report.verification.ok
    assert "RefitChoice" in passes_of(chosen) and "RefitChoice" not in passes_of(scored)
    assert passes_of(chosen)["RefitChoice"]["groups_chosen"] >= 1
    assert {g: len(u) for g, u in chosen.plan.removed.items()} == {g: len(u) for g, u in scored.plan.removed.items()}
    assert passes_of(chosen)["RefitChoice"]["units_changed"] > 0
    assert chosen.report.after.params == scored.report.after.params


SLOW = pytest.mark.slow  # more of the same on larger graphs, kept out of the default run's time
CASES = [pytest.param("plain_cnn", "legacy", marks=SLOW), pytest.param("inception_block", "legacy_bn", marks=SLOW),
         ("grouped_split", "legacy"), ("densenet_block", "dynamo"), ("transformer_mlp", "dynamo"),
         ("lstm_classifier", "legacy")]


@pytest.mark.parametrize("name,flavour", CASES)
def test_the_chosen_plan_verifies_on_every_architecture(exported, name, flavour):
    path = exported(name, flavour)
    chosen = graphprune.prune(path, ratio=0.5, round_to=1, reconstruct=True, reconstruct_points=256)
    scored = graphprune.plan(path, ratio=0.5, round_to=1, reconstruct=True, reconstruct_choice="score",
                             reconstruct_points=256)
    assert chosen.report.verification.ok
    assert {g: len(u) for g, u in chosen.plan.removed.items()} == {g: len(u) for g, u in scored.removed.items()}
    stats = passes_of(chosen)["Reconstruct"]
    cos = stats["output_cosine"]
    final = cos["after"] if stats["applied"] else cos["before"]
    assert np.isfinite(final) and final > 0.5


def test_memory_bounded_batches_choose_alike(exported, monkeypatch):
    import graphprune.methods.refit_choice as rc
    from graphprune.api import frontend_for, planned_state
    from graphprune.config import PruneConfig

    path = exported("resnet_basic")
    cfg = PruneConfig.make(None, ratio=0.5, round_to=1, reconstruct=True, reconstruct_points=256)

    def planned():
        state = planned_state(frontend_for(path), path, cfg)
        return state.plan, next(r.stats for r in state.history if r.name == "RefitChoice")

    one, one_stats = planned()
    monkeypatch.setattr(rc, "MEMORY", 1)  # every group its own calibration run
    many, many_stats = planned()
    assert one_stats["calibration_runs"] == 1
    assert many_stats["calibration_runs"] == many_stats["groups_chosen"] > 1
    assert {g: u.tolist() for g, u in one.removed.items()} == {g: u.tolist() for g, u in many.removed.items()}


def test_a_threshold_is_not_re_chosen(exported):
    result = graphprune.prune(exported("plain_cnn"), threshold=0.0, reconstruct=True)
    assert "RefitChoice" not in passes_of(result)


def test_the_choice_raises_the_refitted_output_cosine_on_the_digits_example():
    calib = np.load(EXAMPLE / "calib.npz")["input"]
    after = {}
    for choice in ("refit", "score"):
        result = graphprune.prune(EXAMPLE / "digits_resnet.onnx", method="sampling", ratio=0.5, calib=calib,
                                  reconstruct=True, reconstruct_choice=choice, verify="off")
        after[choice] = passes_of(result)["Reconstruct"]["output_cosine"]["after"]
    assert after["refit"] > after["score"]  # measured 0.9984 against 0.9969
