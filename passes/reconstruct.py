"""Layer-wise reconstruction (``--reconstruct``): after the channels are removed, refit each consumer of removed
channels on calibration activations so its output matches the original layer's (ridge least squares, with the
intercept where the model has a place for it; :mod:`graphprune.methods.reconstruct`).

It runs *after* :class:`RemoveChannels` on the pruned model and changes initializer values only. Its claim is
end to end: the output equals the masked original with exactly the refitted initializers in place
(:mod:`graphprune.verify.refit`), so the surgery and the placement of every refitted value are checked in one
comparison; ``graphprune verify`` rebuilds the same oracle from the names the file records.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.errors import VerificationError
from graphprune.methods.reconstruct import (COSINE_POINTS, HOLD_OUT, RECONSTRUCT_POINTS, RIDGE, judging_points,
                                            output_cosine, reconstruct, summary)
from graphprune.pipeline.base import Pass, PassResult
from graphprune.pipeline.state import PruneState
from graphprune.verify import metadata
from graphprune.verify.claims import Claim, Refitted


@dataclass(frozen=True, kw_only=True)
class Reconstruct(Pass):
    """``ridge``: λ relative to the mean input variance of each layer; ``inputs``: "sequential" (wave by wave on the
    model refitted so far), "original" (every layer at once from the original's activations) or "auto";
    ``max_points``: the calibration points the refits read at most (the first ones)."""

    ridge: float = RIDGE
    inputs: str = "auto"
    max_points: int = RECONSTRUCT_POINTS
    seed: int = 0
    requires = ("channels", "plan", "calib")
    mutates = True
    runs_on = frozenset({"onnx", "torch"})

    def call(self, state: PruneState) -> PassResult:
        plan, source, calib = state.plan, state.source, state.calib.head(self.max_points)
        access = state.frontend.access(source)
        if plan.empty:
            return PassResult(state, modified=False, stats={"layers": 0})
        try:
            refits, inputs = reconstruct(source.graph, source.model, state.model, plan, calib,
                                         source.input_shapes, inputs=self.inputs, ridge=self.ridge, seed=self.seed,
                                         access=access)
        except VerificationError as exc:  # points that do not run (an input without a batch axis), a pruned torch
            # module that cannot be captured again
            note = f"reconstruction skipped: the calibration points do not run through the models ({exc})"
            return PassResult(state, modified=False, stats={"layers": 0, "applied": False, "notes": [note]})
        values = {name: v for r in refits for name, v in r.values.items()}
        stats = summary(refits) | {"ridge": self.ridge, "inputs": inputs, "calibration": calib.describe()}
        if not values:
            return PassResult(state, modified=False, stats=stats)
        model = access.with_values(state.model, values)
        judged = judging_points(calib)  # the held-out points: a fit judged on its own points flatters itself
        where = "held-out points" if judged.n_points < calib.n_points else "calibration points"
        before, after = output_cosine(source.model, (state.model, model), judged, source.input_shapes, access=access)
        stats["output_cosine"] = {"before": before, "after": after, "points": min(judged.n_points, COSINE_POINTS),
                                  "on": where}
        if after <= before:  # each layer fits better, the whole does not (inputs the original cannot show:
            # renormalised norms)
            stats["notes"] = [f"reconstruction not applied: it did not raise the output cosine to the original on the "
                              f"{where} ({before:.4f} → {after:.4f})"]
            return PassResult(state, modified=False, stats=stats | {"applied": False})
        stats["applied"] = True
        if where == "calibration points":  # fewer points than HOLD_OUT: nothing held out, so nothing unseen judged it
            stats["notes"] = [f"reconstruction judged on the {calib.n_points} calibration points it fitted (too few to "
                              f"hold any out): its cosine is in-sample; pass at least {HOLD_OUT} points"]
        if state.frontend.kind == "onnx":  # a file records what `graphprune verify` rebuilds
            metadata.write(model, refit={"weights": sorted(values), "ridge": self.ridge, "points": calib.n_points,
                                         "data_free": calib.data_free})
        captured = (model, access.ir(model))  # the refitted model's IR (a value-only edit): held by the access, so
        # the report's cost needs no capture of its own
        return PassResult(state.with_(model=model, refitted=tuple(sorted(values)), captured=captured), modified=True,
                          stats=stats)

    def claim(self, before: PruneState, after: PruneState) -> Claim:
        return Refitted(after.plan, after.refitted)
