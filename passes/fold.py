"""Post-pass for emitted models: fold inference BatchNormalization into the Conv before it, drop no-op nodes
(the surgery: :mod:`graphprune.emit.fold`).

It changes float rounding (the BN is applied to the weights, not to the activations), so its claim is equality
within a tolerance (:class:`SameFunction`), not bit-exactness. onnxruntime already makes both rewrites at
``ORT_ENABLE_ALL``; the pass matters for runtimes that do not, and it makes the file smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.emit.fold import fold_model
from graphprune.pipeline.base import Pass, PassResult
from graphprune.pipeline.state import PruneState
from graphprune.verify.claims import Claim, SameFunction


@dataclass(frozen=True, kw_only=True)
class FoldBatchNorm(Pass):
    """BatchNormalization → preceding Conv, Identity / Dropout removed; a no-op when there is nothing to fold.
    It rewrites, it does not prune: its output equals its input (within tolerance) at every input size."""

    mutates = True
    runs_on = frozenset({"onnx"})
    refusal = ("fold is for ONNX models (a torch module keeps its BatchNorm layers for training); export to ONNX "
               "and prune the file")

    def claim(self, before: PruneState, after: PruneState) -> Claim:
        """Equal to the model before folding (looser than the channel check: folding changes float rounding)."""
        return SameFunction(rtol=1e-3, atol=1e-4, label="equals_unfolded", what="folded - unfolded")

    def call(self, state: PruneState) -> PassResult:
        model, stats = fold_model(state.model)
        if not any(stats.values()):
            return PassResult(state, modified=False, stats=stats)
        return PassResult(state.with_(model=model), modified=True, stats=stats)
