"""TPP — Trainability Preserving Pruning (Wang & Fu, arXiv 2207.12534, ICLR 2023) as hooks for your own loop.

    import graphprune
    from graphprune.torch import TPP

    plan = graphprune.plan(model, example_inputs=(x,), method="magnitude", ratio=0.7, round_to=1)  # optional
    tpp = TPP(model, plan, example_inputs=(x,))      # or TPP(model, example_inputs=(x,), ratio=0.7)
    while not tpp.done:
        for x, y in loader:
            loss = criterion(model(x), y) + tpp.penalty()   # + 1000·λ(t)·Σ_ℓ L_gram,ℓ
            loss.backward()
            tpp.before_step()        # grad += λ(t)·w on pruned filters and their BN γ, β
            optimizer.step(); optimizer.zero_grad()
            tpp.after_step()         # λ(t) += δ every K steps up to the ceiling, then the stabilisation phase
    small = tpp.finish()             # zero the pruned filters, remove them (torch emitter), return the new module

The units (filters) are chosen **once**, at the start: by default per-layer L1 (``graphprune.plan`` with
``method="magnitude"``, ``scope="local"``, ``round_to=1``), or from any plan of this module. Each plan space
``Space(<parameter path>, axis)`` names the parameters a unit owns: the output axis of a conv / linear weight is
a *layer* of the regulariser (Gram penalty, L2 on its pruned rows and bias entries), axis 0 of a norm layer's
weight / bias is its γ / β (L2 on the pruned entries). A coupled unit (the channels of a residual stage) lists
every conv, BN and linear it touches, so it is regularised in all of them.

* Gram penalty per layer, W the (N, ·) matrix of its output filters and m the keep mask:
  ``L = mean over N² of (W Wᵀ ⊙ (1 − m mᵀ))²`` — pruned–kept, kept–pruned and pruned–pruned entries (pruned
  filters' squared norms included); kept–kept entries get no gradient. ``penalty() = 1000 · λ(t) · Σ L``.
* L2 on pruned filters, applied to the gradients in ``before_step()``: ``grad += λ(t) · w`` on pruned rows of the
  weight, pruned bias entries and the pruned γ, β (the gradient of ``λ(t)·(‖w_j‖² + γ_j² + β_j²)/2``).
* λ(t) starts at 0 and grows by ``delta`` every ``every`` steps up to ``ceiling``; then ``stabilise`` steps at
  the ceiling, after each of which the pruned filters are set to zero (``zero_in_stabilisation``); then
  :attr:`done` is True and :meth:`finish` removes them.

Schedules (ALGORITHMS.md section 4): ``"paper"`` — δ = 1e-4 every 10 steps up to 1.0, 10k stabilisation steps
(CIFAR; ImageNet: every 5 and 40k); ``"fast"`` — δ = 1e-2 every 2 steps (ceiling after 200 steps), 100
stabilisation steps, for small runs, tests and demos. Any factor given explicitly overrides the schedule.
The authors regularise with SGD at LR 1e-3 (momentum 0.9), then fine-tune.

Distributed training: build the TPP on the ``DistributedDataParallel`` wrapper or its ``.module`` (the same plan
on every rank: the default plan is deterministic). The penalty is added to each rank's loss, so its gradient is
averaged with the rest by DDP; ``before_step`` / ``after_step`` act on the synchronised gradients and weights the
same way on every rank. Call ``finish()`` on one rank (or all). See docs/tpp.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from graphprune import api
from graphprune.emit import hf
from graphprune.emit.torch import emit
from graphprune.errors import UsageError, VerificationError
from graphprune.frontends.fx.frontend import load
from graphprune.verify.torch import verify as verify_module

Schedule = Literal["paper", "fast"]
SCHEDULES: dict[str, dict[str, float]] = {
    "paper": {"delta": 1e-4, "every": 10, "ceiling": 1.0, "stabilise": 10_000},
    "fast": {"delta": 1e-2, "every": 2, "ceiling": 1.0, "stabilise": 100},
}
GRAM_WEIGHT = 1000.0  # the paper's factor on Σ L_gram


def gram_loss(weight: torch.Tensor, penalised: torch.Tensor) -> torch.Tensor:
    """``mean((W Wᵀ ⊙ P)²)`` with W the (N, ·) filter matrix and P = 1 − m mᵀ (0 on kept–kept pairs)."""
    w = weight.reshape(weight.shape[0], -1)
    return masked_gram_loss(w @ w.t(), penalised)


def masked_gram_loss(gram: torch.Tensor, penalised: torch.Tensor) -> torch.Tensor:
    return (gram * penalised).pow(2).mean()


def along(mask: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """A 1-D mask shaped to broadcast along ``axis`` of an ``ndim``-D tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return mask.reshape(shape)


@dataclass(eq=False)
class Slice:
    """The pruned entries of one parameter along one axis."""

    path: str
    param: nn.Parameter
    axis: int
    removed: torch.Tensor  # bool, over the axis

    def mask(self, like: torch.Tensor) -> torch.Tensor:
        return along(self.removed.to(like.device), like.dim(), self.axis).to(like.dtype)


@dataclass(eq=False)
class Layer:
    """A conv / linear layer whose output filters a unit owns: the Gram penalty applies to it."""

    name: str  # module path
    module: nn.Module
    weight: Slice
    bias: Slice | None
    keep: torch.Tensor  # bool over the N output filters
    _penalised: torch.Tensor | None = None

    def matrix(self) -> torch.Tensor:
        w = self.weight.param
        return w if self.weight.axis == 0 else w.transpose(0, 1)

    def penalised(self, like: torch.Tensor) -> torch.Tensor:
        p = self._penalised
        if p is None or p.device != like.device or p.dtype != like.dtype:
            m = self.keep.to(like.dtype)
            p = self._penalised = (1 - torch.outer(m, m)).to(like.device)
        return p

    def loss(self) -> torch.Tensor:
        w = self.matrix()
        return gram_loss(w, self.penalised(w))

    @torch.no_grad()
    def norms(self) -> tuple[np.ndarray, np.ndarray]:
        """L2 norms of the kept and of the pruned filters."""
        w = self.matrix().detach()
        n = w.reshape(w.shape[0], -1).float().norm(dim=1).cpu().numpy()
        keep = self.keep.cpu().numpy()
        return n[keep], n[~keep]


def conv_out_axis(m: nn.Module) -> int | None:
    """The output-filter axis of a conv / linear weight (None: not a layer TPP regularises)."""
    if isinstance(m, nn.Linear):
        return 0
    if isinstance(m, nn.modules.conv._ConvNd):
        if m.transposed:
            return 1 if m.groups == 1 else None  # grouped transposed: output filters are not one axis
        return 0
    return None


NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class TPP:
    def __init__(self, model: nn.Module, plan=None, *, example_inputs: Any = None, ratio: float = 0.5,
                 schedule: Schedule = "paper", delta: float | None = None, every: int | None = None,
                 ceiling: float | None = None, stabilise: int | None = None, gram_weight: float = GRAM_WEIGHT,
                 l2: bool = True, zero_in_stabilisation: bool = True, **plan_options) -> None:
        if schedule not in SCHEDULES:
            raise UsageError(f"schedule '{schedule}' must be one of {', '.join(SCHEDULES)}")
        s = dict(SCHEDULES[schedule])
        for k, v in {"delta": delta, "every": every, "ceiling": ceiling, "stabilise": stabilise}.items():
            if v is not None:
                s[k] = v
        self.delta, self.every, self.ceiling, self.stabilise = float(s["delta"]), int(s["every"]), float(s["ceiling"]), int(s["stabilise"])
        if self.delta <= 0 or self.every < 1 or self.ceiling <= 0 or self.stabilise < 0:
            raise UsageError(f"TPP schedule needs delta > 0, every >= 1, ceiling > 0, stabilise >= 0; got {s}")
        if gram_weight < 0:
            raise UsageError(f"gram_weight={gram_weight} must be >= 0")
        self.schedule = schedule
        self.model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        self.example_inputs = example_inputs
        if plan is None:
            if example_inputs is None:
                raise UsageError("TPP needs a plan or example_inputs (to choose the pruned filters by L1)")
            options = {"method": "magnitude", "ratio": ratio, "scope": "local", "round_to": 1}
            options.update(plan_options)
            plan = api.plan(self.model, example_inputs=example_inputs, **options)
        elif plan_options:
            raise UsageError(f"plan options {sorted(plan_options)} only apply when TPP chooses the plan itself")
        self.plan = plan
        self.gram_weight = float(gram_weight)
        self.l2 = l2
        self.zero_in_stabilisation = zero_in_stabilisation
        self.layers, self.slices = self._map(plan)
        self.iteration = 0
        self.lam = 0.0
        self.stable_since: int | None = None  # the step at which λ reached the ceiling

    # ---- the plan, mapped to parameters --------------------------------------------------------------------

    def _map(self, plan) -> tuple[list[Layer], list[Slice]]:
        paths = {id(p): name for name, p in self.model.named_parameters()}
        spaces = {(s.tensor, s.axis): s for s in plan.keep if not s.virtual}

        def slice_of(param, axis) -> Slice | None:
            if param is None or id(param) not in paths:
                return None
            space = spaces.get((paths[id(param)], axis))
            if space is None:
                return None
            return Slice(paths[id(param)], param, axis, torch.from_numpy(plan.removed_mask(space)))

        layers: list[Layer] = []
        slices: list[Slice] = []
        seen: set[int] = set()
        for name, m in self.model.named_modules():
            if id(m) in seen:
                continue
            seen.add(id(m))
            axis = conv_out_axis(m)
            if axis is not None:
                w = slice_of(m.weight, axis)
                if w is None:
                    continue
                b = slice_of(m.bias, 0)
                layers.append(Layer(name, m, w, b, ~w.removed))
                slices += [w] + ([b] if b is not None else [])
            elif isinstance(m, NORMS) and getattr(m, "weight", None) is not None:
                slices += [s for s in (slice_of(m.weight, 0), slice_of(m.bias, 0)) if s is not None]
        if plan.keep and not layers:
            raise UsageError("no conv / linear weight of this module is in the plan: make the plan from this module "
                             "(graphprune.plan(model, example_inputs=...)), not from an ONNX export")
        return layers, slices

    # ---- the schedule --------------------------------------------------------------------------------------

    @property
    def phase(self) -> Literal["grow", "stabilise", "done"]:
        if self.stable_since is None:
            return "grow"
        return "stabilise" if self.iteration - self.stable_since < self.stabilise else "done"

    @property
    def done(self) -> bool:
        """True once the stabilisation phase is over: call :meth:`finish`."""
        return self.phase == "done"

    @property
    def total_steps(self) -> int:
        """Steps from the start until :attr:`done`."""
        return math.ceil(self.ceiling / self.delta - 1e-9) * self.every + self.stabilise

    def after_step(self) -> None:
        """Count a step (call after ``optimizer.step()``): grow λ every ``every`` steps up to the ceiling; in the
        stabilisation phase, zero the pruned filters."""
        self.iteration += 1
        if self.stable_since is None:
            if self.iteration % self.every == 0:
                self.lam = min(self.lam + self.delta, self.ceiling)
                if self.lam >= self.ceiling - 1e-12:
                    self.lam = self.ceiling
                    self.stable_since = self.iteration
        elif self.zero_in_stabilisation and self.phase == "stabilise":
            self.zero_pruned()

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "lam": self.lam, "stable_since": self.stable_since}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration, self.lam, self.stable_since = int(state["iteration"]), float(state["lam"]), state["stable_since"]

    # ---- the regulariser -----------------------------------------------------------------------------------

    def gram_losses(self) -> dict[str, torch.Tensor]:
        """L_gram of every layer (with autograd), keyed by module path."""
        return {layer.name: layer.loss() for layer in self.layers}

    def penalty(self) -> torch.Tensor:
        """``gram_weight · λ(t) · Σ L_gram``: add it to the loss before ``backward()``."""
        if not self.layers or self.lam == 0 or self.gram_weight == 0:
            p = self.layers[0].weight.param if self.layers else next(self.model.parameters(), None)
            return torch.zeros((), device=p.device if p is not None else None)
        total = sum(layer.loss() for layer in self.layers)
        return (self.gram_weight * self.lam) * total

    @torch.no_grad()
    def before_step(self) -> None:
        """``grad += λ(t)·w`` on pruned filters, their bias and their norm layers' γ, β (call after backward)."""
        if not self.l2 or self.lam == 0:
            return
        for s in self.slices:
            g = s.param.grad
            if g is not None:
                g.add_(s.param.detach() * s.mask(g), alpha=self.lam)

    @torch.no_grad()
    def zero_pruned(self) -> None:
        """Set the pruned filters, their bias entries and their γ, β to zero (the model keeps its shapes)."""
        for s in self.slices:
            s.param.mul_(1 - s.mask(s.param))

    # ---- diagnostics ---------------------------------------------------------------------------------------

    def filter_norms(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per layer: (norms of the kept filters, norms of the pruned filters)."""
        return {layer.name: layer.norms() for layer in self.layers}

    def norm_ratio(self) -> float:
        """Mean pruned-filter norm over mean kept-filter norm, over all layers (1 at random, → 0 under TPP)."""
        kept, pruned = zip(*self.filter_norms().values()) if self.layers else ((), ())
        k = np.concatenate([np.atleast_1d(x) for x in kept]) if kept else np.zeros(0)
        p = np.concatenate([np.atleast_1d(x) for x in pruned]) if pruned else np.zeros(0)
        return float(p.mean() / max(k.mean(), 1e-30)) if len(p) and len(k) else 0.0

    # ---- removal -------------------------------------------------------------------------------------------

    def finish(self, example_inputs: Any = None, *, zero: bool = True, verify: bool = True, rtol: float = 1e-4,
               atol: float = 1e-5) -> nn.Module:
        """Zero the pruned filters (``zero``), then remove them with the torch emitter; returns the smaller module
        (a deep copy: the model itself keeps its shapes). With ``verify``, the result is checked against the
        model with the plan's channels masked (graphprune.verify.torch); a failure raises VerificationError."""
        inputs = example_inputs if example_inputs is not None else self.example_inputs
        if inputs is None:
            raise UsageError("finish() needs example_inputs (given here or to TPP(...)) to trace the module")
        if zero:
            self.zero_pruned()
        inputs = to_device(inputs, next(self.model.parameters()).device)
        source = load(self.model, inputs, capture="auto")  # torch.fx, else torch.export
        missing = sorted({s.tensor for s in self.plan.keep if not s.virtual} - set(source.graph.tensors))
        if missing:
            raise UsageError(f"the plan names tensors this module's trace does not have ({', '.join(missing[:3])}): "
                             "it was made from another module")
        emitted = emit(source, self.plan, rewrite_calls=source.capture == "torch.fx")
        self.emitted = emitted
        # a Hugging Face model's head counts and config follow its resized weights, as after graphprune.prune
        self.notes = () if emitted.graph_module else hf.adapt(emitted.model)
        if verify:
            v = verify_module(source, emitted.model, self.plan, rtol=rtol, atol=atol, onnx_export=False)
            self.verification = v
            if not v.ok:
                raise VerificationError(f"TPP removal failed verification: {v.failure}")
        return emitted.model


def to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(to_device(x, device) for x in inputs)
    return inputs

