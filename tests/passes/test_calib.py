"""Calibration data: forms, validation errors (one clear line), data-free fallback, batched activations."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.methods.calib import CalibInput, gather, prepare
from graphprune.errors import UsageError
from graphprune.runtime import run, session


@pytest.fixture(scope="module")
def source(exported):
    return graphprune.api.load(exported("plain_cnn", "legacy"))


def points(n, shape=(3, 32, 32), dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(dtype)


def test_forms_agree(source, tmp_path):
    x = points(5)
    np.savez(tmp_path / "c.npz", input=x)
    np.save(tmp_path / "c.npy", x)
    for data in (x, {"input": x}, [x[:2], x[2:]], ({"input": x[:3]}, {"input": x[3:]}), tmp_path / "c.npz",
                 str(tmp_path / "c.npy"), CalibInput(iter([x[:1], x[1:]]))):
        calib = prepare(data, source)
        assert calib.n_points == 5 and not calib.data_free
        np.testing.assert_array_equal(calib.inputs["input"], x)
    assert prepare(x.astype(np.float64), source).inputs["input"].dtype == np.float32  # same kind: cast
    assert prepare(x, source, max_points=3).n_points == 3


@pytest.mark.parametrize("data,message", [
    ({"images": points(2)}, "lacks input(s) ['input']"),
    ({"input": points(2), "extra": points(2)}, "not model inputs"),
    (points(2, (3, 16, 16)), "has shape (2, 3, 16, 16); the model expects (N, 3, 32, 32)"),
    (points(2)[0], "the model expects (N, 3, 32, 32)"),
    (points(2, dtype=np.int64), "has dtype int64; the model expects float32"),
    (np.full((2, 3, 32, 32), np.nan, np.float32), "NaN or infinite"),
    (points(0), "holds no points"),
    ([], "is empty"),
    (42, "an array, a dict or an iterable"),
])
def test_validation_errors_are_one_clear_line(source, data, message):
    with pytest.raises(UsageError) as info:
        prepare(data, source)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_file_errors(source, tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        prepare(tmp_path / "missing.npz", source)
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(UsageError, match="expected a .npz"):
        prepare(tmp_path / "x.txt", source)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="cannot read it"):
        prepare(tmp_path / "bad.npz", source)


def test_config_checks_calibration_options(exported):
    path = exported("plain_cnn", "legacy")
    with pytest.raises(UsageError, match="not by 'magnitude'"):
        graphprune.prune(path, calib=points(2))
    for bad in (dict(budget="flops"), dict(sampling="sometimes"), dict(sipp_mode="x"), dict(delta=0.0),
                dict(max_points=0)):
        with pytest.raises(UsageError):
            graphprune.PruneConfig(method="sampling", **bad)
    cfg = graphprune.PruneConfig(method="sampling", calib=points(300))
    assert isinstance(cfg.calib, CalibInput) and len(repr(cfg.calib)) < 60  # reports stay small


def test_data_free_is_seeded_and_noted(source, exported):
    a, b = prepare(None, source, max_points=4, seed=1), prepare(None, source, max_points=4, seed=1)
    assert a.data_free and a.n_points == 4 and "data-free" in a.note
    np.testing.assert_array_equal(a.inputs["input"], b.inputs["input"])
    result = graphprune.prune(exported("plain_cnn", "legacy"), method="sampling", max_points=4)
    assert any(n.startswith("data-free") for n in result.report.notes)


def reshape_model(target=(1, -1), points_behind: bool = False) -> onnx.ModelProto:
    """Conv → Reshape to a constant ``target`` (the batch baked in, as constant folding leaves it: [1, -1]; or
    merged into the first axis: [4, -1]) → MatMul. ``points_behind``: a Transpose first moves the channels in
    front of the points, so a merged axis 0 holds the points inside each channel (seq-first attention's
    layout): a copy that lets axis 0 grow would mix points."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(target, np.int64), "shape"),
             numpy_helper.from_array(rng.standard_normal((64 // (target[0] if target[0] > 1 else 1), 3))
                                     .astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["flat"], name="reshape"),
             helper.make_node("MatMul", ["flat", "fc"], ["output"], name="fc")]
    if points_behind:
        nodes.insert(2, helper.make_node("Transpose", ["r"], ["rt"], name="behind", perm=[1, 0, 2, 3]))
        nodes[3].input[0] = "rt"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [max(1, target[0]), 3])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("model_kind", ["flexible", "baked_batch", "merged_batch", "points_behind"])
def test_gather_runs_batches_of_any_size(exported, model_kind):
    """A model whose shapes follow the batch runs a batch in one call ("relaxed"), as does one whose Reshape
    target has the analysed batch baked in as its first entry (that entry then follows the input's axis 0) or
    merges the batch into axis 0 point after point (axis 0 then grows with the points); a Reshape that merges
    points behind the channels cannot follow them, and runs point by point ("static"). Either way every row of
    every point is there: a tensor of 4 rows per point keeps its 4 (not the first row of each point)."""
    model = {"baked_batch": lambda: reshape_model((1, -1)), "merged_batch": lambda: reshape_model((4, -1)),
             "points_behind": lambda: reshape_model((4, -1), points_behind=True)}
    src = (graphprune.api.load(exported("plain_cnn", "legacy")) if model_kind == "flexible"
           else graphprune.api.load(model[model_kind]()))
    names = ["r", "flat"] if model_kind in ("merged_batch", "points_behind") else \
        [next(n.inputs[0] for n in src.graph.nodes if n.op in ("Gemm", "MatMul"))]
    shape = src.input_shapes["input"][1:]
    calib = prepare(points(7, shape, seed=3), src)
    seen = []
    gather(src.model, names, calib, lambda v: seen.append(v), input_shapes=src.input_shapes, batch_size=3,
           progress=False)
    assert [len(s[names[0]]) for s in seen] == [3, 3, 1]  # reduced batch by batch: never all points at once
    from graphprune.methods.calib import ActivationRunner, expose

    runner = ActivationRunner(src.model, names, src.input_shapes)
    runner.run({"input": calib.inputs["input"][:3]})
    assert runner.mode == ("static" if model_kind == "points_behind" else "relaxed")
    single = session(expose(src.model, names))
    for i, name in enumerate(names):
        expected = np.concatenate([run(single, {"input": calib.inputs["input"][p:p + 1]})[i] for p in range(7)])
        np.testing.assert_allclose(np.concatenate([s[name] for s in seen]), expected, rtol=1e-5, atol=1e-6)


def test_only_an_activation_s_reshape_follows_the_batch():
    """The relaxed copy rewrites a Reshape target's first entry to 0 where it is the analysed batch size of an
    activation's axis 0, and a target that merges the batch into axis 0 to its output shape with -1 first;
    a constant reshaped (a bias to [1, C, 1, 1]) stays."""
    from graphprune.methods.calib import expose

    model = reshape_model((1, -1))
    bias = numpy_helper.from_array(np.ones(4, np.float32), "bias")
    shape = numpy_helper.from_array(np.array([1, 4, 1, 1], np.int64), "bias_shape")
    model.graph.initializer.extend([bias, shape])
    model.graph.node.insert(0, helper.make_node("Reshape", ["bias", "bias_shape"], ["b4"], name="bias_reshape"))
    model.graph.node[2].input[0] = "c"  # Conv → Relu reads c + b4 below
    model.graph.node.insert(2, helper.make_node("Add", ["c", "b4"], ["cb"], name="add"))
    model.graph.node[3].input[0] = "cb"
    src = graphprune.api.load(model)

    def targets(model):
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return {n.name: inits[n.input[1]].tolist() for n in model.graph.node if n.op_type == "Reshape"
                and n.input[1] in inits}

    relaxed = targets(expose(src.model, ["flat"], relax_batch=True))
    assert relaxed.get("reshape") == [0, -1]
    assert all(t != [0, 4, 1, 1] for t in relaxed.values())  # the bias's Reshape (or its folded constant) kept
    merged = targets(expose(graphprune.api.load(reshape_model((4, -1))).model, ["flat"], relax_batch=True))
    assert merged == {"reshape": [-1, 16]}
    assert targets(graphprune.api.load(reshape_model((4, -1))).model) == {"reshape": [4, -1]}  # the model kept


def test_a_labels_array_is_ignored_by_input_only_methods():
    from graphprune.methods.calib import validate

    arrays = {"input": np.zeros((4, 3), np.float32), "labels": np.zeros(4, np.int64)}
    out = validate(arrays, {"input": ((1, 3), np.dtype(np.float32))}, "calib.npz")
    assert set(out) == {"input"}


# ---- gather: batch by batch, in order, errors typed ----------------------------------------------------


def test_gather_gives_exactly_the_plain_loop(source):
    from graphprune.methods.calib import OnnxAccess

    name = next(n.inputs[0] for n in source.graph.nodes if n.op in ("Gemm", "MatMul"))
    calib = prepare(points(23, seed=5), source)
    seen = []
    gather(source.model, [name], calib, lambda v: seen.append(v[name].copy()), input_shapes=source.input_shapes,
           batch_size=4, progress=False)
    runner = OnnxAccess(source.input_shapes).activations(source.model, [name])
    plain = [runner.run(b)[name] for b in calib.batches(4)]
    assert len(seen) == len(plain) == 6
    for a, b in zip(seen, plain):
        np.testing.assert_array_equal(a, b)  # the same values, bit for bit, in the same order


class FailingAccess:
    """An access whose runner fails on its third batch, as onnxruntime's failures reach the caller."""

    def __init__(self, error):
        self.error = error

    def activations(self, model, names):
        access = self

        class Runner:
            calls = 0

            def run(self, batch):
                self.calls += 1
                if self.calls == 3:
                    raise access.error
                return {"x": batch["input"]}

        return Runner()


def test_an_error_in_a_batch_surfaces_as_its_typed_error(source):
    from graphprune.errors import VerificationError

    error = VerificationError("onnxruntime failed to run the model: boom")
    seen = []
    with pytest.raises(VerificationError, match="boom") as info:
        gather(source.model, ["x"], prepare(points(10), source), lambda v: seen.append(len(v["x"])),
               input_shapes=source.input_shapes, batch_size=2, progress=False, access=FailingAccess(error))
    assert info.value is error and seen == [2, 2]  # the batches before it were reduced, in order


def test_the_first_batch_runs_once(exported):
    from graphprune.methods.calib import ActivationRunner

    src = graphprune.api.load(exported("plain_cnn", "legacy"))
    name = next(n.inputs[0] for n in src.graph.nodes if n.op in ("Gemm", "MatMul"))
    runner = ActivationRunner(src.model, [name], src.input_shapes)
    calls = []
    relaxed = runner.run_relaxed
    runner.run_relaxed = lambda batch: calls.append(len(next(iter(batch.values())))) or relaxed(batch)
    x = points(5)
    got = runner.run({"input": x})[name]
    assert runner.mode == "relaxed" and calls == [5, 1, 1]  # the trial's run of the batch is its result; then the
    # first and the last point alone
    np.testing.assert_array_equal(got, relaxed({"input": x})[name])


@pytest.mark.parametrize("chunk", [1, 7, 1 << 22])
def test_data_free_points_drawn_in_chunks_are_those_of_one_draw(monkeypatch, chunk):
    """A few points at a time (no float64 copy of all of them): the values of drawing every point at once."""
    from graphprune.methods import calib as module

    monkeypatch.setattr(module, "RANDOM_CHUNK", chunk)
    inputs = {"x": ((1, 3, 4, 4), np.dtype(np.float32)), "h": ((1, 5), np.dtype(np.float16)),
              "ids": ((1, 6), np.dtype(np.int64)), "mask": ((1, 6), np.dtype(bool))}
    got = module.random_calibration(inputs, 9, seed=3).inputs
    rng = np.random.default_rng(3)
    want = {"x": rng.standard_normal((9, 3, 4, 4)).astype(np.float32),
            "h": rng.standard_normal((9, 5)).astype(np.float16),
            "ids": rng.integers(0, 2, (9, 6)).astype(np.int64), "mask": rng.random((9, 6)) < 0.5}
    for name, value in want.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name
