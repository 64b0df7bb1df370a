"""The prune report: what was removed, what could not be and why, what it costs, and whether it verified."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from graphprune import progress
from graphprune.channels.analysis import ChannelGraph, Group
from graphprune.channels.plan import Plan
from graphprune.ir import Graph
from graphprune.methods.cost import Cost, cost as graph_cost
from graphprune.pipeline.state import PassRecord
from graphprune.report.format import fmt_bytes, fmt_count, fmt_param
from graphprune.report.layers import EMPTY_NODES, const_inputs, layer_rows, nodes_of_groups
from graphprune.report.size import file_sizes, larger_file_note
from graphprune.verify.result import WITHIN_ROUNDING, Verification


@dataclass(frozen=True)
class GroupSummary:
    id: int
    layers: tuple[str, ...]  # parameter tensors in the group
    units: int
    removed: int
    frozen_because: tuple[str, ...]
    produced_by: tuple[str, ...] = ()  # weighted layers (node names) whose output channels are this group
    read_by: tuple[str, ...] = ()  # weighted layers that read this group as their input channels
    renormalised_by: tuple[str, ...] = ()  # normalisations whose statistics now run over its kept channels

    @property
    def kept(self) -> int:
        return self.units - self.removed


@dataclass(frozen=True)
class PruneReport:
    method: str
    options: Mapping[str, Any]
    before: Cost
    after: Cost
    groups: tuple[GroupSummary, ...]
    unmapped_ops: tuple[str, ...]
    verification: Verification | None
    passes: tuple[PassRecord, ...]
    notes: tuple[str, ...] = ()
    latency: Mapping[str, float] | None = None
    accuracy: Mapping[str, Any] | None = None  # top-1 on --eval data: before, after, points, data
    extra: Mapping[str, Any] = field(default_factory=dict)
    layers: tuple[Mapping[str, Any], ...] = ()  # per weighted layer: channels, params, MACs before / after
    file_bytes: Mapping[str, Any] | None = None  # before / after / ratio (report/size.py); None: not a file model

    @property
    def pass_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.passes)

    @property
    def channel_stage(self) -> bool:
        """Whether a channel selection ran (the channel counts mean something)."""
        return any(n in CHANNEL_SELECTORS for n in self.pass_names)

    @property
    def method_parameters(self) -> dict[str, dict[str, Any]]:
        """Per pass, its scalar stats (ε, δ, norm, energy rule, sparsity, …): what the method actually used."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.passes:
            scalars = {k: v for k, v in p.stats.items() if k not in SKIP_STATS and
                       (v is None or isinstance(v, (bool, int, float, str)))}
            if scalars:
                out.setdefault(p.name, {}).update(scalars)
        return out

    @property
    def units_removed(self) -> int:
        return sum(g.removed for g in self.groups)

    @property
    def groups_pruned(self) -> int:
        return sum(1 for g in self.groups if g.removed)

    @property
    def groups_frozen(self) -> int:
        return sum(1 for g in self.groups if g.frozen_because)

    @property
    def changed_nothing(self) -> bool:
        """No pass changed the model: nothing removed, decomposed, zeroed or refitted."""
        return not any(p.modified for p in self.passes)

    def nothing_removed_reason(self) -> str:
        if not any(g.units > 1 and not g.frozen_because for g in self.groups):
            return "no channel group can be pruned (every one frozen or a single channel; see -v or graphprune inspect)"
        return "the ratio, threshold or rounding left every group whole"

    def to_dict(self) -> dict[str, Any]:
        pr, mr = self.before.ratio(self.after)
        return {
            "method": self.method,
            "changed": not self.changed_nothing,
            "options": dict(self.options),
            "params": {"before": self.before.params, "after": self.after.params, "ratio": pr},
            "macs": {"before": self.before.macs, "after": self.after.macs, "ratio": mr},
            "file_bytes": None if self.file_bytes is None else dict(self.file_bytes),
            "method_parameters": self.method_parameters,
            "units_removed": self.units_removed,
            "groups": {"total": len(self.groups), "pruned": self.groups_pruned, "frozen": self.groups_frozen,
                       "detail": [dataclasses.asdict(g) | {"kept": g.kept} for g in self.groups]},
            "frozen": [{"group": g.id, "layers": list(g.produced_by + g.read_by or g.layers), "why": list(g.frozen_because)}
                       for g in self.groups if g.frozen_because],
            "layers": [dict(row) for row in self.layers],
            "unmapped_ops": list(self.unmapped_ops),
            "verification": None if self.verification is None else dataclasses.asdict(self.verification),
            "latency_ms": None if self.latency is None else dict(self.latency),
            "accuracy": None if self.accuracy is None else dict(self.accuracy),
            "passes": [dataclasses.asdict(p) for p in self.passes],
            "notes": list(self.notes),
            **dict(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def __str__(self) -> str:
        return render_text(self)


CHANNEL_SELECTORS = ("Select", "SamplingSelect")  # passes that choose channels: the channel stage ran
SKIP_STATS = ("notes", "units_removed", "groups_pruned")


def summarise_groups(cg: ChannelGraph, plan: Plan | None) -> tuple[GroupSummary, ...]:
    by_group = nodes_of_groups(cg.graph, cg)
    renormalised: dict[int, list[str]] = {}
    for r in plan.renormalised if plan is not None else ():
        renormalised.setdefault(cg.group_of[r.space], []).append(r.node)
    out = []
    for g in cg.candidates:
        removed = 0 if plan is None else len(plan.removed.get(g.id, ()))
        nodes = by_group.get(g.id, EMPTY_NODES)
        out.append(GroupSummary(g.id, layer_names(g), g.n_units or min(g.sizes.values()), removed, tuple(g.reasons()),
                                tuple(nodes["produced_by"]), tuple(nodes["read_by"]),
                                tuple(dict.fromkeys(renormalised.get(g.id, ())))))
    return tuple(out)


def layer_report(before: Graph, after: Graph | None, plan: Plan | None,
                 cg: ChannelGraph | None = None) -> tuple[dict[str, Any], ...]:
    """Per weighted layer of the original: channels in / out before and after (from the plan), parameters and MACs
    before and after (read from the pruned graph; a low-rank layer ``n`` counts ``n/lowrank_a`` + ``n/lowrank_b``),
    and the non-zero weights after (what SiPP changes)."""
    mb = graph_cost(before).per_node_macs
    rows = layer_rows(before, cg, plan, mb)
    if after is None:
        after = before
    ma = graph_cost(after).per_node_macs if after is not before else mb
    by_layer: dict[str, list] = {}
    for n in after.nodes:
        base = n.name
        for suffix in ("/lowrank_a", "/lowrank_b"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        by_layer.setdefault(base, []).append(n)
    out = []
    for row in rows:
        nodes = by_layer.get(row["name"], [])
        consts = [t for n in nodes for t in const_inputs(after, n)]
        params_after = sum(int(np.prod(after.shape(t), dtype=np.int64)) for t in dict.fromkeys(consts)) if nodes else row["params"]["after"]
        nonzero = sum(int(np.count_nonzero(after.value(t))) for t in dict.fromkeys(consts)) if nodes else None
        macs = row.pop("macs", 0)
        out.append(row | {"params": {"before": row["params"]["before"], "after": params_after, "nonzero_after": nonzero},
                          "macs": {"before": macs, "after": sum(ma.get(n.name, 0) for n in nodes) if nodes else 0},
                          "lowrank": any(n.name.endswith(("/lowrank_a", "/lowrank_b")) for n in nodes)})
    return tuple(out)


def layer_names(group: Group) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.tensor for s in group.params))


def summary_rows(report: PruneReport) -> list[tuple[str, str, str, str]]:
    b, a = report.before, report.after
    pr, mr = b.ratio(a)
    rows = [("params", fmt_count(b.params), fmt_count(a.params), f"{pr:.1%}"),
            ("MACs", fmt_count(b.macs), fmt_count(a.macs), f"{mr:.1%}")]
    if report.file_bytes:
        fb = report.file_bytes
        rows.append(("file size", fmt_bytes(fb["before"]), fmt_bytes(fb["after"]), f"{fb['ratio']:.1%}"))
    if report.latency:
        lb, la = report.latency.get("before_ms"), report.latency.get("after_ms")
        rows.append(("latency (ms)", f"{lb:.3f}", f"{la:.3f}", f"{la / lb:.1%}"))
    return rows


def render_text(report: PruneReport) -> str:
    """A plain-text version of the table (what ``str(report)`` prints)."""
    lines = [f"{'':14}{'before':>12}{'after':>12}{'ratio':>10}"]
    lines += [f"{k:14}{b:>12}{a:>12}{r:>10}" for k, b, a, r in summary_rows(report)]
    lines += status_lines(report)
    return "\n".join(lines)


ORACLES = {  # verification check name -> what it compares (verify.py, verify_lowrank.py, edits.py)
    "masked_original": "pruned - masked original",
    "truncated_original": "decomposed - truncated original",
    "edited_original": "pruned - original with the same weights edited",
    "refitted_masked_original": "reconstructed - masked original with the refitted weights",
}


def method_line(report: PruneReport) -> str:
    """The method and the parameters it used, e.g. ``method: sampling (ε=0.41, δ=1e-16, budget=params)``."""
    names = {"epsilon": "ε", "delta": "δ"}
    wanted = ("norm", "seed", "epsilon", "delta", "sampling", "mode", "rule", "scheme", "points_used",
              "data_free", "groups_magnitude_fallback")
    parts = []
    for name, stats in report.method_parameters.items():
        for k in wanted:
            if k in stats and not (k == "seed" and name != "RandomScore"):  # the seed chose the units only there
                text = f"{names.get(k, k)}={fmt_param(stats[k])}" if k != "rule" else str(stats[k])
                if text not in parts:
                    parts.append(text)
    opts = report.options
    if report.channel_stage and "SamplingSelect" not in report.pass_names:
        if opts.get("threshold") is not None:
            step = int(opts.get("round_to") or 1)
            up = f", kept counts rounded up to multiples of {step}" if step > 1 else ""
            parts.insert(0, f"threshold={fmt_param(opts['threshold'])}{up}")
        else:
            budget = report.method_parameters.get("Select", {}).get("budget") or "channels"
            of = "" if budget == "channels" else f" of {budget}"
            parts.insert(0, f"ratio={fmt_param(opts.get('ratio'))}{of}, {opts.get('scope', 'local')}")
    elif "SamplingSelect" in report.pass_names:
        parts.insert(0, f"ratio={fmt_param(opts.get('ratio'))} of {opts.get('budget') or 'params'}")
    elif "SiPPSparsify" in report.pass_names:
        parts.insert(0, f"ratio={fmt_param(opts.get('ratio'))} of weights")
    chain = " → ".join((report.method, *opts.get("then", ())))
    return f"method: {chain}" + (f" ({', '.join(parts)})" if parts else "")


def stage_lines(report: PruneReport) -> list[str]:
    """What each stage changed, in its own terms: channels, low-rank layers, zeroed weights."""
    lines = []
    if report.channel_stage:
        units = sum(g.units for g in report.groups if not g.frozen_because)
        frozen = [g for g in report.groups if g.frozen_because]
        line = (f"channels removed: {report.units_removed} of {units} in {report.groups_pruned} groups; "
                f"{len(frozen)} of {len(report.groups)} channel groups frozen")
        if frozen:
            why = dict.fromkeys(g.frozen_because[0].split(" (")[0] for g in frozen)
            line += f" ({'; '.join(list(why)[:3])})"
        lines.append(line)
        renormalised = [g for g in report.groups if g.renormalised_by]
        if renormalised:
            count = sum(len(g.renormalised_by) for g in renormalised)
            groups = f"{len(renormalised)} group" + ("s" if len(renormalised) > 1 else "")
            lines.append(f"renormalised: {count} normalisations in {groups} take their statistics over the kept "
                         "channels (verified against the original doing the same)")
    for p in report.passes:
        if p.name == "LowRank":
            done, skipped = len(p.stats.get("decomposed", ())), len(p.stats.get("skipped", ()))
            lines.append(f"low rank ({p.stats.get('rule', '')}, {p.stats.get('scheme', 'channel')} scheme): "
                         f"{done} layers decomposed, {skipped} left whole")
        elif p.name == "SiPPSparsify" and "weights" in p.stats:
            lines.append(f"weights zeroed: {p.stats['zeroed']} of {p.stats['weights']} ({p.stats['sparsity']:.1%}) in "
                         f"{p.stats.get('layers', '?')} layers; shapes unchanged (params and MACs count dense weights)")
        elif p.name == "RefitChoice" and p.stats.get("groups_chosen"):
            lines.append(f"chosen for the refit: in {p.stats['groups_chosen']} groups the units that go are those the "
                         f"kept channels rebuild best (structured OBS; {p.stats['units_changed']} differ from the "
                         "method's lowest-scored, the counts are its)")
        elif p.name == "Reconstruct" and "refitted" in p.stats:
            lines.append(reconstruct_line(p.stats))
        elif p.name == "Reweight":
            lines.append(f"reweighted: {p.stats.get('scaled_weights', 0)} consumer weights scaled")
    if not report.channel_stage and not lines:
        lines.append("nothing changed")
    return lines


def reconstruct_line(s: Mapping[str, Any]) -> str:
    """What reconstruction refitted, on which data, and the output cosine to the original before / after (on the
    held-out points no refit read, where there were any)."""
    calib = s.get("calibration", {})
    data = "data-free random inputs" if calib.get("data_free") else "calibration inputs"
    line = (f"reconstructed: {s['refitted']} of {s['layers']} layers refitted"
            + (f" ({s['relu_aware']} to what the ReLU / Clip after them passes)" if s.get("relu_aware") else "")
            + (f", {s['bias_only']} bias-compensated" if s.get("bias_only") else "")
            + (f", {s['rejected']} left as pruned (no better fit)" if s.get("rejected") else "")
            + f" on {calib.get('points', '?')} {data}")
    cos = s.get("output_cosine")
    if cos:
        on = f" on the {cos['points']} held-out points" if cos.get("on") == "held-out points" else ""
        line += f"; output cosine to the original{on} {cos['before']:.4f} → {cos['after']:.4f}"
    if s.get("applied") is False:
        line += " (not applied: it did not raise the cosine)"
    return line


def verification_line(v: Verification) -> str:
    oracles = [(k.rsplit("/", 1)[0] if "/" in k else "", k.rsplit("/", 1)[-1]) for k in v.checks
               if k.rsplit("/", 1)[-1] in ORACLES]
    if not oracles:
        return f"verification: passed (checks: {', '.join(v.checks)}; max error {v.max_error:.2e})"
    rounding = [c[len(WITHIN_ROUNDING):] for c in v.checks.values() if c.startswith(WITHIN_ROUNDING)]
    if rounding:
        return f"verification: passed, allowing for float rounding: {rounding[0]}"
    if len(oracles) == 1:
        return f"verification: passed (max |{ORACLES[oracles[0][1]]}| = {v.max_error:.2e})"
    stages = "; ".join(f"{stage or 'channels'}: {ORACLES[name]}" for stage, name in oracles)
    return f"verification: passed, every stage against its oracle ({stages}; max error {v.max_error:.2e})"


def status_lines(report: PruneReport) -> list[str]:
    lines = [method_line(report)] + stage_lines(report)
    if report.unmapped_ops:
        lines.append(f"ops without a channel rule (their channels frozen): {', '.join(report.unmapped_ops)}")
    v = report.verification
    if v is None:
        lines.append("verification: off")
    elif v.ok:
        d = v.drift
        lines.append(verification_line(v))
        if d is not None:
            top1 = "" if d.top1_agreement is None else f", top-1 agreement {d.top1_agreement:.1%}"
            lines.append(f"drift vs original: max abs {d.max_abs:.3g}, cosine {d.cosine:.4f}{top1}")
    else:
        lines.append(f"verification: FAILED ({v.failure})")
    if report.latency and "before" in report.latency:
        b, a = report.latency["before"], report.latency["after"]
        lines.append(f"latency p10–p90 (ms): before {b['p10']:.3f}–{b['p90']:.3f}, after {a['p10']:.3f}–{a['p90']:.3f}")
    if report.latency and "predicted_after_ms" in report.latency:
        lat = report.latency
        lines.append(f"latency budget: predicted {lat['predicted_before_ms']:.3f} → {lat['predicted_after_ms']:.3f} ms, "
                     f"measured {lat['before_ms']:.3f} → {lat['after_ms']:.3f} ms (prediction "
                     f"{lat['prediction_error']:+.1%} of the measured)")
    if report.accuracy:
        a = report.accuracy
        lines.append(f"accuracy on {a['points']} labelled points ({a['data']}): {a['before']:.2%} → {a['after']:.2%}")
    lines += [f"note: {n}" for n in report.notes]
    if report.changed_nothing:
        lines.append(f"WARNING: nothing was removed: {report.nothing_removed_reason()} (--require-removal makes this exit 5)")
    return lines


def changed_layers(report: PruneReport) -> list[Mapping[str, Any]]:
    return [r for r in report.layers if r["params"]["before"] != r["params"]["after"] or r["in"]["before"] != r["in"]["after"]
            or r["out"]["before"] != r["out"]["after"] or r["macs"]["before"] != r["macs"]["after"]
            or (r["params"].get("nonzero_after") not in (None, r["params"]["after"]))]




def predicted_latency(plan, measured: Mapping[str, Any]) -> dict[str, Any]:
    """The latency budget's prediction next to the measurement: ``predicted_before_ms``, ``predicted_after_ms``
    and ``prediction_error`` (predicted ÷ measured − 1, after pruning), when the plan was made to one."""
    achieved = (plan.meta.get("achieved") or {}) if plan is not None else {}
    if "latency_ms" not in achieved:
        return {}
    before, after = achieved["latency_ms"]
    return {"predicted_before_ms": before, "predicted_after_ms": after,
            "prediction_error": after / max(measured["after_ms"], 1e-12) - 1.0}


@dataclass(frozen=True, eq=False)
class RunCost:
    """Cost before and after, and the IR of the result for the per-layer rows, at the analysed shapes."""

    before: Cost
    after: Cost
    after_graph: Graph | None


def run_cost(run) -> RunCost:
    """What ``run`` costs, measured on the model it produced *before* the frontend finishes it: finishing gives the
    original's dynamic dimensions back (in place), and with them gone the shapes MACs are counted from (a PP-OCR
    detector reported 575.57M → 0 MACs)."""
    state = run.state
    source, frontend = state.source, state.frontend
    before = frontend.cost(source, source.model)
    after = frontend.cost(source, state.model, state.model_graph) if run.modified else before
    after_graph = None
    if run.modified and frontend.layer_table:
        after_graph = state.model_graph if state.model_graph is not None else frontend.graph_after(source, state.model)
    return RunCost(before, after, after_graph)


def make_report(config, run, finished, verification: Verification | None, notes: tuple[str, ...] = (),
                cost: RunCost | None = None) -> PruneReport:
    """The report of a pruning ``run`` (a :class:`graphprune.pipeline.runner.Run`) whose output the frontend
    finished as ``finished``: cost before and after (``cost``, from :func:`run_cost` before finishing), per-layer
    rows, groups, checks, latency when asked, and every note the passes, the frontend and the caller made."""
    state = run.state
    source, frontend, cg = state.source, state.frontend, state.channels
    cost = cost or run_cost(run)
    before, after, after_graph = cost.before, cost.after, cost.after_graph
    latency = None
    if config.latency or config.budget == "latency":  # a latency budget is always measured against its prediction
        with progress.task("measuring latency"):
            latency = frontend.latency(source, source.model, finished.model, config.seed,
                                       threads=config.latency_threads)
        latency |= predicted_latency(state.plan, latency)
    accuracy = None
    if config.eval_data is not None:
        with progress.task("measuring accuracy"):
            accuracy = frontend.accuracy(source, source.model, finished.model, config.eval_data)
    options = {k: v for k, v in config.flat().items() if k != "input_shapes"}
    options["input_shapes"] = {k: list(v) for k, v in source.input_shapes.items()}
    if config.eval_data is not None:
        options["eval_data"] = accuracy["data"] if accuracy else str(config.eval_data)
    unmapped = tuple(sorted({f"{n.op} ({n.source or n.name})" for n in cg.unmapped})) if cg else ()
    layers = layer_report(source.graph, after_graph, state.plan, cg) if frontend.layer_table else ()
    sizes = file_sizes(source, finished.model)
    return PruneReport(method=config.method, options=options, before=before, after=after,
                       groups=summarise_groups(cg, state.plan) if cg else (), unmapped_ops=unmapped,
                       verification=verification, passes=state.history, latency=latency, accuracy=accuracy,
                       notes=tuple(n for r in state.history for n in r.stats.get("notes", ())) + finished.notes + notes
                       + larger_file_note(sizes),
                       layers=layers, file_bytes=sizes, extra={"frontend": frontend.name, **(finished.extra or {})})
