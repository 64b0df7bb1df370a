"""First-order Taylor scoring (Molchanov et al. 2017), torch path only: a channel's score is
|Σ activation × gradient| over a labelled batch, the first-order estimate of the loss change when the channel's
activation is set to zero.

The traced ``GraphModule`` of the :class:`~graphprune.frontends.fx.TorchSource` runs in an fx ``Interpreter``
(eval mode, training flags restored, parameter ``.grad`` untouched) that keeps every fx activation lying in a
prunable group; ``torch.autograd.grad`` of the loss gives their gradients. Per space, per atom along the space's
axis: ``|Σ_{batch, other axes} a·g|``; a unit's score is the sum over its atoms and over the activation spaces of
its group (``np.bincount`` over ``group.labels``). Raw scores: ``Select`` divides by the group mean for
``scope="global"`` as for every method.

Data: ``calib=(inputs, targets)`` (inputs a tensor / array or a tuple of them, one per forward argument), or a
``.npz`` path / dict holding ``labels`` and the inputs (named like the forward's arguments; with one input, the one
other array). At most ``max_points`` points, run in chunks of 64; the chunk losses are weighted by their share of
the points, so a mean-reduced loss (``loss=None`` is cross-entropy) gives the gradient of the whole batch.
Tensors the lowering made itself (``::`` names) are not fx activations and are not scored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphprune.methods.calib import CalibInput
from graphprune.errors import UsageError
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult

NEEDS = ("method 'taylor' needs a torch model and labels: graphprune.prune(module, example_inputs=(x,), "
         "method='taylor', calib=(inputs, targets)), or FILE.py:FUNCTION --calib data.npz with a 'labels' array")
CHUNK = 64


class Labelled(CalibInput):
    """``(inputs, targets)`` given from Python: never deep-copied, printed by shape in reports."""

    def __repr__(self) -> str:
        inputs, targets = self.data
        inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
        return (f"<inputs {', '.join(str(list(np.shape(x))) for x in inputs)}, "
                f"targets {list(np.shape(targets))}>")

    __str__ = __repr__


def check_labelled(calib: Any) -> Any:
    """Taylor's calibration data, checked without importing torch: (inputs, targets), a dict or an ``.npz`` path
    holding ``labels``; returns the value to keep (wrapped so that reports print it by shape)."""
    data = calib.data if isinstance(calib, CalibInput) else calib
    if data is None:
        raise UsageError(NEEDS)
    if isinstance(data, (str, os.PathLike)):
        if not str(data).endswith(".npz"):
            raise UsageError(f"taylor: --calib {data} must be an .npz file holding the inputs and 'labels'")
        return data
    if isinstance(data, dict):
        if "labels" not in data:
            raise UsageError("taylor: the calib dict needs a 'labels' array next to the inputs")
        return CalibInput(data)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise UsageError(f"taylor: calib must be (inputs, targets), a dict or an .npz path with 'labels'; "
                         f"got {type(data).__name__}")
    return Labelled(tuple(data))


def read_data(calib: Any, source, who: str = "taylor") -> tuple[tuple[Any, ...], Any]:
    """(positional inputs, targets) as torch tensors; ``who`` starts every error message (the option or
    method that read the data)."""
    import torch

    data = calib.data if isinstance(calib, CalibInput) else calib
    if isinstance(data, (str, os.PathLike)):
        with np.load(data, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    if isinstance(data, dict):
        if "labels" not in data:
            raise UsageError(f"{who}: the calibration data has no 'labels' array")
        names = list(source.graph.inputs)
        rest = {k: v for k, v in data.items() if k != "labels"}
        if len(names) == 1 and len(rest) == 1:
            inputs = tuple(rest.values())
        else:
            missing = [n for n in names if n not in rest]
            if missing:
                raise UsageError(f"{who}: the calibration data has no array for input(s) {missing}; "
                                 f"it holds {sorted(rest)}")
            inputs = tuple(rest[n] for n in names)
        targets = data["labels"]
    else:
        inputs, targets = data
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    inputs = tuple(torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x for x in inputs)
    targets = targets if isinstance(targets, torch.Tensor) else torch.as_tensor(np.asarray(targets))
    n = len(targets)
    if any(len(x) != n for x in inputs):
        raise UsageError(f"{who}: inputs and labels disagree on the number of points "
                         f"({[len(x) for x in inputs]} vs {n})")
    if n == 0:
        raise UsageError(f"{who}: the calibration data is empty")
    return inputs, targets


def default_loss(output: Any, targets: Any):
    import torch.nn.functional as F

    if isinstance(output, (tuple, list)):
        output = output[0]
    return F.cross_entropy(output, targets)


def activation_spaces(state: PruneState) -> dict[str, tuple[str, int | None]]:
    """IR activation name → (fx node name, tuple index or None), for activations in prunable groups."""
    source, cg = state.source, state.channels
    where: dict[str, tuple[str, int | None]] = {}
    for fx_name, ir in source.tensors.items():
        if isinstance(ir, str):
            where[ir] = (fx_name, None)
        elif isinstance(ir, (tuple, list)):
            for i, name in enumerate(ir):
                if name is not None:
                    where[name] = (fx_name, i)
    wanted = {s.tensor for g in cg.prunable for s in g.spaces}
    return {t: where[t] for t in wanted if t in where and not cg.graph.is_const(t)}


def signed_sums(source, wanted: dict[str, tuple[str, int | None]], axes: dict[str, list[int]], inputs, targets,
                loss_fn, max_points: int) -> dict[tuple[str, int], np.ndarray]:
    """Σ a·g per (IR tensor, axis) over every point (signed), one chunk of points at a time."""
    import torch
    from torch import fx

    by_node: dict[str, list[tuple[str, int | None]]] = {}
    for ir, (fx_name, idx) in wanted.items():
        by_node.setdefault(fx_name, []).append((ir, idx))

    class Record(fx.Interpreter):
        def __init__(self, gm):
            super().__init__(gm)
            self.kept: dict[str, Any] = {}

        def run_node(self, n):
            result = super().run_node(n)
            if n.name not in by_node:
                return result
            # consumers get a clone, so an in-place op downstream (ReLU(inplace=True)) cannot change what we keep
            if isinstance(result, torch.Tensor):
                self.kept.update({ir: result for ir, _ in by_node[n.name]})
                return result.clone() if result.requires_grad else result
            if isinstance(result, (tuple, list)):
                out = list(result)
                for ir, idx in by_node[n.name]:
                    if idx is not None and isinstance(out[idx], torch.Tensor):
                        self.kept[ir] = out[idx]
                        out[idx] = out[idx].clone() if out[idx].requires_grad else out[idx]
                return type(result)(out) if isinstance(result, tuple) else out
            return result

    n = min(len(targets), max_points)
    gm = source.traced
    modes = {m: m.training for m in gm.modules()}
    sums: dict[tuple[str, int], np.ndarray] = {}
    for m in gm.modules():  # (a graph torch.export captured refuses .eval())
        m.training = False
    try:
        with torch.enable_grad():
            chunk = chunk_size(source)
            n -= n % chunk if n >= chunk else 0  # whole chunks only where the graph holds its batch size
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                xs = tuple(x[start:stop].clone() for x in inputs)
                xs = tuple(x.requires_grad_() if x.is_floating_point() else x for x in xs)
                rec = Record(gm)
                out = rec.run(*xs)
                loss = loss_fn(out, targets[start:stop])
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise UsageError("taylor: the loss must return a scalar tensor")
                loss = loss.reshape(()) * ((stop - start) / n)
                kept = {k: v for k, v in rec.kept.items() if v.requires_grad}
                grads = torch.autograd.grad(loss, list(kept.values()), allow_unused=True) if kept else ()
                for (ir, a), g in zip(kept.items(), grads):
                    if g is None:
                        continue
                    prod = (a.detach() * g).double()
                    for axis in axes[ir]:
                        other = [d for d in range(prod.ndim) if d != axis]
                        s = (prod.sum(dim=other) if other else prod).numpy()
                        sums[(ir, axis)] = sums.get((ir, axis), 0.0) + s
    finally:
        for m, training in modes.items():
            m.training = training
    return sums


def chunk_size(source) -> int:
    """Points per forward: :data:`CHUNK`; a graph torch.export captured runs only at its example batch size (its
    guards and its reshapes hold that size)."""
    if getattr(source, "capture", "") == "torch.export":
        return int(source.example_inputs[0].shape[0])
    return CHUNK


@dataclass(frozen=True, kw_only=True)
class TaylorScore(Pass):
    """Score = Σ over the unit's atoms and its group's activation spaces of |Σ_points a·g| (torch path)."""

    calib: Any = None
    loss: Any = None
    max_points: int = 256
    requires = ("channels",)
    provides = ("scores",)
    runs_on = frozenset({"torch"})
    refusal = NEEDS + "; it cannot score an ONNX model"

    def call(self, state: PruneState) -> PassResult:
        source, cg = state.source, state.channels
        inputs, targets = read_data(self.calib, source)
        wanted = activation_spaces(state)
        axes: dict[str, list[int]] = {}
        for g in cg.prunable:
            for s in g.spaces:
                if s.tensor in wanted:
                    axes.setdefault(s.tensor, []).append(s.axis)
        sums = signed_sums(source, wanted, axes, inputs, targets, self.loss or default_loss, self.max_points)
        scores, unscored = {}, []
        for g in cg.prunable:
            total = np.zeros(g.n_units)
            used = 0
            for s in g.spaces:
                per_atom = sums.get((s.tensor, s.axis))
                if per_atom is None:
                    continue
                if len(per_atom) != len(g.labels[s]):
                    raise UsageError(f"taylor: activation '{s.tensor}' has {len(per_atom)} channels on axis {s.axis} "
                                     f"with {len(targets)} points but {len(g.labels[s])} in the analysis; the axis "
                                     "depends on the batch size")
                total += np.bincount(g.labels[s], weights=np.abs(per_atom), minlength=g.n_units)
                used += 1
            if not used:
                unscored.append(g.id)
            scores[g.id] = total
        stats = {"points": min(len(targets), self.max_points), "activations": len(wanted),
                 "groups_without_activation": unscored}
        if unscored:
            stats["notes"] = [f"taylor: {len(unscored)} prunable group(s) have no recorded activation and score 0"]
        return PassResult(state.with_(scores=scores), modified=False, stats=stats)
