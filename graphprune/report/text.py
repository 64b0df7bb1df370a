"""The terminal view of a prune report (rich): the before / after table, the status lines, the layers that
changed and, verbose, every channel group."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from graphprune.report.data import PruneReport, changed_layers, status_lines, summary_rows
from graphprune.report.format import fmt_count


def print_report(report: PruneReport, console=None, verbose: bool = False, max_layers: int = 12) -> None:
    """The rich before/after table, the status lines, the layers that changed (all with ``verbose``), and with
    ``verbose`` every group (kept / units, the layers it couples) and why frozen ones are frozen."""
    console = console or Console()
    table = Table(title=f"graphprune: {report.method}", show_header=True, header_style="bold")
    for col in ("", "before", "after", "ratio"):
        table.add_column(col, justify="right" if col else "left")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    for line in status_lines(report):
        console.print(line, highlight=False)
    layers = changed_layers(report)
    if layers:
        shown = layers if verbose else layers[:max_layers]
        lt = Table(title="layers changed", header_style="bold")
        for col in ("layer", "in ch", "out ch", "params", "MACs"):
            lt.add_column(col, justify="left" if col == "layer" else "right", overflow="fold")
        sparse = any(r["params"].get("nonzero_after") not in (None, r["params"]["after"]) for r in shown)
        for r in shown:
            def ch(d):
                return str(d["before"]) if d["before"] == d["after"] else f"{d['before']} → {d['after']}"
            p, m = r["params"], r["macs"]
            after = fmt_count(p["after"])
            if sparse and p.get("nonzero_after") is not None:
                after += f" ({fmt_count(p['nonzero_after'])} ≠0)"
            name = r["name"] + (" (low rank)" if r.get("lowrank") else "")
            lt.add_row(name, ch(r["in"]), ch(r["out"]), f"{fmt_count(p['before'])} → {after}",
                       f"{fmt_count(m['before'])} → {fmt_count(m['after'])}")
        console.print(lt)
        if len(shown) < len(layers):
            console.print(f"… {len(layers) - len(shown)} more layers changed (-v, or --report FILE for all)",
                          highlight=False)
    if verbose and report.groups:
        gt = Table(title="channel groups", header_style="bold")
        for col in ("group", "kept / units", "produced by", "read by", "why frozen"):
            gt.add_column(col, overflow="fold")
        for g in report.groups:
            gt.add_row(str(g.id), f"{g.kept} / {g.units}", "\n".join(g.produced_by) or "-", "\n".join(g.read_by) or "-",
                       "\n".join(g.frozen_because))
        console.print(gt)
