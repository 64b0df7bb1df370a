"""TRP — Trained Rank Pruning (Xu et al., arXiv 1812.02402 / 2004.14566) as hooks for your own training loop.

    from graphprune.torch.trp import TRP

    trp = TRP(model, energy=0.9, every=1, nuclear_weight=3e-4)
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        trp.before_step()        # grad += λ · U_r V_rᵀ  (nuclear-norm sub-gradient)
        optimizer.step()
        trp.after_step()         # every m-th call: W ← U_r S_r V_rᵀ (rank r at energy e)
    small = trp.decompose()      # nn.Conv2d / nn.Linear → nn.Sequential(lowrank_a, lowrank_b)

Each target weight is seen as the matrix of the chosen scheme (``channel``: n × c·kh·kw per group; ``spatial``:
c·kh × n·kw per group; Linear: out × in); r is the smallest rank keeping ``energy`` of Σσ² (the largest over
groups). Defaults: e = 0.9 and λ = 3e-4 (ALGORITHMS.md section 5, CIFAR), m = 1 (the authors' code projects at
every iteration; the paper uses m in 1..5). Targets: every ``nn.Linear`` and every ``nn.Conv2d`` that some rank
could make cheaper (depthwise convs never are), narrowed with fnmatch ``include`` / ``exclude`` patterns.

``decompose()`` factors each target at the rank of its last projection when the weight has not changed since
(then the returned module computes exactly what the model computes; the authors decompose trained models with a
tiny singular-value threshold for the same reason), else at its energy-e rank now (what one more projection
would keep). Layers where the decomposition would not lower MACs are left as they are; the model itself is not
changed by ``decompose()``.

Projecting at energy e removes about (1 − e) of a weight's energy every time; if the gradient steps between
projections do not put it back, ranks keep falling. Train at e ≥ 0.95 (the authors' code uses 0.99) or
project less often (``every``) when ranks collapse; see docs/lowrank.md.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from graphprune.methods import lowrank as lr

from graphprune.torch.lowrank import decompose_module, from_matrices, matrices, rank_of, targets


class TRP:
    def __init__(self, model: nn.Module, *, energy: float = lr.DEFAULT_ENERGY, every: int = 1,
                 nuclear_weight: float = 3e-4, scheme: lr.Scheme = "channel", round_to: int = 1,
                 include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> None:
        if every < 1:
            raise ValueError(f"every={every}: the projection period must be a positive number of steps")
        if nuclear_weight < 0:
            raise ValueError(f"nuclear_weight={nuclear_weight} must be >= 0")
        if scheme not in ("channel", "spatial"):
            raise ValueError(f"scheme '{scheme}' must be 'channel' or 'spatial'")
        self.model = model
        self.rule = lr.RankRule(energy=energy, round_to=round_to)
        self.every = every
        self.nuclear_weight = nuclear_weight
        self.scheme = scheme
        self.targets: dict[str, nn.Module] = targets(model, scheme, include, exclude)
        self.iteration = 0
        self.ranks: dict[str, tuple[int, int]] = {}  # name -> (r, full rank) at the last projection
        self.versions: dict[str, int] = {}  # name -> the weight's version counter right after that projection

    def svd(self, module: nn.Module):
        w = module.weight.detach()
        mats = matrices(w.float() if w.dtype in (torch.float16, torch.bfloat16) else w, module, self.scheme)
        u, s, vh = torch.linalg.svd(mats, full_matrices=False)
        r, full = rank_of(s, self.rule)
        return u[..., :r], s[..., :r], vh[..., :r, :], r, full

    @torch.no_grad()
    def before_step(self) -> None:
        """Add λ · U_r V_rᵀ to each target weight's gradient (call after ``backward()``, before the step)."""
        if not self.nuclear_weight:
            return
        for module in self.targets.values():
            grad = module.weight.grad
            if grad is None:
                continue
            u, _, vh, _, _ = self.svd(module)
            sub = from_matrices(u @ vh, module, self.scheme)
            grad.add_(sub.to(grad.dtype), alpha=self.nuclear_weight)

    @torch.no_grad()
    def after_step(self) -> bool:
        """Count a step; every ``every``-th one, project the targets (call after ``optimizer.step()``).
        Returns whether it projected."""
        self.iteration += 1
        if self.iteration % self.every:
            return False
        self.project()
        return True

    @torch.no_grad()
    def project(self) -> dict[str, int]:
        """Replace each target weight by its rank-r approximation at energy e now; returns the ranks."""
        for name, module in self.targets.items():
            u, s, vh, r, full = self.svd(module)
            w = module.weight
            w.copy_(from_matrices((u * s[..., None, :]) @ vh, module, self.scheme).to(w.dtype))
            self.ranks[name] = (r, full)
            self.versions[name] = w._version
        return {name: r for name, (r, _) in self.ranks.items()}

    @torch.no_grad()
    def current_ranks(self) -> dict[str, int]:
        """The rank at energy e of each target's current weight."""
        return {name: self.svd(module)[3] for name, module in self.targets.items()}

    def decomposition_ranks(self) -> dict[str, int]:
        """Each target's rank at its last projection if its weight is unchanged since, else at energy e now."""
        ranks = self.current_ranks()
        for name, module in self.targets.items():
            if name in self.ranks and self.versions.get(name) == module.weight._version:
                ranks[name] = self.ranks[name][0]
        return ranks

    def decompose(self, *, example_input=None, only_if_cheaper: bool = True) -> nn.Module:
        """The final step: a copy of the model with each target replaced by ``nn.Sequential(lowrank_a,
        lowrank_b)`` at :meth:`decomposition_ranks` (see the module docstring)."""
        return decompose_module(self.model, ranks=self.decomposition_ranks(), scheme=self.scheme,
                                include=list(self.targets), example_input=example_input,
                                only_if_cheaper=only_if_cheaper)
