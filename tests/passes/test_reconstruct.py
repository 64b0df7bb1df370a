"""Layer-wise reconstruction (--reconstruct): the least-squares kernel by hand, the end-to-end oracle (masked
original with the refitted weights in place) on many architectures and both exporters, that the oracle catches an
unrecorded change, ``graphprune verify`` from the file alone, and bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphprune
from graphprune.errors import UsageError
from graphprune.methods.reconstruct import Moments
from graphprune.verify import metadata
from graphprune.verify.refit import placed, verify_refit


FAST = {"reconstruct_points": 256}  # these check the mechanics: half the default points, half the time


def reconstruct_stats(result) -> dict:
    return next(p.stats for p in result.report.passes if p.name == "Reconstruct")


# ---- the kernel ------------------------------------------------------------------------------------------


def test_moments_recover_an_exact_linear_map_with_intercept():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2, 6)).astype(np.float32)  # 2 groups, 6 inputs each
    w = rng.normal(size=(2, 6, 3))
    b = rng.normal(size=(2, 3))
    y = (np.einsum("rgd,gdf->rgf", x.astype(np.float64), w) + b).astype(np.float32)
    m = Moments(2, 6, 3)
    for part in np.array_split(np.arange(500), 7):  # chunked accumulation equals one pass
        m.add(x[part], y[part])
    got_w, got_b = m.solve(ridge=0.0, intercept=True)
    np.testing.assert_allclose(got_w, w, atol=1e-4)
    np.testing.assert_allclose(got_b, b, atol=1e-4)
    assert m.error(got_w, got_b) < 1e-8
    direct = np.mean(np.sum((y - np.einsum("rgd,gdf->rgf", x, np.zeros_like(w)) - 0.5) ** 2, axis=(1, 2)))
    assert m.error(np.zeros_like(w), np.full_like(b, 0.5)) == pytest.approx(direct, rel=1e-5)


def test_rank_deficient_inputs_give_finite_weights():
    x = np.ones((40, 1, 4), np.float32)  # every row the same: X^T X has rank 1
    y = np.full((40, 1, 2), 3.0, np.float32)
    m = Moments(1, 4, 2)
    m.add(x, y)
    w, b = m.solve(ridge=1e-3, intercept=True)
    assert np.isfinite(w).all() and np.isfinite(b).all()
    assert m.error(w, b) < 1e-6


def test_a_strong_ridge_pulls_the_fit_to_the_pruned_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 1, 20)).astype(np.float32)  # fewer rows than unknowns
    y = rng.normal(size=(8, 1, 3)).astype(np.float32)
    prior = rng.normal(size=(1, 20, 3))
    m = Moments(1, 20, 3)
    m.add(x, y)
    loose, _ = m.solve(ridge=1e-6, intercept=True, prior=prior)
    tight, _ = m.solve(ridge=1e6, intercept=True, prior=prior)
    assert m.error(loose, m.sy / m.n - np.einsum("gd,gdf->gf", m.sx / m.n, loose)) < 1e-6  # interpolates
    np.testing.assert_allclose(tight, prior, atol=1e-4)


def test_the_held_out_points_choose_the_ridge():
    from graphprune.methods.reconstruct import RIDGES, ridge_path

    rng = np.random.default_rng(0)
    w = rng.normal(size=(1, 30, 2))

    def moments(rows: int, noise: float) -> Moments:
        x = rng.normal(size=(rows, 1, 30)).astype(np.float32)
        m = Moments(1, 30, 2)
        m.add(x, (np.einsum("rgd,gdf->rgf", x, w) + noise * rng.normal(size=(rows, 1, 2))).astype(np.float32))
        return m

    prior = np.zeros_like(w)
    _, _, chosen = ridge_path(moments(2000, 0.01), moments(200, 0.01), 1e-3 * RIDGES, True, prior)
    assert chosen == 1e-3  # the data determine the fit: the least pull
    # 20 noisy rows for 30 unknowns: the least-squares fit interpolates them, a stronger pull predicts better
    few, held = moments(20, 3.0), moments(200, 3.0)
    _, error, chosen = ridge_path(few, held, 1e-3 * RIDGES, True, prior)
    assert chosen > 1e-3
    assert error < 0.9 * held.error(*few.solve(1e-3, True, prior=prior))


def test_every_eighth_point_is_held_out_of_the_fit():
    from graphprune.methods.reconstruct import Accumulator, held_out
    from graphprune.methods.sensitivity import Layer

    assert held_out(10).tolist() == [False] * 7 + [True] + [False] * 2
    assert held_out(3, start=6).tolist() == [False, True, False]
    layer = Layer(node="fc", op="Gemm", x="x", weight="w", x_axis=1, w_axis=1)
    target = type("T", (), {"layer": layer, "kept_y": None, "removed_x": None, "gate": None, "partner": None})()
    acc = Accumulator(target, np.zeros((3, 5), np.float32), seed=0)
    for start in (0, 12):  # two batches of 12 points: points 7, 15 and 23 are held out
        acc.add(np.ones((12, 5), np.float32), np.ones((12, 3), np.float32), held=held_out(12, start))
    assert (acc.fit.n, acc.held.n) == (21, 3)


def test_an_underdetermined_refit_does_not_lose_on_fresh_inputs():
    # Conv -> Conv -> Linear(1024 -> 10) refitted on 64 points: the Linear has 1025 unknowns per output. Fitted on
    # all of them it interpolated the points (reported output cosine 1.0) and lost on fresh inputs (0.91 -> 0.75);
    # the held-out points now choose the ridge and judge the refit, and the reported cosine is theirs
    import torch
    from graphprune.torch.api import prune_module

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32 * 8 * 8, 10)).eval()
    rng = np.random.default_rng(1)
    calib = rng.normal(size=(64, 3, 8, 8)).astype(np.float32)
    fresh = torch.from_numpy(rng.normal(size=(512, 3, 8, 8)).astype(np.float32))

    def fresh_cosine(module) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(net(fresh), module(fresh), dim=1).mean())

    options = dict(method="sampling", ratio=0.5, round_to=1, calib=calib)
    plain = prune_module(net, torch.zeros(1, 3, 8, 8), **options)
    refit = prune_module(net, torch.zeros(1, 3, 8, 8), **options, reconstruct=True)
    stats = reconstruct_stats(refit)
    assert refit.report.verification.ok
    assert stats["errors_on"] == "held-out points" and stats["output_cosine"]["on"] == "held-out points"
    assert stats["output_cosine"]["points"] == 8
    assert fresh_cosine(refit.model) >= fresh_cosine(plain.model) - 0.005
    if stats["applied"]:  # what the report claims holds out of sample
        assert abs(stats["output_cosine"]["after"] - fresh_cosine(refit.model)) < 0.05
    choice = next(p.stats for p in refit.report.passes if p.name == "RefitChoice")
    assert choice["consumers_too_few_rows"] >= 1  # the Linear's 64 rows are no guide for 1024 inputs


def test_placed_puts_values_at_the_kept_channels():
    from graphprune.channels.plan import Plan
    from graphprune.channels.rules import Space

    plan = Plan({}, {Space("w", 0): np.array([0, 2]), Space("w", 1): np.array([1])}, {Space("w", 0): 3, Space("w", 1): 2})
    out = placed(np.zeros((3, 2)), np.array([[5.0], [7.0]]), "w", plan)
    np.testing.assert_array_equal(out, [[0, 5], [0, 0], [0, 7]])


# ---- the pass on real graphs, both exporters --------------------------------------------------------------

SLOW = pytest.mark.slow  # the same refits on larger graphs: kept out of the default run's time
CASES = [("plain_cnn", "legacy"), ("resnet_basic", "legacy_bn"), pytest.param("resnet_bottleneck", "dynamo", marks=SLOW),
         pytest.param("mobilenet_v2", "legacy", marks=SLOW), pytest.param("densenet_block", "dynamo", marks=SLOW),
         ("inception_block", "legacy_bn"), ("grouped_split", "legacy"), ("transformer_mlp", "dynamo"),
         ("lstm_classifier", "legacy")]


@pytest.mark.parametrize("name,flavour", CASES)
def test_reconstruction_verifies_and_raises_the_output_cosine(exported, name, flavour):
    # the refit itself, on the method's choice (the choice made for the refit: tests/passes/test_refit_choice.py)
    path = exported(name, flavour)
    result = graphprune.prune(path, ratio=0.5, round_to=1, reconstruct=True, **FAST, reconstruct_choice="score")
    assert result.report.verification.ok
    assert "Reconstruct/refitted_masked_original" in result.report.verification.checks
    stats = reconstruct_stats(result)
    assert stats["refitted"] >= 1 and stats["applied"] is True
    assert stats["output_cosine"]["after"] > stats["output_cosine"]["before"]
    assert stats["median_error_after"] < stats["median_error_before"]
    assert all(np.isfinite(numpy_helper.to_array(t)).all() for t in result.model.graph.initializer)
    assert set(metadata.read(result.model).refit["weights"])


def test_the_refit_does_not_depend_on_the_number_of_threads(exported, monkeypatch):
    """A wave's layers (and the refit-aware choice's covariances) run side by side (graphprune/workers.py); each
    accumulator owns its sums and generators, so one thread and two give the same plan and the same weights."""
    import graphprune.workers as workers

    runs = []
    for n in (1, 2):
        monkeypatch.setattr(workers, "cores", lambda n=n: n)
        runs.append(graphprune.prune(exported("resnet_basic", "legacy_bn"), ratio=0.5, reconstruct=True, verify="off",
                                     **FAST))
    one, two = runs
    assert reconstruct_stats(one)["refitted"] >= 1
    for gid, units in one.plan.removed.items():
        np.testing.assert_array_equal(units, two.plan.removed[gid])
    for a, b in zip(one.model.graph.initializer, two.model.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


def test_sampling_with_reconstruction_and_the_cli_verify(exported, tmp_path):
    path = exported("resnet_basic", "legacy")
    result = graphprune.prune(path, method="sampling", ratio=0.5, round_to=1, reconstruct=True, **FAST)
    assert result.report.verification.ok and reconstruct_stats(result)["applied"]
    out = result.save(tmp_path / "small.onnx")
    assert graphprune.verify_files(path, out).ok  # rebuilt from the file's record alone


def test_an_unrecorded_change_fails_the_oracle(exported):
    path = exported("vgg", "legacy_bn")
    result = graphprune.prune(path, ratio=0.5, round_to=1, reconstruct=True, **FAST)
    names = metadata.read(result.model).refit["weights"]
    source = result.source
    weight = next(n for n in names if numpy_helper.to_array(
        next(t for t in result.model.graph.initializer if t.name == n)).ndim == 4)

    def with_changed(name, change):
        m = onnx.ModelProto()
        m.CopyFrom(result.model)
        init = next(t for t in m.graph.initializer if t.name == name)
        init.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(init)), name))
        return m

    assert verify_refit(source, result.model, result.plan, names).ok
    # the refitted values are whatever the fit chose (their quality is the reported error and cosine); what the
    # oracle pins down is that nothing *else* changed: a record missing one refitted weight fails
    assert not verify_refit(source, result.model, result.plan, [n for n in names if n != weight]).ok
    other = next(t.name for t in result.model.graph.initializer if t.name not in names and t.dims and
                 numpy_helper.to_array(t).dtype == np.float32 and "running" not in t.name)
    unrecorded = with_changed(other, lambda v: v * 1.5)  # a weight changed that the record does not name
    assert not verify_refit(source, unrecorded, result.plan, names).ok


def test_data_free_reconstruction_is_reported(exported):
    result = graphprune.prune(exported("plain_cnn"), ratio=0.5, round_to=1, reconstruct=True, **FAST)
    assert reconstruct_stats(result)["calibration"]["data_free"] is True
    assert metadata.read(result.model).refit["data_free"] is True


def test_a_fit_that_lowers_the_output_cosine_is_not_applied(exported):
    # a small attention block: its hidden width runs through renormalised LayerNorms, where each layer fits
    # better but the whole does not (measured 0.92 -> 0.82); the pruned model is returned as removal left it
    result = graphprune.prune(exported("attention_block"), ratio=0.5, round_to=1, reconstruct=True, **FAST)
    stats = reconstruct_stats(result)
    assert result.report.verification.ok
    if not stats["applied"]:
        assert metadata.read(result.model).refit is None
        assert any("not applied" in n for n in result.report.notes)


def test_the_refit_reads_its_own_number_of_points(exported):
    # scoring ranks on few points, the least-squares fit gains from more: each reads its own limit
    path = exported("plain_cnn")
    calib = np.random.default_rng(0).normal(size=(48, 3, 32, 32)).astype(np.float32)
    result = graphprune.prune(path, method="sampling", ratio=0.5, round_to=1, calib=calib, max_points=8,
                              reconstruct=True, reconstruct_points=40)
    assert reconstruct_stats(result)["calibration"]["points"] == 40
    assert metadata.read(result.model).refit["points"] == 40
    score = next(p.stats for p in result.report.passes if p.name == "SensitivityScore")
    assert score["points_used"] == 8


def test_too_few_points_to_hold_out_are_reported_as_in_sample(exported):
    calib = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    result = graphprune.prune(exported("plain_cnn"), ratio=0.5, round_to=1, calib=calib, reconstruct=True)
    stats = reconstruct_stats(result)
    assert stats["output_cosine"]["on"] == "calibration points" and stats["errors_on"] == "calibration points"
    if stats["applied"]:
        assert any("in-sample" in n for n in result.report.notes)


@pytest.mark.parametrize("option", [{"ridge": 0.1}, {"reconstruct_points": 64}, {"reconstruct_inputs": "original"}])
def test_refit_options_without_reconstruct_are_refused(option):
    with pytest.raises(UsageError, match="add --reconstruct"):
        graphprune.config.PruneConfig(**option)


@pytest.mark.parametrize("options, message", [
    (dict(method="sipp", reconstruct=True), "--reconstruct is read by magnitude, random, sampling, bn_scale, not by 'sipp'"),
    (dict(method="lowrank", reconstruct=True), "not by 'lowrank'"),
    (dict(method="lowrank", budget="params"), "--budget is read by .*, not by 'lowrank'"),
    (dict(method="sampling", scope="global"), "--scope is read by .*, not by 'sampling'"),
])
def test_an_option_no_method_of_the_pipeline_reads_is_refused(options, message):
    """Not ignored: SiPP with --reconstruct ran without refitting and said nothing."""
    with pytest.raises(UsageError, match=message):
        graphprune.config.PruneConfig(**options)


def test_an_option_a_later_method_reads_is_accepted():
    assert graphprune.config.PruneConfig(method="magnitude", then=("lowrank",), reconstruct=True).reconstruct


@pytest.mark.parametrize("points", [0, 2.5])
def test_bad_reconstruct_points_are_refused(points):
    with pytest.raises(UsageError, match="reconstruct points"):
        graphprune.config.PruneConfig(reconstruct=True, reconstruct_points=points)


# ---- bad input ------------------------------------------------------------------------------------------


def test_calib_without_reconstruct_for_a_score_method_is_refused(exported):
    with pytest.raises(UsageError, match="not by .plain_cnn.|add --reconstruct"):
        graphprune.prune(exported("plain_cnn"), calib=np.zeros((4, 3, 32, 32), np.float32))


def test_randomized_sampling_with_reconstruct_is_refused(exported):
    with pytest.raises(UsageError, match="deterministic sampling"):
        graphprune.prune(exported("plain_cnn"), method="sampling", sampling="randomized", reconstruct=True)


@pytest.mark.parametrize("ridge", [-1.0, float("nan")])
def test_bad_ridge_is_refused(ridge):
    with pytest.raises(UsageError, match="ridge"):
        graphprune.config.PruneConfig(reconstruct=True, ridge=ridge)


def test_cli_reconstruct_json_report(exported, tmp_path, capsys):
    from graphprune.cli.main import main

    path = exported("plain_cnn")
    code = main([str(path), "--ratio", "0.5", "--reconstruct", "-o", str(tmp_path / "o.onnx"), "--report",
                 str(tmp_path / "r.json")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    rec = next(p for p in report["passes"] if p["name"] == "Reconstruct")
    assert rec["stats"]["refitted"] >= 1


@pytest.mark.parametrize("inputs", ["sequential", "original"])
def test_both_input_modes_verify_and_are_reported(exported, inputs):
    result = graphprune.prune(exported("inception_block", "legacy"), ratio=0.5, round_to=1, reconstruct=True, **FAST,
                              reconstruct_inputs=inputs)
    stats = reconstruct_stats(result)
    assert result.report.verification.ok and stats["inputs"] == inputs and stats["applied"]


def test_parallel_branches_share_a_wave(exported):
    from graphprune.api import load
    from graphprune.frontends.onnx.lower import to_ir
    from graphprune.methods.reconstruct import dependency_waves, targets

    path = exported("inception_block", "legacy")
    result = graphprune.prune(path, ratio=0.5, round_to=1, verify="off")
    source = load(path)
    todo = targets(source.graph, to_ir(result.model), result.plan)
    waves = dependency_waves(to_ir(result.model), todo)
    assert sum(len(w) for w in waves) == len(todo) and len(waves) < len(todo)  # branches refit together
    seen: set[str] = set()
    for wave in waves:  # no layer of a wave reads what a later wave changes
        seen |= {t.layer.node for t in wave}
    assert seen == {t.layer.node for t in todo}


def test_sequential_refit_keeps_more_accuracy_when_much_is_removed():
    # digits_vgg-sized effect on a plain CNN with random data: sequential's output cosine is at least the one-pass one
    from models import REFERENCE_MODELS, export_onnx
    import tempfile
    from pathlib import Path

    path = export_onnx(REFERENCE_MODELS["resnet_basic"], Path(tempfile.mkdtemp()) / "r.onnx")
    cos = {m: reconstruct_stats(graphprune.prune(path, ratio=0.8, round_to=1, reconstruct=True, **FAST,
                                                 reconstruct_inputs=m, verify="off"))["output_cosine"]["after"]
           for m in ("sequential", "original")}
    assert cos["sequential"] >= cos["original"] - 1e-3


# ---- residual sums --------------------------------------------------------------------------------------


def residual_add_errors(path, monkeypatch, modes=(True, False), points: int = 32) -> dict:
    """Relative squared error, against the original at the kept channels, at every residual Add output of the model
    pruned at 0.5 and refitted sequentially: with the residual targets (True: the layer refitted last absorbs the
    other addend's error), with each layer fitted alone (False: ``residual_of`` finds none), and with both addends'
    layers fitted together ("joint", the default). ``points`` calibration points; the errors on a fresh batch when
    they are more than one batch (32 points: on those points)."""
    from graphprune.api import load
    from graphprune.channels.rules import Space
    from graphprune.frontends.onnx.lower import to_ir
    from graphprune.methods import reconstruct as rc
    from graphprune.methods.calib import ActivationRunner, model_inputs, random_calibration
    from graphprune.methods.edits import with_values

    result = graphprune.prune(path, ratio=0.5, round_to=1, verify="off")
    source, pruned = load(path), to_ir(result.model)
    calib = random_calibration(model_inputs(source), points, 0)
    adds = [n.outputs[0] for n in pruned.nodes if n.op == "Add" and not any(pruned.is_const(i) for i in n.inputs)]
    batch = next((calib if points <= 32 else random_calibration(model_inputs(source), 64, 1)).batches(64))
    want = ActivationRunner(source.model, adds, source.input_shapes).run(batch)
    out = {}
    for keep in modes:
        with monkeypatch.context() as m:
            m.setattr(rc, "gate_of", lambda *a, **k: None)  # the error is taken before the ReLU: linear fits only
            if keep != "joint":
                m.setattr(rc, "with_partner", lambda g, t, todo: t)
            if not keep:
                m.setattr(rc, "residual_of", lambda *a, **k: None)
            assert any(t.residual for t in rc.targets(source.graph, pruned, result.plan)) == bool(keep)
            assert any(t.partner for t in rc.targets(source.graph, pruned, result.plan)) == (keep == "joint")
            refits, _ = rc.reconstruct(source.graph, source.model, result.model, result.plan, calib,
                                       source.input_shapes, inputs="sequential")
        model = with_values(result.model, {k: v for r in refits for k, v in r.values.items()})
        got = ActivationRunner(model, adds, source.input_shapes).run(batch)
        out[keep] = []
        for name in adds:
            kept = result.plan.kept(Space(name, 1))
            w = (want[name] if kept is None else np.take(want[name], kept, axis=1)).astype(np.float64)
            out[keep].append(float(np.sum((got[name] - w) ** 2) / np.sum(w ** 2)))
    return out


# the Add fed through a BatchNorm (its gain divides the target), and directly
@pytest.mark.parametrize("flavour", ["legacy_bn", pytest.param("legacy", marks=SLOW)])
def test_fitting_the_residual_sum_lowers_the_error_at_the_add(exported, flavour, monkeypatch):
    # He et al. 2017 §3.3: the layer before a residual Add also absorbs the other addend's error; without that
    # target (each layer fitted alone) the error at the Adds after the first block is larger
    errors = residual_add_errors(exported("resnet_basic", flavour), monkeypatch)
    with_res, alone = errors[True], errors[False]
    assert len(with_res) == 3
    assert with_res[0] == pytest.approx(alone[0], rel=1e-3, abs=1e-7)  # the first block's shortcut is exact: nothing to absorb
    assert all(a < b * 0.95 for a, b in zip(with_res[1:], alone[1:]))


@pytest.mark.parametrize("flavour", ["legacy_bn", pytest.param("legacy", marks=SLOW)])
def test_fitting_both_addends_together_lowers_the_error_at_the_add(exported, flavour, monkeypatch):
    # a sum of two refitted layers (the downsampling blocks' conv and shortcut conv) is linear in both weights: one
    # fit over both inputs' rows can do all the sequential pair does (the shortcut alone, then the conv absorbing
    # its error) and more
    errors = residual_add_errors(exported("resnet_basic", flavour), monkeypatch, modes=("joint", True), points=256)
    joint, sequential = errors["joint"], errors[True]
    assert joint[0] == pytest.approx(sequential[0], rel=1e-3, abs=1e-7)  # an identity shortcut: no partner
    assert all(a < b for a, b in zip(joint[1:], sequential[1:])), (joint, sequential)  # random weights: ~2 % lower


def test_a_partner_is_the_layer_writing_the_other_addend(exported):
    from graphprune.api import load
    from graphprune.frontends.onnx.lower import to_ir
    from graphprune.methods import reconstruct as rc

    path = exported("resnet_basic", "legacy_bn")
    result = graphprune.prune(path, ratio=0.5, round_to=1, verify="off")
    source, pruned = load(path), to_ir(result.model)
    todo = rc.targets(source.graph, pruned, result.plan)
    waves = rc.dependency_waves(pruned, todo)
    pairs = {t.layer.node: t.partner.target.layer.node for w in waves for t in w if t.partner is not None}
    assert len(pairs) == 2  # the two downsampling blocks (fitted in the wave of the addend refitted last); the
    # identity shortcut has no layer to fit
    for node, other in pairs.items():
        t = next(t for t in todo if t.layer.node == node)
        add = pruned.consumers[pruned.consumers[t.y][0].outputs[0]][0]
        assert add.op == "Add" and t.residual.other in add.inputs
        assert pruned.producers[pruned.producers[t.residual.other].inputs[0]].name == other  # through its BN
    alone = {t.layer.node for w in waves for t in w}
    assert not alone & set(pairs.values())  # a partner is fitted in its sum's wave, not on its own


def test_residual_shift_is_the_other_addends_error_over_the_bn_gain():
    from graphprune.methods.reconstruct import Residual, residual_shift

    rng = np.random.default_rng(0)
    gain = np.array([2.0, -0.5, 4.0])
    t = type("T", (), {"residual": Residual("o", 1, gain), "kept_other": np.array([0, 2, 3])})()
    seen = {"o": rng.normal(size=(5, 4, 2, 2)).astype(np.float32)}  # the original: 4 channels, 3 kept
    now = {"o": rng.normal(size=(5, 3, 2, 2)).astype(np.float32)}
    got = residual_shift(t, seen, now)
    want = (seen["o"][:, [0, 2, 3]] - now["o"]) / gain[None, :, None, None]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the sum it makes the layer hit: gain · (y + shift) + other_now == gain · y + other_original
    y = rng.normal(size=(5, 3, 2, 2))
    np.testing.assert_allclose(gain[None, :, None, None] * (y + got) + now["o"],
                               gain[None, :, None, None] * y + seen["o"][:, [0, 2, 3]], rtol=1e-5, atol=1e-5)
    assert residual_shift(t, seen, None) is None  # "original" inputs: no refit state to sum with
