"""The low-rank pass: exact at full rank, equal to the truncated original at rank r, cheaper by a real margin or
skipped, and dynamic dimensions kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.methods import lowrank as lr
from graphprune.api import load
from graphprune.errors import UsageError
from graphprune.passes.lowrank import LowRank
from graphprune.runtime import run, seeded_inputs, session
from graphprune.pipeline.state import PruneState
from graphprune.verify.result import close
from graphprune.verify.lowrank import layers_of, truncated_original, verify_lowrank

RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------- one-layer models


def model_of(node: onnx.NodeProto, x_shape, y_shape, inits: dict[str, np.ndarray], opset: int = 17):
    y_dims = None if y_shape is None else list(y_shape)
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_dims)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def conv_model(cin=6, cout=8, k=(3, 3), hw=(9, 11), bias=True, group=1, **attrs):
    inits = {"w": rand(cout, cin // group, *k)}
    if bias:
        inits["b"] = rand(cout)
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y"], name="conv", group=group, **attrs)
    x_shape = (2, cin, *hw)
    y = run(session(model_of(node, x_shape, None, inits)), {"x": np.zeros(x_shape, np.float32)})[0]
    return model_of(node, x_shape, y.shape, inits)


CONVS = {
    "1x1": dict(k=(1, 1)),
    "3x3": dict(pads=[1, 1, 1, 1]),
    "3x3_nobias": dict(bias=False, pads=[1, 1, 1, 1]),
    "strided": dict(strides=[2, 2], pads=[1, 1, 1, 1]),
    "strided_rect": dict(k=(3, 5), strides=[2, 3], pads=[1, 2, 0, 1]),
    "dilated": dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
    "unpadded": dict(),
    "same_upper_strided": dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    "same_lower": dict(k=(2, 2), auto_pad="SAME_LOWER"),
    "valid": dict(auto_pad="VALID", strides=[1, 2]),
    "grouped": dict(group=2, pads=[1, 1, 1, 1]),
    "grouped_nobias": dict(group=2, bias=False, strides=[2, 1]),
}


def gemm_model(trans_a=0, trans_b=1, bias=True, alpha=1.0, beta=1.0, m=5, k=12, n=10, opset=17):
    inits = {"w": rand(n, k) if trans_b else rand(k, n)}
    if bias:
        inits["c"] = rand(n)
    node = helper.make_node("Gemm", ["x", "w"] + (["c"] if bias else []), ["y"], name="fc", transA=trans_a,
                            transB=trans_b, alpha=alpha, beta=beta)
    return model_of(node, (k, m) if trans_a else (m, k), (m, n), inits, opset)


def matmul_model(weight_first=False):
    if weight_first:  # W (10, 12) @ X (3, 12, 7)
        node = helper.make_node("MatMul", ["w", "x"], ["y"], name="mm")
        return model_of(node, (3, 12, 7), (3, 10, 7), {"w": rand(10, 12)})
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    return model_of(node, (2, 3, 12), (2, 3, 10), {"w": rand(12, 10)})


MODELS = {**{f"conv_{k}": (lambda v=v: conv_model(**v)) for k, v in CONVS.items()},
          "gemm_transB_bias": lambda: gemm_model(),
          "gemm_plain_nobias": lambda: gemm_model(trans_b=0, bias=False),
          "gemm_transA_alpha_beta": lambda: gemm_model(trans_a=1, alpha=0.5, beta=2.0),
          "gemm_opset9": lambda: gemm_model(opset=9),
          "matmul": lambda: matmul_model(),
          "matmul_weight_first": lambda: matmul_model(weight_first=True)}


def outputs(model, src):
    return run(session(model), seeded_inputs(src.model, src.input_shapes, 0))


def decompose(src, **options):
    state = PruneState.start(src)
    return state, LowRank(**options)(state)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_full_rank_equals_original(name, scheme):
    src = load(MODELS[name]())
    state, out = decompose(src, rank_ratio=1.0, scheme=scheme, only_if_cheaper=False)
    assert out.history[-1].modified
    ok, err = close(outputs(state.model, src), outputs(out.model, src), rtol=1e-4, atol=1e-5)
    assert ok, f"max error {err}"
    names = {n.name for n in out.model.graph.node}
    original = src.model.graph.node[0].name
    assert names == {f"{original}/lowrank_a", f"{original}/lowrank_b"}
    onnx.checker.check_model(out.model, full_check=True)
    assert [o.name for o in out.model.graph.output] == ["y"]


def independent_truncation(model: onnx.ModelProto, rank: int, scheme: str) -> onnx.ModelProto:
    """The truncated original, computed here without the library's helpers."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    node = out.graph.node[0]
    for init in out.graph.initializer:
        if init.name != "w":
            continue
        w = numpy_helper.to_array(init).astype(np.float64)
        if node.op_type != "Conv":
            u, s, vt = np.linalg.svd(w, full_matrices=False)
            w_r = (u[:, :rank] * s[:rank]) @ vt[:rank]
        else:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            parts = []
            for g in np.split(w, group, axis=0):
                n, c, kh, kw = g.shape
                m = g.reshape(n, -1) if scheme == "channel" else g.transpose(1, 2, 0, 3).reshape(c * kh, n * kw)
                u, s, vt = np.linalg.svd(m, full_matrices=False)
                m_r = (u[:, :rank] * s[:rank]) @ vt[:rank]
                parts.append(m_r.reshape(g.shape) if scheme == "channel"
                             else m_r.reshape(c, kh, n, kw).transpose(2, 0, 1, 3))
            w_r = np.concatenate(parts)
        init.CopyFrom(numpy_helper.from_array(w_r.astype(np.float32), "w"))
    return out


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
@pytest.mark.parametrize("name", ["conv_3x3", "conv_strided_rect", "conv_grouped", "conv_same_upper_strided",
                                  "gemm_transB_bias", "gemm_transA_alpha_beta", "matmul", "matmul_weight_first"])
def test_rank_r_equals_truncated_original(name, scheme):
    src = load(MODELS[name]())
    state, out = decompose(src, rank_ratio=0.34, scheme=scheme, only_if_cheaper=False)
    (layer,) = layers_of(out.model)
    assert 1 <= layer.rank < layer.full_rank
    got = outputs(out.model, src)
    oracle = outputs(independent_truncation(state.model, layer.rank, scheme), src)
    assert close(oracle, got, 1e-4, 1e-5)[0]
    assert not close(outputs(state.model, src), got, 1e-4, 1e-5)[0]  # truncation really happened
    assert close(outputs(truncated_original(state.model, [layer]), src), oracle, 1e-5, 1e-6)[0]
    v = verify_lowrank(state.model, out.model, src.input_shapes)
    assert v.ok, v.failure
    assert set(v.checks) == {"checker", "interface", "onnxruntime", "full_rank", "truncated_original"}


def test_verifier_catches_a_wrong_factor():
    src = load(MODELS["conv_strided"]())
    state, out = decompose(src, rank_ratio=0.5, only_if_cheaper=False)
    bad = onnx.ModelProto()
    bad.CopyFrom(out.model)
    for init in bad.graph.initializer:
        if init.name.endswith("lowrank_b.weight"):
            arr = numpy_helper.to_array(init).copy()
            arr[0] *= 1.01
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    v = verify_lowrank(state.model, bad, src.input_shapes)
    assert not v.ok and "truncated_original" in v.failure


# --------------------------------------------------------------------------- rank choice and MACs


def test_rank_rule():
    s = np.array([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert lr.RankRule(energy=0.7).rank(s) == 1
    assert lr.RankRule(energy=0.9).rank(s) == 2
    assert lr.RankRule(energy=1.0).rank(s) == 4
    assert lr.RankRule().rank(s) == 2  # default energy 0.9
    assert lr.RankRule(rank_ratio=0.5).rank(s) == 2
    assert lr.RankRule(rank_ratio=0.3).rank(s) == 2  # ceil
    assert lr.RankRule(sv_threshold=1.5).rank(s) == 2
    assert lr.RankRule(sv_threshold=10.0).rank(s) == 1  # at least one
    assert lr.RankRule(energy=0.7, round_to=3).rank(np.ones(8)) == 6
    assert lr.RankRule(energy=0.7, round_to=8).rank(np.ones(8)) == 6  # full rank <= round_to: not rounded
    with pytest.raises(UsageError, match="mutually exclusive"):
        lr.RankRule(energy=0.9, sv_threshold=0.1)
    with pytest.raises(UsageError, match="out of range"):
        lr.RankRule(rank_ratio=0.0)


def test_round_to_applies_to_rank():
    src = load(conv_model(cin=16, cout=32, pads=[1, 1, 1, 1]))
    _, out = decompose(src, rank_ratio=0.2, round_to=4)
    (layer,) = layers_of(out.model)
    assert layer.rank % 4 == 0 and layer.rank == 8  # ceil(0.2 * 32) = 7 -> 8


def test_real_macs_including_spatial_size():
    src = load(conv_model(cin=16, cout=32, k=(3, 3), hw=(16, 16), strides=[2, 2], pads=[1, 1, 1, 1]))
    _, out = decompose(src, rank_ratio=0.25, scheme="spatial")
    (layer,) = layers_of(out.model)
    r = layer.rank
    # first conv (3x1, stride (2, 1)): 2 x r x 8 x 16 outputs of 16*3 MACs; second (1x3, stride (1, 2)): 2 x 32 x 8 x 8 of r*3
    assert layer.macs_after == 2 * r * 8 * 16 * 16 * 3 + 2 * 32 * 8 * 8 * r * 3
    assert layer.macs_before == 2 * 32 * 8 * 8 * 16 * 9
    report = graphprune.prune(src.model, method="lowrank", rank_ratio=0.25, scheme="spatial", round_to=1).report
    assert report.before.macs - report.after.macs == layer.macs_before - layer.macs_after


def test_layers_that_would_cost_more_are_skipped():
    small = conv_model(cin=3, cout=4, k=(1, 1))  # n = 4, c = 3: r (n + c) < n c only for r = 1
    depthwise = conv_model(cin=6, cout=6, group=6, pads=[1, 1, 1, 1])
    for model in (small, depthwise):
        src = load(model)
        state, out = decompose(src, rank_ratio=1.0)
        rec = out.history[-1]
        assert not rec.modified and out.model is state.model
        (skip,) = rec.stats["skipped"]
        assert "would not lower MACs" in skip["why"]
        result = graphprune.prune(model, method="lowrank", rank_ratio=1.0)
        assert result.model.SerializeToString() == model.SerializeToString()  # untouched, byte for byte


def test_spatial_scheme_skips_1d_conv_and_shared_weights_are_kept():
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c1d", pads=[1, 1])
    src = load(model_of(node, (1, 8, 20), (1, 8, 20), {"w": rand(8, 8, 3)}))
    _, out = decompose(src, scheme="spatial")
    assert "2-D conv" in out.history[-1].stats["skipped"][0]["why"]
    _, out = decompose(src, rank_ratio=0.25)  # channel-wise works for 1-D convs
    assert out.history[-1].modified
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="a"), helper.make_node("MatMul", ["h", "w"], ["y"], name="b")]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
                              initializer=[numpy_helper.from_array(rand(16, 16), "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _, out = decompose(load(m), rank_ratio=0.1)
    assert all("shared" in s["why"] for s in out.history[-1].stats["skipped"])


# --------------------------------------------------------------------------- reference models, API, pipelines


@pytest.mark.parametrize("name, flavour", [("plain_cnn", "legacy"), ("resnet_basic", "legacy"), ("vgg", "legacy"),
                                           ("transformer_mlp", "legacy"), ("inception_block", "legacy"),
                                           ("resnet_basic", "dynamo")])
def test_macs_fall_at_energy_09_on_reference_models(exported, name, flavour):
    # round_to=1: the exact energy rank (the default --round-to 16 rounds ranks up too, see docs/lowrank.md);
    # min_saving=0: randomly initialised weights are nearly full rank, so their savings are small
    result = graphprune.prune(exported(name, flavour), method="lowrank", energy=0.9, round_to=1, min_saving=0.0)
    rep = result.report
    assert rep.after.macs < rep.before.macs
    v = rep.verification
    assert v.ok and v.checks["full_rank"] == "ok" and v.checks["truncated_original"] == "ok"
    stats = rep.passes[-1].stats
    assert stats["decomposed"] and all(d["macs_after"] < d["macs_before"] for d in stats["decomposed"])
    assert all(d["rank"] < d["full_rank"] for d in stats["decomposed"])


def test_pipeline_channel_then_lowrank_verifies_each_stage(exported, tmp_path):
    path = exported("resnet_basic")
    result = graphprune.prune(path, method="magnitude", ratio=0.3, then=("lowrank",), energy=0.95, verify="each",
                              min_saving=0.0)
    checks = result.report.verification.checks
    assert checks["masked_original"] == "ok"
    assert checks["LowRank/truncated_original"] == "ok" and checks["LowRank/full_rank"] == "ok"
    assert [p.name for p in result.report.passes][-2:] == ["RemoveChannels", "LowRank"]
    channel_only = graphprune.prune(path, method="magnitude", ratio=0.3)
    assert result.report.after.macs < channel_only.report.after.macs
    out = result.save(tmp_path / "small.onnx")
    v = graphprune.verify_files(path, out)
    assert v.ok and "LowRank/truncated_original" in v.checks


def test_config_errors():
    with pytest.raises(UsageError, match="mutually exclusive"):
        graphprune.PruneConfig(method="lowrank", energy=0.9, rank_ratio=0.5)
    with pytest.raises(UsageError, match="--then lowrank"):
        graphprune.PruneConfig(method="magnitude", energy=0.9)
    with pytest.raises(UsageError, match="only lowrank"):
        graphprune.PruneConfig(method="lowrank", then=("magnitude",))
    with pytest.raises(UsageError, match="appears twice"):
        graphprune.PruneConfig(method="lowrank", then=("lowrank",))
    with pytest.raises(UsageError, match="scheme"):
        graphprune.PruneConfig(method="lowrank", scheme="diagonal")
    assert graphprune.PruneConfig(method="magnitude", then="lowrank", sv_threshold=0.1).then == ("lowrank",)


def test_cli_lowrank(handbuilt, tmp_path, capsys):
    from graphprune.cli.main import main

    src = handbuilt("matmul_mlp")
    out = tmp_path / "lr.onnx"
    assert main([str(src), "--method", "lowrank", "--rank-ratio", "0.25", "--round-to", "1", "-o", str(out), "-q"]) == 0
    assert layers_of(onnx.load(str(out)))
    assert main(["verify", str(src), str(out), "-q"]) == 0
    assert main([str(src), "--method", "lowrank", "--energy", "0.9", "--sv-threshold", "1", "-o", str(out)]) == 2
    assert "mutually exclusive" in capsys.readouterr().err


# --------------------------------------------------------------------------- the minimum saving


def test_one_input_channel_conv_is_not_decomposed_for_a_tiny_saving(tmp_path, capsys):
    """digits_vgg's stem: 32 filters of 1x3x3; rank 7 of 9 would take 320 params to 319 (0.3 % of its MACs)."""
    model = conv_model(cin=1, cout=32, hw=(8, 8), pads=[1, 1, 1, 1])
    result = graphprune.prune(model, method="lowrank", rank_ratio=7 / 9, round_to=1)
    stats = result.report.passes[-1].stats
    assert not stats["decomposed"] and stats["below_min_saving"] == 1
    (skip,) = stats["skipped"]
    assert "would save 0.3% of its MACs" in skip["why"] and "below the minimum saving 20%" in skip["why"]
    assert "1 would save < 20% of their MACs" in stats["notes"][0]
    assert result.model.SerializeToString() == model.SerializeToString()
    # the option, as an API keyword and as a CLI flag, lets it through
    forced = graphprune.prune(model, method="lowrank", rank_ratio=7 / 9, round_to=1, min_saving=0.0)
    (layer,) = forced.report.passes[-1].stats["decomposed"]
    assert layer["rank"] == 7 and forced.report.after.params == 319 and forced.report.verification.ok
    from graphprune.cli.main import main

    src, out = tmp_path / "stem.onnx", tmp_path / "lr.onnx"
    onnx.save(model, str(src))
    flags = [str(src), "--method", "lowrank", "--rank-ratio", str(7 / 9), "--round-to", "1", "-o", str(out), "-q"]
    assert main(flags + ["--min-saving", "0"]) == 0 and layers_of(onnx.load(str(out)))


def test_min_saving_is_a_fraction_of_the_layer_macs():
    src = load(conv_model(cin=16, cout=16, pads=[1, 1, 1, 1]))  # r (144 + 16) of 16 · 144 MACs per pixel
    for min_saving, decomposed in ((0.3, True), (0.4, False)):  # rank 10 of 16 saves 30.6 %
        _, out = decompose(src, rank_ratio=10 / 16, min_saving=min_saving)
        assert out.history[-1].modified is decomposed
    with pytest.raises(UsageError, match="minimum saving"):
        LowRank(min_saving=1.0)
    with pytest.raises(UsageError, match="minimum saving"):
        graphprune.PruneConfig(method="lowrank", min_saving=-0.1)
    with pytest.raises(UsageError, match="--min-saving applies to low-rank"):
        graphprune.PruneConfig(method="magnitude", min_saving=0.3)


# --------------------------------------------------------------------------- dynamic dimensions


def dynamic_cnn(baked_reshape: bool = False) -> onnx.ModelProto:
    """Conv → Relu → Conv → Relu → GlobalAveragePool → flatten → Gemm with a symbolic batch ``N``. The flatten
    is a Flatten, or (``baked_reshape``) ``x.view(x.size(0), -1)`` as exporters write it: folded at a pinned
    batch it becomes ``Reshape(x, [1, -1])``."""
    inits = {"w1": rand(16, 8, 3, 3), "b1": rand(16), "w2": rand(16, 16, 3, 3), "b2": rand(16), "fc": rand(10, 16),
             "fc_b": rand(10)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool")]
    if baked_reshape:
        inits.update(zero=np.array([0], np.int64), minus_one=np.array([-1], np.int64))
        nodes += [helper.make_node("Shape", ["p"], ["s"], name="shape"),
                  helper.make_node("Gather", ["s", "zero"], ["n"], name="batch", axis=0),
                  helper.make_node("Concat", ["n", "minus_one"], ["target"], name="target", axis=0),
                  helper.make_node("Reshape", ["p", "target"], ["f"], name="flatten")]
    else:
        nodes.append(helper.make_node("Flatten", ["p"], ["f"], name="flatten"))
    nodes.append(helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], name="fc", transB=1))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 12, 12])
    graph = helper.make_graph(nodes, "dyn", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("baked_reshape", [False, True])
def test_dynamic_batch_is_kept(baked_reshape, tmp_path):
    """Analysed at batch 1, verified at 1 and 2, the decomposed model runs a batch of 5 and equals the truncated
    original there (built here from the original file, dynamic batch and all)."""
    model = dynamic_cnn(baked_reshape)
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    result = graphprune.prune(path, method="lowrank", rank_ratio=0.5, round_to=1, input_shapes={"x": (1, 8, 12, 12)})
    assert result.report.verification.ok
    note = next(n for n in result.report.notes if "dynamic" in n)
    assert "x[0] kept" in note and "(2, 8, 12, 12)" in note
    assert ("folded without pinning" in note) is baked_reshape
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    layers = layers_of(result.model)
    assert {x.node for x in layers} == {"conv1", "conv2"}  # fc at rank 5 of 10 saves 19 %: below the minimum
    x = {"x": RNG.standard_normal((5, 8, 12, 12)).astype(np.float32)}
    got = run(session(result.model), x)[0]
    assert got.shape == (5, 10)
    assert close(run(session(truncated_original(model, layers)), x), [got], 1e-4, 1e-5)[0]
    out = result.save(tmp_path / "small.onnx")
    v = graphprune.verify_files(path, out)
    assert v.ok, v.failure


def test_dynamic_batch_is_kept_after_channel_removal_then_lowrank(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(dynamic_cnn(), str(path))
    result = graphprune.prune(path, method="magnitude", ratio=0.25, budget="channels", then=("lowrank",),
                              rank_ratio=0.5, round_to=1, input_shapes={"x": (1, 8, 12, 12)})
    assert result.report.verification.ok and layers_of(result.model)
    assert any("x[0] kept" in n for n in result.report.notes)
    got = run(session(result.model), {"x": np.zeros((5, 8, 12, 12), np.float32)})[0]
    assert got.shape == (5, 10)


def test_dynamic_dims_the_decomposition_fixes_are_not_restored():
    """``auto_pad`` is resolved from the analysed spatial size; with a stride of 2 the pads differ at the second
    size, so the relaxed model is not the truncated original there and keeps its static shapes."""
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, "h", "w"])
    graph = helper.make_graph([node], "dyn", [x], [y], initializer=[numpy_helper.from_array(rand(8, 6, 3, 3), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    result = graphprune.prune(model, method="lowrank", rank_ratio=0.25, round_to=1, input_shapes={"x": (1, 6, 9, 11)})
    assert result.report.verification.ok and layers_of(result.model)
    note = next(n for n in result.report.notes if "analysed input shapes" in n)
    assert "not equal to the truncated original at {'x': (2, 6, 8, 10)}" in note
    assert [d.dim_value for d in result.model.graph.input[0].type.tensor_type.shape.dim] == [1, 6, 9, 11]
