"""Torch emitter: apply a :class:`~graphprune.plan.Plan` to a deep copy of the original ``nn.Module``.

1. Every parameter, buffer and tensor attribute with a pruned axis is sliced (``index_select`` on the kept
   indices) and put back under the same attribute path(s), as a fresh ``nn.Parameter`` where it was one, so
   ``state_dict`` keys stay the same and optimizers can be built on the result. BN running statistics are
   buffers and are sliced with the rest.
2. Module attributes follow the new shapes: ``in_channels`` / ``out_channels`` / ``groups`` of convs,
   ``in_features`` / ``out_features``, ``num_features``, ``normalized_shape``, ``num_channels``,
   ``num_parameters``, ``unflattened_size``, ``hidden_size`` / ``input_size`` of recurrent layers
   (``MODULE_FIXES``).
3. Calls whose literal arguments encode channel counts (``x.view(1, 256)``, ``torch.split(x, [12, 20], 1)``,
   ``torch.chunk`` that would now cut unevenly, ``x[:, :16]``, ``F.conv2d(..., groups=8)``, a shape used as a
   number) cannot be rewritten in a plain module: :func:`graphprune.emit.torch_fixes.rewrites` finds them, and
   the result is then the fx ``GraphModule`` of the trace with those arguments rewritten, built over the same
   (pruned) submodules, so parameter names are unchanged. Tensors created inside ``forward`` that had to be
   sliced force the GraphModule too. Otherwise the result is an ordinary copy of the user's module class.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import fx, nn

from graphprune.errors import InternalError
from graphprune.frontends.fx.trace import TorchSource, fetch
from graphprune.channels.plan import Plan
from graphprune.emit.onnx import FixContext
from graphprune.emit.torch_fixes import Rewrite, rewrites


@dataclass(frozen=True, eq=False)
class EmittedModule:
    model: nn.Module
    graph_module: bool  # True: a rewritten fx.GraphModule (see ``notes`` for why)
    rewrites: tuple[Rewrite, ...] = ()
    traced_only: tuple[str, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        out = tuple(f"returned an fx.GraphModule, as written the call computes something else: {r.reason}"
                    for r in self.rewrites)
        out += tuple(f"returned an fx.GraphModule: tensor '{t}' is created inside forward and had to be sliced"
                     for t in self.traced_only)
        return out


def emit(source: TorchSource, plan: Plan, *, rewrite_calls: bool = True) -> EmittedModule:
    """The pruned module; an untouched deep copy of the original when the plan removes nothing. With
    ``rewrite_calls`` (a torch.fx trace), calls whose literal arguments no longer fit the plan make the result the
    rewritten fx.GraphModule; without (an ATen graph, which is no module to hand back) the module stays the user's
    class and its verification shows whether ``forward`` still fits."""
    model = copy.deepcopy(source.module)
    if plan.empty:
        return EmittedModule(model, False)
    ctx = FixContext(plan, source.graph, source.graph.opset)
    literals = slice_tensors(model, source, plan)
    fix_modules(model, source, ctx)
    needed = tuple(rewrites(source, ctx)) if rewrite_calls else ()
    if not needed and not literals:
        return EmittedModule(model, False)
    return EmittedModule(graph_module(model, source, needed, literals), True, needed, tuple(sorted(literals)))


def tensor_axes(plan: Plan) -> dict[str, list[tuple[int, np.ndarray]]]:
    by_tensor: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for space, kept in plan.keep.items():
        if not space.virtual:
            by_tensor[space.tensor].append((space.axis, kept))
    return by_tensor


def take(t: torch.Tensor, axes: list[tuple[int, np.ndarray]]) -> torch.Tensor:
    with torch.no_grad():
        for axis, kept in axes:
            t = t.index_select(axis, torch.as_tensor(np.asarray(kept), dtype=torch.long, device=t.device))
        return t.detach().clone().contiguous()


def assign(root: nn.Module, path: str, value: Any) -> None:
    owner, _, name = path.rpartition(".")
    setattr(root.get_submodule(owner) if owner else root, name, value)


def slice_tensors(model: nn.Module, source: TorchSource, plan: Plan) -> dict[str, torch.Tensor]:
    """Slice every attribute tensor with a pruned axis in ``model``; return the sliced tensors that exist only in
    the trace (tensor literals of ``forward``), keyed by their trace attribute."""
    literals: dict[str, torch.Tensor] = {}
    for name, axes in tensor_axes(plan).items():
        if name not in source.paths:
            if source.graph.tensor(name).is_const:
                raise InternalError(f"plan slices constant '{name}', which belongs to no module attribute")
            continue  # an activation
        paths = source.paths[name]
        if name in source.traced_only:
            literals[paths[0]] = take(fetch(source.traced, paths[0]), axes)
            continue
        old = fetch(model, paths[0])
        new = take(old, axes)
        value = nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new
        for path in paths:
            assign(model, path, value)
    return literals


# ---- module attributes ----------------------------------------------------------------------------------------


def fix_conv(m: nn.Module, node: str, ctx: FixContext) -> None:
    kept = ctx.kept_virtual(f"{node}#groups")
    if kept is not None:
        m.groups = len(kept)
    w = m.weight
    if m.transposed:
        m.in_channels, m.out_channels = w.shape[0], w.shape[1] * m.groups
    else:
        m.in_channels, m.out_channels = w.shape[1] * m.groups, w.shape[0]


def fix_linear(m: nn.Module, node: str, ctx: FixContext) -> None:
    m.out_features, m.in_features = m.weight.shape


def channels_in(ctx: FixContext, node: str) -> int:
    return ctx.new_shape(ctx.graph.node_by_name[node].inputs[0])[1]


def fix_norm_base(m: nn.Module, node: str, ctx: FixContext) -> None:
    m.num_features = channels_in(ctx, node)


def fix_group_norm(m: nn.Module, node: str, ctx: FixContext) -> None:
    """Whole groups go (the GroupNormalization rule's virtual space): the group count follows them."""
    m.num_channels = channels_in(ctx, node)
    kept = ctx.kept_virtual(f"{node}#groups")
    if kept is not None:
        m.num_groups = len(kept)


def fix_layer_norm(m: nn.Module, node: str, ctx: FixContext) -> None:
    x = ctx.new_shape(ctx.graph.node_by_name[node].inputs[0])
    m.normalized_shape = tuple(x[len(x) - len(m.normalized_shape):])


def fix_prelu(m: nn.Module, node: str, ctx: FixContext) -> None:
    m.num_parameters = int(m.weight.numel())


def fix_unflatten(m: nn.Module, node: str, ctx: FixContext) -> None:
    y = ctx.new_shape(ctx.graph.node_by_name[node].outputs[0])
    dim = m.dim % len(y) if m.dim >= 0 else len(y) + m.dim - len(m.unflattened_size) + 1
    m.unflattened_size = type(m.unflattened_size)(y[dim:dim + len(m.unflattened_size)])


def fix_rnn(m: nn.Module, node: str, ctx: FixContext) -> None:
    """nn.LSTM / nn.GRU / nn.RNN: one ``hidden_size`` for every layer and direction (the lowering couples them),
    ``input_size`` from layer 0; the weights and biases of every layer were sliced by their paths."""
    m.hidden_size = int(m.weight_hh_l0.shape[1])
    m.input_size = int(m.weight_ih_l0.shape[1])


def fix_embedding(m: nn.Module, node: str, ctx: FixContext) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape


Fix = Callable[[nn.Module, str, FixContext], None]

# module type → its fix and the IR ops of the node the fix reads (the module's own call of that op: a timm
# ``LayerNorm2d`` permutes before its LayerNormalization, a ``Conv2dSame`` pads before its Conv); () = none read
MODULE_FIXES: dict[type, tuple[Fix, tuple[str, ...]]] = {
    nn.modules.conv._ConvNd: (fix_conv, ("Conv", "ConvTranspose")),
    nn.Linear: (fix_linear, ()),
    nn.modules.batchnorm._NormBase: (fix_norm_base, ("BatchNormalization", "InstanceNormalization")),
    nn.GroupNorm: (fix_group_norm, ("GroupNormalization",)),
    nn.LayerNorm: (fix_layer_norm, ("LayerNormalization",)),
    nn.PReLU: (fix_prelu, ()),
    nn.Unflatten: (fix_unflatten, ("Reshape",)),
    nn.RNNBase: (fix_rnn, ()),
    nn.Embedding: (fix_embedding, ()),
}


def fix_timm_attention(m: nn.Module, node: str, ctx: FixContext) -> None:
    """timm's ``Attention``: ``forward`` reshapes by ``num_heads`` / ``head_dim`` and merges to ``attn_dim``. Heads go
    whole (the head dimension is pinned), so the head count follows the fused q, k, v projection."""
    m.num_heads = int(m.qkv.weight.shape[0]) // (3 * int(m.head_dim))
    m.attn_dim = m.num_heads * int(m.head_dim)


def fix_csp_half(m: nn.Module, node: str, ctx: FixContext) -> None:
    """Ultralytics' CSP blocks (``C2``, ``C2f`` and its ``C3k2``, ``C2fAttn``, ``RepNCSPELAN4``): ``forward`` chunks
    ``cv1``'s output in two halves, ``forward_split`` (what some exports run) splits it as ``(c, c)``. The halves keep
    equal counts (the ``Tie`` of an ATen split), so ``c`` is half of ``cv1``'s new width."""
    m.c = int(m.cv1.conv.weight.shape[0]) // 2


# the same for classes of optional libraries, by ``(module, qualified name)`` of a class in the module type's MRO: no
# import of the library (a model of it is already loaded, else nothing matches)
LIBRARY_FIXES: dict[tuple[str, str], tuple[Fix, tuple[str, ...]]] = {
    ("timm.layers.attention", "Attention"): (fix_timm_attention, ()),
    **{("ultralytics.nn.modules.block", name): (fix_csp_half, ()) for name in ("C2", "C2f", "C2fAttn", "RepNCSPELAN4")},
}


def module_fix(m: nn.Module) -> tuple[Fix, tuple[str, ...]] | None:
    """The fix of ``m``'s nearest class (in its MRO) that has one."""
    for c in type(m).__mro__:
        entry = MODULE_FIXES.get(c) or LIBRARY_FIXES.get((c.__module__, c.__qualname__))
        if entry is not None:
            return entry
    return None


def fix_modules(model: nn.Module, source: TorchSource, ctx: FixContext) -> None:
    """Every module whose call lowered to IR nodes gets its size attributes from its resized tensors (and from the
    node of its call that the fix reads; a module whose call did not lower, an Unknown op, is left as it is)."""
    for path, nodes in source.module_calls.items():
        m = model.get_submodule(path)
        entry = module_fix(m)
        if entry is None:
            continue
        fix, ops = entry
        lowered = [n for n in nodes if not source.graph.node_by_name[n].op.startswith("Unknown:")]
        node = next((n for n in lowered if source.graph.node_by_name[n].op in ops), None) if ops else (
            lowered[0] if len(lowered) == len(nodes) else None)
        if node is not None:
            fix(m, node, ctx)


# ---- the GraphModule fallback ---------------------------------------------------------------------------------


def graph_module(model: nn.Module, source: TorchSource, needed: tuple[Rewrite, ...],
                 literals: dict[str, torch.Tensor]) -> fx.GraphModule:
    """The trace with ``needed`` arguments rewritten, over the pruned submodules of ``model``."""
    graph = copy.deepcopy(source.traced.graph)
    nodes = {n.name: n for n in graph.nodes}
    if set(nodes) != {n.name for n in source.traced.graph.nodes}:
        raise InternalError("copying the fx graph renamed its nodes")
    for rw in needed:
        node = nodes[rw.node]
        node.op, node.target = rw.op, rw.target
        node.args, node.kwargs = fx.node.map_arg((rw.args, rw.kwargs), lambda a: nodes[a.name])
    root: dict[str, Any] = {}
    for n in graph.nodes:
        if n.op in ("call_module", "get_attr"):
            if n.target in literals:
                root[n.target] = literals[n.target]
            else:
                try:
                    root[n.target] = fetch(model, n.target)
                except AttributeError:  # a tensor literal of forward that stays as it is
                    root[n.target] = copy.deepcopy(fetch(source.traced, n.target))
    graph.lint()
    gm = fx.GraphModule(root, graph, class_name=f"{type(source.module).__name__}GraphModule")
    gm.train(model.training)
    return gm
