"""Verification allows for the oracle's own float rounding, measured, and for nothing else.

A fixed rtol / atol on the outputs cannot know how much a model amplifies rounding inside: after a large activation
offset, ONNX Runtime's LayerNormalization kernel and the oracle's explicit two-pass form of a LayerNorm over the
kept channels differ far above 1e-4 although the pruned model is right (a PP-OCR recogniser failed so). The
allowance is measured on the model and the data, so a real error still fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

import graphprune
from graphprune.verify.result import WITHIN_ROUNDING, close

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_builder import G  # noqa: E402


def offset_layernorm_mlp(offset: float, c: int = 64) -> onnx.ModelProto:
    """Three MLP blocks, each LayerNorm reading activations shifted by ``offset`` (its hidden width is pruned
    under the LayerNorm: the renormalised oracle)."""
    g = G(seed=0)
    x = g.op("MatMul", ["input", g.const(g.rng.standard_normal((32, c)) / 6)])
    for _ in range(3):
        x = g.op("Add", [x, g.const(offset + g.rng.standard_normal(c))])
        x = g.op("LayerNormalization", [x, g.const(1 + 0.1 * g.rng.standard_normal(c)),
                                        g.const(0.1 * g.rng.standard_normal(c))], axis=-1)
        x = g.op("Relu", [g.op("MatMul", [x, g.const(g.rng.standard_normal((c, 4 * c)) / 8)])])
        x = g.op("MatMul", [x, g.const(g.rng.standard_normal((4 * c, c)) / 16)])
    g.nodes.append(helper.make_node("MatMul", [x, g.const(g.rng.standard_normal((c, 10)))], ["output"]))
    return g.model([1, 16, 32], [1, 16, 10])


def test_close_allows_the_given_rounding_and_no_more():
    e, g = [np.zeros(4, np.float32)], [np.full(4, 3e-4, np.float32)]
    assert not close(e, g, 1e-4, 1e-5)[0]
    assert close(e, g, 1e-4, 1e-5, [4e-4])[0]
    assert not close(e, g, 1e-4, 1e-5, [2e-4])[0]


def test_plain_models_pass_without_any_allowance():
    r = graphprune.prune(offset_layernorm_mlp(0.0), ratio=0.5)
    assert r.report.verification.checks["masked_original"] == "ok" and r.plan.renormalised


def test_rounding_of_the_written_out_norm_is_allowed_for_and_said(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(offset_layernorm_mlp(300.0), str(src))
    r = graphprune.prune(src, ratio=0.5)
    check = r.report.verification.checks["masked_original"]
    assert r.report.verification.ok and check.startswith(WITHIN_ROUNDING), check
    assert r.report.verification.max_error > 1e-4  # above the plain tolerance: the allowance was needed
    out = r.save(tmp_path / "small.onnx")
    assert graphprune.verify_files(src, out).ok

    tampered = onnx.load(str(out))  # a real error, of a few percent in one kept weight, must still fail
    w = next(t for t in tampered.graph.initializer if len(t.dims) == 2 and t.dims[1] == 10)
    values = numpy_helper.to_array(w).copy()
    values[0] *= 1.05
    w.CopyFrom(numpy_helper.from_array(values, w.name))
    onnx.save(tampered, str(tmp_path / "tampered.onnx"))
    v = graphprune.verify_files(src, tmp_path / "tampered.onnx")
    assert not v.ok and "exceeds" in v.checks["masked_original"]
