"""``graphprune verify ORIGINAL PRUNED``: check a file graphprune wrote, by the stages its metadata records.

The stages are rebuilt from the record (:mod:`graphprune.verify.metadata`), never by running a pass:

* **channels**: the channel stage's output is emitted again from the stored plan and checked against the masked
  original (skipped when the file records no plan);
* **randomized PFP reweighting**: its edits are recomputed from the factors the plan records
  (:func:`graphprune.methods.edits.reweight_edits`) and checked exactly;
* **SiPP**: the masks are read off the pruned weights (zeros); for deterministic SiPP every other entry must equal
  the original, for randomized / hybrid SiPP the scales are read off too, so only the rest of the model (other
  weights, graph, shapes) is checked there;
* **reconstruction**: the file against the masked original with the refitted initializers it names holding the
  file's values, placed at the kept channels (:mod:`graphprune.verify.refit`); after low rank the refitted
  weights are decomposed, so that pair cannot be rebuilt from the file;
* **low rank** (last): against the truncated model before decomposition, and the full-rank decomposition
  against it (SiPP followed by low rank cannot be rebuilt: the decomposed weights no longer show the edit);
* nothing else recorded: the file against the masked original of its plan (the source itself without one).

Several stages combine as in a pruning run (:func:`graphprune.verify.result.combine`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from graphprune.channels.analysis import analyse
from graphprune.emit.onnx import emit
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.methods.edits import WeightEdit, apply_to_values, reweight_edits
from graphprune.runtime import run, seeded_inputs, session
from graphprune.verify import metadata
from graphprune.verify.edits import verify_edits
from graphprune.verify.lowrank import verify_lowrank
from graphprune.verify.masked import verify_masked
from graphprune.verify.refit import verify_refit
from graphprune.verify.result import Drift, Tolerance, Verification, combine, drift


def verify_recorded(source: LoadedModel, pruned: onnx.ModelProto, tolerance: Tolerance = Tolerance()) -> Verification:
    """Every stage ``pruned``'s metadata records, each against its own oracle (see the module docstring)."""
    record = metadata.read(pruned)
    plan = record.channel_plan
    edited = record.edits is not None or bool(plan.meta.get("reweight")) or record.refit is not None
    if not record.lowrank and not edited:
        return verify_masked(source, pruned, plan, tolerance)
    opts = dict(rtol=tolerance.rtol, atol=tolerance.atol, seed=tolerance.seed)
    results: list[tuple[str, Verification]] = []
    before = source.model
    if not plan.empty:
        before = emit(source.model, source.graph, plan)
        results.append(("", verify_masked(source, before, plan, tolerance)))
    if plan.meta.get("reweight"):
        edits, _ = reweight_edits(analyse(source.graph, query_heads=bool(plan.meta.get("query_heads"))), plan)
        reweighted = apply_to_values(before, edits)
        results.append(("Reweight", verify_edits(before, reweighted if record.lowrank else pruned, edits,
                                                 source.input_shapes, interface=source.model, **opts)))
        before = reweighted
    if record.refit is not None:
        if record.lowrank:
            results.append(("Reconstruct", Verification(False, {"rebuilt": "reconstruction followed by low rank "
                                                                           "cannot be verified from the file alone"})))
        else:
            results.append(("Reconstruct", verify_refit(source, pruned, plan, record.refit["weights"], tolerance)))
    if record.edits is not None:
        if record.lowrank:  # the edited weights were decomposed: the file no longer shows them
            results.append(("SiPP", Verification(False, {"rebuilt": "SiPP followed by low rank cannot be verified "
                                                                    "from the file alone"})))
        else:
            results.append(("SiPP", verify_edits(before, pruned, edits_read_off(before, pruned, record.edits),
                                                 source.input_shapes, interface=source.model, **opts)))
    if record.lowrank:
        results.append(("LowRank", verify_lowrank(before, pruned, source.input_shapes, interface=source.model,
                                                  layers=list(record.lowrank), declared=source.declared, **opts)))
    return combine(results, lambda: final_drift(source, pruned, tolerance.seed))


def edits_read_off(before: onnx.ModelProto, pruned: onnx.ModelProto, entry) -> dict[str, WeightEdit]:
    """SiPP's edits as the pruned weights show them: kept where non-zero, scaled by pruned / original when the
    record says the kept entries were rescaled."""
    originals = {t.name: numpy_helper.to_array(t) for t in before.graph.initializer}
    got = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    edits = {}
    for name in entry["weights"]:
        keep = got[name] != 0
        scale = None
        if entry.get("scaled"):
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(keep, got[name] / originals[name], 1.0).astype(np.float32)
        edits[name] = WeightEdit(keep, scale)
    return edits


def final_drift(source: LoadedModel, model: onnx.ModelProto, seed: int) -> Drift:
    """``model`` against the unpruned original on the seeded inputs."""
    feeds = seeded_inputs(source.model, source.input_shapes, seed)
    return drift(run(session(source.model, once=True), feeds), run(session(model, once=True), feeds))
