"""`graphprune train`: a torch model plus a data set, pruned (TPP or a method) and fine-tuned, from the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

NET = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 8, 3, padding=1)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 4 * 4, 3)

        def forward(self, x):
            x = torch.relu(self.c1(x))
            x = torch.relu(self.c2(x) + x)
            return self.fc(torch.flatten(nn.functional.max_pool2d(x, 2), 1))

    def build():
        torch.manual_seed(0)
        return Net()
""")


@pytest.mark.parametrize("method", ["magnitude", "tpp"])
def test_train_prunes_finetunes_and_writes(tmp_path, method):
    (tmp_path / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 128)
    x = (rng.standard_normal((128, 1, 8, 8)) + labels[:, None, None, None]).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, labels=labels)
    r = subprocess.run([sys.executable, "-m", "graphprune.cli", "train", "net.py:build", "--example-input",
                        "1,1,8,8", "--data", "data.npz", "--method", method, "--ratio", "0.5", "--epochs", "1",
                        "--batch-size", "64", "-o", "small.pt"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "params" in r.stdout and "accuracy" in r.stdout
    sys.path.insert(0, str(tmp_path))
    small = torch.load(tmp_path / "small.pt", weights_only=False)
    assert small(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    # train has no --budget: --ratio 0.5 is half the model's params (the default budget), met by one fraction of the
    # one channel group (c1 and c2, joined by the residual add)
    assert small.c1.out_channels == small.c2.out_channels == small.c2.in_channels < 8
    params = [sum(p.numel() for p in m.parameters()) for m in (sys.modules["net"].build(), small)]
    assert abs(params[1] / params[0] - 0.5) < 0.05


def test_train_needs_labels(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    np.savez(tmp_path / "data.npz", x=np.zeros((4, 1, 8, 8), np.float32))
    r = subprocess.run([sys.executable, "-m", "graphprune.cli", "train", "net.py:build", "--example-input",
                        "1,1,8,8", "--data", "data.npz", "-o", "small.pt"], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "labels" in r.stderr


def data(tmp_path) -> None:
    (tmp_path / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 128)
    x = (rng.standard_normal((128, 1, 8, 8)) + labels[:, None, None, None]).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, labels=labels)


def test_train_steps_prunes_in_rounds_and_lands_on_the_one_shot_size(tmp_path):
    """``--steps 2``: two rounds (prune to (1 - 0.75)^(1/2) = 1/2, then to 1/4 of the params, fine-tuning after
    each), reported per round; the result is about the one-shot target's size."""
    data(tmp_path)
    r = subprocess.run([sys.executable, "-m", "graphprune.cli", "train", "net.py:build", "--example-input",
                        "1,1,8,8", "--data", "data.npz", "--method", "magnitude", "--ratio", "0.75", "--steps", "2",
                        "--epochs", "1", "-o", "small.pt"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "in 2 rounds" in r.stdout and "round 1:" in r.stdout and "round 2:" in r.stdout
    sys.path.insert(0, str(tmp_path))
    small = torch.load(tmp_path / "small.pt", weights_only=False)
    params = [sum(p.numel() for p in m.parameters()) for m in (sys.modules["net"].build(), small)]
    assert abs(params[1] / params[0] - 0.25) < 0.05


def test_iterative_rounds_follow_the_geometric_schedule():
    """Each round asks the model as it is for what brings it to (1 - ratio)^(k/K) of the original; every round is
    a verified prune; fine-tuning runs after each (the evaluation after it differs from the one before)."""
    from graphprune.torch.iterative import iterative_prune, kept_targets

    torch.manual_seed(0)
    ns = {}
    exec(NET, ns)
    model = ns["build"]()
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 3, (64,))
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    seen = []
    result = iterative_prune(model, batches, (torch.zeros(1, 1, 8, 8),), ratio=0.75, steps=3, epochs=1, lr=0.01,
                             round_to=1, eval_fn=lambda m: seen.append(float(m(x).sum())) or len(seen))
    before = sum(p.numel() for p in model.parameters())
    kept = [r.params / before for r in result.rounds]
    assert kept == sorted(kept, reverse=True) and len(kept) == 3
    for got, want in zip(kept, kept_targets(0.75, 3)):
        assert abs(got - want) < 0.06
    assert all(r.pruned != r.finetuned for r in result.rounds)
    assert sum(p.numel() for p in result.model.parameters()) == result.rounds[-1].params


@pytest.mark.parametrize("argv,message", [(["--steps", "0"], "steps 0"), (["--method", "tpp", "--steps", "2"], "tpp")])
def test_train_steps_bad_input_is_one_line(tmp_path, argv, message):
    data(tmp_path)
    r = subprocess.run([sys.executable, "-m", "graphprune.cli", "train", "net.py:build", "--example-input",
                        "1,1,8,8", "--data", "data.npz", *argv, "-o", "small.pt"], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
