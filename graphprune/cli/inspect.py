"""``graphprune inspect``: terminal view, ``--json``, ``--dot FILE``, ``--html FILE``."""

from __future__ import annotations

import json
from pathlib import Path

from graphprune import api, io, progress
from graphprune.cli.common import add_common
from graphprune.channels.plan import Plan
from graphprune.errors import UsageError
from graphprune.frontends.onnx.load import parse_input_shapes, read_model
from graphprune.report.inspect import edges_data, inspection_data, print_inspection, to_dot, to_html
from graphprune.verify import metadata


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show the channel groups: sizes, couplings, prunable or frozen and why")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="also list groups without parameters")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN")
    p.add_argument("--dot", metavar="FILE", help="also write the space graph as Graphviz text")
    p.add_argument("--html", metavar="FILE", help="also write one self-contained offline HTML page (graph, groups, "
                   "per-layer channels; before/after bars with --pruned or --plan)")
    p.add_argument("--pruned", metavar="FILE", help="a model graphprune pruned from MODEL: show its plan (kept/removed "
                   "per group, channels before/after per layer)")
    p.add_argument("--plan", metavar="FILE", help="a plan as JSON (Plan.to_json): same as --pruned")
    add_common(p)


def read_plan(pruned: str | None, plan_file: str | None) -> tuple[Plan | None, dict[str, tuple[int, ...]], list[str]]:
    """The plan of ``--pruned small.onnx`` (its metadata) or ``--plan plan.json``, the input shapes it was made
    for, and notes (a pruned model without a plan, low-rank layers)."""
    notes: list[str] = []
    if pruned and plan_file:
        raise UsageError("give --pruned or --plan, not both")
    if plan_file:
        try:
            text = metadata.unpacked(Path(plan_file).read_text().strip())  # as stored in a pruned file, too
            data = json.loads(text)
            if "plan" in data and isinstance(data["plan"], (str, dict)):  # a wrapper holding the plan
                text = data["plan"] if isinstance(data["plan"], str) else json.dumps(data["plan"])
            return Plan.from_json(text), {}, notes
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--plan {plan_file}: not a graphprune plan ({type(exc).__name__}: {exc})") from exc
    if not pruned:
        return None, {}, notes
    model = read_model(Path(pruned))
    record = metadata.read(model)
    if record.lowrank:
        notes.append("the pruned model also has low-rank layers (graphprune.lowrank); channel counts show the "
                     "channel stage only")
    if record.plan is None:
        notes.append(f"{pruned} holds no graphprune.plan in its metadata: no channel was removed by graphprune")
    return record.channel_plan, dict(record.input_shapes), notes


def command(args) -> int:
    """``graphprune inspect``: terminal view, ``--json``, ``--dot FILE``, ``--html FILE``."""
    plan, stored_shapes, notes = read_plan(getattr(args, "pruned", None), getattr(args, "plan", None))
    shapes = parse_input_shapes(args.input_shape) or stored_shapes
    model_path = Path(args.model)
    with progress.task("analysing channels"):
        ins = api.inspect(model_path, shapes, tuple(args.exclude))
    if plan is not None and not plan.empty:
        missing = [str(s) for s in plan.keep if not s.virtual and ins.source.graph.shape(s.tensor) is None]
        if missing:
            raise UsageError(f"the plan does not belong to {model_path}: it names tensors the model does not have "
                             f"({', '.join(missing[:3])}); pass the original model the plan was made from")
    data = inspection_data(ins.source.graph, ins.channels, ins.cost, everything=args.all, plan=plan,
                           input_shapes=ins.source.input_shapes)
    if notes:
        data["notes"] = notes
    edges = None
    for option, render in (("dot", to_dot), ("html", None)):
        target = getattr(args, option, None)
        if not target:
            continue
        io.check_output(Path(target), model_path)
        edges = edges if edges is not None else edges_data(ins.channels, data["groups"])
        text = to_dot(data, edges) if render else to_html(ins.source.graph, data, edges, title=model_path.name)
        io.write_text_atomic(Path(target), text, model_path)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    if not args.quiet:
        print_inspection(data, verbose=args.verbose)
        for note in notes:
            print(f"note: {note}")
        for option in ("dot", "html"):
            if getattr(args, option, None):
                print(f"wrote {getattr(args, option)}")
    return 0
