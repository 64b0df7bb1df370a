"""The prune report: what was removed, what could not be and why, what it costs, and whether it verified."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .channels import ChannelGraph, Group
from .cost import Cost
from .plan import Plan
from .state import PassRecord
from .verify import Verification


@dataclass(frozen=True)
class GroupSummary:
    id: int
    layers: tuple[str, ...]  # parameter tensors in the group
    units: int
    removed: int
    frozen_because: tuple[str, ...]


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
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def units_removed(self) -> int:
        return sum(g.removed for g in self.groups)

    @property
    def groups_pruned(self) -> int:
        return sum(1 for g in self.groups if g.removed)

    @property
    def groups_frozen(self) -> int:
        return sum(1 for g in self.groups if g.frozen_because)

    def to_dict(self) -> dict[str, Any]:
        pr, mr = self.before.ratio(self.after)
        return {
            "method": self.method,
            "options": dict(self.options),
            "params": {"before": self.before.params, "after": self.after.params, "ratio": pr},
            "macs": {"before": self.before.macs, "after": self.after.macs, "ratio": mr},
            "units_removed": self.units_removed,
            "groups": {"total": len(self.groups), "pruned": self.groups_pruned, "frozen": self.groups_frozen,
                       "detail": [dataclasses.asdict(g) for g in self.groups]},
            "unmapped_ops": list(self.unmapped_ops),
            "verification": None if self.verification is None else dataclasses.asdict(self.verification),
            "latency_ms": None if self.latency is None else dict(self.latency),
            "passes": [dataclasses.asdict(p) for p in self.passes],
            "notes": list(self.notes),
            **dict(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def __str__(self) -> str:
        return render_text(self)


def summarise_groups(cg: ChannelGraph, plan: Plan | None) -> tuple[GroupSummary, ...]:
    out = []
    for g in cg.candidates:
        removed = 0 if plan is None else len(plan.removed.get(g.id, ()))
        out.append(GroupSummary(g.id, layer_names(g), g.n_units or min(g.sizes.values()), removed, tuple(g.reasons())))
    return tuple(out)


def layer_names(group: Group) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.tensor for s in group.params))


def fmt_count(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def summary_rows(report: PruneReport) -> list[tuple[str, str, str, str]]:
    b, a = report.before, report.after
    pr, mr = b.ratio(a)
    rows = [("params", fmt_count(b.params), fmt_count(a.params), f"{pr:.1%}"),
            ("MACs", fmt_count(b.macs), fmt_count(a.macs), f"{mr:.1%}")]
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


def status_lines(report: PruneReport) -> list[str]:
    lines = [f"channels removed: {report.units_removed} in {report.groups_pruned} groups; "
             f"{report.groups_frozen} of {len(report.groups)} channel groups frozen"]
    if report.unmapped_ops:
        lines.append(f"ops without a channel rule (their channels frozen): {', '.join(report.unmapped_ops)}")
    v = report.verification
    if v is None:
        lines.append("verification: off")
    elif v.ok:
        d = v.drift
        lines.append(f"verification: passed (max |pruned - masked original| = {v.max_error:.2e})")
        if d is not None:
            top1 = "" if d.top1_agreement is None else f", top-1 agreement {d.top1_agreement:.1%}"
            lines.append(f"drift vs original: max abs {d.max_abs:.3g}, cosine {d.cosine:.4f}{top1}")
    else:
        lines.append(f"verification: FAILED ({v.failure})")
    lines += [f"note: {n}" for n in report.notes]
    return lines


def print_report(report: PruneReport, console=None, verbose: bool = False) -> None:
    """The rich before/after table plus status lines, and with ``verbose`` the frozen groups and why."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"graphprune: {report.method}", show_header=True, header_style="bold")
    for col in ("", "before", "after", "ratio"):
        table.add_column(col, justify="right" if col else "left")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    for line in status_lines(report):
        console.print(line, highlight=False)
    if verbose:
        for g in report.groups:
            if g.frozen_because:
                console.print(f"  group {g.id} ({', '.join(g.layers[:3])}…): frozen: {g.frozen_because[0]}",
                              highlight=False)
