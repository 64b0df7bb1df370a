"""The torch.fx frontend: an ``nn.Module`` with example inputs in, a smaller ``nn.Module`` out.

Capture is :mod:`graphprune.frontends.fx.trace` (symbolic trace, shape propagation, the one op table); the surgery
resizes a deep copy of the module by attribute path (:mod:`graphprune.emit.torch`); the oracle runs the masked
original over the trace and the pruned module through onnxruntime (:mod:`graphprune.verify.torch`).

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
from graphprune.emit.torch import emit
from graphprune.errors import InternalError, UsageError
from graphprune.frontends.base import Emitted, Finished, Frontend
from graphprune.frontends.fx.trace import TorchSource, UntraceableModelError, load as trace_module
from graphprune.methods.cost import Cost, cost
from graphprune.verify.claims import MaskedOriginal, Unchanged
from graphprune.verify.result import Drift, Tolerance, Verification, drift
from graphprune.verify.torch import OPSET, run_eval, seeded_inputs, verify

Baked = Literal["graphmodule", "freeze"]
__all__ = ["FxFrontend", "TorchPruneResult", "UntraceableModelError", "load"]


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


def module_cost(source: TorchSource) -> Cost:
    """Parameters as the module counts them (buffers and lowering constants excluded); MACs from the IR."""
    c = cost(source.graph)
    return Cost(sum(p.numel() for p in source.module.parameters()), c.macs, c.per_node_macs)


def latency_ms(model: nn.Module, inputs: tuple[Any, ...], runs: int = 20, warmup: int = 3) -> float:
    modes = {m: m.training for m in model.modules()}
    model.eval()
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


class FxFrontend(Frontend):
    name = "torch.fx"
    kind = "torch"
    layer_table = False  # fx node names of a rewritten module need not match the original's

    def __init__(self, baked: Baked = "graphmodule"):
        if baked not in ("graphmodule", "freeze"):
            raise UsageError(f"baked '{baked}' must be 'graphmodule' or 'freeze'")
        self.baked = baked

    def accepts(self, model: Any) -> bool:
        return isinstance(model, nn.Module)

    def load(self, model: Any, *, input_shapes=None, example_inputs=None) -> TorchSource:
        if example_inputs is None:
            raise UsageError("a torch model needs example_inputs (a tensor or a tuple of tensors) to trace its shapes")
        return replace(trace_module(model, example_inputs), frontend=self)

    def emit(self, source: TorchSource, model: nn.Module, plan: Plan) -> Emitted:
        emitted = emit(source, plan)
        replan: tuple[str, ...] = ()
        if self.baked == "freeze" and emitted.graph_module:
            nodes = [n for rw in emitted.rewrites for n in source.ir_nodes.get(rw.node, ())]
            nodes += [n.name for t in emitted.traced_only for name, paths in source.paths.items() if paths[0] == t
                      for n in source.graph.consumers.get(name, ())]
            replan = tuple(dict.fromkeys(nodes))
        return Emitted(emitted.model, emitted.notes, replan)

    def check(self, claim, source: TorchSource, before, after, tolerance: Tolerance) -> Verification:
        if isinstance(claim, Unchanged):
            plan = Plan({}, {}, {})
        elif isinstance(claim, MaskedOriginal):
            plan = claim.plan
        else:
            raise InternalError(f"the torch frontend has no oracle for {type(claim).__name__}")
        return verify(source, after, plan, rtol=tolerance.rtol, atol=tolerance.atol, seed=tolerance.seed)

    def drift(self, source: TorchSource, model: nn.Module, tolerance: Tolerance) -> Drift:
        inputs = seeded_inputs(source.example_inputs, tolerance.seed)
        return drift(run_eval(source.module, inputs), run_eval(model, inputs))

    def cost(self, source: TorchSource, model: nn.Module) -> Cost:
        return module_cost(source if model is source.module else trace_module(model, source.example_inputs))

    def latency(self, source: TorchSource, before, after, seed: int) -> dict[str, Any]:
        inputs = seeded_inputs(source.example_inputs, seed)
        return {"before_ms": latency_ms(before, inputs), "after_ms": latency_ms(after, inputs)}

    def finish(self, source: TorchSource, run, verification: Verification | None, config) -> Finished:
        """The pruned module; an untouched deep copy of the user's when nothing was removed."""
        model = run.state.model if run.modified else copy.deepcopy(source.module)
        return Finished(model, extra={"graph_module": isinstance(model, fx.GraphModule)})

    def result(self, finished: Finished, run, report, channels) -> TorchPruneResult:
        return TorchPruneResult(finished.model, run.state.plan, report, channels, run.state.source)


FX = FxFrontend()


def load(module: nn.Module, example_inputs: Any) -> TorchSource:
    """Trace and lower ``module`` through the fx frontend (raises :class:`UntraceableModelError` when torch.fx
    cannot trace it)."""
    return FX.load(module, example_inputs=example_inputs)
