"""Constants an exporter merged because their values are equal are split before analysis; real ties stay."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

import graphprune
from graphprune.frontends.onnx.untie import split_uniform_shared

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_builder import G  # noqa: E402


def two_convs_sharing_a_bias(values: np.ndarray) -> onnx.ModelProto:
    """conv(3→16) → ReLU → conv(16→16) → ReLU → head, both convs reading one bias tensor (as dynamo writes it)."""
    g = G(seed=1)
    bias = g.const(values, name="shared_bias")
    x = g.op("Relu", [g.op("Conv", ["input", g.rand(16, 3, 3, 3), bias], kernel_shape=[3, 3], pads=[1] * 4)])
    x = g.op("Relu", [g.op("Conv", [x, g.rand(16, 16, 3, 3), bias], kernel_shape=[3, 3], pads=[1] * 4)])
    g.head(x, 16)
    return g.model([1, 3, 8, 8], [1, 5])


def prunable_sizes(model: onnx.ModelProto) -> list[int]:
    return sorted(g.n_units for g in graphprune.inspect(model).channels.prunable)


def test_a_merged_zero_bias_does_not_couple_unrelated_layers():
    model = two_convs_sharing_a_bias(np.zeros(16))
    assert prunable_sizes(model) == [16, 16]  # was one group of 16: both convs' outputs tied by the bias
    result = graphprune.prune(model, ratio=0.5, round_to=1, budget="channels")
    assert result.report.verification.ok and len(result.plan.removed) == 2


def test_a_real_tie_stays_one_group():
    model = two_convs_sharing_a_bias(np.linspace(-1, 1, 16))
    assert prunable_sizes(model) == [16]


def test_split_copies_each_further_use_and_keeps_the_values():
    model = two_convs_sharing_a_bias(np.ones(16))
    split_model, split = split_uniform_shared(model)
    assert split == ("shared_bias",)
    biases = [n.input[2] for n in split_model.graph.node if n.op_type == "Conv"]
    assert biases[0] == "shared_bias" and biases[1] != "shared_bias"
    values = {t.name: numpy_helper.to_array(t) for t in split_model.graph.initializer}
    np.testing.assert_array_equal(values[biases[0]], values[biases[1]])
    onnx.checker.check_model(split_model)
