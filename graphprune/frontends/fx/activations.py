"""What the data-informed methods read from a torch module: its IR, its activations by IR tensor name on batches of
calibration points, and a copy with new parameter values (:class:`TorchAccess`, the torch side of
:class:`graphprune.methods.calib.OnnxAccess`).

Activations come from the module's own capture (the fx trace, or the graph torch.export made), run as a copy
of its graph that returns the nodes asked for (:func:`keeping`). An IR tensor the lowering made (``name::matmul``, the
product of an ``nn.Linear`` before its bias) has no fx node: it is computed from its IR producer's inputs with the
few ops the lowering writes such tensors with (:data:`OPS`); anything else is a :class:`NotCaptured`. The pruned
module is captured again, as the report's cost does, so its activations are its own; a copy with new values shares
that capture with the values set (by attribute path, in the module and its trace alike).

A batch runs at once when the capture accepts it and its first points give what they give alone at the example's
batch size. A capture made at that size only (a torch.export graph: its guards and ``view`` shapes hold the batch)
runs the points through ``torch.func.vmap``, each call seeing one example-sized batch (measured on mobilenet_v2
from torch.export, reconstruction: 143 s in chunks, see ``choose``); failing that, in chunks of that size, the last
one padded by repeating its first point.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import fx, nn

from graphprune.errors import InternalError, ModelLoadError, VerificationError
from graphprune.frontends.fx.export import ExportError, capture as export_module
from graphprune.frontends.fx.trace import evaluating, first_line, TorchSource, fetch, in_eval_mode, load as trace_module
from graphprune.ir import Graph, Node
from graphprune.points import agrees, first_points


class NotCaptured(InternalError):
    """An IR tensor the capture does not compute and :data:`OPS` cannot rebuild."""


def transpose(x, node: Node, graph: Graph):
    perm = node.attr("perm")
    return x.permute(*[int(p) for p in perm]) if perm else x.permute(*reversed(range(x.dim())))


OPS: Mapping[str, Callable[..., Any]] = {
    "MatMul": lambda node, graph, a, b: torch.matmul(a, b),
    "Transpose": lambda node, graph, x: transpose(x, node, graph),
    "Add": lambda node, graph, a, b: a + b,
    "Sub": lambda node, graph, a, b: a - b,
    "Mul": lambda node, graph, a, b: a * b,
    "Div": lambda node, graph, a, b: a / b,
    "Identity": lambda node, graph, x: x,
}  # the ops the lowering writes its own tensors with, where a method may ask for them (linear layers' products)


def keeping(traced: fx.GraphModule, wanted: Iterable[str]) -> fx.GraphModule:
    """A copy of ``traced`` that returns the values of the fx nodes ``wanted`` (a dict by name) and computes
    nothing they do not need: generated code, not a node-by-node ``Interpreter`` (whose Python overhead was most of
    a torch.export model's reconstruction: 298k node visits, 40 of 55 s on a small Llama), and a wave of
    reconstruction that reads the first layers stops there. Its placeholders are the capture's, in order; its
    ``view`` calls are ``reshape`` calls, so it runs under ``torch.func.vmap``."""
    graph, env = fx.Graph(), {}
    for node in traced.graph.nodes:
        if node.op == "output":
            break
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node.op == "call_function" and node.target is torch.ops.aten.view.default:
            env[node].target = torch.ops.aten.reshape.default  # the same values; under vmap a view of a batched
            # tensor can span strides a plain run has contiguous ("view size is not compatible", every HF model)
    wanted = set(wanted)
    graph.output({node.name: copy for node, copy in env.items() if node.name in wanted})
    program = fx.GraphModule(traced, graph)
    program.graph.eliminate_dead_code()  # (the purity of a call_module node is read from the owning module)
    program.recompile()
    return program


class TorchActivations:
    """The IR tensors ``names`` of a capture on batches of calibration points (``run(batch)``, batch keyed by IR
    input name, axis 0 the points), as float arrays."""

    def __init__(self, capture: TorchSource, names: Iterable[str]):
        self.capture, self.names = capture, list(dict.fromkeys(names))
        self.fx_of = fx_names(capture)
        self.static_batch = min((s[0] for s in capture.input_shapes.values() if s), default=1)
        self.placeholders = [n for n in capture.traced.graph.nodes if n.op == "placeholder"]
        self.mode: str | None = None
        self.wanted = {self.fx_of[n][0] for n in self.needed_fx()}
        self.program = keeping(capture.traced, self.wanted)

    def needed_fx(self) -> list[str]:
        """Every IR tensor read from the capture's run: the names asked for, or the inputs of their rebuild."""
        out, todo, seen = [], list(self.names), set()
        g = self.capture.graph
        while todo:
            name = todo.pop()
            if name in seen or g.is_const(name):
                continue
            seen.add(name)
            if name in self.fx_of:
                out.append(name)
                continue
            node = g.producers.get(name)
            if node is None or node.op not in OPS:
                raise NotCaptured(f"IR tensor '{name}' is not computed by the capture and cannot be rebuilt")
            todo += [i for i in node.inputs if i]
        return out

    def run(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(batch.values())))
        if self.mode is None:
            self.mode = self.choose(batch, n)
        if self.mode == "whole":
            return self.run_once(batch)
        b = self.static_batch
        padded = pad(batch, -(-n // b) * b)
        count = len(next(iter(padded.values())))
        if self.mode == "vmap":
            return {k: first_points(v, n, count) for k, v in self.run_mapped(padded).items()}
        parts = [self.run_once({k: v[s:s + b] for k, v in padded.items()}) for s in range(0, n, b)]
        return {k: first_points(np.concatenate([p[k] for p in parts], axis=0), n, count) for k in self.names}

    def choose(self, batch: Mapping[str, np.ndarray], n: int) -> str:
        """"whole", "vmap" or "chunks": the first way whose result on this batch has the right shapes and agrees, on
        its first points, with the capture run on them alone at the example's batch size."""
        b = self.static_batch
        if n <= b:
            return "chunks"
        head = self.run_once({k: v[:b] for k, v in batch.items()})
        count = -(-n // b) * b
        ways = (("whole", lambda: self.run_once(batch), n), ("vmap", lambda: self.run_mapped(pad(batch, count)), count))
        for mode, attempt, size in ways:
            try:
                got = attempt()
            except Exception:  # a shape guard, a size baked into forward, an op vmap has no rule for
                continue
            if all(agrees(got[name], head[name], size, b) for name in self.names):
                return mode
        return "chunks"

    def run_once(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [self.argument(p, i, batch) for i, p in enumerate(self.placeholders)]
        with evaluating(self.capture.traced):
            out = self.kept(*args)
        return {name: v.detach().cpu().float().numpy() for name, v in out.items()}

    def run_mapped(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every example-sized slice of ``batch`` through the capture at once, by ``torch.func.vmap``."""
        b = self.static_batch
        args = [self.argument(p, i, batch) for i, p in enumerate(self.placeholders)]
        mapped = [isinstance(a, torch.Tensor) and isinstance(self.capture.tensors.get(p.name), str)
                  and self.capture.tensors[p.name] in batch for a, p in zip(args, self.placeholders)]
        args = [a.reshape(-1, b, *a.shape[1:]) if m else a for a, m in zip(args, mapped)]
        with evaluating(self.capture.traced):
            out = torch.func.vmap(self.kept, in_dims=tuple(0 if m else None for m in mapped))(*args)
        return {name: v.detach().cpu().float().reshape(-1, *v.shape[2:]).numpy() for name, v in out.items()}

    def kept(self, *args) -> dict[str, torch.Tensor]:
        """The tensors ``names`` of one run of the capture on ``args``."""
        kept = self.program(*args)
        values: dict[str, Any] = {}
        for name in self.needed_fx():
            fx_name, index = self.fx_of[name]
            out = kept[fx_name]
            values[name] = out if index is None else out[index]
        return {name: self.value(name, values) for name in self.names}

    def argument(self, placeholder: fx.Node, i: int, batch: Mapping[str, np.ndarray]) -> Any:
        ir = self.capture.tensors.get(placeholder.name)
        if isinstance(ir, str) and ir in batch:
            return torch.from_numpy(np.ascontiguousarray(batch[ir]))
        examples = self.capture.example_inputs
        return examples[i] if i < len(examples) else None  # a non-tensor input (a flag, None) as the example gave it

    def value(self, name: str, values: dict[str, Any]) -> torch.Tensor:
        """IR tensor ``name`` from the capture's values, rebuilt through :data:`OPS` where it has no fx node."""
        if name in values:
            return values[name]
        g = self.capture.graph
        if g.is_const(name):
            return torch.as_tensor(np.asarray(g.value(name)))
        node = g.producers[name]
        out = OPS[node.op](node, g, *[self.value(i, values) for i in node.inputs])
        values[name] = out
        return out


def fx_names(capture: TorchSource) -> dict[str, tuple[str, int | None]]:
    """IR tensor → (fx node, element index of a tuple result or None)."""
    out: dict[str, tuple[str, int | None]] = {}
    for fx_name, ir in capture.tensors.items():
        if isinstance(ir, str):
            out.setdefault(ir, (fx_name, None))
        elif isinstance(ir, tuple):
            for k, element in enumerate(ir):
                if isinstance(element, str):
                    out.setdefault(element, (fx_name, k))
    return out


def pad(batch: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Each array filled up to ``size`` points by repeating its first point."""
    return {k: v if len(v) >= size else np.concatenate([v, np.repeat(v[:1], size - len(v), axis=0)])
            for k, v in batch.items()}


class TorchAccess:
    """The methods' view of the torch models of one run (:class:`graphprune.methods.calib.OnnxAccess`'s protocol):
    ``ir``, ``activations``, ``with_values``, ``outputs``. Each module is captured once, as ``source`` was."""

    def __init__(self, source: TorchSource):
        self.source = source
        self.captures: dict[int, TorchSource] = {id(source.module): source}

    def capture(self, model: nn.Module) -> TorchSource:
        hit = self.captures.get(id(model))
        if hit is not None and hit.module is model:
            return hit
        try:
            again = (export_module if self.source.capture == "torch.export" else trace_module)(
                model, self.source.example_inputs)
        except (ExportError, ModelLoadError) as exc:  # the pruned module does not run: verification will say why
            raise VerificationError(f"the pruned module cannot be captured again ({first_line(exc)})") from exc
        self.captures[id(model)] = again
        return again

    def ir(self, model: nn.Module) -> Graph:
        return self.capture(model).graph

    def activations(self, model: nn.Module, names: Iterable[str]) -> TorchActivations:
        return TorchActivations(self.capture(model), names)

    def outputs(self, model: nn.Module) -> list[str]:
        return list(self.capture(model).graph.outputs)

    def with_values(self, model: nn.Module, values: Mapping[str, np.ndarray]) -> nn.Module:
        """A copy of ``model`` whose IR constants ``values`` (parameters and buffers by their IR name) hold the new
        values, in the module and in a copy of its capture."""
        capture = self.capture(model)
        module, traced = copy.deepcopy(model), copy.deepcopy(capture.traced)
        with torch.no_grad():
            for name, value in values.items():
                paths = capture.paths.get(name)
                if not paths:
                    raise InternalError(f"IR constant '{name}' has no attribute path in the module")
                new = torch.as_tensor(np.asarray(value))
                for root in (module, traced):
                    for path in paths:
                        try:
                            t = fetch(root, path)
                        except AttributeError:
                            continue  # a trace keeps only what it calls
                        t.copy_(new.to(t.dtype).reshape(t.shape))
        self.captures[id(module)] = replace(capture, module=module, traced=traced)
        return module
