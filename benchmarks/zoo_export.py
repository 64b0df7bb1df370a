"""Export every torchvision classification architecture to ONNX (random weights), for the coverage benchmark.

Runs in the *zoo* environment (torchvision needs torch==2.14.1, which the project's own environment must not get):

    python -m venv /work/zoo-venv
    /work/zoo-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 onnx onnxruntime onnxscript
    /work/zoo-venv/bin/python benchmarks/zoo_export.py --out build/zoo [--max-params 100e6] [--only resnet18 ...]

Legacy (TorchScript) exporter, opset 17, batch 1, eval mode, random weights (seed 0). The input side is the
smallest of 64 / 96 / 128 / 224 for which the model runs in torch (ViT and MaxViT need 224, Inception v3 ≥ 75).
Models above ``--max-params`` are listed as skipped (with their size) rather than silently dropped. Writes
``<out>/<arch>.onnx`` and ``<out>/manifest.json`` (per model: input shape, params, export seconds or the error).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

SIZES = (64, 96, 128, 224)


def input_side(model, torch) -> int:
    for side in SIZES:
        try:
            with torch.no_grad():
                model(torch.randn(1, 3, side, side))
            return side
        except Exception:
            continue
    raise RuntimeError(f"no input size in {SIZES} runs")


def export(model, torch, side: int, path: Path) -> None:
    x = torch.randn(1, 3, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"], do_constant_folding=True)


def main() -> None:
    import torch
    import torchvision

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="build/zoo")
    ap.add_argument("--max-params", type=float, default=100e6)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--side", type=int, help="export at this input side only (e.g. 224 for latency benchmarks)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    names = sorted(torchvision.models.list_models(module=torchvision.models))
    if args.only:
        names = [n for n in names if n in args.only]
    for name in names:
        path = out / f"{name}.onnx"
        if path.exists() and manifest.get(name, {}).get("status") == "exported":
            continue
        entry = {"torch": torch.__version__, "torchvision": torchvision.__version__}
        t0 = time.perf_counter()
        try:
            torch.manual_seed(0)
            builder = torchvision.models.get_model_builder(name)
            kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
            # count params cheaply before building anything huge: build on the meta device
            try:
                with torch.device("meta"):
                    n_params = sum(p.numel() for p in builder(**kwargs).parameters())
            except Exception:  # some builders (RegNet) initialise weights in ways meta tensors do not allow
                n_params = sum(p.numel() for p in builder(**kwargs).parameters())
            entry["params"] = int(n_params)
            if n_params > args.max_params:
                entry.update(status="skipped", reason=f"{n_params / 1e6:.0f}M params > --max-params {args.max_params / 1e6:.0f}M")
                print(f"{name:28s} skipped ({entry['reason']})", flush=True)
                manifest[name] = entry
                continue
            model = builder(**kwargs).eval()
            side = args.side or input_side(model, torch)
            for side in [side] if args.side else [s for s in SIZES if s >= side]:
                # an adaptive pool whose output size does not divide the input does not export: next size
                try:
                    export(model, torch, side, path)
                    break
                except Exception:
                    if args.side or side == SIZES[-1]:
                        raise
            entry.update(status="exported", input_shape=[1, 3, side, side], seconds=round(time.perf_counter() - t0, 2),
                         bytes=path.stat().st_size)
            print(f"{name:28s} {side:4d}px {n_params / 1e6:7.1f}M {entry['seconds']:6.1f}s", flush=True)
        except Exception as exc:  # recorded, one line
            entry.update(status="export_failed", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])
            print(f"{name:28s} export failed: {entry['reason']}", flush=True)
        manifest[name] = entry
        manifest_path.write_text(json.dumps(manifest, indent=2))
    manifest_path.write_text(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
