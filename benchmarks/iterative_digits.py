"""Iterative pruning against one-shot, at the same total fine-tuning, on scikit-learn's digits (issue 19).

    python benchmarks/iterative_digits.py [--out benchmarks/results] [--epochs 6] [--steps 3]

Trains ``digits_resnet`` and ``digits_vgg`` (models/digits.py, seeded, 30 epochs). For ratios 0.7 / 0.85 / 0.93 of
params and the magnitude method, on the torch module: one-shot (prune once, fine-tune ``steps × epochs`` epochs)
and iterative (``steps`` rounds of prune to ``(1 - ratio)^(k/steps)`` of the params, fine-tune ``epochs`` epochs
with the learning rate rewound: :func:`graphprune.torch.iterative.iterative_prune`). The same SGD settings and
total epochs for both; test accuracy on the held-out split after every round. Every round is verified (it is a
normal ``graphprune.prune``). Writes ``iterative_digits.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATIOS = (0.7, 0.85, 0.93)
LR = 0.02


def loader(data, batch_size: int = 64, seed: int = 0):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    dataset = TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def schedule_point(model, data, ratio: float, steps: int, epochs: int) -> dict:
    import copy

    import torch

    from graphprune.torch.iterative import iterative_prune
    from models.digits import INPUT_SHAPE, accuracy

    torch.manual_seed(0)
    t0 = time.perf_counter()
    result = iterative_prune(copy.deepcopy(model), loader(data), (torch.zeros(INPUT_SHAPE),), ratio=ratio,
                             steps=steps, epochs=epochs, lr=LR, method="magnitude", round_to=1,
                             eval_fn=lambda m: accuracy(m, data.x_test, data.y_test))
    before = sum(p.numel() for p in model.parameters())
    return {"steps": steps, "epochs_per_step": epochs, "kept_params": result.rounds[-1].params / before,
            "accuracy": result.rounds[-1].finetuned, "seconds": time.perf_counter() - t0,
            "rounds": [{"round": r.round, "step_ratio": r.step_ratio, "kept_params": r.params / before,
                        "accuracy_pruned": r.pruned, "accuracy_finetuned": r.finetuned} for r in result.rounds]}


def main() -> None:
    import graphprune
    from models.digits import DIGITS_MODELS, accuracy, build, load_data, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs per round of the iterative schedule")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    data = load_data()
    models = {}
    for name in DIGITS_MODELS:
        model = train(build(name), data)
        points = []
        for ratio in RATIOS:
            one = schedule_point(model, data, ratio, 1, args.steps * args.epochs)
            many = schedule_point(model, data, ratio, args.steps, args.epochs)
            points.append({"ratio": ratio, "one_shot": one, "iterative": many})
            print(f"{name} ratio {ratio}: one-shot {one['accuracy']:.3f} @ {one['kept_params']:.3f}, "
                  f"iterative {many['accuracy']:.3f} @ {many['kept_params']:.3f}", flush=True)
        models[name] = {"params": sum(p.numel() for p in model.parameters()),
                        "test_accuracy": accuracy(model, data.x_test, data.y_test), "points": points}
    result = {"benchmark": "iterative_digits", "graphprune": graphprune.__version__, "machine": platform.platform(),
              "method": "magnitude", "lr": LR, "optimizer": "SGD momentum 0.9, cosine per round",
              "total_epochs": args.steps * args.epochs, "models": models}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "iterative_digits.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'iterative_digits.json'}")


if __name__ == "__main__":
    main()
