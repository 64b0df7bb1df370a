"""Hugging Face families on the torch path: each small random-init model (models/hf.py, built from its config) is
pruned at ratio 0.5 of each group's channels with ``graphprune.prune(module, example_inputs=..., budget="channels")``;
per family: the capture used, seconds, params and MACs ratios, query / KV heads before and after (from the
config), whether it verified (or the one-line reason it did not), whether the report says save_pretrained ->
from_pretrained rebuilds it, the largest output difference after doing that round trip here, whether a decoder
generates after it, and the top freeze reasons. Grouped-query families run a second time with ``query_heads=True`` (rows
``<family>+qh``: query heads inside each KV group instead of whole KV groups).

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


def one(name: str, ratio: float, build=None, prune=None, **options) -> dict:
    """One family pruned: ``build(name) -> (model, example_inputs)`` (default models/hf.py) by ``prune`` (default
    ``graphprune.prune``) with ``options`` (default half of each group's channels, no rounding)."""
    import graphprune
    from models.hf import build as hf_build

    model, inputs = (build or hf_build)(name)
    t0 = time.perf_counter()
    try:
        result = (prune or graphprune.prune)(model, example_inputs=inputs, ratio=ratio,
                                  **(options or {"budget": "channels", "round_to": 1}))
    except graphprune.GraphPruneError as exc:
        return {"verified": False, "reason": str(exc)[:300], "seconds": round(time.perf_counter() - t0, 1)}
    r = result.report
    reasons = collections.Counter(why.split(" (")[0] for g in r.groups for why in g.frozen_because[:1])
    row = {"verified": r.verification.ok, "capture": r.extra.get("frontend"), "seconds": round(time.perf_counter() - t0, 1),
           "params_ratio": round(r.after.params / r.before.params, 3),
           "macs_ratio": round(r.after.macs / max(r.before.macs, 1), 3),
           "params_before": r.before.params, "params_after": r.after.params,
           "renormalised": len(result.plan.renormalised), "frozen_reasons": dict(reasons.most_common(4))}
    if hasattr(getattr(model, "config", None), "save_pretrained"):
        if heads(model.config):
            row["heads"] = [heads(model.config), heads(result.model.config)]
        row["rebuilds"] = any("round-trips" in note for note in r.notes)
        row.update(round_trip(result.model, inputs))
    return row


def round_trip(small, inputs) -> dict:
    """What a user of the pruned model sees: ``save_pretrained`` -> ``from_pretrained`` (the largest difference
    of the first output against the pruned model's, or the error), and for a model that can generate, whether
    three greedy tokens come out of the reloaded one."""
    import tempfile

    import torch

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        try:
            small.save_pretrained(tmp)
            again = type(small).from_pretrained(tmp).eval()
            out["reload_max_diff"] = float((again(*inputs)[0] - small(*inputs)[0]).abs().max())
        except Exception as exc:  # noqa: BLE001 - the benchmark records what a user would hit
            out["reload_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return out
        if getattr(again, "can_generate", lambda: False)():
            ids = again.generate(inputs[0], max_new_tokens=3, do_sample=False, use_cache=False)
            out["generates"] = tuple(ids.shape) == (inputs[0].shape[0], inputs[0].shape[1] + 3)
    return out


def heads(config) -> str | None:
    """``query/kv`` heads of a Hugging Face config (None where it has no head count)."""
    q = next((getattr(config, f) for f in ("num_attention_heads", "n_head", "num_heads") if hasattr(config, f)), None)
    return f"{q}/{getattr(config, 'num_key_value_heads', None) or q}" if q else None


def arguments(out: str) -> argparse.Namespace:
    """``--out`` (default ``out``), ``--ratio``, ``--only`` of a families benchmark."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=out)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--only", nargs="*")
    return ap.parse_args()


def show(label: str, row: dict, width: int = 10) -> None:
    """One row of a families benchmark on stdout."""
    status = "verified" if row["verified"] else f"NOT verified: {row.get('reason', '')[:80]}"
    heads = f" heads {' -> '.join(row['heads']):>10}" if "heads" in row else ""
    print(f"{label:{width}} {row.get('capture', '-'):13} params {row.get('params_ratio', '-'):>6} "
          f"MACs {row.get('macs_ratio', '-'):>6}{heads} {row['seconds']:6.1f}s  {status}", flush=True)


def main() -> None:
    from models.hf import HF_MODELS

    args = arguments("benchmarks/results/hf_families.json")
    warnings.simplefilter("ignore")
    import torch
    import transformers

    torch.set_num_threads(1)
    rows = {}
    for name in args.only or list(HF_MODELS):
        rows[name] = one(name, args.ratio)
        show(name, rows[name], 12)
        q, kv = (int(h) for h in rows[name].get("heads", ["0/0"])[0].split("/"))
        if 0 < kv < q:  # grouped-query attention: the other unit, query heads inside each KV group
            rows[f"{name}+qh"] = one(name, args.ratio, budget="channels", round_to=1, query_heads=True)
            show(f"{name}+qh", rows[f"{name}+qh"], 12)
    out = {"ratio": args.ratio, "torch": torch.__version__, "transformers": transformers.__version__,
           "machine": platform.platform(), "models": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
