"""What models from the wild do that the reference models do not (benchmarks/wild_models.py, issue 17), each
rebuilt small in code: the ONNX files that ship inside PyPI packages (OCR, voice activity, wake words, layout)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

import graphprune

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from onnx_builder import G  # noqa: E402


def wrong_output_rank() -> onnx.ModelProto:
    """ddddocr's recogniser in small: its last Reshape's shape is computed from ``Shape`` (so ONNX's inference cannot
    see the rank, and the file passes strict inference), and the output is declared rank 2 while it is rank 3."""
    g = G(opset=12)
    y = g.conv(g.op("Relu", [g.conv("input", 4, 16)]), 16, 6)
    batch = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [y]), g.const(0, np.int64)], axis=0)], axes=[0])
    spec = g.op("Concat", [batch, g.const([6], np.int64), g.const([-1], np.int64)], axis=0)
    g.nodes.append(helper.make_node("Reshape", [y, spec], ["output"], name="reshape_out"))
    return g.model((1, 4, 8, "w"), (1, "n"))


def test_a_wrongly_declared_output_rank_does_not_break_the_pruned_model(tmp_path):
    """Folding made the Reshape's shape a constant, which contradicts the declaration: strict inference of the
    emitted model failed ("emitted model is inconsistent … differ in rank", exit 4). The ops decide the shape."""
    model = wrong_output_rank()
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    result = graphprune.prune(path, ratio=0.5, input_shapes={"input": (1, 4, 8, 8)})
    assert result.report.verification.ok and result.report.units_removed > 0
    out = tmp_path / "pruned.onnx"
    onnx.save(result.model, str(out))
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 10)).astype(np.float32)  # the dynamic width, restored
    assert ort.InferenceSession(str(out)).run(None, {"input": x})[0].shape == (1, 6, 80)
