"""Dynamic batch: every reference model exported by both torch exporters with a dynamic batch axis, pruned at 0.5,
verified, and checked for whether the pruned model keeps the dynamic batch (see graphprune/dynamic.py).

    python benchmarks/dynamic_batch.py [--out benchmarks/results/dynamic_batch.json]

Legacy export: ``dynamic_axes={"input": {0: "B"}}``; dynamo: ``dynamic_shapes`` with ``Dim("B")``. The analysis
pins the batch at 2; the second size the restored model is verified at is 1.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export(spec, path: Path, dynamo: bool) -> tuple[int, ...]:
    import torch
    from torch.export import Dim

    module = spec.build()
    shape = (2, *spec.input_shape[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            arg = next(iter(inspect.signature(module.forward).parameters))
            torch.onnx.export(module, (torch.randn(*shape),), str(path), dynamo=True, input_names=["input"],
                              output_names=["output"], dynamic_shapes={arg: {0: Dim("B", min=1, max=64)}})
        else:
            torch.onnx.export(module, (torch.randn(*shape),), str(path), dynamo=False, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "B"}, "output": {0: "B"}})
    return shape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/dynamic_batch.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import graphprune
    from models import REFERENCE_MODELS

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, spec in REFERENCE_MODELS.items():
            for exporter in ("legacy", "dynamo"):
                path = Path(d) / f"{name}.{exporter}.onnx"
                shape = export(spec, path, exporter == "dynamo")
                r = graphprune.prune(path, ratio=0.5, budget="channels", input_shapes={"input": shape}, round_to=1)
                notes = [n for n in r.report.notes if "dynamic" in n or "analysed input shapes" in n]
                row = {"model": name, "exporter": exporter, "verified": bool(r.report.verification.ok),
                       "units_removed": r.report.units_removed, "dynamic_kept": any("kept" in n for n in notes),
                       "note": notes[0] if notes else None}
                rows.append(row)
                print(f"{name:20s} {exporter:7s} verified={row['verified']} dynamic_kept={row['dynamic_kept']}", flush=True)
    summary = {"tried": len(rows), "verified": sum(r["verified"] for r in rows),
               "dynamic_kept": sum(r["dynamic_kept"] for r in rows)}
    Path(args.out).write_text(json.dumps({"machine": platform.platform(), "summary": summary, "rows": rows}, indent=2))
    print(summary)


if __name__ == "__main__":
    main()
