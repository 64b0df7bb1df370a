"""Side by side with Torch-Pruning: dependency analysis + pruning time on the same torchvision models.

Two halves, one JSON (``benchmarks/results/zoo_torch_pruning.json``, merged):

    /work/zoo-venv/bin/python benchmarks/zoo_torch_pruning.py --side tp   # torch_pruning 1.6 in the zoo venv
    python benchmarks/zoo_torch_pruning.py --side gp                      # graphprune, the project's Python

* Torch-Pruning: ``MagnitudePruner(model, example_inputs, pruning_ratio=0.5, ignored_layers=[classifier])``
  (its constructor builds the DependencyGraph by tracing) then ``pruner.step()``; a forward pass afterwards
  checks the model still runs (Torch-Pruning has no equivalence check).
* graphprune: load the exported ONNX file, analyse, magnitude score, select 0.5, remove channels (no
  verification, no report), same model and input size as ``zoo_export.py`` wrote.

Ratio reported: Torch-Pruning seconds ÷ graphprune seconds (> 1: graphprune faster). Wall clock on a shared
2-core machine; each side best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_x_400mf",
          "regnet_y_400mf", "densenet121", "googlenet", "inception_v3", "shufflenet_v2_x1_0", "convnext_tiny",
          "resnext50_32x4d", "squeezenet1_1", "mnasnet1_0", "vit_b_16", "swin_t"]


def tp_side(name: str, side: int, repeat: int) -> dict:
    import torch
    import torch_pruning as tp
    import torchvision

    best = None
    for _ in range(repeat):
        torch.manual_seed(0)
        kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        model = torchvision.models.get_model(name, **kwargs).eval()
        x = torch.randn(1, 3, side, side)
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1000]
        before = sum(p.numel() for p in model.parameters())
        try:
            t0 = time.perf_counter()
            pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                               pruning_ratio=0.5, ignored_layers=head)
            t1 = time.perf_counter()
            pruner.step()
            t2 = time.perf_counter()
            with torch.no_grad():
                model(x)
            after = sum(p.numel() for p in model.parameters())
            row = {"ok": True, "graph_s": t1 - t0, "prune_s": t2 - t1, "total_s": t2 - t0, "params_ratio": after / before}
        except Exception as exc:
            row = {"ok": False, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
        if not row["ok"]:
            return row
        best = row if best is None or row["total_s"] < best["total_s"] else best
    return best


def gp_side(path: Path, repeat: int) -> dict:
    from graphprune.api import load
    from graphprune.passes import AnalyseChannels, MagnitudeScore, RemoveChannels, Select
    from graphprune.pipeline.state import PruneState

    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        state = PruneState.start(load(path))
        t1 = time.perf_counter()
        state = AnalyseChannels()(state)
        t2 = time.perf_counter()
        for p in (MagnitudeScore(), Select(ratio=0.5, budget="channels"), RemoveChannels()):
            state = p(state)
        t3 = time.perf_counter()
        row = {"ok": True, "load_s": t1 - t0, "graph_s": t2 - t1, "prune_s": t3 - t2, "total_s": t3 - t0}
        best = row if best is None or row["total_s"] < best["total_s"] else best
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=["tp", "gp"], required=True)
    ap.add_argument("--zoo", default="build/zoo")
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/zoo_torch_pruning.json")
    args = ap.parse_args()
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"models": {}}
    manifest = json.loads((Path(args.zoo) / "manifest.json").read_text())
    for name in args.models:
        entry = manifest.get(name, {})
        if entry.get("status") != "exported":
            continue
        side = entry["input_shape"][-1]
        row = tp_side(name, side, args.repeat) if args.side == "tp" else gp_side(Path(args.zoo) / f"{name}.onnx", args.repeat)
        rec = data["models"].setdefault(name, {"input_side": side})
        rec["torch_pruning" if args.side == "tp" else "graphprune"] = row
        tp_row, gp_row = rec.get("torch_pruning"), rec.get("graphprune")
        if tp_row and gp_row and tp_row.get("ok") and gp_row.get("ok"):
            rec["tp_over_gp_total"] = tp_row["total_s"] / gp_row["total_s"]
            rec["tp_over_gp_graph_plus_prune"] = tp_row["total_s"] / (gp_row["graph_s"] + gp_row["prune_s"])
        print(name, json.dumps(row), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
