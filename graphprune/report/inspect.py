"""What ``graphprune inspect`` shows: the channel groups described by the layers (node names) they couple,
per-layer channel counts (before / after a plan), and three renderings of it: a rich terminal view, Graphviz
text (``--dot``) and one self-contained offline HTML page (``--html``: inline CSS, JS and SVG, no network).

The HTML page draws the space graph itself: a layered layout computed here (x: the position in topological order
of the node that produces or reads the space, y: stacked within that column), spaces coloured by group, frozen
spaces outlined in red and dashed.
"""

from __future__ import annotations

import html
import json
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table

from graphprune.channels.analysis import ChannelGraph
from graphprune.methods.cost import Cost
from graphprune.ir import Graph, Node
from graphprune.channels.plan import Plan
from graphprune.channels.rules import Space
from graphprune.report.format import fmt_count
from graphprune.report.layers import EMPTY_NODES, layer_axes, layer_rows, nodes_of_groups, space_owner


# ---- the data (also the --json output) ---------------------------------------------------------------------


def inspection_data(graph: Graph, cg: ChannelGraph, cost: Cost, *, everything: bool = False, plan: Plan | None = None,
                    input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Everything the views show, JSON-ready. ``groups`` keeps the keys of the original ``inspect --json``
    (id, status, units, spaces, params, frozen_because) and adds the nodes each group couples."""
    groups = []
    ops = {n.name: n.op for n in graph.nodes}
    axes = {n.name: a for n in graph.nodes if (a := layer_axes(graph, n)) is not None}
    by_group = nodes_of_groups(graph, cg, axes)
    for g in cg.groups if everything else cg.candidates:
        removed = 0 if plan is None else len(plan.removed.get(g.id, ()))
        frozen = {f.space for f in g.freezes}
        spaces = []
        for s in g.spaces:
            owner, role = space_owner(graph, s)
            spaces.append({"space": str(s), "size": g.sizes[s], "tensor": s.tensor, "axis": s.axis,
                           "param": s in g.params, "node": owner, "role": role,
                           "op": ops.get(owner, ""), "frozen": s in frozen})
        entry = {"id": g.id, "status": "prunable" if g.prunable else "frozen" if g.frozen else "fixed",
                 "units": g.n_units, "size": max(g.sizes.values()), "spaces": spaces,
                 "params": sorted({s.tensor for s in g.params}), "frozen_because": g.reasons(),
                 "frozen_spaces": len({f.space for f in g.freezes}), **by_group.get(g.id, EMPTY_NODES)}
        entry["colour"] = PALETTE[len(groups) % len(PALETTE)]
        if plan is not None:
            entry["removed"] = removed
            entry["kept"] = (g.n_units or entry["size"]) - removed
        groups.append(entry)
    unmapped = sorted({f"{n.op} ({n.name})" for n in cg.unmapped})
    layers = layer_rows(graph, cg, plan, cost.per_node_macs)
    status = [g["status"] for g in groups]
    totals = {"groups": len(groups), "prunable": status.count("prunable"), "frozen": status.count("frozen"),
              "fixed": status.count("fixed"), "prunable_units": sum(g["units"] for g in groups if g["status"] == "prunable"),
              "layers": len(layers), "params": cost.params, "macs": cost.macs}
    out = {"params": cost.params, "macs": cost.macs, "groups": groups, "unmapped_ops": unmapped, "layers": layers,
           "totals": totals, "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()}}
    if plan is not None:
        out["plan"] = {"units_removed": plan.units_removed, "groups_pruned": len(plan.removed), "meta": dict(plan.meta)}
    return out


def edges_data(cg: ChannelGraph, groups: list[dict]) -> list[tuple[str, str, str]]:
    """(space, space, node) for every coupling between the spaces shown."""
    shown = {s["space"] for g in groups for s in g["spaces"]}
    seen, out = set(), []
    for a, b, data in cg.nx.edges(data=True):
        sa, sb = str(a), str(b)
        if sa in shown and sb in shown and (sa, sb, data["node"]) not in seen:
            seen.add((sa, sb, data["node"]))
            out.append((sa, sb, data["node"]))
    return out


# ---- terminal ----------------------------------------------------------------------------------------------


def short_list(names: list[str], limit: int = 4, sep: str = ", ") -> str:
    if not names:
        return "-"
    return sep.join(names[:limit]) + (f"{sep}+{len(names) - limit} more" if len(names) > limit else "")


def print_inspection(data: dict, console=None, verbose: bool = False) -> None:
    """Rich tables: one row per group (what it couples, by node name), the per-layer channel counts, totals."""
    console = console or Console()
    planned = "plan" in data
    table = Table(title="channel groups", header_style="bold", show_lines=False, expand=True)
    cols = ["group", "status", "units" if not planned else "kept/units", "size", "spaces",
            "produced by", "read by", "why frozen"]
    for col in cols:
        flex = {"produced by": 3, "read by": 3, "why frozen": 2}.get(col)
        table.add_column(col, overflow="fold", justify="right" if col in ("group", "size", "spaces") else "left",
                         ratio=flex, no_wrap=flex is None)
    style = {"prunable": "green", "frozen": "red", "fixed": "yellow"}
    for g in data["groups"]:
        units = str(g["units"] or "-") if not planned else f"{g.get('kept', g['units'])}/{g['units'] or g['size']}"
        why = g["frozen_because"][0] if g["frozen_because"] else ""
        if len(g["frozen_because"]) > 1:
            why += f" (+{len(g['frozen_because']) - 1})"
        table.add_row(str(g["id"]), f"[{style[g['status']]}]{g['status']}[/]", units, str(g["size"]),
                      str(len(g["spaces"])), short_list(g["produced_by"], 3 if not verbose else 99, "\n"),
                      short_list(g["read_by"], 3 if not verbose else 99, "\n"), why)
    console.print(table)
    if data["layers"]:
        lt = Table(title="layers", header_style="bold")
        for col in ("layer", "op", "in ch", "out ch", "params", "MACs"):
            lt.add_column(col, overflow="fold", justify="left" if col in ("layer", "op") else "right")
        for row in data["layers"]:
            def ch(d):
                return str(d["before"]) if d["before"] == d["after"] else f"{d['before']} → {d['after']}"
            p = row["params"]
            params = fmt_count(p["before"]) if p["before"] == p["after"] else f"{fmt_count(p['before'])} → {fmt_count(p['after'])}"
            lt.add_row(row["name"], row["op"], ch(row["in"]), ch(row["out"]), params, fmt_count(row.get("macs", 0)))
        console.print(lt)
    t = data["totals"]
    console.print(f"{t['groups']} channel groups: {t['prunable']} prunable ({t['prunable_units']} removable units), "
                  f"{t['frozen']} frozen, {t['fixed']} fixed; {t['layers']} weighted layers; "
                  f"params {fmt_count(data['params'])}, MACs {fmt_count(data['macs'])}", highlight=False)
    if planned:
        console.print(f"plan: {data['plan']['units_removed']} units removed in {data['plan']['groups_pruned']} groups",
                      highlight=False)
    if data["unmapped_ops"]:
        console.print(f"ops without a channel rule: {', '.join(data['unmapped_ops'])}", highlight=False)


# ---- Graphviz ----------------------------------------------------------------------------------------------


def q(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#e15759",
           "#86bcb6", "#8cd17d", "#b6992d", "#499894", "#d37295", "#a0cbe8", "#ffbe7d", "#d4a6c8", "#79706e")


def to_dot(data: dict, edges: list[tuple[str, str, str]]) -> str:
    """Graphviz text: one cluster per group, one node per space (frozen: red, dashed), edges labelled by node."""
    lines = ["graph graphprune {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontsize=10];',
             "  edge [fontsize=8];"]
    for g in data["groups"]:
        label = f"group {g['id']}: {g['status']}, {g['units'] or g['size']} units"
        if g["frozen_because"]:
            label += "\n" + g["frozen_because"][0]
        lines.append(f"  subgraph cluster_g{g['id']} {{")
        lines.append(f"    label={q(label)}; color={q(g['colour'])};")
        for s in g["spaces"]:
            extra = ', color="red", style="rounded,filled,dashed", penwidth=2' if s["frozen"] else ""
            text = f"{s['space']} ({s['size']})\n{s['role']} {s['node']}"
            lines.append(f"    {q(s['space'])} [label={q(text)}, fillcolor={q(g['colour'] + '55')}{extra}];")
        lines.append("  }")
    for a, b, node in edges:
        lines.append(f"  {q(a)} -- {q(b)} [label={q(node)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- HTML ----------------------------------------------------------------------------------------------------


def layout(graph: Graph, data: dict) -> dict[str, tuple[float, float]]:
    """Layered layout of the spaces shown: column = topological rank of the node that explains the space (its
    producer, or for a parameter / graph input the first node reading it), row = order within the column."""
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    first_reader = {}
    for n in graph.nodes:
        for t in n.inputs:
            first_reader.setdefault(t, order[n.name])
    cols: dict[str, float] = {}
    for g in data["groups"]:
        for s in g["spaces"]:
            if s["role"] == "output of":
                cols[s["space"]] = order.get(s["node"], 0) + 1
            else:
                cols[s["space"]] = first_reader.get(s["tensor"], order.get(s["node"], 0))
    ranks = {c: i for i, c in enumerate(sorted(set(cols.values())))}
    column: dict[int, list[str]] = {}
    for g in data["groups"]:  # group order: spaces of a group sit together within a column
        for s in g["spaces"]:
            column.setdefault(ranks[cols[s["space"]]], []).append(s["space"])
    pos = {}
    for c, names in column.items():
        for r, name in enumerate(names):
            pos[name] = (c, r)
    return pos


def svg_graph(graph: Graph, data: dict, edges: list[tuple[str, str, str]]) -> str:
    pos = layout(graph, data)
    dx, dy, r, pad = 70, 26, 8, 30
    width = pad * 2 + dx * (max((p[0] for p in pos.values()), default=0) + 1)
    height = pad * 2 + dy * (max((p[1] for p in pos.values()), default=0) + 1)
    xy = {k: (pad + dx * c, pad + dy * row) for k, (c, row) in pos.items()}
    group_of = {s["space"]: g["id"] for g in data["groups"] for s in g["spaces"]}
    colours = {g["id"]: g["colour"] for g in data["groups"]}
    parts = [f'<svg id="space-graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="channel space graph">']
    parts.append('<g class="edges">')
    for a, b, node in edges:
        (x1, y1), (x2, y2) = xy[a], xy[b]
        mx = (x1 + x2) / 2
        parts.append(f'<path class="edge" data-group="{group_of[a]}" d="M{x1},{y1} C{mx},{y1} {mx},{y2} {x2},{y2}" '
                     f'stroke="{colours[group_of[a]]}"><title>{html.escape(node)}</title></path>')
    parts.append("</g><g class=\"spaces\">")
    for g in data["groups"]:
        for s in g["spaces"]:
            x, y = xy[s["space"]]
            cls = "space frozen" if s["frozen"] else "space"
            shape = (f'<rect x="{x - r}" y="{y - r}" width="{2 * r}" height="{2 * r}" rx="2"' if s["param"]
                     else f'<circle cx="{x}" cy="{y}" r="{r}"')
            tip = f"{s['space']} · size {s['size']} · {s['role']} {s['node']} · group {g['id']} ({g['status']})"
            if s["frozen"]:
                tip += " · FROZEN"
            parts.append(f'<g class="{cls}" data-group="{g["id"]}" data-space="{html.escape(s["space"], quote=True)}">'
                         f'{shape} fill="{g["colour"]}"/><title>{html.escape(tip)}</title></g>')
    parts.append("</g></svg>")
    return "".join(parts)


def layer_bars(data: dict) -> str:
    """Per layer: output channels as a bar (before, and after when there is a plan), scaled to the widest layer."""
    rows = data["layers"]
    planned = "plan" in data
    widest = max((row["out"]["before"] for row in rows), default=1) or 1
    out = ['<table id="layers"><thead><tr><th>layer</th><th>op</th><th>in ch</th><th>out ch</th>'
           f'<th class="bars">output channels{" (before / after)" if planned else ""}</th></tr></thead><tbody>']
    for row in rows:
        b, a = row["out"]["before"], row["out"]["after"]
        bars = f'<div class="bar before" style="width:{100 * b / widest:.1f}%" title="before: {b}"><span>{b}</span></div>'
        if planned:
            bars += (f'<div class="bar after" style="width:{100 * a / widest:.1f}%" title="after: {a}">'
                     f'<span>{a}</span></div>')
        def ch(d):
            return str(d["before"]) if d["before"] == d["after"] else f'{d["before"]} → {d["after"]}'
        gid = row.get("group_out")
        out.append(f'<tr class="layer" data-group="{gid}"><td class="name">{html.escape(row["name"])}</td>'
                   f'<td>{row["op"]}</td><td>{ch(row["in"])}</td><td>{ch(row["out"])}</td><td class="bars">{bars}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def groups_table(data: dict) -> str:
    planned = "plan" in data
    head = "".join(f"<th>{c}</th>" for c in ("", "group", "status", "kept / units" if planned else "units", "size",
                                                "produced by", "read by", "through", "why frozen"))
    out = [f'<table id="groups"><thead><tr>{head}</tr></thead><tbody>']
    for g in data["groups"]:
        units = str(g["units"] or "-") if not planned else f'{g.get("kept")} / {g["units"] or g["size"]}'
        why = "<br>".join(html.escape(w) for w in g["frozen_because"])
        def names(key):
            return html.escape(short_list(g[key], 6))
        out.append(f'<tr class="group {g["status"]}" data-group="{g["id"]}"><td><span class="swatch" '
                   f'style="background:{g["colour"]}"></span></td><td>{g["id"]}</td><td>{g["status"]}</td>'
                   f'<td>{units}</td><td>{g["size"]}</td><td>{names("produced_by")}</td><td>{names("read_by")}</td>'
                   f'<td>{names("through")}</td><td class="why">{why}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.summary span{display:inline-block;margin-right:18px}
#graph-box{overflow:auto;border:1px solid #ddd;max-height:70vh;background:#fafafa}
.edge{fill:none;stroke-width:1.2;opacity:.55}
.space circle,.space rect{stroke:#333;stroke-width:.8}
.space.frozen circle,.space.frozen rect{stroke:#d00;stroke-width:2.2;stroke-dasharray:3 2}
.dim{opacity:.12}
table{border-collapse:collapse;font-size:12px}td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
tr.group{cursor:pointer}tr.group.frozen td:nth-child(3){color:#c00}tr.group.prunable td:nth-child(3){color:#080}
tr.sel{background:#fff3c4}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px}
td.bars{width:40%}.bar{height:9px;margin:1px 0;position:relative;border-radius:2px}
.bar span{position:absolute;left:100%;padding-left:4px;font-size:10px;line-height:9px;white-space:nowrap}
.bar.before{background:#bbb}.bar.after{background:#4e79a7}
.legend span{margin-right:14px}.why{color:#a00;max-width:380px}
"""

JS = """
(function(){
  var errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message));document.body.setAttribute('data-errors',errors.join(' | '));});
  function select(gid){
    var all=document.querySelectorAll('#space-graph .space, #space-graph .edge');
    for(var i=0;i<all.length;i++){
      var on=(gid===null)||all[i].getAttribute('data-group')===gid;
      all[i].classList.toggle('dim',!on);
    }
    var rows=document.querySelectorAll('tr.group');
    for(var j=0;j<rows.length;j++){rows[j].classList.toggle('sel',rows[j].getAttribute('data-group')===gid);}
  }
  var current=null;
  var rows=document.querySelectorAll('tr.group');
  for(var i=0;i<rows.length;i++){
    rows[i].addEventListener('click',function(){
      var gid=this.getAttribute('data-group');current=(current===gid)?null:gid;select(current);
    });
  }
  var spaces=document.querySelectorAll('#space-graph .space');
  for(var k=0;k<spaces.length;k++){
    spaces[k].addEventListener('click',function(){
      var gid=this.getAttribute('data-group');current=(current===gid)?null:gid;select(current);
    });
  }
  document.getElementById('n-rendered').textContent=String(spaces.length);
  document.body.setAttribute('data-ready','1');
})();
"""


def to_html(graph: Graph, data: dict, edges: list[tuple[str, str, str]], title: str = "model") -> str:
    """One self-contained page: no external resource of any kind (checked by the tests)."""
    t = data["totals"]
    planned = "plan" in data
    summary = (f'<div class="summary"><span>params <b>{fmt_count(data["params"])}</b></span>'
               f'<span>MACs <b>{fmt_count(data["macs"])}</b></span><span>groups <b>{t["groups"]}</b> '
               f'({t["prunable"]} prunable, {t["frozen"]} frozen, {t["fixed"]} fixed)</span>'
               f'<span>layers <b>{t["layers"]}</b></span><span>spaces drawn <b id="n-rendered">?</b></span>')
    if planned:
        p = data["plan"]
        summary += f'<span>plan: <b>{p["units_removed"]}</b> units removed in <b>{p["groups_pruned"]}</b> groups</span>'
        after = sum(row["params"]["after"] for row in data["layers"])
        before = sum(row["params"]["before"] for row in data["layers"])
        summary += f'<span>layer params {fmt_count(before)} → {fmt_count(after)}</span>'
    summary += "</div>"
    unmapped = ""
    if data["unmapped_ops"]:
        unmapped = f'<p class="why">ops without a channel rule: {html.escape(", ".join(data["unmapped_ops"]))}</p>'
    legend = ('<p class="legend"><span>● activation space</span><span>■ parameter space</span>'
              '<span style="color:#d00">dashed red outline: frozen</span><span>click a group or a space to '
              'highlight its group</span></p>')
    payload = json.dumps({"totals": t, "groups": [{k: g[k] for k in ("id", "status", "units")} for g in data["groups"]]})
    payload = payload.replace("</", "<\\/")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>graphprune: {html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>"
            f"<h1>graphprune inspect: {html.escape(title)}</h1>{summary}{unmapped}"
            f'<h2>channel space graph</h2>{legend}<div id="graph-box">{svg_graph(graph, data, edges)}</div>'
            f"<h2>channel groups</h2>{groups_table(data)}"
            f"<h2>layers: channel counts{' before / after' if planned else ''}</h2>{layer_bars(data)}"
            f'<script type="application/json" id="graphprune-data">{payload}</script>'
            f"<script>{JS}</script></body></html>\n")


# ---- the command -------------------------------------------------------------------------------------------


