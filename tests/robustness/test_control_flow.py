"""Control flow (If, Loop, Scan): an If decided by the analysed shapes is inlined and its channels pruned; one
decided at run time (by a graph input), a Loop and a Scan freeze every tensor they touch, outer tensors their
subgraphs read included; graphprune's folding never hands on a graph it broke, nor blames the input for it.

The models are small convs built here; each reproduces what the Silero VAD exports do (issue 17, item 1)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import graphprune
from graphprune.cli.main import main
from graphprune.errors import InputShapeError, InternalError
from graphprune.frontends.onnx import control_flow
from graphprune.frontends.onnx.load import load
from graphprune.frontends.onnx.proto import with_input_shapes

X = {"x": (1, 4, 8, 8)}


def weight(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng(seed + sum(shape))
    return nh.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def ints(name: str, values) -> onnx.TensorProto:
    return nh.from_array(np.asarray(values, np.int64), name)


def conv(x: str, w: str, out: str) -> onnx.NodeProto:
    return h.make_node("Conv", [x, w], [out], name=f"conv_{out}", kernel_shape=[1, 1])


def value(name: str, shape=None, elem=T.FLOAT) -> onnx.ValueInfoProto:
    return h.make_tensor_value_info(name, elem, shape)


def graph(nodes, name: str, outputs, inputs=()) -> onnx.GraphProto:
    return h.make_graph(nodes, name, list(inputs), [value(o) if isinstance(o, str) else o for o in outputs])


def model(nodes, inits, inputs, output_shape=("N", 4, 8, 8)) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", inputs, [value("y", list(output_shape))], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def trunk(batch="N"):
    """x → conv p (8) → relu → conv a (16) → relu → conv b (16) → relu: p's width is read by conv a alone."""
    nodes = [conv("x", "wp", "p0"), h.make_node("Relu", ["p0"], ["p"], name="relu_p"),
             conv("p", "wa", "a0"), h.make_node("Relu", ["a0"], ["a"], name="relu_a"),
             conv("a", "wb", "b0"), h.make_node("Relu", ["b0"], ["b"], name="relu_b")]
    inits = [weight("wp", 8, 4, 1, 1), weight("wa", 16, 8, 1, 1), weight("wb", 16, 16, 1, 1), weight("wc", 4, 16, 1, 1)]
    return nodes, inits, [value("x", [batch, 4, 8, 8])]


def if_on_input(broken_else: bool = False) -> onnx.ModelProto:
    """``y = conv_c(b) + If(flag)``, both branches reading the outer ``a`` and the outer weight ``wk``, which only
    they use (Silero's ``If`` on its sample-rate input). ``broken_else``: the else branch splits the batch in two,
    which type-checks only while the batch is dynamic (Silero's 8 kHz branch at a 16 kHz window)."""
    nodes, inits, inputs = trunk()
    inits += [weight("wk", 4, 16, 1, 1), ints("halves", [1, 1])]
    then = graph([conv("a", "wk", "t")], "then", ["t"])
    tail = ([h.make_node("Split", ["e0", "halves"], ["e1", "e2"], name="else_split", axis=0),
             h.make_node("Concat", ["e2", "e1"], ["e"], name="else_concat", axis=0)] if broken_else
            else [h.make_node("Neg", ["e0"], ["e"], name="else_neg")])
    other = graph([conv("a", "wk", "e0"), *tail], "else", ["e"])
    nodes += [h.make_node("If", ["flag"], ["z"], name="if_flag", then_branch=then, else_branch=other),
              conv("b", "wc", "c"), h.make_node("Add", ["c", "z"], ["y"], name="add")]
    return model(nodes, inits, [*inputs, value("flag", [], T.BOOL)])


def if_on_shape() -> onnx.ModelProto:
    """An ``If`` on ``batch == 1`` (an exporter's squeeze guard) holding a conv and a nested ``If`` on its channel
    count: both decided by the analysed shapes. graphsurgeon's own inlining of the two loses the outer ``If``'s
    second output (Silero's ``/decoder/If_1``: "Unsqueeze … Input 0 expected to have type but instead is null")."""
    nodes, inits, inputs = trunk()
    inits += [weight("wk", 16, 16, 1, 1), ints("zero", [0]), ints("one", [1]), ints("two", [2])]
    inner_then = graph([h.make_node("Relu", ["k"], ["kt"], name="inner_relu")], "inner_then", ["kt"])
    inner_else = graph([h.make_node("Identity", ["k"], ["ke"], name="inner_id")], "inner_else", ["ke"])
    then = graph([conv("b", "wk", "k"), h.make_node("Shape", ["k"], ["ks"], name="then_shape"),
                  h.make_node("Gather", ["ks", "one"], ["kc"], name="then_gather", axis=0),
                  h.make_node("Equal", ["kc", "two"], ["kq0"], name="then_eq"),
                  h.make_node("Squeeze", ["kq0"], ["kq"], name="then_squeeze"),
                  h.make_node("If", ["kq"], ["kk"], name="inner_if", then_branch=inner_then, else_branch=inner_else),
                  h.make_node("Identity", ["b"], ["tb"], name="then_b")], "then", ["kk", "tb"])
    other = graph([h.make_node("Neg", ["b"], ["nb"], name="else_neg"),
                   h.make_node("Identity", ["b"], ["eb"], name="else_b")], "else", ["nb", "eb"])
    nodes += [h.make_node("Shape", ["x"], ["xs"], name="shape_x"),
              h.make_node("Gather", ["xs", "zero"], ["n"], name="batch"),
              h.make_node("Equal", ["n", "one"], ["is1v"], name="is_one"),
              h.make_node("Squeeze", ["is1v"], ["is1"], name="squeeze_cond"),
              h.make_node("If", ["is1"], ["g", "gb"], name="if_batch", then_branch=then, else_branch=other),
              h.make_node("Add", ["g", "gb"], ["g2"], name="add_g"), conv("g2", "wc", "y")]
    return model(nodes, inits, inputs)


def loop_reading_outer(nested: bool = False) -> onnx.ModelProto:
    """A two-step ``Loop`` from ``b`` whose body adds the outer ``a`` (``nested``: inside an ``If`` of the body,
    two scopes down)."""
    nodes, inits, inputs = trunk(batch=1)
    inits.append(ints("trips", 2))
    add = h.make_node("Add", ["v_in", "a"], ["v_add"], name="body_add")
    if nested:
        add = h.make_node("If", ["cond_in"], ["v_add"], name="body_if",
                          then_branch=graph([h.make_node("Add", ["v_in", "a"], ["v_then"], name="then_add")], "then", ["v_then"]),
                          else_branch=graph([h.make_node("Identity", ["v_in"], ["v_else"], name="else_id")], "else", ["v_else"]))
    body = graph([h.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"), add,
                  h.make_node("Identity", ["v_add"], ["v_out"], name="body_out")], "body",
                 [value("cond_out", [], T.BOOL), value("v_out", [1, 16, 8, 8])],
                 inputs=[value("i", [], T.INT64), value("cond_in", [], T.BOOL), value("v_in", [1, 16, 8, 8])])
    nodes += [h.make_node("Loop", ["trips", "", "b"], ["v"], name="loop", body=body), conv("v", "wc", "y")]
    return model(nodes, inits, inputs, (1, 4, 8, 8))


def scan_reading_outer() -> onnx.ModelProto:
    """A ``Scan`` over the rows of ``b`` whose body scales each row by the outer ``s`` (a mean of ``a``)."""
    nodes, inits, inputs = trunk(batch=1)
    inits.append(nh.from_array(np.zeros((1, 16, 8), np.float32), "acc0"))
    body = graph([h.make_node("Mul", ["row", "s"], ["row_out"], name="body_mul"),
                  h.make_node("Add", ["acc_in", "row_out"], ["acc_out"], name="body_acc")], "body",
                 [value("acc_out", [1, 16, 8]), value("row_out", [1, 16, 8])],
                 inputs=[value("acc_in", [1, 16, 8]), value("row", [1, 16, 8])])
    nodes += [h.make_node("ReduceMean", ["a"], ["s"], name="mean_a", axes=[3], keepdims=0),
              h.make_node("Scan", ["acc0", "b"], ["acc", "rows"], name="scan", body=body, num_scan_inputs=1,
                          scan_input_axes=[2], scan_output_axes=[2]),
              conv("rows", "wc", "y")]
    return model(nodes, inits, inputs, (1, 4, 8, 8))


def group_of(result, weight_space: str):
    return next(g for g in result.channels.groups if weight_space in {str(s) for s in g.spaces})


def kept(result, weight_space: str) -> int:
    name, axis = weight_space[:-1].split("[")
    init = next(i for i in result.model.graph.initializer if i.name == name)
    return int(init.dims[int(axis)])


@pytest.mark.parametrize("build", [if_on_input, loop_reading_outer, scan_reading_outer,
                                   lambda: loop_reading_outer(nested=True)],
                         ids=["if_on_input", "loop", "scan", "loop_nested_if"])
def test_control_flow_freezes_the_outer_tensors_its_subgraphs_read(build):
    """``a`` is read only inside the subgraph (an implicit input): its channels are frozen, naming the op; ``p``'s
    width, which no subgraph sees, is pruned, and the result verifies."""
    result = graphprune.prune(build(), ratio=0.5, round_to=1, input_shapes=X)
    assert result.report.verification.ok, result.report.verification.failure
    frozen = group_of(result, "wa[0]")
    op = {n.op_type for n in build().graph.node} & {"If", "Loop", "Scan"}
    assert frozen.frozen and any(f"op {op.pop()}" in r for r in frozen.reasons()), frozen.reasons()
    assert kept(result, "wa[0]") == 16 and kept(result, "wp[0]") < 8


def test_if_on_a_graph_input_stays_and_keeps_its_weights_outer():
    """The branch's outer weight ``wk`` stays one top-level initializer of the pruned model (graphsurgeon would
    export a copy into each branch), still counted in its params."""
    result = graphprune.prune(if_on_input(), ratio=0.5, round_to=1, input_shapes=X)
    assert result.report.verification.ok
    assert [n.name for n in result.model.graph.node if n.op_type == "If"] == ["if_flag"]
    assert "wk" in {i.name for i in result.model.graph.initializer}
    assert all(not a.g.initializer for n in result.model.graph.node for a in n.attribute if a.type == a.GRAPH)
    assert group_of(result, "wk[1]").frozen  # read inside both branches
    assert result.report.after.params < result.report.before.params
    assert result.report.after.params >= 4 * 16  # wk is all there


def test_if_decided_by_the_analysed_shapes_is_inlined_and_its_channels_pruned():
    source = load(if_on_shape(), X)
    assert not control_flow.has_control_flow(source.model)
    assert set(source.decided) == {"if_batch", "inner_if"}
    result = graphprune.prune(if_on_shape(), ratio=0.5, round_to=1, input_shapes=X)
    assert result.report.verification.ok, result.report.verification.failure
    assert not group_of(result, "wk[0]").frozen and kept(result, "wk[0]") < 16  # the branch's conv
    # decided at batch 1: the pruned model keeps the analysed shapes, and says why
    assert any("decided If 'if_batch'" in note for note in result.report.notes), result.report.notes


def test_an_untaken_branch_onnxruntime_refuses_at_static_shapes_is_a_clear_input_shape_error(tmp_path):
    """Silero VAD at ``input:1,512``: its 8 kHz branch type-checks only with dynamic shapes. graphprune says so
    (exit 2), naming the If and the input it waits for; it does not call the original unrunnable."""
    m = if_on_input(broken_else=True)
    with pytest.raises(InputShapeError, match=r"If 'if_flag' \(its condition reads input 'flag'\)"):
        load(m, X)
    src = tmp_path / "m.onnx"
    onnx.save(m, src)
    assert main([str(src), "-o", str(tmp_path / "out.onnx"), "--input-shape", "x:1,4,8,8", "-q"]) == 2
    # at batch 2 the else branch is right, and the model prunes
    assert graphprune.prune(m, ratio=0.5, round_to=1, input_shapes={"x": (2, 4, 8, 8)}).report.verification.ok


def test_inlining_that_breaks_the_graph_falls_back_to_keeping_the_if(monkeypatch):
    def broken(node, branch, graph):
        return [h.make_node("Identity", ["nowhere"], [o], name=f"broken{i}") for i, o in enumerate(node.output)]

    monkeypatch.setattr(control_flow, "inline_branch", broken)
    decided: list[str] = []
    folded = control_flow.fold_model(with_input_shapes(if_on_shape(), X), decided)
    assert [n.name for n in folded.graph.node if n.op_type == "If"] == ["if_batch"] and not decided
    monkeypatch.undo()
    assert graphprune.prune(if_on_shape(), ratio=0.5, round_to=1, input_shapes=X).report.verification.ok


def test_a_folded_graph_reading_an_undefined_name_is_graphprunes_bug_not_the_input():
    m = model([h.make_node("Relu", ["ghost"], ["y"], name="relu")], [], [value("x", [1, 4, 8, 8])])
    with pytest.raises(InternalError, match="reading 'ghost'.*bug in graphprune"):
        control_flow.checked(m)


def loop_with_a_conv_inside(trips: int = 3) -> onnx.ModelProto:
    """``conv_c(b)`` through a Loop whose body convolves the carried value with a weight the body holds (4 → 4,
    1×1); the Loop's result is the output."""
    nodes, inits, inputs = trunk(batch=1)
    inits.append(ints("trips", trips))
    body = graph([h.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"), conv("v_in", "wl", "v_out")],
                 "body", [value("cond_out", [], T.BOOL), value("v_out", [1, 4, 8, 8])],
                 inputs=[value("i", [], T.INT64), value("cond_in", [], T.BOOL), value("v_in", [1, 4, 8, 8])])
    body.initializer.append(weight("wl", 4, 4, 1, 1))
    nodes += [conv("b", "wc", "c"), h.make_node("Loop", ["trips", "", "c"], ["y"], name="loop", body=body)]
    return model(nodes, inits, inputs, (1, 4, 8, 8))


TRUNK_MACS = 64 * (8 * 4 + 16 * 8 + 16 * 16)  # p, a, b at 8×8
TRUNK_PARAMS = 8 * 4 + 16 * 8 + 16 * 16 + 4 * 16  # wp, wa, wb, wc


@pytest.mark.parametrize("build,params,macs", [
    (if_on_input, TRUNK_PARAMS + 4 * 16, TRUNK_MACS + 64 * 4 * 16 * 2),  # conv c, and one branch's conv (either)
    (loop_with_a_conv_inside, TRUNK_PARAMS + 4 * 4, TRUNK_MACS + 64 * 4 * 16 + 3 * 64 * 4 * 4),  # 3 trips
], ids=["if", "loop"])
def test_params_and_macs_count_what_control_flow_holds_and_runs(build, params, macs):
    """The weights a body holds are params of the model, and a run's MACs include its bodies: an If's branch once,
    a Loop's body once per trip. Before, convs inside an If reported 0 MACs (Silero VAD's op18_ifless)."""
    result = graphprune.prune(build(), ratio=0.5, round_to=1, input_shapes=X)
    assert result.report.verification.ok, result.report.verification.failure
    assert (result.report.before.params, result.report.before.macs) == (params, macs)
    assert result.report.after.macs < macs  # the trunk is pruned; what the bodies run is counted after as well
