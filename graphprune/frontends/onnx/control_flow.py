"""Control flow (``If``, ``Loop``, ``Scan``: ops that hold subgraphs) through constant folding.

graphsurgeon's folding mishandles subgraphs: it inlines an ``If`` with a constant condition but loses the outputs
of a nested ``If`` it inlined first (a node then reads a tensor nothing defines), inlines inside the branches of an
``If`` it cannot decide without keeping them sorted, and exports an outer weight used only inside a branch as an
initializer of every branch (a copy per branch). So here graphsurgeon never sees a subgraph: each op that holds one
is swapped for an opaque node (:func:`hide`) that reads the op's inputs and every outer tensor its subgraphs read,
and swapped back after folding (:func:`restore`). An ``If`` whose condition folding made a constant is then replaced
by its branch (:func:`inline_branch`) and the model folded again, so the branch's channels can be analysed; an
``If`` that reads a real input (a sample rate fed at run time), a ``Loop`` and a ``Scan`` stay, and the channel
analysis freezes every tensor they touch, outer tensors read inside their subgraphs included
(:attr:`graphprune.ir.Node.captures`). Constants are never invented for graph inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from graphprune.errors import GraphPruneError, InputShapeError, InternalError, VerificationError
from graphprune.frontends.onnx.fold import fold_until_stable
from graphprune.frontends.onnx.lower import outer_names
from graphprune.frontends.onnx.proto import SKELETON_MIN_ELEMENTS, infer_shapes
from graphprune.io import copy_fields
from graphprune.runtime import session

OPAQUE_DOMAIN = "graphprune.opaque"
OPAQUE_OP = "Subgraphs"
GHOST = "graphprune::opaque_input"  # a graph input every opaque node reads: it is never constant, so never folded
MAX_INLINE_ROUNDS = 16  # each round inlines every If decided by the last fold; nesting deeper than this stays


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    out: list[onnx.GraphProto] = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def has_control_flow(model: onnx.ModelProto) -> bool:
    return any(subgraphs(n) for n in model.graph.node)


def fold_model(model: onnx.ModelProto, decided: list[str] | None = None) -> onnx.ModelProto:
    """The one entry point of folding (load, the unpinned fold of :mod:`graphprune.verify.dynamic`):
    :func:`graphprune.frontends.onnx.fold.fold_until_stable` around control flow, the result checked. Where
    inlining or folding branches fails, or leaves control flow onnxruntime rejects, the model is folded again with
    every ``If`` kept as it is (frozen then): a fault of graphprune's folding is never blamed on the input.
    ``decided`` gets the names of the ``If`` nodes replaced by a branch: decisions taken at the analysed shapes."""
    decided = [] if decided is None else decided
    if not has_control_flow(model):
        return checked(fold_until_stable(model))
    problem = None
    for inline in (True, False):
        hidden = hide(model)
        del decided[:]
        try:
            folded = fold_around_control_flow(hidden, fold_until_stable, inline=inline, decided=decided)
            problem = rejected(folded) if has_control_flow(folded) else None
            if problem is None:
                return folded
        except GraphPruneError:
            if not inline:
                raise
        model = unhide(hidden)  # the input again: folding edits it, but only into an equivalent form
    raise unloadable(model, problem)


def fold_around_control_flow(model: "onnx.ModelProto | Hidden", fold: Callable[[onnx.ModelProto], onnx.ModelProto],
                             outer: frozenset[str] = frozenset(), *, inline: bool = True,
                             decided: list[str] | None = None) -> onnx.ModelProto:
    """``fold(model)`` with control flow kept out of graphsurgeon's reach; with ``inline``, each ``If`` whose
    condition folds to a constant replaced by its branch (then folded again: a nested ``If`` decided by the
    branch's shapes goes next) and the branches of those that stay folded alike. The result is checked for names
    read before they are defined. ``outer``: names defined around ``model`` when it is a branch (inlining must not
    shadow them). ``model`` (or the hidden model) is edited, as ``fold`` edits it, into an equivalent form;
    ``decided`` gets the names of the inlined ``If`` nodes."""
    decided = [] if decided is None else decided
    hidden = model if isinstance(model, Hidden) else hide(model)
    folded = fold_rounds(hidden, fold, outer, inline=inline, decided=decided)
    return checked(fold_branches(folded, fold, outer, decided) if inline else folded)


def fold_rounds(hidden: "Hidden", fold, outer: frozenset[str], *, inline: bool, decided: list[str]) -> onnx.ModelProto:
    """Fold, put the control flow back, inline the decided ``If`` nodes; again while any was inlined."""
    for _ in range(MAX_INLINE_ROUNDS):
        model, inlined = restore(fold(hidden.model), hidden, inline=inline, outer=outer)
        decided += inlined
        if not inlined:
            break
        hidden = hide(model)
    return model


def fold_branches(model: onnx.ModelProto, fold, outer: frozenset[str], decided: list[str]) -> onnx.ModelProto:
    """``model`` with the branches of every ``If`` that stays folded as models of their own, at the shapes of the
    outer tensors they read. Why: exporters guard shape-dependent code with ``If`` nodes (squeeze when the batch is
    1) whose untaken branch onnxruntime still type-checks, and at static shapes it fails there ("LSTM: first input
    tensor must have rank 3" in Silero VAD); folded, the decided inner ``If`` nodes are gone. A branch that does
    not fold stays as it was."""
    types = value_types(model.graph)
    known = outer | defined_names(model.graph)
    folded = False
    for node in model.graph.node:
        if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
            continue
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                folded |= fold_branch(attr.g, model, types, fold, frozenset(known - defined_names(attr.g)), decided)
    return infer_shapes(model) if folded else model  # the If outputs get the shapes their branches now declare


def fold_branch(branch: onnx.GraphProto, model: onnx.ModelProto, types: dict[str, onnx.ValueInfoProto], fold,
                outer: frozenset[str], decided: list[str]) -> bool:
    """Fold ``branch`` in place as a model whose inputs are the outer tensors it reads (small outer constants as
    its own, so that shape arithmetic on them folds; they are dropped again afterwards), its outputs typed as
    inferred there (onnx infers little inside a branch: outer constants are not known there); whether it was."""
    captures = list(dict.fromkeys(outer_names(branch)))
    if any(t not in types for t in captures):
        return False  # an outer tensor of unknown type: it cannot be an input of the branch's model
    small = {i.name: i for i in model.graph.initializer
             if i.name in captures and int(np.prod(i.dims, dtype=np.int64)) < SKELETON_MIN_ELEMENTS}
    alone = onnx.ModelProto()
    copy_fields(model, alone, skip=("graph", "metadata_props"))
    copy_fields(branch, alone.graph, skip=("node",))
    alone.graph.node.extend(branch.node)
    alone.graph.initializer.extend(small.values())
    alone.graph.input.extend(types[t] for t in captures if t not in small)
    inner: list[str] = []
    try:
        folded = (fold_around_control_flow(alone, fold, frozenset(outer - set(captures)), decided=inner)
                  if has_control_flow(alone) else checked(fold(alone)))
    except GraphPruneError:
        return False
    if [o.name for o in folded.graph.output] != [o.name for o in branch.output]:
        return False
    del branch.node[:], branch.initializer[:], branch.value_info[:], branch.output[:]
    branch.node.extend(folded.graph.node)
    branch.initializer.extend(i for i in folded.graph.initializer if i.name not in captures)
    branch.value_info.extend(v for v in folded.graph.value_info if v.name not in captures)
    branch.output.extend(folded.graph.output)
    decided += inner
    return True


def value_types(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    """A value info (type and shape) for every value of ``graph`` whose type is known, initializers included."""
    out = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output) if v.type.tensor_type.elem_type}
    for i in graph.initializer:
        out.setdefault(i.name, onnx.helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)))
    return out


@dataclass
class Hidden:
    """A model whose ops with subgraphs are opaque nodes, and what :func:`restore` needs to put them back."""

    model: onnx.ModelProto
    nodes: dict[str, onnx.NodeProto] = field(default_factory=dict)  # key attribute → the original node


def hide(model: onnx.ModelProto) -> Hidden:
    """``model`` (shapes inferred first, so that the opaque nodes' outputs keep theirs) with each op that holds
    subgraphs replaced by an opaque node ``Subgraphs(inputs…, captures…, GHOST)``. Reading the captures keeps
    their producers alive and their weights outer; reading ``GHOST``, a graph input, keeps folding off it."""
    model = infer_shapes(model)
    hidden = Hidden(model)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    for i, node in enumerate(nodes):
        if not subgraphs(node):
            model.graph.node.append(node)
            continue
        key = str(i)
        hidden.nodes[key] = node
        captures = list(dict.fromkeys(t for g in subgraphs(node) for t in outer_names(g)))
        model.graph.node.append(onnx.helper.make_node(
            OPAQUE_OP, [*node.input, *captures, GHOST], list(node.output), name=node.name, domain=OPAQUE_DOMAIN,
            key=key, n_inputs=len(node.input)))
    model.graph.input.append(onnx.helper.make_tensor_value_info(GHOST, onnx.TensorProto.FLOAT, []))
    model.opset_import.append(onnx.helper.make_opsetid(OPAQUE_DOMAIN, 1))
    return hidden


def restore(folded: onnx.ModelProto, hidden: Hidden, *, inline: bool,
            outer: frozenset[str] = frozenset()) -> tuple[onnx.ModelProto, list[str]]:
    """``folded`` with its opaque nodes back as the ops they stand for (under the names folding gave them), each
    ``If`` whose condition is now a constant replaced by its branch when ``inline``; and the names of those."""
    consts = {i.name: i for i in folded.graph.initializer}
    inner = {key: set().union(*map(defined_names, subgraphs(n))) for key, n in hidden.nodes.items()}
    taken = defined_names(folded.graph) | outer | set().union(*inner.values())
    nodes = list(folded.graph.node)
    del folded.graph.node[:]
    inlined: list[str] = []
    for node in nodes:
        if node.domain != OPAQUE_DOMAIN:
            folded.graph.node.append(node)
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        original = onnx.NodeProto()
        original.CopyFrom(hidden.nodes[attrs["key"].decode()])
        original.name = node.name
        del original.input[:]
        original.input.extend(node.input[:attrs["n_inputs"]])
        branch = decided_branch(original, consts) if inline else None
        if branch is not None and not clashes(branch, taken - inner[attrs["key"].decode()]):
            folded.graph.node.extend(inline_branch(original, branch, folded.graph))
            inlined.append(original.name)
        else:
            folded.graph.node.append(original)
    keep = [i for i in folded.graph.input if i.name != GHOST]
    del folded.graph.input[:]
    folded.graph.input.extend(keep)
    ops = [o for o in folded.opset_import if o.domain != OPAQUE_DOMAIN]
    del folded.opset_import[:]
    folded.opset_import.extend(ops)
    return infer_shapes(folded), inlined


def unhide(hidden: Hidden) -> onnx.ModelProto:
    """The model :func:`hide` was given (in an equivalent form), from its hidden form."""
    return restore(hidden.model, hidden, inline=False)[0]


def rejected(model: onnx.ModelProto) -> str | None:
    """Why onnxruntime refuses to load ``model`` as verification loads it (optimised), or None. It type-checks
    every branch of an ``If`` at the static shapes, the branch no input of these shapes can take too, and its
    optimiser inlines the inner ``If`` nodes those shapes decide first."""
    try:
        session(model, once=True)
    except VerificationError as exc:
        return str(exc)
    return None


def unloadable(model: onnx.ModelProto, problem: str | None) -> GraphPruneError:
    """The error for a model onnxruntime refuses with its inputs fixed at the analysed shapes, folded or not: a bug
    of graphprune's if it loads unfolded, else what those shapes do to its control flow, said as such."""
    if rejected(model) is None:
        return InternalError(f"graphprune's constant folding made the model unloadable ({problem}); a bug in graphprune")
    undecided = [f"{n.op_type} '{n.name}'" + (f" (its condition reads input {', '.join(map(repr, ins))})" if ins else "")
                 for n in model.graph.node if subgraphs(n) for ins in [inputs_behind(model, n.input[0:1])]]
    return InputShapeError(
        f"onnxruntime refuses the model with its inputs fixed at the analysed shapes, folded or not ({problem}). "
        f"Its control flow is decided at run time ({', '.join(undecided[:3])}), and at static shapes onnxruntime "
        f"type-checks every branch, also one that inputs of these shapes cannot take (with dynamic dimensions it "
        f"does not). graphprune needs static shapes: try other --input-shape values, or a model exported for one "
        f"branch")


def inputs_behind(model: onnx.ModelProto, names) -> list[str]:
    """The graph inputs the top-level tensors ``names`` are computed from."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inputs = {i.name for i in model.graph.input}
    seen, todo, out = set(), [t for t in names if t], []
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in inputs:
            out.append(t)
        elif t in producer:
            todo += [i for i in producer[t].input if i]
    return sorted(out)


def decided_branch(node: onnx.NodeProto, consts: dict[str, onnx.TensorProto]) -> onnx.GraphProto | None:
    """The branch an ``If`` takes when its condition is a constant (a one-element tensor), else None."""
    if node.op_type != "If" or node.domain not in ("", "ai.onnx") or node.input[0] not in consts:
        return None
    cond = numpy_helper.to_array(consts[node.input[0]])
    if cond.size != 1:
        return None
    name = "then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"
    return next((a.g for a in node.attribute if a.name == name), None)


def clashes(branch: onnx.GraphProto, defined: set[str]) -> bool:
    """Whether inlining ``branch`` would define a name twice (ONNX lets sibling scopes reuse names), or it holds
    what plain inlining does not carry (sparse initializers)."""
    return bool(branch.sparse_initializer) or not defined.isdisjoint(defined_names(branch))


def inline_branch(node: onnx.NodeProto, branch: onnx.GraphProto, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes that replace ``node``: ``branch``'s, then an ``Identity`` per output (a branch output may be an
    outer tensor or appear twice, so outputs are not renamed in place). Its initializers join ``graph``'s."""
    graph.initializer.extend(branch.initializer)
    graph.value_info.extend(branch.value_info)
    out = list(branch.node)
    for i, (inner, outer) in enumerate(zip(branch.output, node.output)):
        if outer:
            out.append(onnx.helper.make_node("Identity", [inner.name], [outer], name=f"{node.name}::output{i}"))
    return out


def defined_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name ``graph`` defines, in its subgraphs too."""
    out = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for n in graph.node:
        out.update(t for t in n.output if t)
        for g in subgraphs(n):
            out |= defined_names(g)
    return out


def checked(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, once every node in every scope reads only names defined before it: folding must not hand on a
    graph onnxruntime would refuse, which verification would then blame on the input."""
    for node, name in undefined_reads(model.graph, set()):
        raise InternalError(f"constant folding left node '{node.name}' ({node.op_type}) reading '{name}', which "
                            f"nothing defines before it: a bug in graphprune's folding, not in the model")
    return model


def undefined_reads(graph: onnx.GraphProto, outer: set[str]) -> Iterator[tuple[onnx.NodeProto, str]]:
    known = outer | {i.name for i in graph.input} | {i.name for i in graph.initializer}
    known |= {i.name for i in graph.sparse_initializer}
    for n in graph.node:
        for t in n.input:
            if t and t not in known:
                yield n, t
        for g in subgraphs(n):
            yield from undefined_reads(g, known)
        known.update(t for t in n.output if t)
    for o in graph.output:
        if o.name not in known:
            yield onnx.NodeProto(name="graph output", op_type="Output"), o.name
