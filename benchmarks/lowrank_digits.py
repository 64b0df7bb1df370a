"""Low rank on small trained CNNs: accuracy and MACs versus energy, with and without TRP training.

    python benchmarks/lowrank_digits.py [--epochs 30] [--energies 0.5 ...] [--trp-every 1 10] [--out DIR]
    python benchmarks/lowrank_digits.py --plot-only          # redraw the PNG from the JSON

Data and models: ``models/digits.py`` (scikit-learn ``load_digits``, stratified seeded split; ``digits_vgg`` and
``digits_resnet``, BatchNorm kept). If that module is missing, a small built-in CNN on the same data is used.
Training: this file's own copy of ``models.digits.train`` (Adam 5e-3, cosine schedule, weight decay 5e-4,
batch 128, one-pixel shifts, seeded) so that TRP hooks can be inserted; the plain and the TRP runs differ only
by the hooks.

For every model and energy e:

* **SVD**: the trained model exported to ONNX, decomposed by ``graphprune.prune(method="lowrank", energy=e,
  round_to=1, min_saving=0)`` (every layer whose MACs fall, as the torch path decides, so the two arms compare
  like for like) — verified against the truncated original — and evaluated in onnxruntime; the torch path
  (``decompose_module``) is evaluated as a cross-check;
* **TRP (m)**: the same model trained from the same seed with ``TRP(model, energy=e, every=m)`` hooks
  (nuclear-norm λ = 3e-4), then ``trp.decompose()``, exported and evaluated in onnxruntime.

MACs are per image, counted by graphprune on the ONNX graph. Writes ``lowrank_digits.json`` and
``lowrank_digits.png`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's models/ package

import numpy as np
import onnx
import torch
from torch import nn

import graphprune
from graphprune.api import load
from graphprune.methods.cost import cost
from graphprune.runtime import session
from graphprune.torch.lowrank import decompose_module
from graphprune.torch.trp import TRP

ENERGIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
SEED = 0


# --------------------------------------------------------------------------- data, models, training


def setup():
    """(x_train, y_train, x_test, y_test) tensors, {name: builder}, and where they come from."""
    try:
        from models import digits as md
    except ImportError:
        md = None
    if md is not None:
        d = md.load_data(SEED)
        split = tuple(torch.from_numpy(a) for a in (d.x_train, d.y_train, d.x_test, d.y_test))
        return split, {name: (lambda name=name: md.build(name, SEED)) for name in md.DIGITS_MODELS}, "models.digits"
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    mean, std = xtr.mean(), xtr.std()
    split = tuple(torch.from_numpy(a) for a in ((xtr - mean) / std, ytr, (xte - mean) / std, yte))
    return split, {"digits_cnn": builtin_cnn}, "built-in"


def builtin_cnn() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10))


def shifted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2,), generator=generator).tolist()
    return padded[:, :, dy:dy + 8, dx:dx + 8]


def train(model: nn.Module, split, epochs: int, trp: TRP | None = None) -> float:
    """The models.digits recipe, with the TRP hooks around ``optimizer.step()`` when ``trp`` is given."""
    xtr, ytr = split[0], split[1]
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * -(-len(xtr) // 128))
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 128):
            idx = order[i:i + 128]
            opt.zero_grad()
            loss_fn(model(shifted(xtr[idx], g)), ytr[idx]).backward()
            if trp is not None:
                trp.before_step()
            opt.step()
            if trp is not None:
                trp.after_step()
            sched.step()
    model.eval()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- measuring


@torch.no_grad()
def torch_accuracy(model: nn.Module, x, y) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def onnx_accuracy(model: onnx.ModelProto, x, y) -> float:
    sess = session(model, threads=1)
    name = sess.get_inputs()[0].name
    preds = [int(sess.run(None, {name: x[i:i + 1].numpy()})[0].argmax()) for i in range(len(x))]
    return float(np.mean(np.array(preds) == y.numpy()))


def export(module: nn.Module, path: Path) -> Path:
    """ONNX with input (1, 1, 8, 8), BatchNorm kept (as models.digits exports)."""
    import warnings

    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["input"],
                          output_names=["output"], opset_version=17, dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return path


def macs_of(path) -> int:
    return cost(load(path).graph).macs


def trp_key(every: int) -> str:
    return "trp" if every == 1 else f"trp_every{every}"


def trp_row(build, e: float, every: int, epochs: int, split, tmp: Path) -> dict:
    """Train from the same seed with TRP hooks at energy e, decompose, evaluate the ONNX export."""
    model = build()
    trp = TRP(model, energy=e, every=every)
    seconds = train(model, split, epochs, trp)
    path = export(trp.decompose(example_input=split[2][:1]), tmp / f"trp_{e}_{every}.onnx")
    return {"accuracy": onnx_accuracy(onnx.load(str(path)), split[2], split[3]),
            "accuracy_before_decompose": torch_accuracy(model, split[2], split[3]), "macs": macs_of(path),
            "train_seconds": seconds, "ranks": {k: list(v) for k, v in trp.ranks.items()}}


def run_model(name: str, build, split, epochs: int, energies, trp_every, tmp: Path) -> dict:
    xte, yte = split[2], split[3]
    base = build()
    seconds = train(base, split, epochs)
    base_path = export(base, tmp / f"{name}.onnx")
    base_acc, base_macs = torch_accuracy(base, xte, yte), macs_of(base_path)
    print(f"{name}: baseline accuracy {base_acc:.4f}, MACs {base_macs}, trained in {seconds:.1f}s", flush=True)
    rows = []
    for e in energies:
        t0 = time.perf_counter()
        result = graphprune.prune(base_path, method="lowrank", energy=e, round_to=1, min_saving=0.0)
        stats = result.report.passes[-1].stats
        row = {"energy": e,
               "svd": {"accuracy": onnx_accuracy(result.model, xte, yte), "macs": result.report.after.macs,
                       "accuracy_torch_path": torch_accuracy(decompose_module(base, energy=e, example_input=xte[:1]),
                                                             xte, yte),
                       "verified": result.report.verification.ok, "seconds": time.perf_counter() - t0,
                       "ranks": {d["node"]: [d["rank"], d["full_rank"]] for d in stats["decomposed"]},
                       "skipped": {s["node"]: s["why"] for s in stats["skipped"]}}}
        for every in trp_every:
            row[trp_key(every)] = trp_row(build, e, every, epochs, split, tmp)
        rows.append(row)
        line = f"  e={e:<5} SVD: acc {row['svd']['accuracy']:.4f} MACs {row['svd']['macs'] / base_macs:6.1%}"
        for every in trp_every:
            t = row[trp_key(every)]
            line += f" | TRP m={every}: acc {t['accuracy']:.4f} MACs {t['macs'] / base_macs:6.1%}"
        print(line, flush=True)
    return {"baseline": {"accuracy": base_acc, "macs": base_macs, "train_seconds": seconds}, "rows": rows}


def run(epochs: int, energies, out_dir: Path, trp_every=(1, 10)) -> dict:
    torch.set_num_threads(1)  # tiny models: intra-op threads only contend (30x slower on a shared 2-core box)
    split, builders, origin = setup()
    tmp = Path(tempfile.mkdtemp(prefix="lowrank_digits_"))
    t0 = time.perf_counter()
    models = {name: run_model(name, build, split, epochs, energies, trp_every, tmp) for name, build in builders.items()}
    result = {
        "benchmark": "lowrank_digits",
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
                    "threads": 1},
        "data": {"source": origin, "train": len(split[0]), "test": len(split[2]), "split_seed": SEED},
        "epochs": epochs, "trp": {"every": list(trp_every), "nuclear_weight": 3e-4},
        "seconds": time.perf_counter() - t0,
        "models": models,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "lowrank_digits.json").write_text(json.dumps(result, indent=2))
    plot(result, out_dir / "lowrank_digits.png")
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["models"])
    fig, axes = plt.subplots(len(names), 3, figsize=(15, 4 * len(names)), squeeze=False)
    series = [("svd", "SVD of the trained model", "o")] + [
        (trp_key(m), f"TRP-trained (m={m}), then decomposed", "s^v"[i % 3]) for i, m in enumerate(result["trp"]["every"])]
    for (ax1, ax2, ax3), name in zip(axes, names):
        res = result["models"][name]
        base, rows = res["baseline"], res["rows"]
        e = [r["energy"] for r in rows]
        for key, label, marker in series:
            acc = [100 * r[key]["accuracy"] for r in rows]
            macs = [100 * r[key]["macs"] / base["macs"] for r in rows]
            ax1.plot(e, acc, marker=marker, label=label)
            ax2.plot(e, macs, marker=marker, label=label)
            ax3.plot(macs, acc, marker=marker, label=label)
        for ax in (ax1, ax3):
            ax.axhline(100 * base["accuracy"], color="grey", ls="--", label="baseline")
        ax2.axhline(100, color="grey", ls="--")
        ax1.set(xlabel="energy e", ylabel="test accuracy (%)", title=f"{name}: accuracy")
        ax2.set(xlabel="energy e", ylabel="MACs (% of baseline)", title=f"{name}: MACs")
        ax3.set(xlabel="MACs (% of baseline, log)", ylabel="test accuracy (%)", xscale="log",
                title=f"{name}: accuracy vs MACs (one point per energy)")
        for ax in (ax1, ax2, ax3):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--energies", type=float, nargs="+", default=list(ENERGIES))
    parser.add_argument("--trp-every", type=int, nargs="+", default=[1, 10], help="TRP projection periods m")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the existing JSON")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads((args.out / "lowrank_digits.json").read_text()), args.out / "lowrank_digits.png")
        return 0
    run(args.epochs, args.energies, args.out, tuple(args.trp_every))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
