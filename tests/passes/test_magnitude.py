"""Magnitude scoring counts multiplicative slices only: an additive term (a layer's bias, a BatchNorm shift, a
constant added) says nothing about how much of the signal a channel carries, so it must not lift its score."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from graphprune.api import load
from graphprune.passes import AnalyseChannels, MagnitudeScore
from graphprune.pipeline.state import PruneState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from onnx_builder import G  # noqa: E402

C = 8


def model_with_a_shifted_channel(where: str):
    """conv(4→8) [→ BN] [→ + const] → Relu → conv(8→8) → Relu → head. Channel 0's filter, BN γ and consumer
    column are tiny; its additive term (conv bias, BN β or added constant) is huge. Counting the additive terms
    (as graphprune did before) makes channel 0 the highest-scored channel."""
    g = G(seed=1)
    w = g.rng.standard_normal((C, 4, 3, 3)) * 0.3
    w[0] *= 1e-3
    bias = g.rng.standard_normal(C) * 0.1
    if where == "bias":
        bias[0] = 100.0
    x = g.op("Conv", ["input", g.const(w), g.const(bias)], kernel_shape=[3, 3], pads=[1] * 4)
    if where == "bn_beta":
        beta = g.rng.standard_normal(C) * 0.1
        beta[0] = 100.0
        gamma = 1 + 0.1 * g.rng.standard_normal(C)
        gamma[0] = 1e-3  # a scale: multiplicative, so tiny like the filter
        x = g.op("BatchNormalization", [x, g.const(gamma), g.const(beta),
                                        g.const(0.1 * g.rng.standard_normal(C)), g.const(0.5 + g.rng.random(C))])
    if where == "added_const":
        shift = g.rng.standard_normal((1, C, 1, 1)) * 0.1
        shift[0, 0] = 100.0
        x = g.op("Add", [x, g.const(shift)])
    w2 = g.rng.standard_normal((C, C, 3, 3)) * 0.3
    w2[:, 0] *= 1e-3
    y = g.op("Conv", [g.op("Relu", [x]), g.const(w2), g.const(g.rng.standard_normal(C) * 0.1)],
             kernel_shape=[3, 3], pads=[1] * 4)
    g.head(g.op("Relu", [y]), C)
    return g.model((1, 4, 8, 8), (1, 5))


@pytest.mark.parametrize("where", ["bias", "bn_beta", "added_const"])
@pytest.mark.parametrize("norm", [1, 2])
def test_a_huge_additive_term_does_not_lift_a_channel_with_tiny_filters(where, norm):
    state = MagnitudeScore(norm=norm)(AnalyseChannels()(PruneState.start(load(model_with_a_shifted_channel(where)))))
    cg = state.channels
    first_conv = next(n for n in cg.graph.nodes if n.op == "Conv")
    group = next(g for g in cg.prunable if any(sp.tensor == first_conv.inputs[1] and sp.axis == 0 for sp in g.params))
    scores = state.scores[group.id]
    assert scores.shape == (C,)
    assert scores[0] == scores.min() and scores[0] < 0.05 * np.median(scores[1:]), scores
