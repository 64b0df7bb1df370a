"""timm and ultralytics models on the torch path: each small random-init model (models/vision.py, built with code) is
pruned with ``graphprune.prune(module, example_inputs=..., ratio=0.5)`` (the default budget: half the params), and
timm's ViT once more with ``capture="export"`` (whole heads go too); per model: the capture used, seconds, params and
MACs ratios, whether it verified (or the one-line reason it did not), and the top freeze reasons
(:func:`hf_families.one`).

    /work/zoo-venv/bin/python benchmarks/torch_families.py [--out benchmarks/results/vision_families.json] [--only ...]

Needs the ``vision`` extra (timm, ultralytics, torchvision: torch 2.14.1, its own venv). One thread, one model after
the other in this process; nothing is asserted.
"""

from __future__ import annotations

import json
import platform
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's models/ package
sys.path.insert(0, str(Path(__file__).resolve().parent))  # hf_families

from hf_families import arguments, one, show  # noqa: E402


def by_export(model, example_inputs, **options):
    """``graphprune.prune`` with the capture forced to torch.export."""
    from graphprune.torch.api import prune_module

    return prune_module(model, example_inputs, capture="export", **options)


def main() -> None:
    from models.vision import VISION_MODELS, build, offline_ultralytics

    args = arguments("benchmarks/results/vision_families.json")
    warnings.simplefilter("ignore")
    offline_ultralytics()  # before ultralytics is imported
    import timm
    import torch
    import ultralytics

    torch.set_num_threads(1)
    rows = {}
    runs = {name: (name, None) for name in VISION_MODELS}
    runs["vit_tiny (capture=export)"] = ("vit_tiny", by_export)  # heads too: attention written out, num_heads set
    for label in args.only or list(runs):
        name, prune = runs[label]
        rows[label] = one(name, args.ratio, build, prune, budget="params")
        show(label, rows[label], 26)
    out = {"ratio": args.ratio, "budget": "params", "torch": torch.__version__, "timm": timm.__version__,
           "ultralytics": ultralytics.__version__, "machine": platform.platform(), "threads": 1, "models": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
