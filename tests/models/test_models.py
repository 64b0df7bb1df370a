"""Tests for the reference models package (``models/``).

Torch-dependent tests are skipped when torch is not installed; the
hand-built ONNX models only need onnx + onnxruntime.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.handbuilt import HANDBUILT_MODELS, input_shape

requires_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                    reason="torch not installed")

EXPECTED_REFERENCE = {
    "plain_cnn", "resnet_basic", "resnet_bottleneck", "vgg", "mobilenet_v2",
    "densenet_block", "inception_block", "grouped_split", "transformer_mlp",
    "shufflenet_unit", "attention_block", "packed_attention", "lstm_classifier", "gru_classifier",
}
# dynamo export is ~1 s per model: run a representative few by default.
DYNAMO_FAST = {"resnet_basic", "grouped_split", "transformer_mlp"}


def _rand(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _run_onnx(path_or_model, x: np.ndarray) -> np.ndarray:
    data = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) \
        else str(path_or_model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(["output"], {"input": x})[0]


def _check_export(name: str, tmp_path, dynamo: bool) -> onnx.ModelProto:
    import torch

    from models import REFERENCE_MODELS, export_onnx

    spec = REFERENCE_MODELS[name]
    path = export_onnx(spec, tmp_path / f"{name}.onnx", dynamo=dynamo)
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # no external data
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert tuple(dims) == spec.input_shape  # static shapes

    x = _rand(spec.input_shape)
    with torch.no_grad():
        expected = spec.build()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run_onnx(path, x), expected, rtol=1e-4, atol=1e-5)
    return proto


# --------------------------------------------------------------------------- registry


@requires_torch
def test_registry_contents():
    from models import BENCHMARK_MODELS, REFERENCE_MODELS, ModelSpec

    assert set(REFERENCE_MODELS) == EXPECTED_REFERENCE
    assert set(BENCHMARK_MODELS) == {"resnet50"}
    assert BENCHMARK_MODELS["resnet50"].input_shape == (1, 3, 224, 224)
    for key, spec in {**REFERENCE_MODELS, **BENCHMARK_MODELS}.items():
        assert isinstance(spec, ModelSpec) and spec.name == key and spec.description
    with pytest.raises(AttributeError):
        REFERENCE_MODELS["vgg"].name = "other"  # frozen


# --------------------------------------------------------------------------- torch models


@requires_torch
@pytest.mark.parametrize("name", sorted(EXPECTED_REFERENCE))
def test_build_forward_and_fx_trace(name):
    import torch

    from models import REFERENCE_MODELS

    spec = REFERENCE_MODELS[name]
    model = spec.build()
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) < 200_000
    x = torch.from_numpy(_rand(spec.input_shape))
    with torch.no_grad():
        y = model(x)
        # seeded: a second build gives the same function
        torch.testing.assert_close(spec.build()(x), y)
    assert y.shape == (spec.input_shape[0], 10) and torch.isfinite(y).all()
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), y)


@requires_torch
@pytest.mark.parametrize("name", sorted(EXPECTED_REFERENCE))
def test_export_legacy_matches_torch(name, tmp_path):
    proto = _check_export(name, tmp_path, dynamo=False)
    assert proto.opset_import[0].version == 17


@requires_torch
@pytest.mark.parametrize("name", [
    n if n in DYNAMO_FAST else pytest.param(n, marks=pytest.mark.slow)
    for n in sorted(EXPECTED_REFERENCE)
])
def test_export_dynamo_matches_torch(name, tmp_path):
    proto = _check_export(name, tmp_path, dynamo=True)
    assert proto.opset_import[0].version >= 18


@requires_torch
def test_export_module_requires_shape(tmp_path):
    from models import export_onnx
    from models.plain import plain_cnn

    with pytest.raises(ValueError):
        export_onnx(plain_cnn(), tmp_path / "x.onnx")
    path = export_onnx(plain_cnn(), tmp_path / "sub" / "x.onnx", (2, 3, 32, 32))
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 32, 32]


@requires_torch
def test_export_cli(tmp_path, capsys):
    from models.export import main

    assert main(["--out", str(tmp_path), "--only", "vgg", "plain_cnn"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain_cnn.onnx", "vgg.onnx"]
    assert "vgg.onnx" in capsys.readouterr().out


@requires_torch
def test_resnet50_param_count():
    from models import BENCHMARK_MODELS

    model = BENCHMARK_MODELS["resnet50"].build()
    n = sum(p.numel() for p in model.parameters())
    assert 25_400_000 < n < 25_700_000  # torchvision resnet50: 25,557,032


# --------------------------------------------------------------------------- hand-built ONNX


@pytest.mark.parametrize("name", sorted(HANDBUILT_MODELS))
def test_handbuilt_checks_and_runs(name):
    model = HANDBUILT_MODELS[name]()
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    y = _run_onnx(model, _rand(input_shape(model)))
    assert np.isfinite(y).all()
    # deterministic weights
    assert HANDBUILT_MODELS[name]().SerializeToString() == model.SerializeToString()


def test_handbuilt_patterns():
    ops = {name: [n.op_type for n in fn().graph.node] for name, fn in HANDBUILT_MODELS.items()}
    assert {"BatchNormalization", "Concat", "Gemm"} <= set(ops["concat_skip"])
    split = next(n for n in HANDBUILT_MODELS["split_unequal"]().graph.node if n.op_type == "Split")
    assert len(split.input) == 2  # sizes given as a tensor input
    assert {"Slice", "Add", "Concat"} <= set(ops["split_unequal"])
    cw = HANDBUILT_MODELS["constant_weights_depthwise"]()
    conv1 = next(n for n in cw.graph.node if n.name == "conv1")
    assert conv1.input[1] not in {t.name for t in cw.graph.initializer}
    assert any(n.op_type == "Constant" and n.output[0] == conv1.input[1] for n in cw.graph.node)
    dw = next(n for n in cw.graph.node if n.name == "dwconv")
    assert onnx.helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == 8
    assert ops["matmul_mlp"] == ["MatMul", "Add", "Relu", "MatMul", "Add"]
    x = _rand((1, 4, 16))
    assert _run_onnx(HANDBUILT_MODELS["matmul_mlp"](), x).shape == (1, 4, 16)
