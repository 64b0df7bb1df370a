"""Selection policies on synthetic scores: local ratio, global with a cap, threshold, round-to, min one."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builder import G

import graphprune
import graphprune.errors
from graphprune.api import load
from graphprune.passes import AnalyseChannels, MagnitudeScore, Select
from graphprune.passes.select import lamp
from graphprune.methods.budget import round_kept
from graphprune.pipeline.state import PruneState


def two_layer_model():
    g = G()
    a = g.conv("input", 4, 16)
    b = g.conv(g.op("Relu", [a]), 16, 8)
    g.head(g.op("Relu", [b]), 8)
    return g.model((1, 4, 8, 8), (1, 5))


def state_with_scores(model, scores_by_size):
    state = AnalyseChannels()(PruneState.start(load(model)))
    scores = {g.id: scores_by_size[g.n_units] for g in state.channels.prunable}
    return state.with_(scores=scores)


def removed_counts(state):
    return {state.channels.groups[g].n_units: len(u) for g, u in state.plan.removed.items()}


def test_local_ratio_removes_the_lowest_of_each_group():
    s = state_with_scores(two_layer_model(), {16: np.arange(16.0)[::-1], 8: np.arange(8.0)})
    s = Select(ratio=0.5)(s)
    assert removed_counts(s) == {16: 8, 8: 4}
    g16 = next(g for g in s.plan.removed if s.channels.groups[g].n_units == 16)
    assert sorted(s.plan.removed[g16].tolist()) == list(range(8, 16))  # the lowest scores


def test_global_ranks_across_groups_and_caps_each_group():
    s = state_with_scores(two_layer_model(), {16: np.full(16, 1.0), 8: np.r_[np.full(7, 0.01), 100.0]})
    s = Select(ratio=0.25, scope="global", max_group_ratio=0.5)(s)
    counts = removed_counts(s)
    assert counts[8] == 4  # the 8-group has the lowest normalised scores, but the cap stops it at half
    assert sum(counts.values()) == 6  # a quarter of the 24 units


def test_lamp_is_each_score_squared_over_the_squares_at_least_as_high():
    scores = np.array([3.0, 1.0, 2.0, 2.0])
    # ascending (stable): 1, 2 (index 2), 2 (index 3), 3; each over the sum of its own square and those after it
    want = np.array([9 / 9, 1 / 18, 4 / 17, 4 / 13])
    assert np.allclose(lamp(scores), want)
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(lamp(scores)[order]) >= 0)  # monotone in the score: a group's own ranking is unchanged
    assert lamp(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]  # all-zero scores: no division by zero


def test_global_lamp_keeps_groups_of_equal_scores_at_equal_counts():
    # mean-normalised, both groups score 1 everywhere and the ties go by index (the 16-group first); LAMP gives a
    # group of equal scores with k left 1/k, so both keep the same number of units: 24 - 8 removed = 8 each
    s = state_with_scores(two_layer_model(), {16: np.full(16, 5.0), 8: np.full(8, 0.1)})
    lamped = removed_counts(Select(ratio=8 / 24, scope="global", normalizer="lamp")(s))
    assert lamped == {16: 8}
    s2 = state_with_scores(two_layer_model(), {16: np.full(16, 5.0), 8: np.full(8, 0.1)})
    assert removed_counts(Select(ratio=12 / 24, scope="global", normalizer="lamp")(s2)) == {16: 10, 8: 2}


def test_normalizer_is_read_with_global_only():
    with pytest.raises(graphprune.errors.UsageError, match="add --global"):
        graphprune.prune(two_layer_model(), ratio=0.5, normalizer="lamp")
    with pytest.raises(graphprune.errors.UsageError, match="must be 'mean' or 'lamp'"):
        graphprune.prune(two_layer_model(), ratio=0.5, scope="global", normalizer="max")
    with pytest.raises(graphprune.errors.UsageError, match="give one of them"):  # a threshold ranks nothing
        graphprune.prune(two_layer_model(), threshold=0.1, scope="global")


def test_threshold_removes_every_unit_at_or_below():
    s = state_with_scores(two_layer_model(), {16: np.r_[np.zeros(5), np.ones(11)], 8: np.ones(8)})
    s = Select(threshold=0.0)(s)
    assert removed_counts(s) == {16: 5}


def test_every_space_keeps_one_channel():
    s = state_with_scores(two_layer_model(), {16: np.zeros(16), 8: np.zeros(8)})
    s = Select(threshold=1.0)(s)
    assert removed_counts(s) == {16: 15, 8: 7}


@pytest.mark.parametrize("n,remove,to,expected", [(64, 30, 8, 32), (64, 27, 8, 24), (64, 32, 8, 32), (6, 3, 8, 3), (10, 9, 4, 6), (16, 5, 8, 8), (16, 4, 8, 0)])
def test_round_kept(n, remove, to, expected):
    assert round_kept(n, remove, to) == expected


def test_round_to_keeps_multiples(exported):
    result = graphprune.prune(exported("resnet_basic", "legacy_bn"), ratio=0.3, round_to=8)
    assert result.report.verification.ok
    for g in result.report.groups:
        if g.removed:
            assert (g.units - g.removed) % 8 == 0


def test_ratio_zero_is_a_byte_exact_no_op(exported):
    path = exported("resnet_basic")
    result = graphprune.prune(path, ratio=0.0)
    assert result.plan.empty
    assert result.model.SerializeToString() == open(path, "rb").read()


def test_magnitude_scores_sum_over_coupled_slices():
    s = AnalyseChannels()(PruneState.start(load(two_layer_model())))
    s = MagnitudeScore(norm=1)(s)
    cg = s.channels
    group = next(g for g in cg.prunable if g.n_units == 16)
    expected = np.zeros(16)
    for space in group.params:
        if space.tensor in {n.inputs[2] for n in cg.graph.nodes if n.op == "Conv" and len(n.inputs) > 2}:
            continue  # conv biases are additive: left out of magnitude (passes/magnitude.py)
        w = np.abs(cg.graph.value(space.tensor))
        expected += np.moveaxis(w, space.axis, 0).reshape(16, -1).sum(1)
    np.testing.assert_allclose(s.scores[group.id], expected, rtol=1e-6)


# ---- --budget params / macs for the score methods ---------------------------------------------------------


@pytest.mark.parametrize("budget", ["params", "macs"])
@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_a_params_or_macs_budget_is_met_like_sampling(exported, budget, scope, ratio):
    path = exported("resnet_basic", "legacy_bn")
    result = graphprune.prune(path, ratio=ratio, budget=budget, scope=scope, round_to=1)
    rep = result.report
    achieved = (rep.after.params / rep.before.params) if budget == "params" else (rep.after.macs / rep.before.macs)
    select = next(p.stats for p in rep.passes if p.name == "Select")
    assert select["achieved_kept"] == pytest.approx(achieved)  # the budget model predicts the emitted cost
    assert abs(achieved - (1 - ratio)) < 0.05
    assert result.plan.meta["budget"] == budget and rep.verification.ok


def test_the_same_ratio_means_the_same_size_for_magnitude_and_sampling(exported):
    path = exported("resnet_basic", "legacy_bn")
    sizes = {m: graphprune.prune(path, method=m, ratio=0.5, budget="params", round_to=1, verify="off").report
             for m in ("magnitude", "random", "sampling")}
    kept = [r.after.params / r.before.params for r in sizes.values()]
    assert max(kept) - min(kept) < 0.05


def test_budget_params_is_the_default_of_every_channel_method_and_channels_is_refused_by_sampling(exported):
    path = exported("plain_cnn")
    default = graphprune.prune(path, ratio=0.5, verify="off")
    explicit = graphprune.prune(path, ratio=0.5, budget="params", verify="off")
    assert {k: v.tolist() for k, v in default.plan.keep.items()} == {k: v.tolist() for k, v in explicit.plan.keep.items()}
    assert default.plan.meta["budget"] == "params"
    with pytest.raises(graphprune.errors.UsageError, match="--budget channels"):
        graphprune.prune(path, method="sampling", budget="channels")
    with pytest.raises(graphprune.errors.UsageError, match="budget 'flops'"):
        graphprune.prune(path, budget="flops")


@pytest.mark.parametrize("n,remove,to,expected", [(64, 30, 8, 24), (64, 27, 8, 24), (64, 32, 8, 32), (16, 5, 8, 0), (10, 9, 4, 6)])
def test_round_kept_up_never_removes_more(n, remove, to, expected):
    assert round_kept(n, remove, to, up=True) == expected <= remove


def test_threshold_rounds_the_kept_count_up():
    s = state_with_scores(two_layer_model(), {16: np.r_[np.zeros(5), np.ones(11)], 8: np.ones(8)})
    s = Select(threshold=0.0, round_to=4)(s)
    assert removed_counts(s) == {16: 4}  # 11 kept → 12; the nearest multiple (12) happens to agree
    s = Select(threshold=0.0, round_to=8)(state_with_scores(two_layer_model(), {16: np.r_[np.zeros(5), np.ones(11)], 8: np.ones(8)}))
    assert removed_counts(s) == {}  # 11 kept → 16, where the nearest multiple (8) would remove 3 units scoring 1


def test_global_lamp_meets_the_params_budget_and_verifies(exported):
    result = graphprune.prune(exported("resnet_basic", "legacy_bn"), ratio=0.5, scope="global", normalizer="lamp",
                              round_to=1)
    assert result.report.verification.ok
    assert result.plan.meta["normalizer"] == "lamp"
    assert abs(result.report.after.params / result.report.before.params - 0.5) < 0.05
