"""torch.fx capture: trace an ``nn.Module``, propagate shapes from example inputs, lower it to the IR.

Every fx node falls in one of three kinds:

* **tensor** nodes (the result holds tensors) are lowered through the one canonicalisation table in
  :mod:`graphprune.frontends.fx.ops` to IR nodes with ONNX op names, so the channel rules apply unchanged.
  A node the table does not know becomes ``Unknown:<target>``: it has no rule and freezes what it touches.
* **value** nodes compute Python values from shapes only (``x.size(0)``, ``x.shape[2] * 4``). They are not
  lowered: where one feeds a tensor op as a scalar it becomes a constant, as in an ONNX export, and the torch
  emitter re-evaluates them under a plan (:mod:`graphprune.emit.torch_fixes`).
* **data** nodes compute Python values from tensor contents (``x.max().item()``); they are lowered as Unknown
  nodes producing a rank-0 tensor, so nothing they read can be pruned.

IR names: activations are named after their fx node; parameters, buffers and tensor attributes after their
attribute path (``"layer1.0.conv1.weight"``; a tied tensor under its first name); tensors the lowering creates
itself carry ``::`` in their name. IR nodes are named after their fx node (a second node of the same fx node
gets ``::k``) and their ``source`` is the module path for module calls, so ``exclude`` patterns may name either.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from graphprune.errors import ModelLoadError, UsageError
from graphprune.frontends.fx.lowering import OPSET, Unsupported
from graphprune.frontends.fx.ops import lookup
from graphprune.ir import Graph, Node, Tensor



class UntraceableModelError(ModelLoadError):
    """torch.fx cannot trace the module (data-dependent control flow and the like): use the ONNX path."""




@dataclass(frozen=True)
class TensorInfo:
    """What shape propagation recorded for a tensor result."""

    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True, eq=False)
class TorchSource:
    """The module as given, its fx trace, and its IR, with the maps the torch emitter and verifier need.

    ``tensors[fx name]`` is the IR tensor of a tensor node (a tuple of names, ``None`` for non-tensor elements,
    when the result is a tuple); ``paths[ir const]`` lists every attribute path holding that tensor in ``module``.
    """

    module: nn.Module
    traced: fx.GraphModule
    graph: Graph
    example_inputs: tuple[Any, ...]
    values: Mapping[str, Any]
    kinds: Mapping[str, str]
    tensors: Mapping[str, Any]
    ir_nodes: Mapping[str, tuple[str, ...]]
    fixes: Mapping[str, str]
    paths: Mapping[str, tuple[str, ...]]
    traced_only: frozenset[str]  # IR constants that live only in the trace (tensor literals made in forward)
    module_calls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # module path → its call's IR nodes
    capture: str = "torch.fx"  # how the graph was captured: "torch.fx" (symbolic trace) or "torch.export"
    frontend: Any = None  # the :class:`graphprune.frontends.base.Frontend` that loaded it (emit, verify, report)

    @property
    def model(self) -> nn.Module:
        """The source model (``PruneState.start`` reads it; passes never change it)."""
        return self.module

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: self.graph.shape(name) for name in self.graph.inputs}

    def ir_node(self, fx_name: str, op: str) -> Node | None:
        """The first IR node of ``op`` lowered from fx node ``fx_name``."""
        for name in self.ir_nodes.get(fx_name, ()):
            node = self.graph.node_by_name[name]
            if node.op == op:
                return node
        return None


def load(module: nn.Module, example_inputs: Any) -> TorchSource:
    """Trace ``module``, run it once on ``example_inputs`` to record shapes, and lower it to the IR."""
    if not isinstance(module, nn.Module):
        raise UsageError(f"expected a torch.nn.Module, got {type(module).__name__}")
    inputs = as_inputs(example_inputs)
    traced = trace(module)
    values = propagate(traced, inputs, type(module).__name__)
    return Lowering(module, traced, values).run(inputs)


def as_inputs(example_inputs: Any) -> tuple[Any, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise UsageError(f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}")


def returns_nothing(n: fx.Node) -> bool:
    """An ATen op with no results (``_assert_tensor_metadata``, ``_assert_scalar``): a check, not a computation."""
    schema = getattr(n.target, "_schema", None)
    return n.op == "call_function" and schema is not None and not schema.returns


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def untouched(module: nn.Module):
    """Every submodule's attributes as they were once the block ends: a capture runs ``forward``'s Python, and a
    forward that caches what it computes on its module (YOLO's ``Detect`` keeps ``anchors``, ``strides`` and
    ``shape``) would otherwise be left holding a torch.export FakeTensor or an fx Proxy, which no later run, copy
    or save survives. Shallow: the same parameter and buffer objects, their contents are not copied."""
    saved = {m: (dict(vars(m)), {k: dict(getattr(m, k)) for k in MODULE_DICTS}) for m in module.modules()}
    try:
        yield
    finally:
        for m, (attrs, dicts) in saved.items():
            vars(m).clear()
            vars(m).update(attrs)
            for k, d in dicts.items():
                getattr(m, k).clear()
                getattr(m, k).update(d)


MODULE_DICTS = ("_parameters", "_buffers", "_modules")


def trace(module: nn.Module) -> fx.GraphModule:
    try:
        with untouched(module):
            return fx.symbolic_trace(module)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        why = text[0] if text else type(exc).__name__
        raise UntraceableModelError(
            f"torch.fx cannot trace {type(module).__name__} ({why}); export it with torch.onnx.export and prune the "
            f".onnx file instead: graphprune.prune('model.onnx', ...)") from exc


class _Record(ShapeProp):
    """ShapeProp that also keeps every node's result, summarised (tensors as :class:`TensorInfo`)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.values[n.name] = summarise(result)
        return result


def propagate(traced: fx.GraphModule, inputs: tuple[Any, ...], what: str) -> dict[str, Any]:
    """Run the trace once in eval mode without gradients (BN statistics untouched), restoring training flags."""
    modes = {m: m.training for m in traced.modules()}
    inputs = tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in inputs)
    in_eval_mode(traced)
    try:
        with torch.no_grad():
            rec = _Record(traced)
            rec.propagate(*inputs)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        why = text[0] if text else type(exc).__name__
        raise ModelLoadError(f"running {what} on the example inputs failed: {why}") from exc
    finally:
        for m, training in modes.items():
            m.training = training
    return rec.values


@contextlib.contextmanager
def evaluating(gm: nn.Module):
    """``gm`` in eval mode without gradients for a while; its training flags restored after."""
    modes = {m: m.training for m in gm.modules()}
    in_eval_mode(gm)
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training


def in_eval_mode(module: nn.Module) -> None:
    """Every submodule in eval mode, flag by flag: a graph captured by torch.export refuses ``.eval()`` (it was
    captured in a mode already), and setting the flags is what ``.eval()`` does for the others."""
    for m in module.modules():
        m.training = False


def summarise(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorInfo(tuple(int(d) for d in value.shape), value.dtype)
    if isinstance(value, torch.Size):
        return tuple(int(d) for d in value)
    if isinstance(value, list):
        return [summarise(v) for v in value]
    if isinstance(value, tuple):
        return tuple(summarise(v) for v in value)
    if isinstance(value, dict):
        return {k: summarise(v) for k, v in value.items()}
    return value


def has_tensor(value: Any) -> bool:
    if isinstance(value, TensorInfo):
        return True
    if isinstance(value, (list, tuple)):
        return any(has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(has_tensor(v) for v in value.values())
    return False


def numpy_dtype(dtype: torch.dtype | None) -> np.dtype | None:
    try:
        return torch.empty((), dtype=dtype).numpy().dtype if dtype is not None else None
    except (TypeError, RuntimeError):
        return None


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    try:
        return t.numpy().copy()
    except TypeError:  # bfloat16 and friends: magnitudes are all the rules and scores need
        return t.float().numpy()


def fetch(root: nn.Module, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def attribute_paths(module: nn.Module) -> dict[int, list[str]]:
    """``id(tensor) → [paths]`` over parameters, buffers and plain tensor attributes (first path canonical)."""
    out: dict[int, list[str]] = {}
    named = itertools.chain(module.named_parameters(remove_duplicate=False),
                            module.named_buffers(remove_duplicate=False))
    for name, t in named:
        if t is not None and name not in out.setdefault(id(t), []):
            out[id(t)].append(name)
    for prefix, m in module.named_modules(remove_duplicate=False):
        for key, value in vars(m).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                path = f"{prefix}.{key}" if prefix else key
                if path not in out.setdefault(id(value), []):
                    out[id(value)].append(path)
    return {k: v for k, v in out.items() if v}


SHAPE_METHODS = {"size", "dim", "ndimension", "numel", "nelement", "get_device", "is_contiguous"}
SHAPE_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout"}


class Lowering:
    """Walks the trace once and builds the IR. The table's lowerings call the helpers below."""

    def __init__(self, module: nn.Module, traced: fx.GraphModule, values: Mapping[str, Any], *,
                 fold_constants: bool = False, capture: str = "torch.fx"):
        """``fold_constants``: a call computed from literals and non-persistent buffers only (a causal mask, a
        rotary table, position ids) becomes a constant produced by a ``Constant`` node, whose rule freezes it: what
        it touches is frozen, and no weight the module computes at run time is ever sliced (torch.export)."""
        self.module, self.gm, self.values = module, traced, values
        self.fold, self.capture = fold_constants, capture
        self.folded: dict[str, Any] = {}
        state = module.state_dict(keep_vars=True)  # parameters and persistent buffers: the module's weights
        self.persistent = {id(t) for t in state.values()} | set(state)
        self.nodes: list[Node] = []
        self.tensors: dict[str, Tensor] = {}
        self.kinds: dict[str, str] = {}
        self.alias: dict[str, Any] = {}
        self.ir_nodes: dict[str, tuple[str, ...]] = {}
        self.fixes: dict[str, str] = {}
        self.paths: dict[str, tuple[str, ...]] = {}
        self.traced_only: set[str] = set()
        self.by_id = attribute_paths(module)
        self.fx_names = {n.name for n in traced.graph.nodes}
        self.graph_inputs: list[str] = []
        self.outputs: list[str] = []
        self.current: fx.Node | None = None
        self._emitted: list[str] = []

    # ---- the walk ------------------------------------------------------------------------------------------

    def run(self, example_inputs: tuple[Any, ...]) -> TorchSource:
        for n in self.gm.graph.nodes:
            self.current = n
            self.visit(n)
        graph = Graph(nodes=tuple(self.nodes), tensors=self.tensors, inputs=tuple(self.graph_inputs),
                      outputs=tuple(dict.fromkeys(self.outputs)), opset=OPSET)
        return TorchSource(
            module=self.module, traced=self.gm, graph=graph, example_inputs=example_inputs,
            values=MappingProxyType(dict(self.values)), kinds=MappingProxyType(self.kinds),
            tensors=MappingProxyType(self.alias), ir_nodes=MappingProxyType(self.ir_nodes),
            fixes=MappingProxyType(self.fixes), paths=MappingProxyType(self.paths),
            traced_only=frozenset(self.traced_only), module_calls=MappingProxyType(self.module_calls()),
            capture=self.capture)

    def module_calls(self) -> dict[str, tuple[str, ...]]:
        """Module path → the IR nodes lowered from its own call, in graph order: those of a symbolic trace's
        ``call_module`` node, and of every node whose innermost ``nn_module_stack`` entry it is (a module traced
        through, an ATen graph)."""
        out: dict[str, list[str]] = {}
        for n in self.gm.graph.nodes:
            names = self.ir_nodes.get(n.name)
            if not names:
                continue
            if n.op == "call_module":
                out.setdefault(n.target, []).extend(names)
            elif n.meta.get("nn_module_stack"):
                out.setdefault(list(n.meta["nn_module_stack"].values())[-1][0], []).extend(names)
        return {path: tuple(nodes) for path, nodes in out.items()}

    def visit(self, n: fx.Node) -> None:
        value = self.values.get(n.name)
        self._emitted = []
        if n.op == "output":
            self.outputs += [t for a in flat_nodes(n.args) for t in self.names_of(a)]
        elif n.op == "placeholder":
            self.kinds[n.name] = "tensor" if isinstance(value, TensorInfo) else "value"
            if isinstance(value, TensorInfo):
                self.alias[n.name] = self.add_tensor(n.name, value)
                self.graph_inputs.append(n.name)
        elif n.op == "get_attr":
            obj = fetch(self.gm, n.target)
            self.kinds[n.name] = "tensor" if isinstance(obj, torch.Tensor) else "value"
            if isinstance(obj, torch.Tensor) and self.fold and not {id(obj), n.target} & self.persistent:
                self.constant_node(n, obj)  # a lifted constant or a non-persistent buffer: not a weight
            elif isinstance(obj, torch.Tensor):
                self.alias[n.name] = self.constant(obj, n.target)
        elif (n.op == "call_module" and n.target == "_guards_fn") or returns_nothing(n):
            self.kinds[n.name] = "value"  # torch.export's input guards and metadata asserts: checks, no data
        elif self.fold and n.op == "call_function" and has_tensor(value) and self.foldable(n):
            self.kinds[n.name] = "tensor"
            self.fold_node(n)
        elif has_tensor(value):
            self.kinds[n.name] = "tensor"
            self.lower(n)
        elif self.is_data_value(n):
            self.kinds[n.name] = "data"
            self.alias[n.name] = self.add_tensor(n.name, TensorInfo((), torch.float32))
            self.unknown(n, outputs=[n.name])
        else:
            self.kinds[n.name] = "value"

    def foldable(self, n: fx.Node) -> bool:
        """Computed from literals, shape values and folded constants only (not from an input or a weight)."""
        args = flat_nodes((n.args, n.kwargs))
        return all(a.name in self.folded or self.kinds.get(a.name) == "value" for a in args)

    def fold_node(self, n: fx.Node) -> None:
        """The result of ``n`` as a constant (see ``fold_constants``), made by a ``Constant`` node."""
        def concrete(a):
            return self.folded[a.name] if a.name in self.folded else self.values.get(a.name)

        args, kwargs = fx.node.map_arg((n.args, n.kwargs), concrete)
        try:
            with torch.no_grad():
                result = n.target(*args, **kwargs)
        except Exception:  # arguments it cannot be computed from here: lowered as any call
            self.lower(n)
            return
        if not isinstance(result, torch.Tensor):  # a tuple (meshgrid): its getitems fold from it
            self.folded[n.name] = result
            self.kinds[n.name] = "value"
            return
        self.constant_node(n, result)

    def constant_node(self, n: fx.Node, result: torch.Tensor) -> None:
        """``n``'s tensor as the output of a ``Constant`` node (its rule freezes it: what it touches stays as it is)."""
        self.folded[n.name] = result
        value = to_numpy(result)
        self.tensors[n.name] = Tensor(n.name, tuple(value.shape), value.dtype)
        self.alias[n.name] = n.name
        self.emit("Constant", [], [n.name], value=value)
        self.ir_nodes[n.name] = tuple(self._emitted)

    def is_data_value(self, n: fx.Node) -> bool:
        """A non-tensor result computed from tensor contents rather than from shapes."""
        if n.op == "call_method" and n.target in SHAPE_METHODS:
            return False
        if n.op == "call_function" and n.target is getattr and len(n.args) > 1 and n.args[1] in SHAPE_ATTRS:
            return False
        return any(self.kinds.get(a.name) in ("tensor", "data") for a in flat_nodes((n.args, n.kwargs)))

    def lower(self, n: fx.Node) -> None:
        if (n.op == "call_function" and n.target is operator.getitem and self.is_tuple(n.args[0])
                and isinstance(n.args[1], (int, slice))):
            element = self.alias[n.args[0].name][n.args[1]]
            self.alias[n.name] = element
            if element is None:
                self.kinds[n.name] = "value"
            return
        entry = lookup(self, n)
        mark_nodes, mark_tensors = len(self.nodes), set(self.tensors)
        try:
            if entry is None:
                raise Unsupported(n.target)
            entry.lower(self, Call(n, self.module_of(n), bind(n, entry.params)))
            if entry.fix:
                self.fixes[n.name] = entry.fix
        except Exception:  # Unsupported, or arguments a lowering did not foresee: the node freezes what it touches
            del self.nodes[mark_nodes:]
            for t in set(self.tensors) - mark_tensors:
                del self.tensors[t]
                self.paths.pop(t, None)
                self.traced_only.discard(t)
            self.alias.pop(n.name, None)
            self._emitted = []
            self.unknown(n)
        self.ir_nodes[n.name] = tuple(self._emitted)

    def unknown(self, n: fx.Node, outputs: list[str] | None = None) -> None:
        """An op without a table entry: an IR node with no rule, reading every tensor argument (and a module's
        own parameters), so everything it touches is frozen."""
        ins = [t for a in flat_nodes((n.args, n.kwargs)) for t in self.names_of(a)]
        if n.op == "call_module":
            m = self.gm.get_submodule(n.target)
            for key, t in itertools.chain(m.named_parameters(), m.named_buffers()):
                ins.append(self.constant(t, f"{n.target}.{key}"))
        outs = outputs if outputs is not None else flat_names(tuple(self.outputs_of(n)))
        self.emit(f"Unknown:{describe(self, n)}", list(dict.fromkeys(ins)), outs)
        self.ir_nodes[n.name] = tuple(self._emitted)

    # ---- helpers for lowerings -----------------------------------------------------------------------------

    def module_of(self, n: fx.Node) -> nn.Module | None:
        return self.gm.get_submodule(n.target) if n.op == "call_module" else None

    def is_tuple(self, arg: Any) -> bool:
        return isinstance(arg, fx.Node) and isinstance(self.alias.get(arg.name), tuple)

    def names_of(self, arg: fx.Node) -> list[str]:
        """IR tensors of a node used as an argument (several for a tuple result; none for a value)."""
        return flat_names(self.alias.get(arg.name))

    def add_tensor(self, name: str, info: TensorInfo, value: np.ndarray | None = None) -> str:
        self.tensors[name] = Tensor(name, tuple(info.shape), numpy_dtype(info.dtype), value)
        return name

    def constant(self, t: torch.Tensor, path: str) -> str:
        """The IR constant of a parameter / buffer / tensor attribute, named by its canonical attribute path."""
        paths = self.by_id.get(id(t))
        name = paths[0] if paths else path
        if "." not in name and name in self.fx_names and not self.is_get_attr_of(name):
            name = f"{name}::attr"
        if paths is None:
            self.traced_only.add(name)
        if name not in self.tensors:
            value = to_numpy(t)
            self.tensors[name] = Tensor(name, tuple(value.shape), value.dtype, value)
            self.paths[name] = tuple(paths or (path,))
        return name

    def is_get_attr_of(self, name: str) -> bool:
        return any(n.op == "get_attr" and n.name == name and n.target == name for n in self.gm.graph.nodes)

    def param(self, attr: str) -> str | None:
        """The IR constant of the current module's ``attr`` (None when the module has none)."""
        t = getattr(self.module_of(self.current), attr, None)
        return None if t is None else self.constant(t, f"{self.current.target}.{attr}")

    def input(self, arg: Any, like: Any = None) -> str:
        """IR tensor of a tensor argument; a Python number or a shape value becomes a rank-0 constant."""
        if isinstance(arg, fx.Node):
            if self.kinds.get(arg.name) in ("tensor", "data"):
                a = self.alias.get(arg.name)
                if isinstance(a, str):
                    return a
                raise Unsupported("tuple used as a tensor")
            arg = self.values.get(arg.name)
        if isinstance(arg, bool) or not isinstance(arg, (int, float)):
            raise Unsupported(f"argument {arg!r}")
        dtype = self.dtype(like) if like is not None else None
        if dtype is None or not np.issubdtype(dtype, np.floating if isinstance(arg, float) else np.number):
            dtype = np.dtype(np.float32) if isinstance(arg, float) else np.dtype(np.int64)
        return self.const("scalar", np.asarray(arg, dtype))

    def inputs(self, args: Any) -> list[str]:
        """IR tensors of a list of tensor arguments (a tuple-valued node expands to its elements)."""
        if isinstance(args, fx.Node):
            if self.is_tuple(args):
                return self.names_of(args)
            raise Unsupported("expected a sequence of tensors")
        if not isinstance(args, (list, tuple)):
            raise Unsupported("expected a sequence of tensors")
        return [self.input(a) for a in args]

    def value(self, arg: Any) -> Any:
        """The concrete value of a non-tensor argument on the example inputs."""
        if isinstance(arg, fx.Node):
            if self.kinds.get(arg.name) != "value":
                raise Unsupported("tensor where a value is expected")
            return self.values.get(arg.name)
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        if isinstance(arg, slice):
            return slice(self.value(arg.start), self.value(arg.stop), self.value(arg.step))
        return arg

    def const(self, label: str, value: np.ndarray) -> str:
        name = self.fresh(label)
        value = np.asarray(value)
        self.tensors[name] = Tensor(name, tuple(value.shape), value.dtype, value)
        return name

    def fresh(self, label: str) -> str:
        base = f"{self.current.name}::{label}"
        name, k = base, 1
        while name in self.tensors:
            name, k = f"{base}{k}", k + 1
        return name

    def tmp(self, label: str, shape: tuple[int, ...], dtype: np.dtype | None) -> str:
        name = self.fresh(label)
        self.tensors[name] = Tensor(name, tuple(shape), dtype)
        return name

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def dtype(self, arg: Any) -> np.dtype | None:
        if isinstance(arg, str):
            return self.tensors[arg].dtype
        if isinstance(arg, fx.Node) and isinstance(self.alias.get(arg.name), str):
            return self.tensors[self.alias[arg.name]].dtype
        return None

    def out(self) -> str:
        """The IR tensor of the current node's (single tensor) result."""
        n = self.current
        info = self.values.get(n.name)
        if not isinstance(info, TensorInfo):
            raise Unsupported("expected a single tensor result")
        self.alias[n.name] = self.add_tensor(n.name, info)
        return n.name

    def outputs_of(self, n: fx.Node) -> list[Any]:
        """IR tensors of a result: one for a tensor; for a tuple, each element named after the getitem that
        reads it (or ``<node>::<i>``), a nested tuple (``(output, (h_n, c_n))``) as a tuple of such names;
        None for non-tensor elements. The alias of ``n`` is the (nested) tuple."""
        info = self.values.get(n.name)
        if isinstance(info, TensorInfo):
            return [self.out()]
        if not isinstance(info, (tuple, list)):
            return []
        names = self.element_names(n, info, n.name)
        self.alias[n.name] = names
        return list(names)

    def element_names(self, reader: fx.Node | None, info: Any, base: str) -> tuple:
        readers = {} if reader is None else {
            u.args[1]: u for u in reader.users if u.op == "call_function" and u.target is operator.getitem
            and isinstance(u.args[1], int)}
        names: list[Any] = []
        for i, element in enumerate(info):
            r = readers.get(i)
            if isinstance(element, TensorInfo):
                names.append(self.add_tensor(r.name if r is not None else f"{base}::{i}", element))
            elif isinstance(element, (tuple, list)) and has_tensor(element):
                names.append(self.element_names(r, element, r.name if r is not None else f"{base}::{i}"))
            else:
                names.append(None)
        return tuple(names)

    def emit(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> Node:
        n = self.current
        name = n.name if not self._emitted else f"{n.name}::{len(self._emitted)}"
        source = n.target if n.op == "call_module" else n.name
        node = Node(name=name, op=op, inputs=tuple(inputs), outputs=tuple(outputs), attrs=attrs, source=source)
        self.nodes.append(node)
        self._emitted.append(name)
        return node


@dataclass
class Call:
    """One fx call, with its arguments bound to the table entry's parameter names."""

    node: fx.Node
    module: nn.Module | None
    args: dict[str, Any]

    def arg(self, name: str, default: Any = None) -> Any:
        return self.args.get(name, default)

    @property
    def extra(self) -> tuple[Any, ...]:
        """Positional arguments beyond the named ones (``x.view(a, b)``, ``x.permute(0, 2, 1)``)."""
        return self.args.get("*", ())


def bind(n: fx.Node, params: tuple[str, ...]) -> dict[str, Any]:
    args = dict(zip(params, n.args))
    if len(n.args) > len(params):
        args["*"] = tuple(n.args[len(params):])
    args.update(n.kwargs)
    return args


def flat_names(alias: Any) -> list[str]:
    """IR tensor names of an alias: a name, or a (nested, for ``(output, (h_n, c_n))``) tuple of them."""
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, tuple):
        return [t for a in alias for t in flat_names(a)]
    return []


def flat_nodes(arg: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(arg, lambda a: out.append(a) or a)
    return out


def describe(lw: Lowering, n: fx.Node) -> str:
    if n.op == "call_module":
        return type(lw.gm.get_submodule(n.target)).__name__
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    target: Callable = n.target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    return f"{module.replace('torch.nn.functional', 'F')}.{name}" if module else name
