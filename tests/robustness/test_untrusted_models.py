"""Untrusted or unusual models: external data, subgraphs, opsets, precisions, QDQ, dynamic shapes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import graphprune
from graphprune.errors import ModelLoadError
from graphprune.channels.rules import Space
from graphprune.runtime import max_opset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from onnx_builder import G  # noqa: E402


def small(opset: int = 17) -> onnx.ModelProto:
    g = G(opset=opset)
    a = g.op("Relu", [g.conv("input", 4, 16)])
    b = g.conv(a, 16, 6)
    g.head(b, 6)
    return g.model((1, 4, 8, 8), (1, 5))


def with_external_data(model: onnx.ModelProto, folder: Path, location: str) -> Path:
    """Save ``model`` with its largest initializer pointing at ``location`` (relative to ``folder``)."""
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    m = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for init in m.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = location
    path = folder / "evil.onnx"
    onnx.save(m, str(path))
    return path


def test_external_data_inside_the_folder_is_read(tmp_path):
    onnx.save(small(), str(tmp_path / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    r = graphprune.prune(tmp_path / "m.onnx", ratio=0.5)
    assert r.report.verification.ok


@pytest.mark.parametrize("location", ["/etc/passwd", "../outside.bin", "sub/../../outside.bin", "link.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    os.symlink(tmp_path / "outside.bin", folder / "link.bin")
    path = with_external_data(small(), folder, location)
    with pytest.raises(ModelLoadError, match="escapes the model's folder"):
        graphprune.prune(path, ratio=0.5)


@pytest.mark.parametrize("opset", range(9, max_opset() + 1))
def test_every_opset_onnxruntime_runs(opset):
    r = graphprune.prune(small(opset), ratio=0.5)
    assert r.report.verification.ok and r.report.units_removed > 0


def test_opset_newer_than_onnxruntime_is_refused_clearly():
    m = small(17)
    m.opset_import[0].version = max_opset() + 1
    if max_opset() + 1 > onnx.defs.onnx_opset_version():
        pytest.skip("this onnxruntime runs every opset onnx knows")
    with pytest.raises(ModelLoadError, match="newer than this onnxruntime"):
        graphprune.prune(m, ratio=0.5)


def test_unknown_custom_domain_is_refused_or_frozen():
    g = G()
    a = g.conv("input", 4, 8)
    b = g.op("FancyAct", [a], domain="com.vendor")
    g.head(g.conv(b, 8, 6), 6)
    m = g.model((1, 4, 8, 8), (1, 5), extra_opsets=[("com.vendor", 1)])
    with pytest.raises(graphprune.GraphPruneError):
        graphprune.prune(m, ratio=0.5)  # onnxruntime cannot run it, so it cannot be verified: a clear error


def test_if_subgraph_freezes_what_it_captures():
    g = G()
    a = g.op("Relu", [g.conv("input", 4, 8)])
    branch_out = helper.make_tensor_value_info("br", TensorProto.FLOAT, None)
    then_g = helper.make_graph([helper.make_node("Relu", [a], ["br"])], "then", [], [branch_out])
    else_g = helper.make_graph([helper.make_node("Sigmoid", [a], ["br"])], "else", [], [branch_out])
    cond = g.op("Greater", [g.op("ReduceMean", ["input"], keepdims=0), g.const(-100.0)])  # data-dependent
    y = g.op("If", [cond], then_branch=then_g, else_branch=else_g)
    c2 = g.conv(g.op("Relu", [g.conv(y, 8, 16)]), 16, 6)
    g.head(c2, 6)
    m = g.model((1, 4, 8, 8), (1, 5))
    r = graphprune.prune(m, ratio=0.5)
    assert r.report.verification.ok
    assert r.channels.group(Space(a, 1)).frozen
    assert r.report.units_removed > 0  # the convs after the If are still pruned


def test_float16_model():
    g = G()
    x = g.op("Cast", ["input"], to=TensorProto.FLOAT16)
    w1 = g.const(g.rng.standard_normal((16, 4, 3, 3)) * 0.3, np.float16)
    w2 = g.const(g.rng.standard_normal((6, 16, 3, 3)) * 0.3, np.float16)
    a = g.op("Relu", [g.op("Conv", [x, w1], pads=[1] * 4)])
    b = g.op("Conv", [a, w2], pads=[1] * 4)
    g.head(g.op("Cast", [b], to=TensorProto.FLOAT), 6)
    r = graphprune.prune(g.model((1, 4, 8, 8), (1, 5)), ratio=0.5)
    assert r.report.verification.ok and r.report.units_removed > 0


def test_qdq_int8_model():
    g = G()
    def qdq(t, scale=0.05):
        q = g.op("QuantizeLinear", [t, g.const(scale), g.const(0, np.int8)])
        return g.op("DequantizeLinear", [q, g.const(scale), g.const(0, np.int8)])

    def qconv(x, cin, cout):
        w = g.const(g.rng.integers(-60, 60, (cout, cin, 3, 3)), np.int8)
        scales = g.const(np.linspace(0.002, 0.004, cout))
        wd = g.op("DequantizeLinear", [w, scales, g.const(np.zeros(cout), np.int8)], axis=0)
        return g.op("Conv", [x, wd, g.rand(cout)], pads=[1] * 4)

    a = g.op("Relu", [qconv(qdq("input"), 4, 16)])
    b = qconv(qdq(a), 16, 6)
    g.head(b, 6)
    r = graphprune.prune(g.model((1, 4, 8, 8), (1, 5)), ratio=0.5)
    assert r.report.verification.ok and r.report.units_removed > 0
    ints = [i for i in r.model.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) == 4]
    assert any(i.dims[0] < 16 or i.dims[1] < 16 for i in ints)


@pytest.mark.parametrize("dims", [[0, 4, 8, 8], [1, 4, 0, 8]])
def test_zero_size_dims_are_refused(dims):
    m = small()
    for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim, dims):
        d.dim_value = v
    with pytest.raises(graphprune.GraphPruneError):
        graphprune.prune(m, ratio=0.5)


def test_a_model_that_outputs_only_nan_cannot_be_verified():
    g = G()
    a = g.conv("input", 4, 16)
    bn = g.op("BatchNormalization", [a, g.const(np.ones(16)), g.rand(16), g.rand(16), g.const(-np.ones(16))],
              epsilon=-1.0)  # sqrt of a negative variance: NaN everywhere
    g.head(g.conv(bn, 16, 6), 6)
    with pytest.raises(ModelLoadError, match="only NaN or infinity"):
        graphprune.prune(g.model((1, 4, 8, 8), (1, 5)), ratio=0.5)
