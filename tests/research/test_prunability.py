"""Prunability (graphprune/prunability.py): the bisection on synthetic curves, the CLI, the torch API."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from graphprune.errors import UsageError
from graphprune.tools.prunability import cross_entropy, drift, kept_grid, smallest_within


def counting(f):
    calls = []

    def g(k):
        calls.append(k)
        return f(k)

    return g, calls


def test_bisection_finds_known_answer_on_smooth_curve():
    # loss(k) = 1 + 9 (1 - k)^2, limit 1.1: exact answer k* = 1 - sqrt(0.1 / 9)
    loss, calls = counting(lambda k: 1 + 9 * (1 - k) ** 2)
    s = smallest_within(loss, 1.1, kept_grid(10), resolution=0.01)
    true = 1 - math.sqrt(0.1 / 9)
    assert true <= s.answer <= true + 0.01
    lo, hi = s.bracket
    assert lo < true <= hi and hi - lo <= 0.01 + 1e-12
    assert len(calls) == len(set(calls)) <= 10 + 4  # each point once; log2(0.1 / 0.01) < 4 halvings
    assert all(v <= 1.1 for k, v, ok in s.evaluations if ok) and s.non_monotone == ()


def test_bisection_step_curve_and_edges():
    s = smallest_within(lambda k: 0.0 if k >= 0.337 else 1.0, 0.5, kept_grid(4), resolution=0.001)
    assert 0.337 <= s.answer <= 0.338
    # every grid point within: the answer lies below the smallest grid point (0 is taken as not within)
    s = smallest_within(lambda k: 0.0 if k > 0.03 else 1.0, 0.5, kept_grid(10), resolution=0.005)
    assert 0.03 < s.answer <= 0.035
    # nothing within, not even k = 1
    assert smallest_within(lambda k: 2.0, 1.0, kept_grid(5)).answer is None
    # NaN counts as not within
    s = smallest_within(lambda k: float("nan") if k < 0.5 else 0.0, 0.1, kept_grid(4), resolution=0.01)
    assert 0.5 <= s.answer <= 0.51
    with pytest.raises(UsageError):
        kept_grid(1)


def test_bisection_reports_non_monotone_curve():
    # within at 0.2 again, but not at 0.3–0.5: the answer is the edge of the top region, 0.2 is reported
    s = smallest_within(lambda k: 0.0 if (k >= 0.55 or abs(k - 0.2) < 1e-9) else 1.0, 0.5, kept_grid(10),
                        resolution=0.01)
    assert 0.55 <= s.answer <= 0.56 and s.non_monotone == (0.2,)


def test_losses():
    logits = np.array([[10.0, 0.0], [0.0, 10.0], [10.0, 0.0]])
    ce, acc = cross_entropy(logits, np.array([0, 1, 1]))
    assert acc == pytest.approx(2 / 3) and ce == pytest.approx((2 * math.log1p(math.exp(-10)) + 10 + math.log1p(math.exp(-10))) / 3)
    y0 = [np.ones((2, 3))]
    assert drift(y0, y0) == 0 and drift([2 * y0[0]], y0) == pytest.approx(1.0)


# ---- the CLI on a small exported model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from models.digits import DigitsVGG, export, load_data

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("prunability")
    path = export(DigitsVGG(widths=(8, 16), hidden=32), folder / "vgg.onnx")
    d = load_data(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 40)
    np.savez(folder / "data.npz", input=d.x_test[:40], labels=labels)
    np.savez(folder / "inputs.npz", input=d.x_test[:40])
    return path, folder


def test_cli_prunability_with_labels(small_onnx, capsys):
    from graphprune.cli.main import main

    path, folder = small_onnx
    rc = main(["prunability", str(path), "--data", str(folder / "data.npz"), "--grid", "4", "--resolution", "0.05",
               "--json", "--plot", str(folder / "curve.png")])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["loss"] == "cross_entropy" and out["points"] == 40
    assert (folder / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kept = [p["kept"] for p in out["curve"]]
    assert kept == sorted(kept) and kept[-1] == 1.0 and {0.25, 0.5, 0.75} <= set(kept)
    base = out["baseline"]
    assert base["params_fraction"] == 1.0 and out["limit"] == pytest.approx(1.1 * base["loss"])
    alpha = out["prunability"]
    assert alpha["loss"] <= out["limit"] and alpha["ratio"] == pytest.approx(1 - alpha["kept"])
    assert 0 < alpha["params_fraction"] <= 1 and alpha["params"] == round(alpha["params_fraction"] * base["params"])
    assert out["prune_potential"] is not None
    assert base["accuracy"] - out["prune_potential"]["accuracy"] <= 0.005 + 1e-12
    fractions = [p["params_fraction"] for p in out["curve"]]
    assert fractions == sorted(fractions) and fractions[0] < 0.5  # params actually kept, not the ratio


def test_cli_prunability_drift_text(small_onnx, capsys):
    from graphprune.cli.main import main

    path, folder = small_onnx
    rc = main(["prunability", str(path), "--data", str(folder / "inputs.npz"), "--grid", "4", "--resolution", "0.05"])
    out = capsys.readouterr().out
    assert rc == 0 and "output drift (no labels given)" in out and "prunability α: kept" in out
    assert "prune potential" not in out


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 1, 8, 8), np.float32)}, "lacks input(s) ['input']"),
    ({"input": np.zeros((3, 1, 8, 8), np.float32), "labels": np.zeros(4, np.int64)}, "'labels' has shape (4,)"),
    ({"input": np.zeros((3, 1, 8, 8), np.float32), "labels": np.full(3, 10)}, "must lie in [0, 10)"),
    ({"input": np.zeros((3, 1, 8, 8), np.float32), "labels": np.zeros(3, np.float32)}, "integer array"),
    ({"input": np.zeros((3, 8, 8), np.float32)}, "has shape (3, 8, 8)"),
])
def test_cli_prunability_bad_data(small_onnx, tmp_path, capsys, arrays, message):
    from graphprune.cli.main import main

    path, _ = small_onnx
    np.savez(tmp_path / "bad.npz", **arrays)
    rc = main(["prunability", str(path), "--data", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and err.startswith("graphprune: error: --data")


def test_cli_prunability_missing_file(small_onnx, tmp_path, capsys):
    from graphprune.cli.main import main

    rc = main(["prunability", str(small_onnx[0]), "--data", str(tmp_path / "nope.npz")])
    assert rc == 2 and "no such file" in capsys.readouterr().err


# ---- the Python API on a torch module -------------------------------------------------------------------


def test_api_on_torch_module():
    torch = pytest.importorskip("torch")
    from torch import nn

    import graphprune

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 5))
    x = torch.randn(64, 4, 4)
    with torch.no_grad():
        labels = model(x).argmax(1).numpy()  # the model is right on every point: accuracy 1 unpruned
    r = graphprune.prunability(model, {"x": x, "labels": labels}, grid=4, resolution=0.05)
    assert r.loss_kind == "cross_entropy" and r.baseline.accuracy == 1.0
    assert r.baseline.params == sum(p.numel() for p in model.parameters())
    assert r.alpha is not None and r.alpha.loss <= r.limit
    # params are counted on the pruned module: re-prune at α's ratio and count
    pruned = graphprune.prune(model, example_inputs=x[:1], method="magnitude", ratio=r.alpha.ratio, scope="global",
                              round_to=1).model
    assert r.alpha.params == sum(p.numel() for p in pruned.parameters())
    assert r.potential is not None and r.potential.accuracy >= 1.0 - 0.005
    d = graphprune.prunability(model, x.numpy(), grid=4, resolution=0.05, tolerance=0.2)
    assert d.loss_kind == "output_drift" and d.baseline.loss == 0 and d.alpha.loss <= 0.2
    assert {p.kept for p in d.curve} >= {0.25, 0.5, 0.75, 1.0}
