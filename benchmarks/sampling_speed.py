"""Sampling's wall time against magnitude's, the same models, one after the other (issue: ≤ 3× magnitude).

    python benchmarks/sampling_speed.py [--out benchmarks/results] [--points 256] [--repeat N] [--zoo build/zoo [--only NAME ...]]

Models: the reference CNNs / transformers of ``models/`` (legacy export) and, when ``transformers`` is installed
(the ``hf`` extra), two Hugging Face exports with random weights built from their configs: BERT (hidden 256, 4
layers, sequence 128) and MobileViT (image 128, 4.9M params). Each is pruned at ratio 0.5 (params) with
verification off, so the time is analysis + scoring + selection + removal (``--verify end``: verified, as the CLI
runs by default, written to ``*_verified.json``); sampling runs data-free on
``--points`` seeded points. ``--zoo DIR``: the torchvision exports of ``zoo_export.py`` instead (the issue's
measure; its ``manifest.json`` gives the input shapes), written to ``sampling_speed_zoo.json``. Writes
``sampling_speed.json`` (seconds per method, the ratio, the median ratio). ``--only NAME …`` (with ``--zoo``):
time a subset of the zoo. ``--repeat N``: each model's pair run N times back to back, the least time of each
method kept (the machine is shared: the least is the one least disturbed by other work).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def hf_exports(folder: Path) -> dict[str, Path]:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    out = {}
    bert = tf.BertForSequenceClassification(tf.BertConfig(
        vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        max_position_embeddings=256, num_labels=5)).eval()
    vit = tf.MobileViTForImageClassification(tf.MobileViTConfig(image_size=128, num_labels=10)).eval()
    for name, model, x, names in (("hf_bert", bert, torch.randint(3, 8000, (1, 128)), ["input_ids"]),
                                  ("hf_mobilevit", vit, torch.randn(1, 3, 128, 128), ["pixel_values"])):
        path = folder / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), input_names=names, output_names=["logits"], opset_version=17,
                              dynamo=False)
        out[name] = path
    return out


def timed(path: Path, method: str, points: int, shapes: dict | None = None, verify: str = "off") -> float:
    import graphprune

    kw = dict(max_points=points) if method == "sampling" else {}
    t0 = time.perf_counter()
    graphprune.prune(path, method=method, ratio=0.5, verify=verify, input_shapes=shapes or {}, **kw)
    return time.perf_counter() - t0


def least_pair(path: Path, points: int, shapes: dict | None, repeat: int, verify: str = "off") -> tuple[float, float]:
    """Magnitude then sampling, back to back, ``repeat`` times: the least time of each."""
    pairs = [(timed(path, "magnitude", points, shapes, verify), timed(path, "sampling", points, shapes, verify))
             for _ in range(max(1, repeat))]
    return min(m for m, _ in pairs), min(s for _, s in pairs)


def zoo_exports(folder: Path) -> dict[str, tuple[Path, dict]]:
    """Every model ``zoo_export.py`` wrote to ``folder``, with its input shape from the manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    out = {}
    for name, entry in sorted(manifest.get("models", manifest).items()):
        path = folder / f"{name}.onnx"
        if isinstance(entry, dict) and entry.get("input_shape") and path.exists():
            out[name] = (path, {"input": tuple(entry["input_shape"])})
    return out


def main() -> None:
    import graphprune
    from models import REFERENCE_MODELS, export_onnx

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--points", type=int, default=256)
    ap.add_argument("--zoo", type=Path, help="time the torchvision exports in this folder (zoo_export.py)")
    ap.add_argument("--only", nargs="+", metavar="MODEL", help="time only these models (names in the zoo's manifest)")
    ap.add_argument("--repeat", type=int, default=1, help="time each model's pair this many times, keep the least")
    ap.add_argument("--verify", default="off", choices=("off", "end"),
                    help="off (default): the pruning alone; end: as a user runs it, verified (the CLI's default)")
    args = ap.parse_args()
    if args.zoo:
        models = zoo_exports(args.zoo)
        if args.only:
            unknown = sorted(set(args.only) - set(models))
            if unknown:
                ap.error(f"--only: not in {args.zoo / 'manifest.json'}: {', '.join(unknown)}")
            models = {name: models[name] for name in args.only}
    else:
        tmp = Path(tempfile.mkdtemp(prefix="sampling_speed_"))
        paths = {name: export_onnx(spec, tmp / f"{name}.onnx") for name, spec in REFERENCE_MODELS.items()}
        if importlib.util.find_spec("transformers") is not None:
            paths |= hf_exports(tmp)
        models = {name: (path, None) for name, path in paths.items()}
    rows = []
    for name, (path, shapes) in models.items():
        mag, samp = least_pair(path, args.points, shapes, args.repeat, args.verify)
        rows.append({"model": name, "magnitude_s": mag, "sampling_s": samp, "ratio": samp / mag})
        print(f"{name:20} magnitude {mag:6.2f}s  sampling {samp:6.2f}s  × {samp / mag:.1f}", flush=True)
    result = {"benchmark": "sampling_speed", "graphprune": graphprune.__version__, "machine": platform.platform(),
              "points": args.points, "repeat": args.repeat, "verify": args.verify, "rows": rows, "median_ratio": float(np.median([r["ratio"] for r in rows]))}
    args.out.mkdir(parents=True, exist_ok=True)
    written = args.out / (("sampling_speed_zoo" if args.zoo else "sampling_speed")
                          + ("" if args.verify == "off" else "_verified") + ".json")
    written.write_text(json.dumps(result, indent=2))
    print(f"median sampling / magnitude: {result['median_ratio']:.2f}; wrote {written}")


if __name__ == "__main__":
    main()
