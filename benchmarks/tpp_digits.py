"""TPP vs L1 on scikit-learn digits (the paper's central claim at a size this machine runs).

For each seed (data split, init and training all seeded): train ``DigitsResNet`` (models/digits.py, Adam, 30
epochs), then for each ratio (per-layer share of filters removed in every prunable group, residual stages
included, ``round_to=1``):

* ``tpp``:     TPP (``schedule="fast"``: λ += 0.01 every 2 steps to 1, 100 stabilisation steps; SGD LR 1e-3,
               momentum 0.9 — the paper's regularisation LR) → remove (graphprune torch emitter) → fine-tune;
* ``l1``:      per-layer L1 pruning of the trained model (same plan rule) → the same fine-tune;
* ``l1_long``: L1 → fine-tune for as many more epochs as TPP regularised (TPP trains longer in total; this
               control gives L1 the same number of steps).

Fine-tune: ``graphprune.torch.finetune``, SGD momentum 0.9, weight decay 5e-4, ``FT_EPOCHS`` epochs, step schedule
(÷10 at 50 % and 75 %), at two LRs (1e-2, 1e-3). Reported: test accuracy after the last epoch (no selection on
the test set), mean ± std over seeds; also accuracy right after removal, before any fine-tuning.

    python benchmarks/tpp_digits.py [--seeds 0 1 2 3 4] [--out benchmarks/results]

Writes ``tpp_digits.json`` and ``tpp_digits.png``. One intra-op thread (other jobs share the machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import pathlib
import platform
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import graphprune
from graphprune.torch import TPP, finetune
from models.digits import INPUT_SHAPE, DigitsResNet, accuracy, load_data, train

RATIOS = (0.7, 0.9)
FT_LRS = (1e-2, 1e-3)
FT_EPOCHS = 30
REG_LR = 1e-3
BATCH = 64
BASE_EPOCHS = 30
METHODS = ("tpp", "l1", "l1_long")


def loader(data, seed: int) -> torch.utils.data.DataLoader:
    ds = torch.utils.data.TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def tune(model, data, seed: int, lr: float, epochs: int) -> float:
    torch.manual_seed(seed)
    finetune(model, loader(data, seed), epochs=epochs, lr=lr, schedule="step", progress=False, device="cpu")
    return accuracy(model, data.x_test, data.y_test)


def run_seed(seed: int) -> list[dict]:
    data = load_data(seed)
    x0 = (torch.zeros(INPUT_SHAPE),)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    base = train(DigitsResNet(), data, epochs=BASE_EPOCHS, seed=seed)
    base_acc = accuracy(base, data.x_test, data.y_test)
    print(f"seed {seed}: base {base_acc:.4f} ({time.perf_counter() - t0:.1f}s)", flush=True)
    rows = []
    for ratio in RATIOS:
        # TPP: regularise a copy, then remove
        t0 = time.perf_counter()
        reg = copy.deepcopy(base)
        tpp = TPP(reg, example_inputs=x0, ratio=ratio, budget="channels", schedule="fast")
        steps_per_epoch = len(loader(data, seed))
        reg_epochs = math.ceil(tpp.total_steps / steps_per_epoch)
        torch.manual_seed(seed)
        finetune(reg, loader(data, seed + 1000), epochs=reg_epochs, lr=REG_LR, schedule="constant", hooks=tpp,
                 progress=False, device="cpu")
        norm_ratio = tpp.norm_ratio()
        reg_acc = accuracy(reg, data.x_test, data.y_test)
        tpp_small = tpp.finish()
        tpp_removed = accuracy(tpp_small, data.x_test, data.y_test)
        reg_seconds = time.perf_counter() - t0
        # L1: the same plan rule on the trained model
        l1_small = graphprune.prune(base, example_inputs=x0, method="magnitude", ratio=ratio, budget="channels",
                                    round_to=1).model
        l1_removed = accuracy(l1_small, data.x_test, data.y_test)
        params = (sum(p.numel() for p in base.parameters()), sum(p.numel() for p in l1_small.parameters()))
        assert params[1] == sum(p.numel() for p in tpp_small.parameters())
        for lr in FT_LRS:
            t0 = time.perf_counter()
            acc = {"tpp": tune(copy.deepcopy(tpp_small), data, seed, lr, FT_EPOCHS),
                   "l1": tune(copy.deepcopy(l1_small), data, seed, lr, FT_EPOCHS),
                   "l1_long": tune(copy.deepcopy(l1_small), data, seed, lr, FT_EPOCHS + reg_epochs)}
            rows.append({"seed": seed, "ratio": ratio, "ft_lr": lr, "base": base_acc, "params_before": params[0],
                         "params_after": params[1], "tpp_reg_steps": tpp.iteration, "tpp_reg_epochs": reg_epochs,
                         "tpp_pruned_over_kept_norm": norm_ratio, "tpp_after_reg": reg_acc,
                         "tpp_after_removal": tpp_removed, "l1_after_removal": l1_removed,
                         "tpp_reg_seconds": reg_seconds, "ft_seconds": time.perf_counter() - t0,
                         **{f"{m}_ft": a for m, a in acc.items()}})
            print(f"  ratio {ratio} lr {lr:g}: removal tpp {tpp_removed:.4f} / l1 {l1_removed:.4f}; fine-tuned "
                  + ", ".join(f"{m} {a:.4f}" for m, a in acc.items()), flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for ratio in RATIOS:
        for lr in FT_LRS:
            sel = [r for r in rows if r["ratio"] == ratio and r["ft_lr"] == lr]
            entry = {"ratio": ratio, "ft_lr": lr, "n": len(sel)}
            for key in ("base", "tpp_after_removal", "l1_after_removal", *(f"{m}_ft" for m in METHODS)):
                v = np.array([r[key] for r in sel])
                entry[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
            d = np.array([r["tpp_ft"] - r["l1_ft"] for r in sel])
            entry["tpp_minus_l1"] = {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                                     "wins": int((d > 0).sum()), "ties": int((d == 0).sum())}
            out.append(entry)
    return out


def table(summary: list[dict]) -> str:
    f = lambda s: f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"
    lines = [("| ratio | FT LR | after removal: TPP | after removal: L1 | TPP + FT | L1 + FT | L1 + longer FT | "
             "TPP − L1 (wins/n) |"), "|---|---|---|---|---|---|---|---|"]
    for e in summary:
        d = e["tpp_minus_l1"]
        lines.append(f"| {e['ratio']} | {e['ft_lr']:g} | {f(e['tpp_after_removal'])} | {f(e['l1_after_removal'])} | "
                     f"{f(e['tpp_ft'])} | {f(e['l1_ft'])} | {f(e['l1_long_ft'])} | "
                     f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f} ({d['wins']}/{e['n']}) |")
    return "\n".join(lines)


def plot(summary: list[dict], path: pathlib.Path, base: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(RATIOS), figsize=(5 * len(RATIOS), 4), sharey=True)
    colors = {"tpp": "tab:blue", "l1": "tab:orange", "l1_long": "tab:green"}
    labels = {"tpp": "TPP → FT", "l1": "L1 → FT", "l1_long": "L1 → longer FT"}
    for ax, ratio in zip(np.atleast_1d(axes), RATIOS):
        entries = [e for e in summary if e["ratio"] == ratio]
        xs = np.arange(len(entries))
        for i, m in enumerate(METHODS):
            means = [100 * e[f"{m}_ft"]["mean"] for e in entries]
            stds = [100 * e[f"{m}_ft"]["std"] for e in entries]
            ax.bar(xs + (i - 1) * 0.27, means, 0.27, yerr=stds, capsize=3, color=colors[m], label=labels[m])
        ax.axhline(100 * base["mean"], color="k", ls="--", lw=1, label="unpruned")
        ax.set_xticks(xs, [f"FT LR {e['ft_lr']:g}" for e in entries])
        ax.set_title(f"ratio {ratio} (digits ResNet, n={entries[0]['n']} seeds)")
        ax.set_ylabel("test accuracy % (mean ± std)")
        lo = min(100 * e[f"{m}_ft"]["mean"] - 100 * e[f"{m}_ft"]["std"] for e in entries for m in METHODS)
        ax.set_ylim(max(0, lo - 5), 100)
    np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = [r for seed in args.seeds for r in run_seed(seed)]
    summary = summarise(rows)
    base = summary[0]["base"]
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "tpp_digits", "model": "DigitsResNet (models/digits.py)", "seeds": args.seeds,
              "config": {"ratios": RATIOS, "ft_lrs": FT_LRS, "ft_epochs": FT_EPOCHS, "ft_schedule": "step",
                         "reg_lr": REG_LR, "tpp_schedule": "fast", "batch": BATCH, "base_epochs": BASE_EPOCHS,
                         "plan": "magnitude (L1), scope local, round_to 1"},
              "torch": torch.__version__, "python": platform.python_version(), "threads": 1,
              "seconds": time.perf_counter() - t0, "summary": summary, "runs": rows}
    (args.out / "tpp_digits.json").write_text(json.dumps(result, indent=1))
    plot(summary, args.out / "tpp_digits.png", base)
    print(table(summary))
    print(f"total {result['seconds']:.0f}s -> {args.out / 'tpp_digits.json'}, tpp_digits.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
