"""SiPP (--method sipp): weight sensitivity, sparsity, and its own oracle (original with the same weights zeroed)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphprune
from graphprune.methods.edits import WeightEdit
from graphprune.verify.edits import edited_model, verify_edits
from graphprune.methods.sensitivity import Layer, weight_sensitivity
from models import REFERENCE_MODELS


def test_weight_sensitivity_of_a_gemm_by_hand():
    # Gemm with transB=1: W (2 × 3) as stored; one point a = [1, 2, 0.5]
    w = np.array([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]], np.float32)
    layer = Layer("fc", "Gemm", "x", 1, "w", 1)
    rows = layer.rows(np.array([[1.0, 2.0, 0.5]], np.float32))
    s = weight_sensitivity(rows, layer.matrix(w))
    np.testing.assert_allclose(layer.unmatrix(s, w.shape), [[0.2, 0.8, 1.0], [0.25, 1.0, 0.75]], rtol=1e-6)
    # the same layer stored untransposed (transB=0): the result comes back in the stored layout
    layer_t = Layer("fc", "Gemm", "x", 1, "w", 0)
    s_t = weight_sensitivity(rows, layer_t.matrix(w.T))
    np.testing.assert_allclose(layer_t.unmatrix(s_t, w.T.shape), [[0.2, 0.25], [0.8, 1.0], [1.0, 0.75]], rtol=1e-6)


@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_deterministic_sparsity_and_shapes(exported, ratio):
    path = exported("resnet_basic", "legacy")
    result = graphprune.prune(path, method="sipp", ratio=ratio, max_points=4)
    v = result.report.verification
    assert v.ok, v.failure
    assert v.checks["edited_original"] == "ok" and v.checks["weights"] == "ok"
    stats = next(p for p in result.report.passes if p.name == "SiPPSparsify").stats
    assert stats["sparsity"] == pytest.approx(ratio, abs=1e-3)
    before = {i.name: tuple(i.dims) for i in onnx.load(str(path)).graph.initializer}
    after = {i.name: tuple(i.dims) for i in result.model.graph.initializer}
    assert before == after  # no shape shrinks
    assert result.report.after.params == result.report.before.params
    assert any("shapes unchanged" in n for n in result.report.notes)


@pytest.mark.parametrize("mode", ["randomized", "hybrid"])
def test_randomized_and_hybrid_verify(exported, mode):
    result = graphprune.prune(exported("vgg", "legacy"), method="sipp", sipp_mode=mode, ratio=0.5, max_points=4, seed=2)
    assert result.report.verification.ok, result.report.verification.failure
    stats = next(p for p in result.report.passes if p.name == "SiPPSparsify").stats
    assert stats["epsilon"] > 0
    assert 0.3 < stats["sparsity"] < 0.7  # the budget holds in expectation


def test_the_oracle_catches_a_wrong_weight(exported):
    from graphprune.passes.calibrate import Calibrate
    from graphprune.passes.sipp import SiPPSparsify
    from graphprune.pipeline.state import PruneState

    source = graphprune.api.load(exported("plain_cnn", "legacy"))
    state = SiPPSparsify(ratio=0.5, max_points=4)(Calibrate(max_points=4)(PruneState.start(source)))
    edits = state.weight_edits
    assert edits and verify_edits(source.model, state.model, edits, source.input_shapes).ok
    # one more weight zeroed in the candidate than the edits say: the outputs differ
    bad = onnx.ModelProto()
    bad.CopyFrom(state.model)
    name = sorted(edits)[0]
    init = next(i for i in bad.graph.initializer if i.name == name)
    values = numpy_helper.to_array(init).copy()
    values[np.unravel_index(np.argmax(np.abs(values)), values.shape)] = 0
    init.CopyFrom(numpy_helper.from_array(values, name))
    v = verify_edits(source.model, bad, edits, source.input_shapes)
    assert not v.ok and v.checks["edited_original"] != "ok"
    # a weight changed that no edit names
    other = next(i for i in bad.graph.initializer if i.name not in edits and numpy_helper.to_array(i).size > 1)
    arr = numpy_helper.to_array(other).copy()
    arr.flat[0] += 1
    other.CopyFrom(numpy_helper.from_array(arr, other.name))
    assert "no edit names it" in verify_edits(source.model, bad, edits, source.input_shapes).checks["weights"]


def test_edited_model_builds_the_oracle_with_nodes():
    from models.handbuilt import HANDBUILT_MODELS

    model = HANDBUILT_MODELS["matmul_mlp"]()
    name = next(i.name for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 2)
    shape = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name)).shape
    keep = np.random.default_rng(0).random(shape) > 0.5
    oracle = edited_model(model, {name: WeightEdit(keep, np.full(shape, 2.0, np.float32))})
    ops = [n.op_type for n in oracle.graph.node]
    assert ops.count("Where") == 1 and ops.count("Mul") == 1
    assert {i.name for i in oracle.graph.initializer} >= {i.name for i in model.graph.initializer}


@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_sipp_on_reference_models(exported, name):
    result = graphprune.prune(exported(name, "legacy_bn"), method="sipp", ratio=0.5, max_points=2)
    assert result.report.verification.ok, result.report.verification.failure
    stats = next(p for p in result.report.passes if p.name == "SiPPSparsify").stats
    assert stats["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_graphprune_verify_reads_the_stored_edits(exported, tmp_path):
    import json

    from graphprune.verify.metadata import EDITS_KEY

    path = exported("plain_cnn", "legacy")
    out = graphprune.prune(path, method="sipp", ratio=0.5, max_points=4).save(tmp_path / "sparse.onnx")
    v = graphprune.verify_files(path, out)
    assert v.ok, v.failure
    model = onnx.load(str(out))
    name = json.loads({p.key: p.value for p in model.metadata_props}[EDITS_KEY])["weights"][0]
    init = next(i for i in model.graph.initializer if i.name == name)
    values = numpy_helper.to_array(init).copy()
    values.flat[np.flatnonzero(values)[0]] *= 2  # a kept weight changed: not "original or zero" any more
    init.CopyFrom(numpy_helper.from_array(values, name))
    onnx.save(model, str(tmp_path / "tampered.onnx"))
    assert not graphprune.verify_files(path, tmp_path / "tampered.onnx").ok
