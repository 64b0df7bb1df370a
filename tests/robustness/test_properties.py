"""Property: any graph built from supported ops, pruned at any ratio and policy, equals its masked original."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphprune

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from onnx_builder import G  # noqa: E402

BLOCKS = ["conv", "dwconv", "gconv", "act", "bn", "residual", "concat", "split", "slice", "pool", "se", "shuffle_free"]


def build(blocks: list[str], widths: list[int], seed: int):
    g = G(seed=seed)
    x, c = g.conv("input", 3, 8), 8
    history = [(x, c)]
    for kind, w in zip(blocks, widths):
        if kind == "conv":
            x, c = g.conv(x, c, w, k=1 + 2 * (w % 2)), w
        elif kind == "dwconv":
            x = g.conv(x, c, c, group=c)
        elif kind == "gconv" and c % 2 == 0:
            x = g.conv(x, c, c, group=2)
        elif kind == "act":
            x = g.op(["Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSwish"][w % 5], [x])
        elif kind == "bn":
            x = g.op("BatchNormalization", [x, g.const(np.linspace(0.5, 1.5, c)), g.rand(c), g.rand(c),
                                            g.const(np.linspace(0.5, 2, c))])
        elif kind == "residual":
            same = [t for t, tc in history if tc == c and t != x]
            if same:
                x = g.op("Add", [x, same[-1]])
        elif kind == "concat":
            other, oc = history[w % len(history)]
            if other != x:
                x, c = g.op("Concat", [x, other], axis=1), c + oc
        elif kind == "split" and c >= 3:
            first = 1 + w % (c - 1)
            a, b = g.op("Split", [x, g.const([first, c - first], np.int64)], n_out=2, axis=1)
            x = g.op("Concat", [g.op("Relu", [b]), a], axis=1)
        elif kind == "slice" and c >= 3:
            start = w % (c - 1)
            x = g.op("Slice", [x, g.const([start], np.int64), g.const([c], np.int64), g.const([1], np.int64)])
            c = c - start
        elif kind == "pool":
            x = g.op("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        elif kind == "se":
            s = g.op("GlobalAveragePool", [x])
            s = g.op("Sigmoid", [g.conv(g.op("Relu", [g.conv(s, c, 4, k=1)]), 4, c, k=1)])
            x = g.op("Mul", [x, s])
        history.append((x, c))
    g.head(x, c)
    return g.model((1, 3, 8, 8), (1, 5))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=8),
       widths=st.lists(st.integers(2, 12), min_size=8, max_size=8),
       seed=st.integers(0, 1000),
       ratio=st.floats(0.0, 0.9),
       scope=st.sampled_from(["local", "global"]),
       round_to=st.sampled_from([1, 2, 4]),
       method=st.sampled_from(["magnitude", "random"]))
def test_random_graphs_verify_against_the_masked_original(blocks, widths, seed, ratio, scope, round_to, method):
    model = build(blocks, widths, seed)
    result = graphprune.prune(model, ratio=ratio, scope=scope, round_to=round_to, method=method, seed=seed)
    assert result.report.verification.ok, result.report.verification.failure
    assert result.report.after.params <= result.report.before.params
