"""``--threshold T`` is a threshold: dead channels go and the outputs stay, nothing scoring above T goes.

Dead channels are injected as a user finds them in trained models: the producing filter and every reader's input
slice zeroed, while the BatchNorm shift and an SE gate's excitation layer (weights and bias) stay non-zero, so the
unit's summed magnitude is above 0 although it contributes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphprune
from graphprune.report.data import render_text
from graphprune.runtime import run, session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from onnx_builder import G  # noqa: E402

DEAD = [1, 4, 6, 9, 11, 13]  # of 16 channels


def bn(g: G, x: str, c: int) -> str:
    return g.op("BatchNormalization", [x, g.const(1 + 0.1 * g.rng.standard_normal(c)), g.const(0.5 + g.rng.random(c)),
                                       g.const(0.1 * g.rng.standard_normal(c)), g.const(0.5 + g.rng.random(c))])


def se_block_with_dead_channels() -> onnx.ModelProto:
    """conv(3→16)+BN+ReLU, an SE gate (16→4→16 with biases), a depthwise conv, then a 1×1 conv and the head."""
    g = G(seed=3)
    x = g.op("Relu", [bn(g, g.conv("input", 3, 16), 16)])
    s = g.op("GlobalAveragePool", [x])
    s = g.op("Sigmoid", [g.conv(g.op("Relu", [g.conv(s, 16, 4, k=1)]), 4, 16, k=1)])
    x = g.op("Mul", [x, s])
    x = g.op("Relu", [bn(g, g.conv(x, 16, 16, k=3, group=16), 16)])
    x = g.op("Relu", [g.conv(x, 16, 8, k=1)])
    g.head(x, 8)
    model = g.model([1, 3, 8, 8], [1, 5])
    weights = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "Conv"]
    first, squeeze, _, depthwise, pointwise = nodes
    weights[first.input[1]][DEAD] = 0
    weights[first.input[2]][DEAD] = 0
    weights[squeeze.input[1]][:, DEAD] = 0  # the SE reads them through the pool
    weights[depthwise.input[1]][DEAD] = 0
    weights[depthwise.input[2]][DEAD] = 0
    weights[pointwise.input[1]][:, DEAD] = 0
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(weights[t.name], t.name))
    return model


def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return run(session(model), {"input": x})[0]


@pytest.mark.parametrize("round_to,removed", [(None, len(DEAD)), (1, len(DEAD)), (4, 4), (8, 0)])
def test_threshold_zero_removes_dead_channels_and_keeps_the_outputs(round_to, removed):
    """Under a threshold the default round-to is 1: every dead channel goes. A round-to the user gives is kept."""
    model = se_block_with_dead_channels()
    given = {} if round_to is None else {"round_to": round_to}
    result = graphprune.prune(model, method="magnitude", threshold=0.0, **given)
    assert result.report.verification.ok
    group16 = [units for units in result.plan.removed.values() if len(units) and max(units) >= 8]
    assert sum(len(u) for u in group16) == removed  # kept 10 of 16 → rounded up to 12 at 4, to 16 at 8
    assert all(set(u.tolist()) <= set(DEAD) for u in group16)  # never a live channel
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(outputs(result.model, x), outputs(model, x), rtol=1e-5, atol=1e-6)


def test_threshold_says_the_kept_counts_were_rounded_up():
    result = graphprune.prune(se_block_with_dead_channels(), method="magnitude", threshold=0.0, round_to=4)
    assert "kept counts rounded up to multiples of 4" in render_text(result.report)


def test_a_ratio_keeps_the_aligned_default_round_to():
    assert graphprune.PruneConfig(method="magnitude").round_to == 16
    assert graphprune.PruneConfig(method="magnitude", threshold=0.0).round_to == 1
    assert graphprune.PruneConfig(method="magnitude", threshold=0.0, round_to=8).round_to == 8
