"""Coverage on the architecture zoo: prune every exported model at ratio 0.5 with full verification.

    python benchmarks/zoo_coverage.py [--zoo build/zoo] [--out benchmarks/results/zoo_coverage.json]
                                      [--onnx-light] [--only NAME ...] [--timeout 900] [--runs 10]

Inputs: the torchvision models written by ``benchmarks/zoo_export.py`` (``<zoo>/manifest.json``), and with
``--onnx-light`` the model-zoo graphs shipped in the onnx package (``onnx/backend/test/data/light/*.onnx``,
weights as ConstantOfShape nodes, which graphprune folds). Each model is pruned in a child process (a crash or
a timeout is a recorded failure, not a lost run) with the project's Python. A model is *verified* when
graphprune wrote it after every check passed (checker, onnxruntime, interface, equality with the masked
original). A failure is one line; graphprune never returns a wrong model, so a failure means nothing written.
Latency ratio: onnxruntime CPU, batch 1, median of ``--runs``, pruned ÷ original.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(path: str, ratio: float, runs: int) -> dict:
    """Prune one model (runs in the child process); returns a JSON-able row."""

    import graphprune
    from graphprune.runtime import latency_ms, seeded_inputs

    t0 = time.perf_counter()
    try:
        result = graphprune.prune(path, ratio=ratio, budget="channels", verify="end")
    except graphprune.GraphPruneError as exc:
        return {"verified": False, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"[:400],
                "seconds": round(time.perf_counter() - t0, 2)}
    seconds = time.perf_counter() - t0
    rep = result.report
    row = {"verified": bool(rep.verification and rep.verification.ok), "seconds": round(seconds, 2),
           "params_before": rep.before.params, "params_after": rep.after.params,
           "macs_before": rep.before.macs, "macs_after": rep.after.macs,
           "params_ratio": rep.after.params / max(rep.before.params, 1),
           "macs_ratio": rep.after.macs / max(rep.before.macs, 1),
           "groups_pruned": rep.groups_pruned, "groups_candidate": len(result.channels.candidates),
           "units_removed": rep.units_removed,
           "max_error": rep.verification.max_error if rep.verification else None,
           "unmapped_ops": sorted({u.split(" ")[0] for u in rep.unmapped_ops})}
    frozen = {}
    for g in result.channels.candidates:
        if g.frozen:
            for r in g.reasons(1):
                key = r.split(" (")[0]
                frozen[key] = frozen.get(key, 0) + 1
    row["frozen_reasons"] = dict(sorted(frozen.items(), key=lambda kv: -kv[1])[:6])
    if rep.units_removed == 0:
        row["note"] = "verified but nothing removed (every candidate group frozen)"
    if runs:
        feeds = seeded_inputs(result.source.model, result.source.input_shapes)
        before = latency_ms(result.source.model, feeds, runs=runs)
        after = latency_ms(result.model, feeds, runs=runs)
        row.update(latency_before_ms=before["median"], latency_after_ms=after["median"],
                   latency_ratio=after["median"] / before["median"])
    return row


def light_models() -> list[tuple[str, Path]]:
    import onnx

    folder = Path(onnx.__file__).parent / "backend/test/data/light"
    return [(f"onnx_light/{p.stem.removeprefix('light_')}", p) for p in sorted(folder.glob("*.onnx"))]


def zoo_models(zoo: Path) -> tuple[list[tuple[str, Path]], dict]:
    manifest = json.loads((zoo / "manifest.json").read_text()) if (zoo / "manifest.json").exists() else {}
    models = [(name, zoo / f"{name}.onnx") for name, e in sorted(manifest.items()) if e.get("status") == "exported"]
    return models, manifest


def run_child(path: Path, ratio: float, runs: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--ratio", str(ratio), "--runs", str(runs)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"verified": False, "reason": f"timeout after {timeout:.0f} s", "seconds": round(time.perf_counter() - t0, 1)}
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"verified": False, "reason": f"crash (exit {p.returncode}): {tail}"[:400],
                "seconds": round(time.perf_counter() - t0, 1)}
    return json.loads(lines[-1])


def fmt_row(name: str, r: dict) -> str:
    if r.get("verified"):
        lat = f"{r['latency_ratio']:6.1%}" if "latency_ratio" in r else "     -"
        note = " (nothing removed)" if r.get("units_removed") == 0 else ""
        return (f"{name:30s} verified  {r['params_ratio']:6.1%} {r['macs_ratio']:6.1%} {lat} "
                f"{r['groups_pruned']:3d}/{r['groups_candidate']:<3d} {r['seconds']:6.1f}s{note}")
    return f"{name:30s} FAILED    {r.get('reason', '')}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default="build/zoo")
    ap.add_argument("--out", default="benchmarks/results/zoo_coverage.json")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--onnx-light", action="store_true", help="also the onnx package's light model zoo")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.ratio, args.runs)))
        return
    models, manifest = zoo_models(Path(args.zoo))
    if args.onnx_light:
        models += light_models()
    if args.only:
        models = [(n, p) for n, p in models if n in args.only or n.split("/")[-1] in args.only]
    out = Path(args.out)
    results = json.loads(out.read_text()).get("models", {}) if out.exists() and args.only else {}
    print(f"{'model':30s} {'status':9s} {'params':>6s} {'MACs':>6s} {'lat':>6s} groups   time")
    for name, path in models:
        row = run_child(path, args.ratio, args.runs, args.timeout)
        row["input_shape"] = manifest.get(name, {}).get("input_shape")
        results[name] = row
        print(fmt_row(name, row), flush=True)
        write(out, args, results, manifest)
    write(out, args, results, manifest)
    tv = {k: v for k, v in results.items() if not k.startswith("onnx_light/")}
    print(f"torchvision: {sum(r['verified'] for r in tv.values())} verified of {len(tv)} tried "
          f"({sum(r['verified'] and r.get('units_removed', 0) > 0 for r in tv.values())} with channels removed)")
    light = {k: v for k, v in results.items() if k.startswith("onnx_light/")}
    if light:
        print(f"onnx light zoo: {sum(r['verified'] for r in light.values())} verified of {len(light)} tried")


def write(out: Path, args, results: dict, manifest: dict) -> None:
    import platform

    skipped = {k: v.get("reason") for k, v in manifest.items() if v.get("status") != "exported"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tv = {k: v for k, v in results.items() if not k.startswith("onnx_light/")}
    out.write_text(json.dumps({
        "ratio": args.ratio, "machine": platform.platform(), "cpu_count": os.cpu_count(),
        "summary": {"tried": len(tv), "verified": sum(r["verified"] for r in tv.values()),
                    "verified_with_removal": sum(r["verified"] and r.get("units_removed", 0) > 0 for r in tv.values()),
                    "not_tried": skipped},
        "models": dict(sorted(results.items()))}, indent=2))


if __name__ == "__main__":
    main()
