"""Accuracy after pruning, on real data: scikit-learn's digits, two small CNNs, every scoring method.

    python benchmarks/digits_accuracy.py [--epochs 30] [--out benchmarks/results]

Trains ``digits_resnet`` and ``digits_vgg`` (models/digits.py; seeded, BatchNorm kept in the ONNX export),
then for ratios 0.1 … 0.9 prunes each with graphprune's Python API and measures test accuracy in
onnxruntime against the kept params and MACs (counted by graphprune on the emitted graph):

* channel methods: ``magnitude`` (L1), ``random`` (mean of 3 seeds), ``bn_scale`` (these three with
  ``budget="channels"``: the ratio of each group's channels), ``sampling`` (PFP,
  deterministic, ``budget="macs"``) and ``sampling_rand`` (PFP randomized with reweighting, seed 0);
  all with ``round_to=1`` (no channel-count rounding, so the methods are compared at their own choices);
* ``sipp`` (weight level, shapes unchanged): accuracy against sparsity for the three modes, next to global
  weight magnitude as the unstructured baseline.

Sampling and SiPP get 256 calibration points from the *training* split (PFP's |S| bound asks for ~170 of them);
accuracy is on the held-out test split. Every pruned model is verified (masked original, or the SiPP oracle).
Then every channel-pruned point is fine-tuned for the same few epochs (``--finetune-epochs``, default 3):
the ONNX plan is transferred to the trained torch module by parameter name, emitted by the torch path, the
pruned ONNX weights are loaded into it (so PFP's reweighting carries over; the benchmark checks it scores the
pruned ONNX accuracy first), trained, re-exported and evaluated in onnxruntime. SiPP points are not fine-tuned
(a masked fine-tune is not part of graphprune yet). Writes ``digits_accuracy.json`` and ``digits_accuracy.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's models/ package

import numpy as np  # noqa: E402

RATIOS = [round(0.1 * i, 1) for i in range(1, 10)]
CHANNEL_METHODS = {
    "magnitude": dict(method="magnitude", budget="channels"),  # ratio of each group's channels, as measured
    "random": dict(method="random", budget="channels"),
    "bn_scale": dict(method="bn_scale", budget="channels"),
    "sampling": dict(method="sampling", budget="macs"),
    "sampling_rand": dict(method="sampling", budget="macs", sampling="randomized"),
}
RANDOM_SEEDS = (0, 1, 2)
SIPP_MODES = ("deterministic", "hybrid", "randomized")
CALIB_POINTS = 256


def onnx_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    from graphprune.methods.calib import ActivationRunner

    runner = ActivationRunner(model, ["output"], {"input": (1, *x.shape[1:])})
    out = runner.run({"input": x})["output"]
    return float((out.argmax(1) == y).mean())


def transfer_plan(plan, onnx_cg, torch_cg):
    """The ONNX plan as a plan of the torch module's analysis: groups are matched through their parameters,
    which carry the same names in both (state_dict keys; the export keeps BatchNorm and does not fold)."""
    from graphprune.channels.plan import Plan

    removed: dict[int, set[int]] = {}
    for gid in plan.removed:
        for space in onnx_cg.groups[gid].params:
            tid = torch_cg.group_of.get(space)
            kept = plan.kept(space)
            if tid is None or kept is None or space not in torch_cg.groups[tid].labels:
                continue
            gone = np.setdiff1d(np.arange(plan.sizes[space]), kept)
            removed.setdefault(tid, set()).update(torch_cg.groups[tid].labels[space][gone].tolist())
            break
    out = Plan.from_removed(torch_cg, {g: np.array(sorted(u), np.int64) for g, u in removed.items()})
    for space, kept in plan.keep.items():  # the same channels go in every parameter both analyses know
        if space in torch_cg.group_of and space.tensor in torch_cg.graph.params:
            assert np.array_equal(out.kept(space), kept), f"plan transfer disagrees on {space}"
    return out


def finetuned_accuracy(result, torch_model, torch_source, torch_cg, data, epochs: int) -> dict:
    """Prune the torch model like ``result`` (same channels, and the ONNX weights loaded by name, so
    reweighting carries over), check it computes what the pruned ONNX does, fine-tune, evaluate in onnxruntime."""
    import onnx
    import torch
    from onnx import numpy_helper

    from graphprune.emit.torch import emit
    from models.digits import accuracy, export, train

    module = emit(torch_source, transfer_plan(result.plan, result.channels, torch_cg)).model
    state = module.state_dict()
    with torch.no_grad():
        for init in result.model.graph.initializer:
            if init.name in state:
                value = torch.from_numpy(numpy_helper.to_array(init).copy())
                assert state[init.name].shape == value.shape, init.name
                state[init.name].copy_(value)
    before = accuracy(module, data.x_test, data.y_test)
    train(module, data, epochs=epochs, lr=1e-3, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = export(module, Path(tmp) / "ft.onnx")
        after = onnx_accuracy(onnx.load(str(path)), data.x_test, data.y_test)
    return {"torch_accuracy_before_finetune": before, "accuracy_finetuned": after}


def prune_point(path: Path, data, calib: np.ndarray, method: str, options: dict, ratio: float,
                finetune: dict | None = None) -> dict:
    import graphprune

    seeds = RANDOM_SEEDS if method == "random" else (0,)
    runs = []
    for seed in seeds:
        kw = dict(options, ratio=ratio, round_to=1, seed=seed)
        if kw["method"] == "sampling":
            kw["calib"] = calib
        t0 = time.perf_counter()
        result = graphprune.prune(path, **kw)
        seconds = time.perf_counter() - t0
        rep = result.report
        run = {"kept_params": rep.after.params / rep.before.params, "kept_macs": rep.after.macs / rep.before.macs,
               "accuracy": onnx_accuracy(result.model, data.x_test, data.y_test),
               "verified": bool(rep.verification and rep.verification.ok), "seconds": seconds,
               "epsilon": next((p.stats.get("epsilon") for p in rep.passes if p.name == "SamplingSelect"), None)}
        if finetune is not None:
            run.update(finetuned_accuracy(result, data=data, **finetune))
            run["torch_matches_onnx"] = abs(run.pop("torch_accuracy_before_finetune") - run["accuracy"]) < 1e-9
        runs.append(run)
    point = {"method": method, "ratio": ratio}
    keys = ("kept_params", "kept_macs", "accuracy", "seconds") + (("accuracy_finetuned",) if finetune else ())
    for key in keys:
        point[key] = float(np.mean([r[key] for r in runs]))
    if finetune is not None:
        point["torch_matches_onnx"] = all(r["torch_matches_onnx"] for r in runs)
    point["verified"] = all(r["verified"] for r in runs)
    point["epsilon"] = runs[0]["epsilon"]
    if len(runs) > 1:
        point["accuracy_per_seed"] = [r["accuracy"] for r in runs]
    return point


def sipp_points(path: Path, data, calib: np.ndarray) -> list[dict]:
    """SiPP: sensitivities measured once, then every mode and sparsity (each verified by its oracle)."""
    import graphprune
    from graphprune.methods.edits import WeightEdit, apply_to_values
    from graphprune.verify.edits import verify_edits
    from graphprune.passes.calibrate import Calibrate
    from graphprune.passes.sipp import SiPPSparsify
    from graphprune.pipeline.state import PruneState

    source = graphprune.api.load(path)
    state = Calibrate(data=calib, max_points=CALIB_POINTS)(PruneState.start(source))
    t0 = time.perf_counter()
    neurons, _, used = SiPPSparsify(ratio=0.5, max_points=CALIB_POINTS).measure(state)
    measure_s = time.perf_counter() - t0
    weights = {n.weight: n for n in neurons}
    total = sum(n.s.size for n in neurons)
    points = []
    for ratio in RATIOS:
        for mode in (*SIPP_MODES, "weight_magnitude"):
            if mode == "weight_magnitude":
                flat = np.concatenate([np.abs(source.graph.value(w)).ravel() for w in weights])
                cut = np.sort(flat)[int(round(ratio * total))] if ratio > 0 else -1
                edits = {w: WeightEdit(np.abs(source.graph.value(w)) >= cut) for w in weights}
            else:
                edits, _ = SiPPSparsify(ratio=ratio, mode=mode, seed=0).choose(neurons)
            model = apply_to_values(source.model, edits)
            v = verify_edits(source.model, model, edits, source.input_shapes, interface=source.model)
            zeroed = sum(e.zeroed(weights[w].shape) for w, e in edits.items())
            points.append({"mode": mode, "ratio": ratio, "sparsity": zeroed / total, "verified": v.ok,
                           "accuracy": onnx_accuracy(model, data.x_test, data.y_test)})
    return points, {"weights": total, "measure_seconds": measure_s, "points_used": used}


def compare(structured: list[dict], a: str = "sampling", b: str = "magnitude", key: str = "accuracy") -> list[dict]:
    """For every point of ``a``: ``b``'s ``key`` (accuracy) at the same kept MACs, linearly interpolated between
    ``b``'s points (None outside their range)."""
    pb = sorted((p["kept_macs"], p[key]) for p in structured if p["method"] == b and key in p)
    if not pb:
        return []
    xs, ys = np.array([m for m, _ in pb]), np.array([acc for _, acc in pb])
    out = []
    for p in (p for p in structured if p["method"] == a and key in p):
        m = p["kept_macs"]
        inside = xs.min() <= m <= xs.max()
        other = float(np.interp(m, xs, ys)) if inside else None
        out.append({"ratio": p["ratio"], "kept_macs": m, a: p[key], f"{b}_at_same_macs": other,
                    "delta": None if other is None else p[key] - other})
    return out


def summarise(comparison: list[dict], tie: float = 0.005) -> dict:
    deltas = [c["delta"] for c in comparison if c["delta"] is not None]
    return {"first_better": sum(d > tie for d in deltas), "tied": sum(abs(d) <= tie for d in deltas),
            "second_better": sum(d < -tie for d in deltas), "compared_points": len(deltas),
            "tie_tolerance": tie}


def add_comparisons(res: dict) -> None:
    """Sampling (and randomized sampling) against magnitude at the same MACs, before and after fine-tuning."""
    for a in ("sampling", "sampling_rand"):
        for key, suffix in (("accuracy", ""), ("accuracy_finetuned", "_finetuned")):
            comp = compare(res["structured"], a, "magnitude", key)
            if comp:
                res[f"comparison_{a}_vs_magnitude{suffix}"] = comp
                res[f"summary_{a}_vs_magnitude{suffix}"] = summarise(comp)
    res["all_verified"] = all(p["verified"] for p in res["structured"] + res["sipp"])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["models"])
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 4.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        res = result["models"][name]
        ax = axes[row][0]
        for i, method in enumerate(CHANNEL_METHODS):
            color = f"C{i}"
            pts = sorted((p["kept_macs"], p["accuracy"], p.get("accuracy_finetuned")) for p in res["structured"]
                         if p["method"] == method)
            ax.plot([m for m, _, _ in pts], [a for _, a, _ in pts], "o-", ms=3, color=color, label=method)
            if all(f is not None for _, _, f in pts):
                ax.plot([m for m, _, _ in pts], [f for _, _, f in pts], "s--", ms=2, lw=1, color=color, alpha=0.6)
        ax.axhline(res["test_accuracy_onnx"], color="grey", ls=":", label="unpruned")
        ft = result.get("fine_tune")
        title = f"{name}: channel pruning (solid: no fine-tune" + (
            f"; dashed: {ft['epochs']} epochs)" if isinstance(ft, dict) else ")")
        ax.set(title=title, xlabel="kept MACs (fraction)", ylabel="test accuracy", ylim=(0, 1.02))
        ax.legend(fontsize=8)
        ax = axes[row][1]
        for mode in (*SIPP_MODES, "weight_magnitude"):
            pts = sorted((p["sparsity"], p["accuracy"]) for p in res["sipp"] if p["mode"] == mode)
            ax.plot([s for s, _ in pts], [a for _, a in pts], "o-", ms=3, label=mode if mode != "weight_magnitude"
                    else "|w| global (baseline)")
        ax.axhline(res["test_accuracy_onnx"], color="grey", ls=":", label="unpruned")
        ax.set(title=f"{name}: SiPP (weights zeroed, shapes kept)", xlabel="weight sparsity of conv/linear layers",
               ylabel="test accuracy", ylim=(0, 1.02))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def torch_path_ready() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("graphprune.frontends.fx", "graphprune.emit.torch"))


def main() -> None:
    import torch

    import graphprune
    from models.digits import DIGITS_MODELS, accuracy, build, export, load_data, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--models", nargs="+", default=list(DIGITS_MODELS), choices=list(DIGITS_MODELS))
    ap.add_argument("--finetune-epochs", type=int, default=3, help="same for every method; 0 skips fine-tuning")
    ap.add_argument("--from-json", type=Path, help="recompute the comparisons and the plot from a stored result")
    args = ap.parse_args()
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        for res in result["models"].values():
            for k in [k for k in res if k.startswith(("comparison_", "summary"))]:
                del res[k]
            add_comparisons(res)
        args.from_json.write_text(json.dumps(result, indent=2))
        plot(result, args.from_json.with_suffix(".png"))
        return
    torch.set_num_threads(2)
    data = load_data(args.seed)
    calib = data.x_train[:CALIB_POINTS]
    tmp = Path(tempfile.mkdtemp(prefix="digits_accuracy_"))
    result = {
        "benchmark": "digits_accuracy", "graphprune": graphprune.__version__, "machine": platform.platform(),
        "python": platform.python_version(), "torch_threads": 2, "epochs": args.epochs, "seed": args.seed,
        "data": {"source": "sklearn.datasets.load_digits", "train": len(data.y_train), "test": len(data.y_test),
                 "calibration_points": CALIB_POINTS, "calibration_from": "training split"},
        "fine_tune": ({"epochs": args.finetune_epochs, "optimizer": "Adam lr 1e-3, cosine, batch 128, ±1 px shifts",
                       "how": "the ONNX plan is transferred to the trained torch module by parameter name, emitted "
                              "by graphprune.emit.torch, the pruned ONNX weights loaded by name (so PFP reweighting "
                              "carries over), checked to give the pruned ONNX accuracy, fine-tuned, re-exported and "
                              "evaluated in onnxruntime"}
                      if args.finetune_epochs > 0 and torch_path_ready() else "not run"),
        "torch_pruning_reference": ("not run: torch_pruning is not installed"
                                    if importlib.util.find_spec("torch_pruning") is None else "TODO"),
        "models": {},
    }
    for name in args.models:
        t0 = time.perf_counter()
        model = train(build(name, args.seed), data, epochs=args.epochs, seed=args.seed)
        train_s = time.perf_counter() - t0
        path = export(model, tmp / f"{name}.onnx")
        ins = graphprune.inspect(path)
        res = {"train_seconds": train_s, "params": ins.cost.params, "macs": ins.cost.macs,
               "test_accuracy_torch": accuracy(model, data.x_test, data.y_test),
               "test_accuracy_onnx": onnx_accuracy(graphprune.api.load(path).model, data.x_test, data.y_test),
               "structured": [], "sipp": []}
        print(f"{name}: trained in {train_s:.1f}s, test accuracy {res['test_accuracy_onnx']:.4f}", flush=True)
        finetune = None
        if args.finetune_epochs > 0:
            from graphprune.channels.analysis import analyse
            from graphprune.torch.api import load_module

            torch_source = load_module(model, torch.zeros(1, 1, 8, 8))
            finetune = dict(torch_model=model, torch_source=torch_source, torch_cg=analyse(torch_source.graph),
                            epochs=args.finetune_epochs)
        for method, options in CHANNEL_METHODS.items():
            for ratio in RATIOS:
                res["structured"].append(prune_point(path, data, calib, method, options, ratio, finetune))
            row = [p for p in res["structured"] if p["method"] == method]
            print(f"  {method:14}" + " ".join(f"{p['accuracy']:.3f}@{p['kept_macs']:.2f}" for p in row), flush=True)
            if finetune:
                print(f"  {'  fine-tuned':14}" + " ".join(f"{p['accuracy_finetuned']:.3f}@{p['kept_macs']:.2f}"
                                                        for p in row), flush=True)
        res["sipp"], res["sipp_info"] = sipp_points(path, data, calib)
        add_comparisons(res)
        print(f"  sampling vs magnitude at the same MACs: {res['summary_sampling_vs_magnitude']}", flush=True)
        result["models"][name] = res
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "digits_accuracy.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "digits_accuracy.png")
    print(f"wrote {args.out / 'digits_accuracy.json'} and {args.out / 'digits_accuracy.png'}")


if __name__ == "__main__":
    main()
