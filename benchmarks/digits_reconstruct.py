"""Accuracy without retraining on scikit-learn's digits: magnitude and sampling, with and without layer-wise
reconstruction, at the sizes Torch-Pruning's group L1 reaches on the same weights, side by side in one run.

    python benchmarks/digits_reconstruct.py [--out benchmarks/results] [--points 512]

Trains ``digits_resnet`` and ``digits_vgg`` (models/digits.py, seeded, 30 epochs), exports them with BatchNorm kept.
For ratios 0.3 / 0.5 / 0.7, Torch-Pruning 1.6 (when installed: ``pip install torch-pruning==1.6.1 --no-deps``)
prunes the torch module with ``GroupMagnitudeImportance(p=1)`` (the classifier ignored), and on its channels the
issue's prototype of reconstruction runs (plain per-layer ridge least squares, ``least_squares_accuracy``); graphprune then prunes
the ONNX export to the same fraction of parameters (``budget="params"``, ``round_to=1``) with magnitude and
sampling, each without and with ``reconstruct=True`` refitted on ``--points`` calibration points of the training split
(the units that go chosen for the refit, the default, and as the method ranks them: ``reconstruct_choice="score"``),
with magnitude's units ranked across groups by LAMP (``scope="global", normalizer="lamp"``: how many each group
keeps, at the same params) without and with the refit, and with ``budget="channels"`` at the same ratio (the
per-group fraction Torch-Pruning uses). Accuracy is on the
held-out test split in onnxruntime; every graphprune model is verified. Writes ``digits_reconstruct.json``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from digits_accuracy import onnx_accuracy  # noqa: E402  (this folder is on sys.path when run as a script)

RATIOS = (0.3, 0.5, 0.7)


def torch_pruning_point(model, data, ratio: float, calib) -> dict:
    """Torch-Pruning's group L1 at ``ratio`` (the classifier ignored); then, on its channels, the issue's prototype
    of reconstruction: :func:`least_squares_refit`."""
    import torch
    import torch_pruning as tp

    from models.digits import accuracy

    m = copy.deepcopy(model)
    head = m.fc if hasattr(m, "fc") else m.fc2
    before = sum(p.numel() for p in m.parameters())
    pruner = tp.pruner.MagnitudePruner(m, torch.zeros(1, 1, 8, 8), pruning_ratio=ratio, ignored_layers=[head],
                                       importance=tp.importance.GroupMagnitudeImportance(p=1))
    removed: dict[tuple[str, str], set[int]] = {}  # (module, "out" | "in") -> original indices removed
    names = {mod: n for n, mod in m.named_modules()}
    for group in pruner.step(interactive=True):
        for item in group:
            mod, handler = item.dep.target.module, item.dep.handler.__name__
            side = {"prune_out_channels": "out", "prune_in_channels": "in"}.get(handler)
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and side:
                removed.setdefault((names[mod], side), set()).update(int(i) for i in item.idxs)
        group.prune()
    point = {"kept_params": sum(p.numel() for p in m.parameters()) / before,
             "accuracy": accuracy(m, data.x_test, data.y_test)}
    least_squares_refit(model, m, removed, torch.from_numpy(calib))
    point["least_squares_accuracy"] = accuracy(m, data.x_test, data.y_test)
    return point


def least_squares_refit(original, pruned, removed, x, ridge: float = 1e-3) -> None:
    """The prototype the issue quotes, for reference: each Conv / Linear of ``pruned``, in order, refitted by ridge
    least squares (λ = ``ridge`` × the mean of the Gram diagonal) so that, on the pruned network's own inputs, its
    output matches the original layer's output at the kept channels."""
    import torch
    import torch.nn.functional as F

    def io(model, name):
        store = {}
        hook = model.get_submodule(name).register_forward_hook(lambda mod, i, o: store.update(i=i[0], o=o))
        with torch.no_grad():
            model(x)
        hook.remove()
        return store["i"], store["o"]

    for name, layer in list(pruned.named_modules()):
        if not isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            continue
        n_out = original.get_submodule(name).weight.shape[0]
        kept = np.setdiff1d(np.arange(n_out), sorted(removed.get((name, "out"), ())))
        target = io(original, name)[1][:, kept]
        inputs = io(pruned, name)[0]
        if isinstance(layer, torch.nn.Conv2d):
            cols = F.unfold(inputs, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
            a = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            t = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1])
        else:
            a, t = inputs, target
        a, t = a.double().numpy(), t.double().numpy()
        if layer.bias is not None:
            a = np.hstack([a, np.ones((len(a), 1))])
        gram = a.T @ a
        reg = ridge * np.mean(np.diag(gram)) * np.eye(len(gram))
        if layer.bias is not None:
            reg[-1, -1] = 0.0
        w = np.linalg.solve(gram + reg, a.T @ t)
        with torch.no_grad():
            if layer.bias is not None:
                layer.bias.copy_(torch.from_numpy(w[-1]))
                w = w[:-1]
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)).reshape(layer.weight.shape))


def graphprune_point(path: Path, data, calib, method: str, **kw) -> dict:
    import graphprune

    opts = dict(method=method, round_to=1, **kw)
    if method == "sampling" or kw.get("reconstruct"):
        opts["calib"] = calib
    if kw.get("reconstruct"):
        opts["reconstruct_points"] = len(calib)  # every point for the refit (sampling's scoring reads its default)
    t0 = time.perf_counter()
    result = graphprune.prune(path, **opts)
    seconds = time.perf_counter() - t0
    rep = result.report
    point = {"kept_params": rep.after.params / rep.before.params, "kept_macs": rep.after.macs / rep.before.macs,
             "accuracy": onnx_accuracy(result.model, data.x_test, data.y_test), "seconds": seconds,
             "verified": bool(rep.verification and rep.verification.ok)}
    rec = next((p.stats for p in rep.passes if p.name == "Reconstruct"), None)
    if rec:
        point["output_cosine"] = rec.get("output_cosine")
        point["refitted"] = rec.get("refitted")
    return point


def main() -> None:
    import torch

    import graphprune
    from models.digits import DIGITS_MODELS, accuracy, build, export, load_data, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--points", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load_data(0)
    calib = data.x_train[:args.points]
    have_tp = importlib.util.find_spec("torch_pruning") is not None
    out = {"benchmark": "digits_reconstruct", "graphprune": graphprune.__version__, "machine": platform.platform(),
           "calibration_points": len(calib), "torch_pruning": "1.6 GroupMagnitudeImportance(p=1)" if have_tp else
           "not installed: graphprune at kept params 0.7 / 0.5 / 0.3 instead", "models": {}}
    tmp = Path(tempfile.mkdtemp(prefix="digits_reconstruct_"))
    for name in DIGITS_MODELS:
        model = train(build(name), data, epochs=args.epochs, seed=0)
        path = export(model, tmp / f"{name}.onnx")
        res = {"params": sum(p.numel() for p in model.parameters()),
               "test_accuracy": accuracy(model, data.x_test, data.y_test), "points": []}
        for ratio in RATIOS:
            row = {"ratio": ratio}
            if have_tp:
                row["torch_pruning"] = torch_pruning_point(model, data, ratio, calib)
                target = row["torch_pruning"]["kept_params"]
            else:
                target = 1.0 - ratio
            for method in ("magnitude", "sampling"):
                row[method] = graphprune_point(path, data, calib, method, ratio=1.0 - target, budget="params")
                for choice in ("refit", "score"):
                    key = method + "+reconstruct" + ("" if choice == "refit" else "(score)")
                    row[key] = graphprune_point(path, data, calib, method, ratio=1.0 - target, budget="params",
                                                reconstruct=True, reconstruct_choice=choice)
            lamp = dict(ratio=1.0 - target, budget="params", scope="global", normalizer="lamp")
            row["magnitude_lamp"] = graphprune_point(path, data, calib, "magnitude", **lamp)
            row["magnitude_lamp+reconstruct"] = graphprune_point(path, data, calib, "magnitude", **lamp, reconstruct=True)
            row["magnitude_channels"] = graphprune_point(path, data, calib, "magnitude", ratio=ratio, budget="channels")
            res["points"].append(row)
            print(name, ratio, {k: (round(v["accuracy"], 3), round(v["kept_params"], 3)) for k, v in row.items()
                                if isinstance(v, dict)}, flush=True)
        out["models"][name] = res
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "digits_reconstruct.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out / 'digits_reconstruct.json'}")


if __name__ == "__main__":
    main()
