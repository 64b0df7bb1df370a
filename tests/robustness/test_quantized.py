"""Quantized and narrow-stored models (issue 17): dynamically / statically quantized nets prune and verify, or freeze
what has no rule with a reason; weights stored as int8 / uint8 / float16 / bfloat16 behind a Cast or a
DequantizeLinear stay stored so, sliced; no pruned file is larger than its original."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from onnx_builder import G  # noqa: E402

WIDTHS = (3, 32, 64, 32)  # wide enough that the weights saved outweigh the plan graphprune records in the file
INPUT = (1, 3, 8, 8)


def float_net(seed: int = 0) -> onnx.ModelProto:
    """Three convolutions (ReLU between) and a Gemm head: what the quantizers get."""
    g = G(seed=seed)
    x = "input"
    for cin, cout in zip(WIDTHS, WIDTHS[1:]):
        x = g.op("Relu", [g.conv(x, cin, cout)])
    g.head(x, WIDTHS[-1], classes=10)
    return g.model(INPUT, (1, 10))


def saved(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def dynamic_net(tmp_path: Path, **options) -> Path:
    """``quantize_dynamic`` of :func:`float_net`: DynamicQuantizeLinear → ConvInteger / MatMulInteger → Cast → Mul."""
    from onnxruntime.quantization import quantize_dynamic

    out = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(saved(float_net(), tmp_path / "float.onnx")), str(out), **options)
    return out


class Calibration:
    def __init__(self):
        self.batches = iter([{"input": np.random.default_rng(i).standard_normal(INPUT, np.float32)} for i in range(4)])

    def get_next(self):
        return next(self.batches, None)


def static_net(tmp_path: Path, fmt: str, activations: str = "QUInt8") -> Path:
    """``quantize_static`` of :func:`float_net`, per channel: QDQ (int8 weights behind DequantizeLinear) or
    QOperator (QLinearConv, and com.microsoft ops for the pool and the head); ``activations`` QInt16 makes 16-bit
    QDQ activations, which onnxruntime's Where (the masked original's) has no kernel for."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    out = tmp_path / f"static_{fmt}_{activations}.onnx"
    quantize_static(str(saved(float_net(), tmp_path / "float.onnx")), str(out), Calibration(),
                    quant_format=getattr(QuantFormat, fmt), per_channel=True,
                    activation_type=getattr(QuantType, activations))
    return out


def cast_net(dtype: int, seed: int = 0) -> onnx.ModelProto:
    """:func:`float_net` with every weight stored as ``dtype`` behind a ``Cast`` to float32; int8 weights times a
    per-channel float scale, as weight-only quantized exports write them."""
    model = float_net(seed)
    g, inits = model.graph, {i.name: i for i in model.graph.initializer}
    weights = [n.input[1] for n in g.node if n.op_type in ("Conv", "Gemm")]
    nodes = []
    for name in weights:
        w = numpy_helper.to_array(inits[name])
        g.initializer.remove(inits[name])
        cast_to = f"{name}/wide"
        if dtype == TensorProto.INT8:
            axes = tuple(range(1, w.ndim))
            scale = np.abs(w).max(axis=axes, keepdims=True) / 127
            stored = numpy_helper.from_array(np.round(w / scale).astype(np.int8), f"{name}/int8")
            g.initializer.append(numpy_helper.from_array(scale.astype(np.float32), f"{name}/scale"))
            nodes.append(helper.make_node("Mul", [cast_to, f"{name}/scale"], [name], name=f"{name}/dequantize"))
        else:
            stored = helper.make_tensor(f"{name}/stored", dtype, w.shape, w.astype(np.float32).ravel()) \
                if dtype == TensorProto.BFLOAT16 else numpy_helper.from_array(w.astype(np.float16), f"{name}/stored")
            cast_to = name
        g.initializer.append(stored)
        nodes.insert(0, helper.make_node("Cast", [stored.name], [cast_to], name=f"{name}/cast", to=TensorProto.FLOAT))
    new = nodes + list(g.node)
    del g.node[:]
    g.node.extend(new)
    onnx.checker.check_model(model)
    return model


def matmul_integer_net(seed: int = 0, saturating: bool = False) -> onnx.ModelProto:
    """A hand-built MatMulInteger MLP with uint8 weights and non-zero per-column zero points (onnxruntime's
    ConvInteger takes only per-tensor ones): a removed input row contributes nothing only where its weight holds
    the column's zero point, which the masked original must put there. ``saturating``: int8 weights at ±127 / −128
    and activations near 255, whose pairwise products saturate onnxruntime's uint8 × int8 kernel on CPUs without
    VNNI (verify/exact.py)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    x, widths = "input", (64, 128, 96, 8)
    for i, (k, n) in enumerate(zip(widths, widths[1:])):
        q, s, z = f"q{i}", f"s{i}", f"z{i}"
        nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [q, s, z], name=f"dql{i}"))
        if saturating:
            w = const(f"w{i}", rng.choice(np.array([-128, 127], np.int8), (k, n)))
            zp = const(f"wz{i}", np.zeros(n, np.int8))
        else:
            w = const(f"w{i}", rng.integers(0, 256, (k, n)).astype(np.uint8))
            zp = const(f"wz{i}", rng.integers(100, 156, n).astype(np.uint8))
        nodes.append(helper.make_node("MatMulInteger", [q, w, z, zp], [f"acc{i}"], name=f"matmul{i}"))
        nodes.append(helper.make_node("Cast", [f"acc{i}"], [f"f{i}"], name=f"cast{i}", to=TensorProto.FLOAT))
        scale = const(f"ws{i}", rng.uniform(1e-3, 2e-3, n).astype(np.float32))
        nodes.append(helper.make_node("Mul", [f"f{i}", scale], [f"m{i}"], name=f"scale{i}"))
        nodes.append(helper.make_node("Mul", [f"m{i}", s], [f"y{i}"], name=f"rescale{i}"))
        x = f"y{i}"
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Tanh", [x], [f"r{i}"], name=f"tanh{i}"))  # signed: a non-zero zero point
            x = f"r{i}"
            if saturating:  # codes near 255: a narrow range far from 0 (its own zero point stays 0)
                nodes.append(helper.make_node("Add", [x, const(f"offset{i}", np.float32(4.0))], [f"o{i}"], name=f"offset{i}"))
                x = f"o{i}"
    nodes.append(helper.make_node("Identity", [x], ["output"], name="out"))
    graph = helper.make_graph(nodes, "matmul_integer", [helper.make_tensor_value_info("input", TensorProto.FLOAT, (4, 64))],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, (4, 8))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def qlinear_matmul_net(seed: int = 0) -> onnx.ModelProto:
    """QuantizeLinear → three QLinearMatMul (int8 weights at ±127 / −128, uint8 activations) → DequantizeLinear:
    onnxruntime's kernel saturates these products on CPUs without VNNI, as MatMulInteger's."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    nodes.append(helper.make_node("QuantizeLinear", ["input", const("s_in", np.float32(0.02)), const("z_in", np.uint8(128))],
                                  ["q_in"], name="quantize"))
    x, s, z, widths = "q_in", "s_in", "z_in", (64, 128, 96, 8)
    for i, (k, n) in enumerate(zip(widths, widths[1:])):
        w = const(f"w{i}", rng.choice(np.array([-128, 127], np.int8), (k, n)))
        ws = const(f"ws{i}", rng.uniform(1e-3, 2e-3, n).astype(np.float32))
        ys, yz = const(f"ys{i}", np.float32(0.05 * (i + 1))), const(f"yz{i}", np.uint8(128))
        nodes.append(helper.make_node("QLinearMatMul", [x, s, z, w, ws, const(f"wz{i}", np.zeros(n, np.int8)), ys, yz],
                                      [f"y{i}"], name=f"matmul{i}"))
        x, s, z = f"y{i}", ys, yz
    nodes.append(helper.make_node("DequantizeLinear", [x, s, z], ["output"], name="dequantize"))
    graph = helper.make_graph(nodes, "qlinear_matmul", [helper.make_tensor_value_info("input", TensorProto.FLOAT, (4, 64))],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, (4, 8))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def lstm_net(tmp_path: Path) -> Path:
    """``quantize_dynamic`` of an LSTM and a MatMul: com.microsoft DynamicQuantizeLSTM, which ONNX shape inference
    does not know (the graph output lost its shape: 'Field shape of type is required but missing')."""
    from onnxruntime.quantization import quantize_dynamic

    g, h = G(seed=2), 8
    y, _, _ = g.op("LSTM", ["input", g.rand(1, 4 * h, 6), g.rand(1, 4 * h, h), g.rand(1, 8 * h)], n_out=3, hidden_size=h)
    s = g.op("Squeeze", [y, g.const([1], np.int64)])
    g.nodes.append(helper.make_node("MatMul", [s, g.rand(h, 5)], ["output"], name="fc"))
    out = tmp_path / "lstm_dynamic.onnx"
    quantize_dynamic(str(saved(g.model((4, 1, 6), (4, 1, 5)), tmp_path / "lstm.onnx")), str(out))
    return out


# ---- checks ------------------------------------------------------------------------------------------------------


def pruned(path: Path, tmp_path: Path, **options):
    """Prune ``path`` (ratio 0.5 of params, round-to 1), save it, and assert what every case needs: verified, fewer
    params, the saved file no larger than the input. Returns (result, saved model)."""
    result = graphprune.prune(path, ratio=0.5, round_to=1, **options)
    report = result.report
    assert report.verification.ok, report.verification.failure
    out = result.save(tmp_path / f"{path.stem}.pruned.onnx")
    assert report.after.params < report.before.params
    assert out.stat().st_size <= path.stat().st_size, (out.stat().st_size, path.stat().st_size)
    assert report.file_bytes["before"] == path.stat().st_size
    assert report.file_bytes["after"] <= report.file_bytes["before"]
    return result, onnx.load(str(out))


def stored_types(model: onnx.ModelProto, min_elements: int = 16) -> dict[str, int]:
    return {i.name: i.data_type for i in model.graph.initializer if int(np.prod(i.dims)) >= min_elements}


def float32_elements(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type == TensorProto.FLOAT)


def assert_storage_kept(original: onnx.ModelProto, out: onnx.ModelProto) -> None:
    """Every narrow weight (int8 / uint8 / float16 / bfloat16) is still stored so, under its name (sliced), and none
    became float32: the output holds no more float32 elements than the original."""
    narrow = {n: t for n, t in stored_types(original).items() if t != TensorProto.FLOAT}
    after = stored_types(out)
    assert narrow and {n: after.get(n) for n in narrow} == narrow
    assert float32_elements(out) <= float32_elements(original)


# ---- dynamic quantization ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights, per_channel", [("QInt8", False), ("QUInt8", True)])
def test_dynamically_quantized_conv_net_prunes_its_integer_convs(tmp_path, weights, per_channel):
    from onnxruntime.quantization import QuantType

    options = {"weight_type": getattr(QuantType, weights), "per_channel": per_channel}
    path = dynamic_net(tmp_path, **options)
    result, out = pruned(path, tmp_path)
    assert_storage_kept(onnx.load(str(path)), out)
    assert not result.report.unmapped_ops
    convs = [n for n in out.graph.node if n.op_type == "ConvInteger"]
    assert len(convs) == 3 and any(n.op_type == "MatMulInteger" for n in out.graph.node)


def test_matmul_integer_with_per_column_zero_points_is_masked_to_them(tmp_path):
    path = saved(matmul_integer_net(), tmp_path / "matmul_integer.onnx")
    result, out = pruned(path, tmp_path)
    assert_storage_kept(onnx.load(str(path)), out)
    shapes = {i.name: tuple(i.dims) for i in out.graph.initializer}
    assert shapes["wz0"][0] == shapes["w0"][1] == shapes["w1"][0] < 128


@pytest.mark.parametrize("build", [lambda: matmul_integer_net(saturating=True), qlinear_matmul_net],
                         ids=["MatMulInteger", "QLinearMatMul"])
def test_saturating_integer_matmuls_are_compared_exactly(tmp_path, build):
    path = saved(build(), tmp_path / "saturating.onnx")
    result, out = pruned(path, tmp_path, seed=3)
    assert_storage_kept(onnx.load(str(path)), out)


def test_dynamically_quantized_lstm_prunes_its_hidden_units_not_a_checker_failure(tmp_path, monkeypatch):
    """DynamicQuantizeLSTM has a rule (channels/rules/recurrent.py) and output shapes (frontends/onnx/proto.py:
    without them every tensor after it froze); its int8 W and R stay int8, sliced with their scales."""
    model = lstm_net(tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    result = graphprune.prune(model, ratio=0.5)
    assert result.report.verification.ok, result.report.verification.failure
    assert not result.report.unmapped_ops
    assert not list(work.iterdir())  # onnxruntime's symbolic inference gives up here and used to dump its model here
    lstm = next(n for n in result.model.graph.node if n.op_type == "DynamicQuantizeLSTM")
    hidden = next(a.i for a in lstm.attribute if a.name == "hidden_size")
    weights = {i.name: i for i in result.model.graph.initializer}
    assert hidden < 8 and weights[lstm.input[2]].dims == [1, hidden, 4 * hidden]
    assert weights[lstm.input[1]].data_type == weights[lstm.input[2]].data_type == TensorProto.INT8
    assert result.report.after.params < result.report.before.params


def test_dynamically_quantized_lstm_with_a_nonzero_weight_zero_point_is_frozen_with_its_reason(tmp_path):
    """A removed weight entry set to 0 contributes (0 − zero point): the hidden units stay, said why."""
    path = lstm_net(tmp_path)
    model = onnx.load(str(path))
    lstm = next(n for n in model.graph.node if n.op_type == "DynamicQuantizeLSTM")
    zero_point = next(i for i in model.graph.initializer if i.name == lstm.input[11])
    zero_point.CopyFrom(numpy_helper.from_array(np.full(tuple(zero_point.dims), 3, np.int8), zero_point.name))
    result = graphprune.prune(saved(model, tmp_path / "zp.onnx"), ratio=0.5)
    assert result.report.verification.ok, result.report.verification.failure
    lstm = next(n for n in result.model.graph.node if n.op_type == "DynamicQuantizeLSTM")
    assert next(a.i for a in lstm.attribute if a.name == "hidden_size") == 8
    assert any("zero point is not a constant 0" in reason for group in result.channels.groups if group.frozen
               for reason in group.reasons(3))


# ---- static quantization -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("activations", ["QUInt8", "QInt16"])
def test_qdq_model_keeps_int8_weights_behind_dequantize_linear(tmp_path, activations):
    path = static_net(tmp_path, "QDQ", activations)
    result, out = pruned(path, tmp_path)
    assert_storage_kept(onnx.load(str(path)), out)
    assert not any(i.data_type == TensorProto.FLOAT and len(i.dims) == 4 for i in out.graph.initializer)


def test_qoperator_model_prunes_qlinear_convs_and_freezes_microsoft_ops_with_a_reason(tmp_path):
    path = static_net(tmp_path, "QOperator")
    result, out = pruned(path, tmp_path)
    assert_storage_kept(onnx.load(str(path)), out)
    assert any(op.startswith("QLinearGlobalAveragePool") for op in result.report.unmapped_ops)
    frozen = [why for g in result.report.groups for why in g.frozen_because]
    assert any("com.microsoft::" in why for why in frozen)


# ---- weights stored narrow behind a Cast --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [TensorProto.INT8, TensorProto.FLOAT16, TensorProto.BFLOAT16],
                         ids=["int8", "float16", "bfloat16"])
def test_weights_behind_a_cast_stay_stored_narrow(tmp_path, dtype):
    path = saved(cast_net(dtype), tmp_path / "cast.onnx")
    result, out = pruned(path, tmp_path)
    assert_storage_kept(onnx.load(str(path)), out)
    assert sum(n.op_type == "Cast" for n in out.graph.node) == 4
    report = result.report.to_dict()
    assert report["file_bytes"]["ratio"] < 0.8


def test_report_shows_the_file_size(tmp_path):
    result, _ = pruned(saved(cast_net(TensorProto.FLOAT16), tmp_path / "fp16.onnx"), tmp_path)
    assert json.loads(result.report.to_json())["file_bytes"]["after"] == result.report.file_bytes["after"]
    assert "file size" in str(result.report)


@pytest.mark.parametrize("build, uncounted", [(lambda p: dynamic_net(p), 0), (lambda p: static_net(p, "QOperator"), 32 * 10),
                                              (lstm_net, 0)],
                         ids=["ConvInteger/MatMulInteger", "QLinearConv", "DynamicQuantizeLSTM"])
def test_integer_ops_count_the_macs_of_the_float_model_they_came_from(tmp_path, build, uncounted):
    """An integer linear op does its float op's multiply-accumulates: a quantized model reports the MACs of the
    float model it was quantized from (it reported 0: ddddocr's int8 recogniser). ``uncounted``: QOperator's head
    is a com.microsoft QGemm, which has no rule and is not counted (32 × 10)."""
    from graphprune.api import inspect

    path = build(tmp_path)
    source = tmp_path / ("lstm.onnx" if "lstm" in path.name else "float.onnx")
    assert inspect(str(path)).cost.macs == inspect(str(source)).cost.macs - uncounted > 0
