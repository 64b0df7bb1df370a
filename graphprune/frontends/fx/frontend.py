"""The torch frontend: an ``nn.Module`` with example inputs in, a smaller ``nn.Module`` out.

Capture (``capture``): ``"auto"`` (default) traces with torch.fx (:mod:`.trace`) and, where torch.fx cannot (data-
dependent Python, the Hugging Face models of today), captures with torch.export (:mod:`.export`); ``"fx"`` or
``"export"`` force one. Both lower through the one op table to the same IR; the report says which was used. The
surgery resizes a deep copy of the module by qualified attribute name (:mod:`graphprune.emit.torch`); the oracle
runs the masked original over the captured graph and the pruned module through onnxruntime
(:mod:`graphprune.verify.torch`).

torch.fx comes first because its graph is the module's own Python, which the emitter can rewrite where ``forward``
hard-codes a channel count (``baked="graphmodule"``); an ATen graph cannot be handed back as the user's module, so
from torch.export the result is always the user's class with resized parameters, verified like any other.

``baked`` says what to do when ``forward`` has literal channel counts (``x.view(1, 256)``, ``torch.split(x, [12,
20])``, ``x[:, :16]``): ``"graphmodule"`` prunes through them and returns an fx.GraphModule with the literals
rewritten; ``"freeze"`` asks for those nodes to be excluded and the plan made again (:attr:`Emitted.replan`), so the
result stays an instance of the module's own class.
"""

from __future__ import annotations

import copy
import io as _io
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import fx, nn

from graphprune import io
from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.plan import Plan
from graphprune.emit import hf
from graphprune.emit.torch import emit
from graphprune.errors import InternalError, UsageError
from graphprune.frontends.base import Emitted, Finished, Frontend
from graphprune.frontends.fx.activations import TorchAccess
from graphprune.frontends.fx.export import ExportError, capture as export_module
from graphprune.frontends.fx.trace import TorchSource, UntraceableModelError, in_eval_mode, load as trace_module
from graphprune.methods.cost import Cost, cost
from graphprune.ir import Graph
from graphprune.verify.claims import MaskedOriginal, Refitted, Unchanged
from graphprune.verify.result import Drift, Tolerance, Verification, drift
from graphprune.verify.torch import OPSET, run_eval, seeded_inputs, verify

Baked = Literal["graphmodule", "freeze"]
__all__ = ["TorchFrontend", "TorchPruneResult", "UntraceableModelError", "load"]


@dataclass(frozen=True, eq=False)
class TorchPruneResult:
    model: nn.Module  # the pruned module: a copy of the original's class, or an fx.GraphModule (report.notes say why)
    plan: Plan
    report: Any  # graphprune.report.data.PruneReport
    channels: ChannelGraph
    source: TorchSource

    @property
    def graph_module(self) -> bool:
        return isinstance(self.model, fx.GraphModule) and not isinstance(self.source.module, fx.GraphModule)

    def save(self, path: str | os.PathLike) -> Path:
        """``.onnx``: export (TorchScript exporter, opset 17); anything else: ``torch.save`` of the whole module.
        Written atomically."""
        path = io.check_output(Path(path), None)
        buffer = _io.BytesIO()
        if path.suffix == ".onnx":
            modes = {m: m.training for m in self.model.modules()}
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(self.model.eval(), self.source.example_inputs, buffer, opset_version=OPSET,
                                      dynamo=False)
            finally:
                for m, training in modes.items():
                    m.training = training
        else:
            torch.save(self.model, buffer)
        return io.write_bytes_atomic(path, buffer.getvalue())


def module_cost(module: nn.Module, graph: Graph) -> Cost:
    """Parameters as the module counts them (buffers and lowering constants excluded); MACs from its IR."""
    c = cost(graph)
    return Cost(sum(p.numel() for p in module.parameters()), c.macs, c.per_node_macs)


def latency_ms(model: nn.Module, inputs: tuple[Any, ...], runs: int = 20, warmup: int = 3) -> float:
    modes = {m: m.training for m in model.modules()}
    in_eval_mode(model)
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + runs):
                t0 = time.perf_counter()
                model(*inputs)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
    finally:
        for m, training in modes.items():
            m.training = training
    return float(np.median(times))


Capture = Literal["auto", "fx", "export"]


class TorchFrontend(Frontend):
    name = "torch"
    kind = "torch"
    layer_table = False  # node names of a rewritten module's graph need not match the original's

    def __init__(self, baked: Baked = "graphmodule", capture: Capture = "auto"):
        if baked not in ("graphmodule", "freeze"):
            raise UsageError(f"baked '{baked}' must be 'graphmodule' or 'freeze'")
        if capture not in ("auto", "fx", "export"):
            raise UsageError(f"capture '{capture}' must be 'auto', 'fx' or 'export'")
        self.baked, self.capture = baked, capture

    def accepts(self, model: Any) -> bool:
        return isinstance(model, nn.Module)

    def load(self, model: Any, *, input_shapes=None, example_inputs=None) -> TorchSource:
        if example_inputs is None:
            raise UsageError("a torch model needs example_inputs (a tensor or a tuple of tensors) to trace its shapes")
        if self.capture == "export":
            return replace(exported(model, example_inputs), frontend=self)
        try:
            return replace(trace_module(model, example_inputs), frontend=self)
        except UntraceableModelError as traced:
            if self.capture == "fx":
                raise
            try:
                return replace(export_module(model, example_inputs), frontend=self)
            except ExportError as exc:
                raise UntraceableModelError(f"neither torch.fx nor torch.export can capture {type(model).__name__} "
                                            f"(torch.fx: {traced}; torch.export: {exc})") from exc

    def emit(self, source: TorchSource, model: nn.Module, plan: Plan) -> Emitted:
        emitted = emit(source, plan, rewrite_calls=source.capture == "torch.fx")
        notes = emitted.notes if emitted.graph_module else emitted.notes + hf.adapt(emitted.model)
        replan: tuple[str, ...] = ()
        if self.baked == "freeze" and emitted.graph_module:
            nodes = [n for rw in emitted.rewrites for n in source.ir_nodes.get(rw.node, ())]
            nodes += [n.name for t in emitted.traced_only for name, paths in source.paths.items() if paths[0] == t
                      for n in source.graph.consumers.get(name, ())]
            replan = tuple(dict.fromkeys(nodes))
        elif not emitted.graph_module:
            replan = config_bound(source, emitted.model)
        return Emitted(emitted.model, notes, replan)

    def check(self, claim, source: TorchSource, before, after, tolerance: Tolerance) -> Verification:
        if isinstance(claim, Unchanged):
            plan = Plan({}, {}, {})
        elif isinstance(claim, MaskedOriginal):
            plan = claim.plan
        elif isinstance(claim, Refitted):
            return verify(source, after, claim.plan, rtol=tolerance.rtol, atol=tolerance.atol, seed=tolerance.seed,
                          refitted=tuple(claim.names))
        else:
            raise InternalError(f"the torch frontend has no oracle for {type(claim).__name__}")
        return verify(source, after, plan, rtol=tolerance.rtol, atol=tolerance.atol, seed=tolerance.seed)

    def access(self, source: TorchSource) -> TorchAccess:
        return TorchAccess(source)

    def drift(self, source: TorchSource, model: nn.Module, tolerance: Tolerance) -> Drift:
        inputs = seeded_inputs(source.example_inputs, tolerance.seed)
        return drift(run_eval(source.module, inputs), run_eval(model, inputs))

    def cost(self, source: TorchSource, model: nn.Module, graph: Graph | None = None) -> Cost:
        if model is source.module:
            return module_cost(model, source.graph)
        if graph is None:
            again = export_module if source.capture == "torch.export" else trace_module
            graph = again(model, source.example_inputs).graph
        return module_cost(model, graph)

    def latency(self, source: TorchSource, before, after, seed: int, threads: int = 0) -> dict[str, Any]:
        inputs = seeded_inputs(source.example_inputs, seed)
        return {"before_ms": latency_ms(before, inputs), "after_ms": latency_ms(after, inputs)}

    def finish(self, source: TorchSource, run, verification: Verification | None, config) -> Finished:
        """The pruned module; an untouched deep copy of the user's when nothing was removed."""
        model = run.state.model if run.modified else copy.deepcopy(source.module)
        extra = {"frontend": source.capture, "graph_module": isinstance(model, fx.GraphModule)}
        notes = ()
        if run.modified and hasattr(getattr(model, "config", None), "save_pretrained"):
            problem = hf.rebuild_problem(model, source.example_inputs)
            notes = (f"save_pretrained -> from_pretrained will not rebuild this model: {problem}",) if problem else (
                "Hugging Face: the class built from the updated config with these weights computes the same "
                "(save_pretrained -> from_pretrained round-trips)",)
        return Finished(model, notes, extra)

    def result(self, finished: Finished, run, report, channels) -> TorchPruneResult:
        return TorchPruneResult(finished.model, run.state.plan, report, channels, run.state.source)


def exported(module: nn.Module, example_inputs: Any) -> TorchSource:
    try:
        return export_module(module, example_inputs)
    except ExportError as exc:
        raise UntraceableModelError(f"torch.export cannot capture {type(module).__name__} ({exc}); export it with "
                                    "torch.onnx.export and prune the .onnx file instead: "
                                    "graphprune.prune('model.onnx', ...)") from exc


def config_bound(source: TorchSource, model: nn.Module) -> tuple[str, ...]:
    """The IR nodes reading a parameter the plan resized to a size the model's Hugging Face config cannot describe
    (:func:`graphprune.emit.hf.unsized`): excluded and planned again, those parameters stay whole and
    ``save_pretrained`` -> ``from_pretrained`` builds the pruned model's shapes."""
    names = set(hf.unsized(model, source.module))
    consts = [c for c, paths in source.paths.items() if names & set(paths)]
    return tuple(dict.fromkeys(n.name for c in consts for n in source.graph.consumers.get(c, ())))


TORCH = TorchFrontend()
FX = TorchFrontend(capture="fx")
EXPORT = TorchFrontend(capture="export")


def load(module: nn.Module, example_inputs: Any, capture: Capture = "fx") -> TorchSource:
    """Capture and lower ``module`` (``capture``: ``"fx"``, ``"export"`` or ``"auto"``); raises
    :class:`UntraceableModelError` when it cannot."""
    return {"fx": FX, "export": EXPORT, "auto": TORCH}[capture].load(module, example_inputs=example_inputs)
