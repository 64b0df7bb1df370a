"""Train large, then prune (Chang et al., AAAI 2021, arXiv 2012.08749) on real data: scikit-learn's digits.

    python benchmarks/train_large_then_prune.py [--seeds 0 1 2 3 4] [--label-noise 0 0.2] [--out benchmarks/results]

A one-hidden-layer MLP 64 → w → 10 (ReLU) on the flattened 8×8 digits (1,347 training / 450 test points, the
split of models/digits.py). Its parameter count 75·w + 10 equals the number of training samples near w = 18,
where the theory puts a double-descent peak of the pruned model's error. For every width w in WIDTHS:

1. train the dense net (seeded, Adam + cosine, ``--epochs``, no weight decay and no augmentation, so the wide
   nets interpolate the training set);
2. prune its hidden units with graphprune (``graphprune.prune(module, method="magnitude", scope="global",
   budget="channels", round_to=1)``) to the parameter count of the smallest net (``TARGET`` hidden units),
   verified against the masked original; record test error with no retraining;
3. fine-tune the pruned net for ``--finetune-epochs`` (short) and record test error again; also for
   ``--long-finetune-epochs`` (a full training budget) unless 0;

and compare with the small net trained directly for ``--epochs`` and, compute-matched, for
``--epochs + --finetune-epochs``. With ``--label-noise p`` a fraction p of the training labels is replaced by
uniform random labels (the regime where double descent is classically visible); test labels stay clean.
Several seeds (data split fixed; initialisation, batches and label noise vary). Writes
``train_large_then_prune.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's models/ package

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from models import digits  # noqa: E402

WIDTHS = (8, 12, 16, 18, 20, 24, 32, 48, 64, 128, 256, 512)
TARGET = 8  # hidden units after pruning = the smallest width


def mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, seed: int,
        batch_size: int = 128) -> nn.Module:
    """Adam with a cosine schedule, cross-entropy, no weight decay, no augmentation."""
    return digits.fit(model, x, y, epochs=epochs, lr=lr, seed=seed, batch_size=batch_size)


@torch.no_grad()
def error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) != y).float().mean())


def noisy(y: np.ndarray, p: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    y = y.copy()
    flip = rng.random(len(y)) < p
    y[flip] = rng.integers(0, 10, int(flip.sum()))
    return y


def run_seed(data, seed: int, noise: float, args) -> dict:
    import graphprune

    x_tr, x_te = torch.from_numpy(data.x_train), torch.from_numpy(data.x_test)
    y_tr, y_te = torch.from_numpy(noisy(data.y_train, noise, seed)), torch.from_numpy(data.y_test)
    target_params = params(mlp(TARGET))
    rows = []
    for w in WIDTHS:
        torch.manual_seed(seed)
        dense = fit(mlp(w), x_tr, y_tr, epochs=args.epochs, lr=args.lr, seed=seed)
        row = {"width": w, "params": params(dense), "train_error": error(dense, x_tr, y_tr),
               "dense_test_error": error(dense, x_te, y_te)}
        if w == TARGET:  # the small net trained directly, and compute-matched
            row["pruned_test_error"] = row["finetuned_test_error"] = row["dense_test_error"]
            row["long_finetuned_test_error"] = row["dense_test_error"]
            row["pruned_params"] = row["params"]
            torch.manual_seed(seed)
            small = fit(mlp(w), x_tr, y_tr, epochs=args.epochs + args.finetune_epochs, lr=args.lr, seed=seed)
            row["small_matched_test_error"] = error(small, x_te, y_te)
        else:
            result = graphprune.prune(dense, example_inputs=torch.zeros(1, 1, 8, 8), method="magnitude",
                                      ratio=(w - TARGET) / w, budget="channels", scope="global", round_to=1,
                                      max_group_ratio=0.999)
            pruned = result.model
            assert params(pruned) == target_params, (w, params(pruned), target_params)
            row["pruned_params"] = params(pruned)
            row["pruned_test_error"] = error(pruned, x_te, y_te)
            tuned = fit(copy.deepcopy(pruned), x_tr, y_tr, epochs=args.finetune_epochs, lr=args.finetune_lr, seed=seed)
            row["finetuned_test_error"] = error(tuned, x_te, y_te)
            row["finetuned_train_error"] = error(tuned, x_tr, y_tr)
            if args.long_finetune_epochs:
                tuned = fit(copy.deepcopy(pruned), x_tr, y_tr, epochs=args.long_finetune_epochs, lr=args.finetune_lr,
                            seed=seed)
                row["long_finetuned_test_error"] = error(tuned, x_te, y_te)
        rows.append(row)
    return {"seed": seed, "label_noise": noise, "rows": rows}


def summarise(runs: list[dict]) -> list[dict]:
    out = []
    keys = ("train_error", "dense_test_error", "pruned_test_error", "finetuned_test_error",
            "long_finetuned_test_error")
    for i, w in enumerate(WIDTHS):
        rows = [r["rows"][i] for r in runs]
        s = {"width": w, "params": rows[0]["params"]}
        for k in keys:
            v = np.array([r[k] for r in rows])
            if k not in rows[0]:
                continue
            s[k] = {"mean": float(v.mean()), "std": float(v.std())}
        out.append(s)
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = results["label_noise"]
    fig, axes = plt.subplots(1, len(levels), figsize=(6.2 * len(levels), 4.4), squeeze=False)
    n_train = results["n_train"]
    for ax, noise in zip(axes[0], levels):
        summ = results["summary"][str(noise)]
        ws = [s["width"] for s in summ]
        for key, label, style in (("pruned_test_error", "pruned to 8 units, no retraining", "o-"),
                                  ("finetuned_test_error", f"pruned + fine-tune {results['finetune_epochs']} ep", "s-"),
                                  ("long_finetuned_test_error", f"pruned + fine-tune {results['long_finetune_epochs']} ep", "d-"),
                                  ("dense_test_error", "dense (before pruning)", "^--")):
            if key not in summ[0]:
                continue
            m = np.array([100 * s[key]["mean"] for s in summ])
            sd = np.array([100 * s[key]["std"] for s in summ])
            line, = ax.plot(ws, m, style, ms=4, label=label)
            ax.fill_between(ws, m - sd, m + sd, color=line.get_color(), alpha=0.15)
        small = results["small_direct"][str(noise)]
        ax.axhline(100 * small["epochs"]["mean"], color="k", lw=1, label=f"small (8 units) trained directly, "
                   f"{results['epochs']} ep")
        ax.axhline(100 * small["matched"]["mean"], color="k", lw=1, ls=":",
                   label=f"small trained directly, {results['epochs'] + results['finetune_epochs']} ep")
        w_star = (n_train - 10) / 75
        ax.axvline(w_star, color="grey", ls="--", lw=1, label=f"params = n_train ({n_train}), w ≈ {w_star:.0f}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width before pruning (hidden units)")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"digits MLP 64-w-10, label noise {noise:g}, {len(results['seeds'])} seeds (mean ± std)",
                     fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from models.digits import load_data

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--label-noise", type=float, nargs="+", default=[0.0, 0.2])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--finetune-lr", type=float, default=1e-2)
    parser.add_argument("--long-finetune-epochs", type=int, default=100,
                        help="also fine-tune this long (0: skip), i.e. a full retraining budget")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_data(0)
    results = {"benchmark": "train_large_then_prune", "model": "MLP 64-w-10 (ReLU)", "widths": list(WIDTHS),
               "target_units": TARGET, "target_params": params(mlp(TARGET)), "n_train": int(len(data.y_train)),
               "n_test": int(len(data.y_test)), "seeds": args.seeds, "label_noise": args.label_noise,
               "epochs": args.epochs, "lr": args.lr, "finetune_epochs": args.finetune_epochs,
               "finetune_lr": args.finetune_lr, "long_finetune_epochs": args.long_finetune_epochs,
               "pruning": "graphprune.prune(module, method='magnitude', scope='global', budget='channels', "
                          "round_to=1), verified",
               "runs": [], "summary": {}, "small_direct": {}}
    for noise in args.label_noise:
        runs = []
        for seed in args.seeds:
            ts = time.perf_counter()
            runs.append(run_seed(data, seed, noise, args))
            print(f"noise {noise:g} seed {seed}: {time.perf_counter() - ts:.1f}s", flush=True)
        results["runs"] += runs
        results["summary"][str(noise)] = summarise(runs)
        small = [r["rows"][0] for r in runs]
        results["small_direct"][str(noise)] = {
            "epochs": {"mean": float(np.mean([s["dense_test_error"] for s in small])),
                       "std": float(np.std([s["dense_test_error"] for s in small]))},
            "matched": {"mean": float(np.mean([s["small_matched_test_error"] for s in small])),
                        "std": float(np.std([s["small_matched_test_error"] for s in small]))}}
        print(f"\nlabel noise {noise:g}; small net (8 units) trained directly: test error "
              f"{100 * results['small_direct'][str(noise)]['epochs']['mean']:.2f}% ({args.epochs} ep), "
              f"{100 * results['small_direct'][str(noise)]['matched']['mean']:.2f}% "
              f"({args.epochs + args.finetune_epochs} ep)")
        print(f"{'width':>6} {'params':>7} {'train err':>10} {'dense test':>11} {'pruned':>14} {'pruned+FT':>14} {'pruned+longFT':>14}")
        for s in results["summary"][str(noise)]:
            def f(k, s=s):
                return f"{100 * s[k]['mean']:6.2f}±{100 * s[k]['std']:4.2f}"
            print(f"{s['width']:6d} {s['params']:7d} {100 * s['train_error']['mean']:9.2f}% {f('dense_test_error'):>11} "
                  f"{f('pruned_test_error'):>14} {f('finetuned_test_error'):>14} "
                  f"{f('long_finetuned_test_error') if 'long_finetuned_test_error' in s else '-':>14}")
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["environment"] = {"python": platform.python_version(), "torch": torch.__version__, "threads": 1}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_large_then_prune.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "train_large_then_prune.png")
    print(f"\n{results['seconds']}s; wrote {args.out / 'train_large_then_prune.json'} and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
