"""Data-informed methods on torch modules: for each reference model (models/registry.py) and each small Hugging Face
model (models/hf.py, the ``hf`` extra), ``graphprune.prune(module, example_inputs=..., ratio=0.5)`` with
``method="sampling"`` and with ``reconstruct=True`` (magnitude, refit choice, data-free); per run: the capture,
whether it verified (or the one-line reason), seconds, params kept, and for reconstruction the output cosine to the
original on the held-out calibration points (which no refit reads) before → after, and whether the refit was
applied.

    python benchmarks/torch_reconstruct.py [--out benchmarks/results/torch_reconstruct.json] [--only NAME ...]

Each model runs in this process, one after the other; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's models/ package

RUNS = {"sampling": {"method": "sampling"}, "reconstruct": {"reconstruct": True}}


def models() -> dict:
    """name → build() -> (module, example_inputs)."""
    import torch

    from models import REFERENCE_MODELS

    out = {name: (lambda s=spec: (s.build(), (torch.randn(*s.input_shape),))) for name, spec in REFERENCE_MODELS.items()}
    try:
        from models.hf import HF_MODELS, build
    except ImportError:  # no transformers: the reference models only
        return out
    return out | {f"hf:{name}": (lambda n=name: build(n)) for name in HF_MODELS}


def one(build, options: dict) -> dict:
    import graphprune

    module, inputs = build()
    t0 = time.perf_counter()
    try:
        result = graphprune.prune(module, example_inputs=inputs, ratio=0.5, **options)
    except graphprune.GraphPruneError as exc:
        return {"verified": False, "reason": str(exc).splitlines()[0][:300], "seconds": round(time.perf_counter() - t0, 1)}
    report = result.report.to_dict()
    row = {"capture": report.get("frontend"), "verified": report["verification"]["ok"],
           "seconds": round(time.perf_counter() - t0, 1), "params_kept": round(report["params"]["ratio"], 3)}
    rec = next((p["stats"] for p in report["passes"] if p["name"] == "Reconstruct"), None)
    if rec is not None:
        cos = rec.get("output_cosine") or {}
        row |= {"layers": rec.get("layers"), "refitted": rec.get("refitted"), "applied": rec.get("applied", False),
                "cosine_before": cos.get("before"), "cosine_after": cos.get("after")}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/torch_reconstruct.json")
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    torch.manual_seed(0)
    rows = {}
    for name, build in models().items():
        if args.only and name not in args.only:
            continue
        rows[name] = {run: one(build, options) for run, options in RUNS.items()}
        print(name, json.dumps(rows[name]), file=sys.stderr, flush=True)
    done = [r["reconstruct"] for r in rows.values() if r["reconstruct"].get("verified")]
    raised = [r for r in done if r.get("applied") and r["cosine_after"] > r["cosine_before"]]
    summary = {"models": len(rows),
               "sampling_verified": sum(bool(r["sampling"].get("verified")) for r in rows.values()),
               "reconstruct_verified": len(done), "reconstruct_applied": len(raised),
               "median_cosine_before_applied": median([r["cosine_before"] for r in raised]),
               "median_cosine_after_applied": median([r["cosine_after"] for r in raised])}
    out = {"what": __doc__.splitlines()[0], "torch": torch.__version__, "python": platform.python_version(),
           "summary": summary, "models": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


if __name__ == "__main__":
    raise SystemExit(main())
