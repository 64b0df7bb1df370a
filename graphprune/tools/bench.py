"""``graphprune bench MODEL.onnx [SMALL.onnx]``: onnxruntime latency, median and spread, side by side.

Every model is loaded like the rest of graphprune (static input shapes, constant folding) and timed with
:func:`graphprune.runtime.latency_ms` on the providers :func:`graphprune.runtime.providers` picks (CUDA when
onnxruntime has it, the CPU otherwise). ``--batch`` re-pins axis 0 of every input; an export with a static batch
dimension cannot take another batch size, and the table says so instead of guessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.console import Console
from rich.table import Table

from graphprune import progress
from graphprune.errors import GraphPruneError, InputShapeError, UsageError
from graphprune.frontends.onnx import load as onnx_frontend
from graphprune.frontends.onnx.load import read_model
from graphprune.frontends.onnx.proto import declared_shape, graph_inputs
from graphprune.runtime import latency_ms, providers, seeded_inputs
from graphprune.tools.kernels import breakdown
from graphprune.verify import metadata


def stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The input shapes graphprune recorded in a pruned model's metadata, if any."""
    return dict(metadata.read(read_model(path)).input_shapes)


def declared_batch(path: Path) -> dict[str, Any]:
    """Axis 0 of every graph input as declared: an int when static, the symbol (or None) when dynamic."""
    out = {}
    for vi in graph_inputs(read_model(path)):
        dims = declared_shape(vi)
        out[vi.name] = dims[0] if dims else None
    return out


def measure(path: Path, batch: int | None, *, input_shapes: Mapping[str, tuple[int, ...]], threads: int, runs: int,
            warmup: int, seed: int) -> dict[str, Any]:
    """One latency measurement, or ``{"error": why}`` when this batch size cannot be applied to this model."""
    shapes = dict(input_shapes) or stored_shapes(path)
    if batch is not None:
        declared = declared_batch(path)
        static = {k: d for k, d in declared.items() if isinstance(d, int) and d > 0 and d != batch}
        if static:
            name, dim = next(iter(static.items()))
            return {"error": f"batch {batch} cannot be applied: input '{name}' has a static batch dimension of {dim} "
                             f"(the export fixed it; re-export with a dynamic batch axis to bench other sizes)"}
        if not shapes:
            for vi in graph_inputs(onnx_frontend.read_model(path)):
                dims = declared_shape(vi)
                if not all(isinstance(d, int) and d > 0 for d in dims[1:]):
                    raise UsageError(f"{path}: input '{vi.name}' has dynamic dimensions other than the batch: pass "
                                     "--input-shape NAME:D0,D1,... (its axis 0 is then replaced by --batch)")
                shapes[vi.name] = (batch, *dims[1:])
        shapes = {k: (batch, *v[1:]) for k, v in shapes.items()}
    try:
        loaded = onnx_frontend.load(path, shapes)
    except InputShapeError as exc:
        if batch is None:
            raise
        return {"error": f"batch {batch} cannot be applied: {exc}"}
    feeds = seeded_inputs(loaded.model, loaded.input_shapes, seed)
    try:
        stats = latency_ms(loaded.model, feeds, runs=runs, warmup=warmup, threads=threads)
    except GraphPruneError as exc:
        if batch is None:
            raise
        return {"error": f"batch {batch} cannot be applied: {exc} (a shape baked into the graph, e.g. a Reshape "
                         "with a fixed batch, does not follow the new input shape)"}
    except Exception as exc:  # onnxruntime raising while running with the new shape
        if batch is None:
            raise
        return {"error": f"batch {batch} cannot be applied: {str(exc).splitlines()[0]}"}
    first = next(iter(loaded.input_shapes.values()), ())
    return stats | {"batch": int(first[0]) if first else None, "runs": runs,
                    "input_shapes": {k: list(v) for k, v in loaded.input_shapes.items()}}


def bench(models: Sequence[str | Path], batches: Sequence[int] | None = None, *, threads: int = 0, runs: int = 50,
          warmup: int = 5, seed: int = 0, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
          profile: bool = False) -> dict[str, Any]:
    """Latency of each model at each batch size; with two models, the ratio second / first per batch. ``profile``
    (two models): also their kernel-by-kernel breakdown against the work-bound (:mod:`graphprune.tools.kernels`),
    at the analysed shapes, one thread unless ``threads`` says otherwise."""
    if not 1 <= len(models) <= 2:
        raise UsageError(f"bench takes one or two models, got {len(models)}")
    if profile and len(models) != 2:
        raise UsageError("--profile compares two models: the original and its pruned version")
    if runs < 1 or warmup < 0 or threads < 0:
        raise UsageError("--runs must be >= 1, --warmup and --threads >= 0")
    if batches is not None and any(b < 1 for b in batches):
        raise UsageError(f"batch sizes must be positive, got {list(batches)}")
    paths = [Path(m) for m in models]
    for p in paths:
        if not p.is_file():
            raise UsageError(f"{p}: no such file")
    rows = []
    plan = [(b, p) for b in (batches or [None]) for p in paths]
    with progress.task("benchmarking", total=len(plan)) as advance:
        row: dict[str, Any] = {}
        for b, p in plan:
            if p == paths[0]:
                row = {"batch": b, "results": []}
                rows.append(row)
            row["results"].append(measure(p, b, input_shapes=input_shapes or {}, threads=threads, runs=runs,
                                          warmup=warmup, seed=seed))
            advance()
    for row in rows:
        res = row["results"]
        if row["batch"] is None:
            row["batch"] = next((r["batch"] for r in res if "batch" in r), None)
        if len(res) == 2 and "median" in res[0] and "median" in res[1]:
            row["ratio"] = res[1]["median"] / res[0]["median"] if res[0]["median"] > 0 else None
    out = {"models": [str(p) for p in paths], "provider": providers()[0], "threads": threads, "runs": runs,
           "warmup": warmup, "rows": rows}
    if profile:
        shapes = dict(input_shapes or {}) or stored_shapes(paths[1]) or stored_shapes(paths[0])
        with progress.task("profiling kernels"):
            before, after = (onnx_frontend.load(p, shapes) for p in paths)
            out["kernels"] = breakdown(before, after, threads=threads or 1, runs=runs).to_json()
    return out


def print_bench(data: dict, console=None) -> None:
    console = console or Console()
    names = [Path(m).name for m in data["models"]]
    table = Table(title=f"onnxruntime latency, ms ({data['provider']}, {data['runs']} runs, "
                        f"threads {data['threads'] or 'auto'})", header_style="bold")
    table.add_column("batch", justify="right")
    for n in names:
        table.add_column(f"{n}\nmedian", justify="right")
        table.add_column("p10–p90", justify="right")
    if len(names) == 2:
        table.add_column("ratio", justify="right")
    errors = []
    for row in data["rows"]:
        cells = [str(row["batch"])]
        for name, r in zip(names, row["results"]):
            if "error" in r:
                cells += ["n/a", ""]
                errors.append(f"{name}: {r['error']}")
            else:
                cells += [f"{r['median']:.3f}", f"{r['p10']:.3f}–{r['p90']:.3f}"]
        if len(names) == 2:
            cells.append(f"{row['ratio']:.1%}" if row.get("ratio") is not None else "-")
        table.add_row(*cells)
    console.print(table)
    for e in errors:
        console.print(e, highlight=False)
    if "kernels" in data:
        print_kernels(data["kernels"], names, console)


def print_kernels(k: dict, names: Sequence[str], console) -> None:
    """The op types' kernel time before / after / at the work-bound, and the efficiencies they give."""
    table = Table(title="onnxruntime kernels by op type, ms per run", header_style="bold")
    for col in ("op", names[0], names[1], "work-bound", "share before"):
        table.add_column(col, justify="left" if col == "op" else "right")
    for op, t in k["ops"].items():
        if t["share_before"] >= 0.005 or t["after_ms"] > 0.005 * k["kernel_ms_after"]:
            table.add_row(op, f"{t['before_ms']:.3f}", f"{t['after_ms']:.3f}", f"{t['bound_ms']:.3f}",
                          f"{t['share_before']:.1%}")
    table.add_row("total", f"{k['kernel_ms_before']:.3f}", f"{k['kernel_ms_after']:.3f}", f"{k['bound_ms_after']:.3f}", "")
    console.print(table)
    console.print(f"kernels {k['kernel_speedup']:.2f}× faster, MACs {1 / k['macs_ratio']:.2f}× fewer: efficiency "
                  f"{k['kernel_efficiency']:.2f}; work-bound {k['bound_efficiency']:.2f} (every kernel falling with "
                  f"its own work), realised {k['kernel_over_bound']:.2f} of it", highlight=False)


