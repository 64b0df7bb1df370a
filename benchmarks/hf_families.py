"""Hugging Face families on the torch path: each small random-init model (models/hf.py, built from its config) is
pruned at ratio 0.5 of each group's channels with ``graphprune.prune(module, example_inputs=..., budget="channels")``;
per family: the capture used, seconds, params and MACs ratios, whether it verified (or the one-line reason it did
not), and the top freeze reasons.

    python benchmarks/hf_families.py [--out benchmarks/results/hf_families.json] [--only llama gemma ...]

Needs the ``hf`` extra (transformers). Each model runs in this process, one after the other; nothing is asserted.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's models/ package


def one(name: str, ratio: float) -> dict:
    import graphprune
    from models.hf import build

    model, inputs = build(name)
    t0 = time.perf_counter()
    try:
        result = graphprune.prune(model, example_inputs=inputs, ratio=ratio, budget="channels", round_to=1)
    except graphprune.GraphPruneError as exc:
        return {"verified": False, "reason": str(exc)[:300], "seconds": round(time.perf_counter() - t0, 1)}
    r = result.report
    reasons = collections.Counter(why.split(" (")[0] for g in r.groups for why in g.frozen_because[:1])
    return {"verified": r.verification.ok, "capture": r.extra.get("frontend"), "seconds": round(time.perf_counter() - t0, 1),
            "params_ratio": round(r.after.params / r.before.params, 3),
            "macs_ratio": round(r.after.macs / max(r.before.macs, 1), 3),
            "params_before": r.before.params, "params_after": r.after.params,
            "renormalised": len(result.plan.renormalised), "frozen_reasons": dict(reasons.most_common(4))}


def main() -> None:
    from models.hf import HF_MODELS

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/hf_families.json")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch
    import transformers

    torch.set_num_threads(1)
    rows = {}
    for name in args.only or list(HF_MODELS):
        rows[name] = one(name, args.ratio)
        row = rows[name]
        status = "verified" if row["verified"] else f"NOT verified: {row.get('reason', '')[:80]}"
        print(f"{name:10} {row.get('capture', '-'):13} params {row.get('params_ratio', '-'):>6} "
              f"MACs {row.get('macs_ratio', '-'):>6} {row['seconds']:6.1f}s  {status}", flush=True)
    out = {"ratio": args.ratio, "torch": torch.__version__, "transformers": transformers.__version__,
           "machine": platform.platform(), "models": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
