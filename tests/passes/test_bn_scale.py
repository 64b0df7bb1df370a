"""Network slimming (--method bn_scale): |γ| scores, magnitude fallback where BatchNorm was folded away."""

from __future__ import annotations

import numpy as np
import pytest

import graphprune
from graphprune.passes import AnalyseChannels
from graphprune.passes.bn_scale import BNScaleScore
from graphprune.passes.magnitude import group_magnitude
from graphprune.channels.rules import Space
from graphprune.pipeline.state import PruneState
from models import REFERENCE_MODELS


def scored(path):
    state = PruneState.start(graphprune.api.load(path))
    return BNScaleScore()(AnalyseChannels()(state))


def test_scores_are_abs_gamma(exported):
    state = scored(exported("plain_cnn", "legacy_bn"))
    cg = state.channels
    bns = [n for n in cg.graph.nodes if n.op == "BatchNormalization"]
    assert bns
    for bn in bns:
        gamma = cg.graph.value(bn.inputs[1])
        gid = cg.group_of[Space(bn.inputs[1], 0)]
        if cg.groups[gid].prunable:
            labels = cg.groups[gid].labels[Space(bn.inputs[1], 0)]
            np.testing.assert_allclose(state.scores[gid][labels], np.abs(gamma))
    assert state.history[-1].stats["groups_magnitude_fallback"] == []


def test_residual_unit_takes_the_mean_gamma(exported):
    state = scored(exported("resnet_basic", "legacy_bn"))
    cg = state.channels
    shared = [g for g in cg.prunable
              if sum(1 for n in cg.graph.nodes if n.op == "BatchNormalization" and Space(n.inputs[1], 0) in g.labels) > 1]
    assert shared  # the residual stream: several BNs per unit
    g = shared[0]
    gammas = [np.abs(cg.graph.value(n.inputs[1]))[np.argsort(g.labels[Space(n.inputs[1], 0)])]
              for n in cg.graph.nodes if n.op == "BatchNormalization" and Space(n.inputs[1], 0) in g.labels]
    np.testing.assert_allclose(state.scores[g.id], np.mean(gammas, axis=0))


def test_folded_batchnorm_falls_back_to_magnitude(exported):
    state = scored(exported("plain_cnn", "legacy"))
    stats = state.history[-1].stats
    assert len(stats["groups_magnitude_fallback"]) == len(state.channels.prunable) and stats["groups_bn"] == 0
    assert "magnitude" in stats["notes"][0]
    for g in state.channels.prunable:
        np.testing.assert_allclose(state.scores[g.id], group_magnitude(state.channels, g, 1))
    result = graphprune.prune(exported("plain_cnn", "legacy"), method="bn_scale")
    assert any("no BatchNormalization" in n for n in result.report.notes)


@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_bn_scale_prunes_reference_models(exported, name):
    result = graphprune.prune(exported(name, "legacy_bn"), method="bn_scale", ratio=0.5)
    assert result.report.verification.ok, result.report.verification.failure
    assert result.report.after.params < result.report.before.params
