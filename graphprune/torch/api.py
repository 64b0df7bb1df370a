"""The PyTorch API: prune an ``nn.Module`` through the torch.fx frontend; the result is a smaller ``nn.Module``.

    from graphprune.torch.api import prune_module
    result = prune_module(model, (x,), ratio=0.5)      # options: the fields of PruneConfig
    small = result.model                                # train it, save it, export it
    print(result.report)

The same passes as the ONNX path run on the IR of the trace (``AnalyseChannels``, a scoring pass, ``Select``);
the torch emitter then resizes a deep copy of the module (:mod:`graphprune.emit.torch`) and the result is checked
against the masked original and through onnxruntime (:mod:`graphprune.verify_torch`). Methods whose passes need
an ONNX model (data-informed scoring, low rank, SiPP) are refused with a pointer to the ONNX path.
"""

from __future__ import annotations

import io as _io
import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from graphprune import io
from graphprune.channels.analysis import ChannelGraph, analyse
from graphprune.config import PruneConfig
from graphprune.methods.cost import Cost, cost
from graphprune.emit.torch import EmittedModule, emit
from graphprune.errors import GraphPruneError, UnsupportedModelError, UsageError, VerificationError
from graphprune.frontends.fx.trace import TorchSource, UntraceableModelError, load
from graphprune.pipeline.presets import METHODS
from graphprune.channels.plan import Plan
from graphprune.report.data import PruneReport, summarise_groups
from graphprune.pipeline.state import PruneState
from graphprune.verify.onnx import Verification
from graphprune.verify.torch import OPSET, seeded_inputs, verify

Baked = Literal["graphmodule", "freeze"]
__all__ = ["TorchInspection", "TorchPruneResult", "UntraceableModelError", "inspect_module", "load_module",
           "plan_module", "prune_module"]


@dataclass(frozen=True, eq=False)
class TorchPruneResult:
    model: nn.Module  # the pruned module: a copy of the original's class, or an fx.GraphModule (report.notes say why)
    plan: Plan
    report: PruneReport
    channels: ChannelGraph
    source: TorchSource

    @property
    def graph_module(self) -> bool:
        return isinstance(self.model, torch.fx.GraphModule) and not isinstance(self.source.module, torch.fx.GraphModule)

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


@dataclass(frozen=True, eq=False)
class TorchInspection:
    channels: ChannelGraph
    cost: Cost
    source: TorchSource


def load_module(module: nn.Module, example_inputs: Any) -> TorchSource:
    """Trace and lower ``module`` (raises :class:`UntraceableModelError` when torch.fx cannot trace it)."""
    return load(module, example_inputs)


def inspect_module(module: nn.Module, example_inputs: Any, exclude=()) -> TorchInspection:
    """Channel groups, what is frozen and why, and the cost, without changing anything."""
    source = load(module, example_inputs)
    return TorchInspection(analyse(source.graph, exclude), torch_cost(source), source)


def plan_module(module: nn.Module | TorchSource, example_inputs: Any = None, config: PruneConfig | None = None,
                **options) -> PruneState:
    """Analyse, score and select: the state holds ``channels``, ``scores`` and ``plan``; ``state.source`` is the
    :class:`TorchSource` (pass one instead of a module to skip tracing again)."""
    cfg = PruneConfig.make(config, **options)
    source = module if isinstance(module, TorchSource) else load(module, example_inputs)
    return run_passes(source, cfg)


def prune_module(module: nn.Module, example_inputs: Any, config: PruneConfig | None = None, *,
                 baked: Baked = "graphmodule", **options) -> TorchPruneResult:
    """Prune ``module`` and verify the result (unless ``verify="off"``).

    ``example_inputs``: a tensor or a tuple of positional inputs; they fix the shapes of the analysis and are
    the template of the seeded verification inputs. ``baked``: what to do when the forward has literal channel
    counts (``x.view(1, 256)``, ``torch.split(x, [12, 20])``, ``x[:, :16]``): ``"graphmodule"`` prunes through
    them and returns an fx.GraphModule with the literals rewritten; ``"freeze"`` leaves those channels alone so
    the result stays an instance of the module's own class. Raises :class:`VerificationError` when the pruned
    module is not equal to the masked original.
    """
    if baked not in ("graphmodule", "freeze"):
        raise UsageError(f"baked '{baked}' must be 'graphmodule' or 'freeze'")
    cfg = PruneConfig.make(config, **options)
    source = load(module, example_inputs)
    state, emitted, frozen = plan_and_emit(source, cfg, baked)
    verification = None
    if cfg.verify != "off":
        verification = verify(source, emitted.model, state.plan, rtol=cfg.rtol, atol=cfg.atol, seed=cfg.seed)
        if not verification.ok:
            raise VerificationError(f"verification failed: {verification.failure}")
    report = make_report(cfg, source, state, emitted, verification, frozen)
    return TorchPruneResult(emitted.model, state.plan, report, state.channels, source)


def plan_and_emit(source: TorchSource, cfg: PruneConfig, baked: Baked) -> tuple[PruneState, EmittedModule, tuple[str, ...]]:
    """Plan and emit; with ``baked="freeze"``, exclude the nodes that forced a GraphModule and plan again."""
    excluded: list[str] = []
    while True:
        state = run_passes(source, cfg, excluded)
        emitted = emit(source, state.plan)
        if baked == "graphmodule" or not emitted.graph_module:
            return state, emitted, tuple(excluded)
        more = [n for rw in emitted.rewrites for n in source.ir_nodes.get(rw.node, ())]
        more += [n.name for t in emitted.traced_only for name, paths in source.paths.items() if paths[0] == t
                 for n in source.graph.consumers.get(name, ())]
        more = [n for n in dict.fromkeys(more) if n not in excluded]
        if not more:
            return state, emitted, tuple(excluded)
        excluded += more


def channel_passes(cfg: PruneConfig, exclude: list[str]) -> list:
    from graphprune.passes import AnalyseChannels, RemoveChannels

    if getattr(cfg, "then", ()):
        raise UsageError(f"--then {' '.join(cfg.then)} is not available for torch modules; "
                         "export to ONNX and prune the file")
    if cfg.fold:
        raise UsageError("fold is for ONNX models (a torch module keeps its BatchNorm layers for training); "
                         "export to ONNX and prune the file")
    passes = METHODS[cfg.method](cfg)
    if not passes or not isinstance(passes[-1], RemoveChannels):
        raise UsageError(f"method '{cfg.method}' does not end in channel removal, which is all the torch path emits; "
                         "export the module to ONNX and prune the .onnx file")
    return [replace(p, exclude=tuple(p.exclude) + tuple(exclude)) if isinstance(p, AnalyseChannels) and exclude else p
            for p in passes[:-1]]


def run_passes(source: TorchSource, cfg: PruneConfig, exclude: list[str] = ()) -> PruneState:
    state = PruneState.start(source)
    for p in channel_passes(cfg, list(exclude)):
        try:
            state = p(state)
        except GraphPruneError:
            raise
        except Exception as exc:
            raise UsageError(f"method '{cfg.method}' cannot run on a torch module: pass {p.name} failed "
                             f"({type(exc).__name__}: {exc}); export the module to ONNX and prune the .onnx file") from exc
        if state.history[-1].modified:
            raise UsageError(f"method '{cfg.method}': pass {p.name} rewrites the model, which the torch path cannot "
                             "do; export the module to ONNX and prune the .onnx file")
        if state.channels is not None and cfg.strict and state.channels.unmapped:
            ops = sorted({f"{n.op} ({n.source or n.name})" for n in state.channels.unmapped})
            raise UnsupportedModelError(f"--strict: no channel rule for {len(ops)} node(s): {', '.join(ops[:5])}"
                                        f"{' …' if len(ops) > 5 else ''}")
    if state.plan is None:
        raise UsageError(f"method '{cfg.method}' produced no plan")
    return state


def torch_cost(source: TorchSource) -> Cost:
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


def make_report(cfg: PruneConfig, source: TorchSource, state: PruneState, emitted: EmittedModule,
                verification: Verification | None, frozen: tuple[str, ...]) -> PruneReport:
    before = torch_cost(source)
    after = before if state.plan.empty else torch_cost(load(emitted.model, source.example_inputs))
    latency = None
    if cfg.latency:
        inputs = seeded_inputs(source.example_inputs, cfg.seed)
        latency = {"before_ms": latency_ms(source.module, inputs), "after_ms": latency_ms(emitted.model, inputs)}
    options = {k: v for k, v in asdict(cfg).items() if k != "input_shapes"}
    options["input_shapes"] = {k: list(v) for k, v in source.input_shapes.items()}
    cg = state.channels
    unmapped = tuple(sorted({f"{n.op} ({n.source or n.name})" for n in cg.unmapped}))
    notes = emitted.notes
    if frozen:
        notes += (f"kept as a plain module: channels touched by {len(frozen)} node(s) with literal channel counts "
                  f"were frozen ({', '.join(frozen[:5])}{' …' if len(frozen) > 5 else ''})",)
    return PruneReport(method=cfg.method, options=options, before=before, after=after,
                       groups=summarise_groups(cg, state.plan), unmapped_ops=unmapped, verification=verification,
                       passes=state.history, notes=notes, latency=latency,
                       extra={"frontend": "torch.fx", "graph_module": isinstance(emitted.model, torch.fx.GraphModule)})
