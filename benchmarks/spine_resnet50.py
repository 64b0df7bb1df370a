"""Spine benchmark on a ResNet-50-sized graph: time to load + analyse + prune + save, and onnxruntime latency
before/after next to the MACs ratio, for several ``--round-to`` values.

    python benchmarks/spine_resnet50.py [--out benchmarks/results/spine_resnet50.json] [--runs 20]

Writes JSON; prints a table. Timings are wall-clock on this machine (2 cores here); nothing is asserted.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's models/ package


def export_resnet50(folder: Path, batch: int) -> Path:
    import torch

    from models import BENCHMARK_MODELS, export_onnx

    spec = BENCHMARK_MODELS["resnet50"]
    path = folder / f"resnet50_b{batch}.onnx"
    torch.manual_seed(0)
    return export_onnx(spec, path, input_shape=(batch, 3, 224, 224))


def timed_prune(path: Path, out: Path, **options) -> dict:
    import graphprune

    t0 = time.perf_counter()
    result = graphprune.prune(path, **options)
    t1 = time.perf_counter()
    result.save(out)
    t2 = time.perf_counter()
    passes = {p.name: round(p.seconds, 3) for p in result.report.passes}
    return {"result": result, "prune_s": t1 - t0, "save_s": t2 - t1, "passes_s": passes}


def latency(path: Path, batch: int, runs: int, threads: int) -> dict:
    import onnx

    from graphprune.runtime import latency_ms, seeded_inputs

    model = onnx.load(str(path))
    feeds = seeded_inputs(model, {"input": (batch, 3, 224, 224)})
    return latency_ms(model, feeds, runs=runs, threads=threads)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/spine_resnet50.json")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, nargs="*", default=[1, 4, 8, 16])
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    rows, timing = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for batch in args.batches:
            src = export_resnet50(folder, batch)
            base = latency(src, batch, args.runs, threads)
            if batch == args.batches[0]:
                # the spine timing: load + analyse + prune + save, with and without verification
                for verify in ("off", "end"):
                    r = timed_prune(src, folder / f"t_{verify}.onnx", ratio=args.ratio, budget="channels",
                                    verify=verify)
                    timing[f"verify_{verify}"] = {"prune_s": round(r["prune_s"], 3), "save_s": round(r["save_s"], 3),
                                                  "passes_s": r["passes_s"]}
            for rt in args.round_to:
                out = folder / f"p_{batch}_{rt}.onnx"
                r = timed_prune(src, out, ratio=args.ratio, budget="channels", round_to=rt, verify="off")
                rep = r["result"].report
                lat = latency(out, batch, args.runs, threads)
                rows.append({"batch": batch, "round_to": rt, "params_ratio": rep.after.params / rep.before.params,
                             "macs_ratio": rep.after.macs / rep.before.macs,
                             "latency_before_ms": base["median"], "latency_after_ms": lat["median"],
                             "latency_ratio": lat["median"] / base["median"],
                             "speedup_over_macs_speedup": (base["median"] / lat["median"]) / (rep.before.macs / rep.after.macs)})
    result = {"model": "resnet50 (torch, legacy export, opset 17)", "ratio": args.ratio, "threads": threads,
              "machine": platform.platform(), "cpu_count": os.cpu_count(), "timing": timing, "latency": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(timing, indent=2))
    print(f"{'batch':>5} {'round':>5} {'params':>7} {'MACs':>7} {'before ms':>10} {'after ms':>9} {'lat ratio':>9} {'eff':>5}")
    for r in rows:
        print(f"{r['batch']:>5} {r['round_to']:>5} {r['params_ratio']:>7.1%} {r['macs_ratio']:>7.1%} "
              f"{r['latency_before_ms']:>10.2f} {r['latency_after_ms']:>9.2f} {r['latency_ratio']:>9.1%} "
              f"{r['speedup_over_macs_speedup']:>5.2f}")


if __name__ == "__main__":
    main()
