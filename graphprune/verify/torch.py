"""Verification of a pruned ``nn.Module``: the same oracle as the ONNX path.

* **masked original**: the original, run by an fx Interpreter over its trace, with every removed atom forced
  to zero right where it is produced: each activation of a pruned space through ``torch.where(keep, t, 0)``
  after its fx node, and each parameter / buffer of a pruned space masked the same way. The pruned module
  must compute the same outputs on seeded inputs (tolerance as :func:`graphprune.verify.close`).
* **onnxruntime**: the pruned module exports with ``torch.onnx.export(dynamo=False)`` and onnxruntime computes
  what torch computes.

Drift against the unpruned original is measured, not asserted.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import io
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import fx, nn

from graphprune.errors import InternalError
from graphprune.frontends.fx.trace import TorchSource, evaluating, fetch, in_eval_mode
from graphprune.channels.plan import Plan
from graphprune.runtime import run, session
from graphprune.verify.refit import placed
from graphprune.verify.result import SKIPPED, Verification, close, drift, passed

OPSET = 17


def seeded_inputs(example_inputs: tuple[Any, ...], seed: int = 0) -> tuple[Any, ...]:
    """Standard normal floats of the example shapes; other inputs (indices, masks) as given."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(x.shape, generator=g, dtype=x.dtype) if isinstance(x, torch.Tensor) and x.is_floating_point()
                 else x for x in example_inputs)


def keep_mask(shape: tuple[int, ...], axes: list[tuple[int, np.ndarray]]) -> torch.Tensor:
    """Boolean tensor broadcastable to ``shape``: False on every removed atom of the listed axes."""
    keep = torch.ones([1] * len(shape), dtype=torch.bool)
    for axis, removed in axes:
        view = [1] * len(shape)
        view[axis] = len(removed)
        keep = keep & ~torch.as_tensor(removed).reshape(view)
    return keep


def removed_axes(plan: Plan) -> dict[str, list[tuple[int, np.ndarray]]]:
    out: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for space in plan.keep:
        if not space.virtual:
            out[space.tensor].append((space.axis, plan.removed_mask(space)))
    return out


@dataclass(frozen=True, eq=False)
class Renormalise:
    """An fx node whose normalisation statistics run over the kept entries ``kept`` of its last axis."""

    kind: str  # ReduceMean, LayerNormalization, RMSNormalization
    kept: torch.Tensor
    size: int


class MaskedInterpreter(fx.Interpreter):
    """Runs a trace, zeroing removed atoms of the listed fx nodes' results right after they are computed, and
    taking the statistics of each ``renormalise`` node over the kept channels only (the renormalised oracle)."""

    def __init__(self, gm: fx.GraphModule, masks: dict[str, torch.Tensor],
                 renormalise: dict[str, Renormalise] | None = None):
        super().__init__(gm)
        self.masks, self.renormalise = masks, renormalise or {}

    def run_node(self, n: fx.Node) -> Any:
        r = self.renormalise.get(n.name)
        out = super().run_node(n) if r is None or r.kind == "ReduceMean" else self.kept_norm(n, r)
        if r is not None and r.kind == "ReduceMean":
            out = out * (r.size / len(r.kept))
        keep = self.masks.get(n.name)
        if keep is not None and isinstance(out, torch.Tensor):
            out = torch.where(keep, out, torch.zeros((), dtype=out.dtype))
        return out

    def kept_norm(self, n: fx.Node, r: Renormalise) -> torch.Tensor:
        """The layer / RMS norm of ``n`` over the kept channels of its last axis (zeros elsewhere)."""
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op == "call_module":
            m = self.fetch_attr(n.target)
            x, weight, bias, eps = args[0], m.weight, getattr(m, "bias", None), m.eps
        else:  # F.layer_norm / F.rms_norm(input, normalized_shape, weight, bias, eps)
            bound = dict(zip(("input", "normalized_shape", "weight", "bias", "eps"), args)) | kwargs
            x, weight, bias, eps = bound["input"], bound.get("weight"), bound.get("bias"), bound.get("eps", 1e-5)
        k = r.kept
        pick = (lambda p: None if p is None else p[k])
        if r.kind == "LayerNormalization":
            y = F.layer_norm(x[..., k], (len(k),), pick(weight), pick(bias), eps)
        else:
            y = F.rms_norm(x[..., k], (len(k),), pick(weight), eps)
        out = torch.zeros_like(x)
        out[..., k] = y
        return out


def masked_original(source: TorchSource, plan: Plan) -> tuple[fx.GraphModule, dict[str, torch.Tensor], dict]:
    """A copy of the trace with pruned weights masked, the activation masks keyed by fx node, and the
    renormalised statistics (:func:`renormalised`)."""
    gm = copy.deepcopy(source.traced)
    axes = removed_axes(plan)
    with torch.no_grad():
        for name, spec in axes.items():
            for path in source.paths.get(name, ()):  # weights of leaf modules (their paths are the same in the trace)
                try:
                    t = fetch(gm, path)
                except AttributeError:
                    continue
                t.copy_(torch.where(keep_mask(tuple(t.shape), spec), t, torch.zeros((), dtype=t.dtype)))
    # activations, and tensors read by get_attr (masked again where they are read)
    masks = {fx_name: keep_mask(source.graph.shape(ir), axes[ir])
             for fx_name, ir in source.tensors.items() if isinstance(ir, str) and ir in axes}
    return gm, masks, renormalised(source, plan)


def renormalised(source: TorchSource, plan: Plan) -> dict[str, Renormalise]:
    """fx node → how its statistics are renormalised, for every statistic the plan renormalises."""
    fx_of = {ir: fx_name for fx_name, irs in source.ir_nodes.items() for ir in irs}
    out = {}
    for r in plan.renormalised:
        if r.node not in fx_of:
            raise InternalError(f"the plan renormalises IR node '{r.node}', which no fx node lowered to")
        kept = torch.as_tensor(np.flatnonzero(~plan.removed_mask(r.space)))
        out[fx_of[r.node]] = Renormalise(r.kind, kept, plan.sizes[r.space])
    return out


def flat_tensors(value: Any) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    fx.node.map_aggregate(value, lambda v: out.append(v.detach().cpu().numpy()) if isinstance(v, torch.Tensor) else v)
    return out


def run_eval(model: nn.Module, inputs: tuple[Any, ...], interpreter=None) -> list[np.ndarray]:
    """Outputs in eval mode without gradients; training flags are restored afterwards."""
    with evaluating(model):
        return flat_tensors(interpreter.run(*inputs) if interpreter is not None else model(*inputs))


def exported(model: nn.Module, inputs: tuple[Any, ...], names: list[str]) -> onnx.ModelProto:
    """``model`` exported to ONNX: by the TorchScript exporter, else by the torch.export-based one (Hugging Face
    models of today export only so); raises with both reasons when neither can."""
    modes = {m: m.training for m in model.modules()}
    in_eval_mode(model)
    reasons = []
    try:
        for dynamo in (False, True):
            buffer = io.BytesIO()
            try:
                with torch.no_grad(), warnings.catch_warnings(), silenced():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(model, inputs, buffer, input_names=names, opset_version=OPSET if not dynamo
                                      else 18, dynamo=dynamo)
                return onnx.load_from_string(buffer.getvalue())
            except Exception as exc:
                text = str(exc).strip().splitlines()
                reasons.append(f"{type(exc).__name__}: {text[0] if text else ''}")
    finally:
        for m, training in modes.items():
            m.training = training
    raise ExportFailed("; ".join(reasons))


@contextlib.contextmanager
def silenced():
    """File descriptors 1 and 2 to the null device for a while: the exporters print graph dumps and registry
    warnings from C++ and logging, which must not reach a pipeline's stdout (a JSON report may be there)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(null, fd)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for fd, copy_of in zip((1, 2), saved):
            os.dup2(copy_of, fd)
            os.close(copy_of)
        os.close(null)


class ExportFailed(Exception):
    """Neither ONNX exporter could export the module."""


def onnx_outputs(model: nn.Module, inputs: tuple[Any, ...]) -> list[np.ndarray]:
    """Export to ONNX (:func:`exported`) and run in onnxruntime."""
    names = [f"input_{i}" for i in range(len(inputs))]
    proto = exported(model, inputs, names)
    declared = {i.name for i in proto.graph.input}
    feeds = {n: x.detach().cpu().numpy() for n, x in zip(names, inputs) if n in declared and isinstance(x, torch.Tensor)}
    return run(session(proto, once=True), feeds)


def with_refitted(source: TorchSource, gm: fx.GraphModule, pruned: nn.Module, plan: Plan, names: tuple[str, ...]) -> None:
    """The refitted parameters ``names`` (IR constants) of ``pruned`` written into the masked original's trace
    ``gm`` at the kept positions of every axis (:func:`graphprune.verify.refit.placed`), in place: the oracle of
    reconstruction is the masked original with exactly those values, everything else the sliced original."""
    with torch.no_grad():
        for name in names:
            paths = source.paths.get(name, ())
            if not paths:
                raise InternalError(f"refitted IR constant '{name}' has no attribute path in the module")
            value = fetch(pruned, paths[0]).detach().cpu().numpy()
            for path in paths:
                try:
                    t = fetch(gm, path)
                except AttributeError:
                    continue
                t.copy_(torch.as_tensor(placed(t.detach().cpu().numpy(), value, name, plan)))


def verify(source: TorchSource, pruned: nn.Module, plan: Plan, *, rtol: float = 1e-4, atol: float = 1e-5,
           seed: int = 0, onnx_export: bool = True, refitted: tuple[str, ...] = ()) -> Verification:
    """Run every check; never raises for a failed check, only reports it. With ``refitted`` (IR constants a
    reconstruction changed), the oracle is the masked original with those values in place (:func:`with_refitted`)."""
    checks: dict[str, str] = {}
    inputs = seeded_inputs(source.example_inputs, seed)
    try:
        got = run_eval(pruned, inputs)
        checks["forward"] = "ok"
    except Exception as exc:
        checks["forward"] = f"the pruned module fails: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return Verification(False, checks)
    reference = run_eval(source.module, inputs)
    if plan.empty:
        expected = reference
    else:
        gm, masks, renorm = masked_original(source, plan)
        with_refitted(source, gm, pruned, plan, refitted)
        expected = run_eval(gm, inputs, MaskedInterpreter(gm, masks, renorm))
    ok, worst = close(expected, got, rtol, atol)
    label = "refitted_masked_original" if refitted else "masked_original"
    oracle = f"masked original with the {len(refitted)} refitted weights" if refitted else "masked original"
    checks[label] = "ok" if ok else f"max |pruned - {oracle}| = {worst:.3g} exceeds rtol {rtol}, atol {atol}"
    if onnx_export:
        try:
            exported = onnx_outputs(pruned, inputs)
            same, err = close(got, exported, rtol, atol)
            checks["onnxruntime"] = "ok" if same else f"onnxruntime differs from torch by {err:.3g}"
        except ExportFailed as exc:
            checks["onnxruntime"] = f"{SKIPPED}the pruned module does not export to ONNX ({exc})"
        except Exception as exc:
            text = str(exc).strip().splitlines()
            checks["onnxruntime"] = f"run failed: {type(exc).__name__}: {text[0] if text else ''}"
    return Verification(all(passed(v) for v in checks.values()), checks, worst, drift(reference, got))
