"""Dynamic dimensions: a model exported with a dynamic batch stays dynamic after pruning when that is shown right at
a second size, and stays at the analysed shapes (saying why) when folding baked the pinned size in."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import graphprune
from graphprune.frontends.onnx.proto import signature


class Net(nn.Module):
    """conv → conv → mean → flatten (or a ``view`` whose legacy export reads sizes with Shape) → fc.

    ``view``: None (``torch.flatten``), "batch" (``view(x.size(0), -1)``), "channels" (``view(x.size(0),
    x.size(1), -1)`` then flatten: the channel count ends up inside the computed shape)."""

    def __init__(self, view: str | None):
        super().__init__()
        self.view = view
        self.c1, self.c2, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1), nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x)))).mean((2, 3), keepdim=True)
        if self.view == "batch":
            return self.fc(x.view(x.size(0), -1))
        if self.view == "channels":
            return self.fc(torch.flatten(x.view(x.size(0), x.size(1), -1), 1))
        return self.fc(torch.flatten(x, 1))


def exported(tmp_path, view: str | None) -> str:
    torch.manual_seed(0)
    path = tmp_path / f"net_{view}.onnx"
    torch.onnx.export(Net(view).eval(), torch.randn(1, 3, 8, 8), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return str(path)


def runs_at(model: onnx.ModelProto, batch: int) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.random.default_rng(0).standard_normal((batch, 3, 8, 8)).astype(np.float32)})[0]


def test_a_dynamic_batch_is_kept_when_verified_at_a_second_size(tmp_path):
    src = exported(tmp_path, view=None)
    r = graphprune.prune(src, ratio=0.5, input_shapes={"x": (1, 3, 8, 8)})
    assert r.report.verification.ok and r.report.units_removed > 0
    assert signature(r.model) == signature(onnx.load(src))  # N stays N, in and out
    assert any("dynamic x[0] kept" in n for n in r.report.notes)
    assert runs_at(r.model, 3).shape == (3, 10)
    assert 0 < r.report.after.macs < r.report.before.macs  # counted at the analysed shapes, not the relaxed ones
    assert any(row["macs"]["after"] > 0 for row in r.report.layers)
    out = r.save(tmp_path / "small.onnx")
    v = graphprune.verify_files(src, out)  # the stored plan and shapes verify the dynamic model too
    assert v.ok, v.failure


def test_a_batch_baked_in_by_folding_is_kept_by_emitting_on_the_unpinned_fold(tmp_path):
    src = exported(tmp_path, view="batch")  # folded at batch 1, Reshape(x, [1, -1]) would fix it
    r = graphprune.prune(src, ratio=0.5, input_shapes={"x": (1, 3, 8, 8)})
    assert r.report.verification.ok and r.report.units_removed > 0
    assert any("emitted on the model folded without pinning" in n for n in r.report.notes), r.report.notes
    assert signature(r.model) == signature(onnx.load(src))
    assert runs_at(r.model, 3).shape == (3, 10)
    v = graphprune.verify_files(src, r.save(tmp_path / "small.onnx"))
    assert v.ok, v.failure


def test_a_channel_count_inside_a_computed_shape_is_rewritten_in_its_concat(tmp_path):
    src = exported(tmp_path, view="channels")  # unpinned: Reshape(x, Concat(N, [32], [-1])), 32 the pruned channels
    r = graphprune.prune(src, ratio=0.5, input_shapes={"x": (1, 3, 8, 8)})
    assert r.report.verification.ok and r.report.units_removed > 0
    assert any("emitted on the model folded without pinning" in n for n in r.report.notes), r.report.notes
    assert runs_at(r.model, 3).shape == (3, 10)


def test_attention_with_a_dynamic_batch_and_sequence_keeps_both(tmp_path):
    """``x.reshape(b, t, heads, head_dim)`` with b and t read from the input: heads go, b and t stay dynamic."""
    from models import REFERENCE_MODELS

    path = tmp_path / "vit.onnx"
    torch.onnx.export(REFERENCE_MODELS["attention_block"].build(), torch.randn(1, 8, 32), str(path), dynamo=False,
                      input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "B", 1: "T"},
                                                                                    "output": {0: "B"}})
    r = graphprune.prune(str(path), ratio=0.5, input_shapes={"input": (1, 8, 32)}, round_to=1)
    assert r.report.verification.ok and r.report.units_removed > 0
    assert any("dynamic input[0,1] kept" in n for n in r.report.notes), r.report.notes
    sess = ort.InferenceSession(r.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.zeros((3, 5, 32), np.float32)})[0].shape == (3, 10)


def test_an_original_that_cannot_run_at_the_second_size_stays_static(tmp_path):
    """packed_attention adds a (heads, 8, 8) bias to its logits: declared dynamic, its sequence is 8 only."""
    from models import REFERENCE_MODELS

    path = tmp_path / "packed.onnx"
    torch.onnx.export(REFERENCE_MODELS["packed_attention"].build(), torch.randn(1, 8, 32), str(path), dynamo=False,
                      input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "B", 1: "T"}})
    r = graphprune.prune(str(path), ratio=0.5, input_shapes={"input": (1, 8, 32)}, round_to=1)
    assert r.report.verification.ok and r.report.units_removed > 0
    assert any("the original does not run at" in n for n in r.report.notes), r.report.notes
    assert [d.dim_value for d in r.model.graph.input[0].type.tensor_type.shape.dim] == [1, 8, 32]


@pytest.mark.parametrize("options, reason", [({"verify": "off"}, "verification is off"),
                                             ({"reconstruct": True}, "not after Reconstruct")])
def test_dynamic_dims_are_restored_only_after_a_verified_channel_removal(tmp_path, options, reason):
    src = exported(tmp_path, view=None)
    r = graphprune.prune(src, ratio=0.5, input_shapes={"x": (1, 3, 8, 8)}, **options)
    assert any(reason in n for n in r.report.notes), r.report.notes
    assert all(d.HasField("dim_value") for i in r.model.graph.input for d in i.type.tensor_type.shape.dim)


def test_a_static_model_gets_no_dynamic_note(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "static.onnx"
    torch.onnx.export(Net(None).eval(), torch.randn(1, 3, 8, 8), str(path), dynamo=False, input_names=["x"])
    r = graphprune.prune(str(path), ratio=0.5)
    assert not [n for n in r.report.notes if "dynamic" in n or "analysed input shapes" in n]


def test_a_reshape_that_copies_the_batch_with_0_keeps_copying_it(tmp_path):
    """tf2onnx and hand-written graphs reshape with 0 (copy the input's dimension): the emitter keeps the 0
    where input and output still agree, so the pruned Reshape does not fix the batch."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([0, 32, 64], np.int64), "shape"),
             numpy_helper.from_array((0.01 * rng.standard_normal((32 * 64, 10))).astype(np.float32), "wf")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["d"]), helper.make_node("Flatten", ["d"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "wf"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    r = graphprune.prune(model, ratio=0.5, budget="channels", input_shapes={"x": (1, 3, 8, 8)}, round_to=1)
    assert r.report.verification.ok and r.report.units_removed > 0
    shape = next(numpy_helper.to_array(t) for t in r.model.graph.initializer if t.data_type == TensorProto.INT64)
    assert shape.tolist() == [0, 16, 64]
    assert any("dynamic x[0] kept" in n for n in r.report.notes)
    assert runs_at(r.model, 3).shape == (3, 10)


def test_an_rnn_whose_zero_state_is_built_from_the_batch_keeps_it_dynamic(tmp_path):
    """The legacy export builds h0 / c0 as zeros of (layers·directions, batch, hidden) from the input's Shape:
    pinned, they fold to constants and lose the removed hidden units; unpinned they are computed, and a Gather
    of the kept units narrows them."""
    from models import REFERENCE_MODELS

    path = tmp_path / "lstm.onnx"
    torch.onnx.export(REFERENCE_MODELS["lstm_classifier"].build(), torch.randn(2, 7, 6), str(path), dynamo=False,
                      input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "B"}, "output": {0: "B"}})
    r = graphprune.prune(str(path), ratio=0.5, input_shapes={"input": (2, 7, 6)}, round_to=1)
    assert r.report.verification.ok and r.report.units_removed > 0
    assert any("dynamic input[0] kept" in n for n in r.report.notes), r.report.notes
    assert any(n.op_type == "Gather" and n.name.endswith("::select2") for n in r.model.graph.node)
    sess = ort.InferenceSession(r.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.zeros((5, 7, 6), np.float32)})[0].shape == (5, 10)
