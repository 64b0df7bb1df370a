"""Which fx calls of a pruned model would compute the wrong thing, and what their arguments must become.

A plain ``nn.Module`` recomputes shape values (``x.size(0)``) but keeps literals (``x.view(1, 256)``,
``torch.split(x, [12, 20], 1)``, ``x[:, :16]``, ``F.conv2d(..., groups=8)``) as written. For every lowered fx
call this module compares, leaf by leaf:

* **get** — the arguments the call would receive in the pruned model: literals as written, shape values
  re-evaluated on ``meta`` tensors of the pruned shapes;
* **need** — the arguments it must receive: from the call's fix (``FIXES``, keyed by the table's ``fix``) when
  its arguments encode channel counts, else the values of the original run (the ONNX path's semantics: a shape
  used as a number is a constant of the analysed model).

A call where they differ is a :class:`Rewrite`; the emitter then returns a GraphModule with the needed literals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import fx

from graphprune.frontends.fx.trace import TorchSource
from graphprune.emit.onnx import FixContext


class _Unknown:
    """A shape value that could not be re-evaluated: equal to nothing, so its call gets the original literal."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()


@dataclass(frozen=True)
class Rewrite:
    node: str
    op: str
    target: Any
    args: tuple
    kwargs: dict
    reason: str


@dataclass(frozen=True, eq=False)
class Env:
    source: TorchSource
    ctx: FixContext
    new: dict[str, Any]  # fx name -> value in the pruned model (meta tensors for tensors)
    old: dict[str, Any]  # fx name -> value in the original run

    def meta(self, node: fx.Node) -> Any:
        return self.new.get(node.name, UNKNOWN)

    def ir(self, node: fx.Node) -> Any:
        return self.source.tensors.get(node.name)


def pruned_values(source: TorchSource, ctx: FixContext) -> dict[str, Any]:
    """fx name → value under the plan: meta tensors of the pruned shapes, shape values re-evaluated."""
    env: dict[str, Any] = {}
    for n in source.traced.graph.nodes:
        kind = source.kinds.get(n.name)
        if kind in ("tensor", "data"):
            env[n.name] = meta_of(source, source.tensors.get(n.name), ctx)
        elif n.op in ("call_function", "call_method"):
            env[n.name] = evaluate(n, env)
        elif n.op != "output":
            env[n.name] = source.values.get(n.name)
    return env


def meta_of(source: TorchSource, ir: Any, ctx: FixContext) -> Any:
    if isinstance(ir, tuple):
        return tuple(meta_of(source, t, ctx) for t in ir)
    if not isinstance(ir, str) or source.graph.shape(ir) is None:
        return UNKNOWN
    t = source.graph.tensor(ir)
    dtype = torch.from_numpy(np.zeros((), t.dtype)).dtype if t.dtype is not None else torch.float32
    return torch.empty(ctx.new_shape(ir), dtype=dtype, device="meta")


def evaluate(n: fx.Node, env: dict[str, Any]) -> Any:
    args, kwargs = fx.node.map_arg((n.args, n.kwargs), lambda a: env.get(a.name, UNKNOWN))
    if contains_unknown((args, kwargs)):
        return UNKNOWN
    try:
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        return n.target(*args, **kwargs)
    except Exception:
        return UNKNOWN


def contains_unknown(value: Any) -> bool:
    found = []
    fx.node.map_aggregate(value, lambda v: found.append(v) if v is UNKNOWN else v)
    return bool(found)


def concrete(n: fx.Node, source: TorchSource, values: dict[str, Any]) -> tuple[tuple, dict]:
    """``(args, kwargs)`` with shape values replaced by ``values``; tensor arguments stay fx nodes."""
    def leaf(a: fx.Node) -> Any:
        return values.get(a.name, UNKNOWN) if source.kinds.get(a.name) == "value" else a
    return fx.node.map_arg((n.args, n.kwargs), leaf)


def rewrites(source: TorchSource, ctx: FixContext) -> list[Rewrite]:
    """Every lowered call whose arguments must change for the pruned model to compute the plan."""
    env = Env(source, ctx, pruned_values(source, ctx), dict(source.values))
    out = []
    for n in source.traced.graph.nodes:
        if n.op not in ("call_function", "call_method", "call_module") or source.kinds.get(n.name) == "value":
            continue
        get = concrete(n, source, env.new)
        fix = FIXES.get(source.fixes.get(n.name, ""))
        need = fix(n, get, env) if fix else (n.op, n.target, *concrete(n, source, env.old))
        op, target, args, kwargs = need
        if op == n.op and target == n.target and same(get, (args, kwargs)):
            continue
        merged = merge((n.args, n.kwargs), get, (args, kwargs)) if target == n.target else (args, kwargs)
        out.append(Rewrite(n.name, op, target, merged[0], merged[1], describe(n, get, (args, kwargs))))
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, fx.Node) or isinstance(b, fx.Node):
        return a is b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, slice) and isinstance(b, slice):
        return same((a.start, a.stop, a.step), (b.start, b.stop, b.step))
    try:
        return bool(a == b) and type(a) is not _Unknown and type(b) is not _Unknown
    except Exception:
        return False


def merge(orig: Any, get: Any, need: Any) -> Any:
    """``need``, keeping the original argument (a node or a literal) wherever get already equals need."""
    if same(get, need):
        return orig
    if isinstance(orig, (list, tuple)) and isinstance(need, (list, tuple)) and len(orig) == len(need) == len(get):
        return type(need)(merge(o, g, w) for o, g, w in zip(orig, get, need))
    if isinstance(orig, dict) and isinstance(need, dict) and orig.keys() == need.keys() == get.keys():
        return {k: merge(orig[k], get[k], need[k]) for k in need}
    if isinstance(orig, slice) and isinstance(need, slice) and isinstance(get, slice):
        return slice(*(merge(o, g, w) for o, g, w in zip((orig.start, orig.stop, orig.step), (get.start, get.stop, get.step),
                                                          (need.start, need.stop, need.step))))
    return need


def describe(n: fx.Node, get: tuple[tuple, dict], need: tuple[tuple, dict]) -> str:
    """``name (target): arg 1 would be [12, 20], must be [6, 10]; groups would be 8, must be 4``."""
    def show(v):
        return repr(fx.node.map_arg(v, lambda a: a.name))
    target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    (ga, gk), (na, nk) = get, need
    if len(ga) != len(na):
        diffs = [f"arguments would be {show(ga[1:])}, must be {show(na[1:])}"]
    else:
        diffs = [f"arg {i} would be {show(g)}, must be {show(w)}" for i, (g, w) in enumerate(zip(ga, na)) if not same(g, w)]
    diffs += [f"{k} would be {show(gk.get(k))}, must be {show(nk.get(k))}"
              for k in sorted(set(gk) | set(nk)) if not same(gk.get(k), nk.get(k))]
    return f"{n.name} ({target}): {'; '.join(diffs)}"


# ---- fixes: the arguments a call must get under the plan ------------------------------------------------------

Need = tuple[str, Any, tuple, dict]


def fix_view(n: fx.Node, get: tuple[tuple, dict], env: Env) -> Need:
    """``view`` / ``reshape``: the pruned output shape, keeping ``-1`` where the original had it."""
    args, kwargs = get
    old_args, old_kwargs = concrete(n, env.source, env.old)
    if kwargs or old_kwargs or len(args) < 2:
        return n.op, n.target, args, kwargs
    single = len(args) == 2 and isinstance(args[1], (tuple, list, torch.Size))
    old = list(old_args[1]) if single else list(old_args[1:])
    new = env.ctx.new_shape(env.ir(n))
    want = [-1 if o == -1 else d for o, d in zip(old, new)]
    rest = (type(args[1])(want) if not isinstance(args[1], torch.Size) else tuple(want),) if single else tuple(want)
    return n.op, n.target, (args[0], *rest), kwargs


def fix_unflatten(n: fx.Node, get: tuple[tuple, dict], env: Env) -> Need:
    args, kwargs = get
    old_args, _ = concrete(n, env.source, env.old)
    if kwargs or len(args) != 3:
        return n.op, n.target, args, kwargs
    rank = len(env.ctx.new_shape(env.ir(n)))
    dim = old_args[1] % (rank - len(old_args[2]) + 1)
    new = env.ctx.new_shape(env.ir(n))[dim:dim + len(old_args[2])]
    want = type(args[2])(-1 if o == -1 else d for o, d in zip(old_args[2], new))
    return n.op, n.target, (args[0], args[1], want), kwargs


def fix_split(n: fx.Node, get: tuple[tuple, dict], env: Env) -> Need:
    """``split`` / ``chunk``: explicit pruned sizes when the call as written would cut elsewhere."""
    args, kwargs = get
    ir = env.source.ir_node(n.name, "Split")
    if ir is None:
        return n.op, n.target, args, kwargs
    axis = int(ir.attr("axis"))
    want = [env.ctx.new_shape(o)[axis] for o in ir.outputs]
    x = args[0]
    try:
        call = (lambda *a, **k: getattr(a[0], n.target)(*a[1:], **k)) if n.op == "call_method" else n.target
        produced = [p.shape[axis] for p in call(env.meta(x), *args[1:], **kwargs)]
    except Exception:
        produced = None
    if produced == want:
        return n.op, n.target, args, kwargs
    if n.op == "call_method":
        return "call_method", "split", (x, want, axis), {}
    return "call_function", torch.split, (x, want, axis), {}


def fix_slice(n: fx.Node, get: tuple[tuple, dict], env: Env) -> Need:
    """Basic indexing: a slice keeps its atoms (new start = kept atoms before the old start); an int index
    moves to the kept position of its atom."""
    args, kwargs = get
    x, index = args[0], args[1]
    ir = env.source.ir_node(n.name, "Slice")
    x_ir = env.ir(x)
    if ir is None or not isinstance(x_ir, str):
        return n.op, n.target, args, kwargs
    old_index = concrete(n, env.source, env.old)[0][1]
    was_tuple = isinstance(index, tuple)
    entries = list(index) if was_tuple else [index]
    old_entries = list(old_index) if was_tuple else [old_index]
    old_shape, new_shape = env.source.graph.shape(x_ir), env.ctx.new_shape(x_ir)
    sliced_new = env.ctx.new_shape(ir.outputs[0])
    used = sum(1 for e in old_entries if e is not None and e is not Ellipsis)
    want, axis = [], 0
    for e, o in zip(entries, old_entries):
        if o is None or o is Ellipsis:
            want.append(e)
            axis += len(old_shape) - used if o is Ellipsis else 0
            continue
        kept = env.ctx.kept(x_ir, axis)
        if isinstance(o, int):
            i = o % old_shape[axis]
            pos = int(np.searchsorted(kept, i)) if kept is not None else i
            ok = isinstance(e, int) and e % new_shape[axis] == pos
            want.append(e if ok else pos)
        else:
            taken = range(old_shape[axis])[o]
            if taken.step != 1 or (kept is None and new_shape[axis] == old_shape[axis]):
                want.append(e)
            else:
                start = int(np.searchsorted(kept, taken.start)) if kept is not None else taken.start
                target = range(start, start + sliced_new[axis])
                try:
                    ok = range(new_shape[axis])[e] == target
                except Exception:
                    ok = False
                want.append(e if ok else slice(target.start, target.stop))
        axis += 1
    return n.op, n.target, (x, tuple(want) if was_tuple else want[0]), kwargs


def fix_conv_groups(n: fx.Node, get: tuple[tuple, dict], env: Env) -> Need:
    """``F.conv*d(..., groups=g)``: the number of kept groups."""
    args, kwargs = get
    ir = env.source.ir_node(n.name, "Conv") or env.source.ir_node(n.name, "ConvTranspose")
    kept = env.ctx.kept_virtual(f"{ir.name}#groups") if ir is not None else None
    if kept is None:
        return n.op, n.target, args, kwargs
    at = 6
    if "groups" in kwargs or len(args) <= at:
        return n.op, n.target, args, {**kwargs, "groups": len(kept)}
    return n.op, n.target, (*args[:at], len(kept), *args[at + 1:]), kwargs


FIXES: dict[str, Callable[[fx.Node, tuple[tuple, dict], Env], Need]] = {
    "view": fix_view,
    "unflatten": fix_unflatten,
    "split": fix_split,
    "slice": fix_slice,
    "conv_groups": fix_conv_groups,
}
