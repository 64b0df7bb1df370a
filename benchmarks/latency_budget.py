"""Latency as the budget: does ``--budget latency --ratio R`` remove R of the measured latency, and how far is the
latency model's prediction from the measurement?

    python benchmarks/latency_budget.py [--zoo build/zoo224] [--models resnet18 ...] [--ratios 0.3 0.5 0.7]
                                        [--threads 1 2] [--rounds 5] [--runs 15] [--out benchmarks/results/latency_budget.json]

For each model, thread count and ratio: ``graphprune.prune(model, budget="latency", ratio=R, latency_threads=T)``
(verified against the masked original; the latency table is measured once per model and thread count, then read
from the cache), then the original and the pruned model are timed in interleaved rounds (``speedup.round_medians``).
Next to it, the same ratio with ``--budget macs`` for comparison. Reported per row:

    latency_kept      = measured latency after / before          (target: 1 − R)
    prediction_error  = predicted latency after / measured − 1   (the model's own check, on the pruned model)
    predicted_full_error = predicted latency before / measured − 1

Models: torchvision exports at 224×224 (``zoo_export.py --side 224 --out build/zoo224``, in the zoo venv).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedup import round_medians, session  # noqa: E402

import graphprune  # noqa: E402

MODELS = ("resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "regnet_x_400mf", "resnet50", "googlenet")


def timed(before: onnx.ModelProto, after: onnx.ModelProto, threads: int, rounds: int, runs: int) -> dict[str, float]:
    sessions = {"before": session(before, threads), "after": session(after, threads)}
    name = sessions["before"].get_inputs()[0].name
    shape = [d.dim_value or 1 for d in before.graph.input[0].type.tensor_type.shape.dim]
    feeds = {name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feeds)
    medians = round_medians(sessions, feeds, rounds, runs)
    return {k: float(np.median(v)) for k, v in medians.items()}


def row(path: Path, budget: str, ratio: float, threads: int, rounds: int, runs: int) -> dict:
    t0 = time.perf_counter()
    result = graphprune.prune(str(path), budget=budget, ratio=ratio, latency_threads=threads)
    seconds = time.perf_counter() - t0
    before = onnx.load(str(path))
    measured = timed(before, result.model, threads, rounds, runs)
    out = {"budget": budget, "ratio": ratio, "threads": threads, "verified": result.report.verification.ok,
           "seconds": round(seconds, 2), "params_kept": result.report.after.params / result.report.before.params,
           "macs_kept": result.report.after.macs / result.report.before.macs,
           "latency_ms": measured, "latency_kept": measured["after"] / measured["before"]}
    lat = result.report.latency or {}
    if "predicted_after_ms" in lat:
        measure = next(r.stats for r in result.report.passes if r.name == "MeasureLatency")
        out |= {"predicted_ms": {"before": lat["predicted_before_ms"], "after": lat["predicted_after_ms"]},
                "prediction_error": lat["predicted_after_ms"] / measured["after"] - 1.0,
                "predicted_full_error": lat["predicted_before_ms"] / measured["before"] - 1.0,
                "fit_error": measure["fit_error"], "table_cached": measure["cached"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default="build/zoo224")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--ratios", nargs="*", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--compare", nargs="*", default=["macs"], help="other budgets at the same ratio")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", default="benchmarks/results/latency_budget.json")
    args = ap.parse_args()
    os.environ.setdefault("GRAPHPRUNE_CACHE", tempfile.mkdtemp(prefix="graphprune-bench-cache-"))
    rows = []
    for name in args.models:
        path = Path(args.zoo) / f"{name}.onnx"
        if not path.exists():
            print(f"{name}: not exported ({path}); skipped", file=sys.stderr)
            continue
        for threads in args.threads:
            for ratio in args.ratios:
                for budget in ("latency", *args.compare):
                    r = {"model": name} | row(path, budget, ratio, threads, args.rounds, args.runs)
                    rows.append(r)
                    err = f", predicted {r['prediction_error']:+.1%}" if "prediction_error" in r else ""
                    print(f"{name:16s} t={threads} {budget:8s} r={ratio}: latency kept {r['latency_kept']:.3f} "
                          f"(MACs {r['macs_kept']:.3f}){err}", file=sys.stderr)
    lat = [r for r in rows if r["budget"] == "latency"]
    summary = {"median_abs_prediction_error": float(np.median([abs(r["prediction_error"]) for r in lat])) if lat else None,
               "at_0.5_latency_kept": {f"{r['model']}@t{r['threads']}": round(r["latency_kept"], 3)
                                       for r in lat if r["ratio"] == 0.5}}
    out = {"benchmark": "latency_budget", "machine": platform.platform(), "cpu_count": os.cpu_count(),
           "rounds": args.rounds, "runs": args.runs, "summary": summary, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
