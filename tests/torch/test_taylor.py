"""--method taylor (passes/taylor.py): |Σ activation × gradient| per channel, torch path only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import graphprune  # noqa: E402
from graphprune.errors import UsageError  # noqa: E402
from graphprune.torch.api import plan_module  # noqa: E402
from models import REFERENCE_MODELS  # noqa: E402


class MLP(nn.Module):
    def __init__(self, hidden: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, hidden)
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.relu(self.b(y))
        return self.fc(y.mean((2, 3)))


def data(shape, classes, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g), torch.randint(0, classes, (n,), generator=g)


def group_of(state, tensor_prefix):
    cg = state.channels
    for g in cg.prunable:
        if any(s.tensor.startswith(tensor_prefix) for s in g.params):
            return g
    raise AssertionError(tensor_prefix)


def test_score_equals_a_hand_computation_for_one_hidden_layer():
    m = MLP()
    x, y = data((4,), 3)
    state = plan_module(m, (x[:1],), method="taylor", ratio=0.5, round_to=1, calib=(x, y))
    g = group_of(state, "fc1.weight")
    # by hand, numpy: logits = relu(x W1ᵀ + b1) W2ᵀ + b2, mean cross-entropy
    X, Y = x.numpy().astype(np.float64), y.numpy()
    W1, b1 = m.fc1.weight.detach().double().numpy(), m.fc1.bias.detach().double().numpy()
    W2, b2 = m.fc2.weight.detach().double().numpy(), m.fc2.bias.detach().double().numpy()
    h = X @ W1.T + b1
    r = np.maximum(h, 0)
    z = r @ W2.T + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(3)[Y]) / len(Y)
    dr = dz @ W2
    dh = dr * (h > 0)
    # the group's activation spaces: fc1's output (h) and the ReLU's output (r)
    expected = np.abs((h * dh).sum(0)) + np.abs((r * dr).sum(0))
    labels = g.labels[next(s for s in g.params if s.tensor == "fc1.weight")]
    got = np.zeros(6)
    got[np.arange(6)] = state.scores[g.id][labels]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)


def test_a_dead_channel_scores_zero_and_goes_first():
    m = ConvNet()
    with torch.no_grad():
        m.a.weight[5] = 0
        m.a.bias[5] = 0  # channel 5 of a's output is always zero
    x, y = data((3, 8, 8), 5)
    state = plan_module(m, (x[:1],), method="taylor", ratio=0.125, round_to=1, calib=(x, y))
    g = group_of(state, "a.weight")
    label = g.labels[next(s for s in g.params if s.tensor == "a.weight")][5]
    scores = state.scores[g.id]
    assert scores[label] == 0 and (np.delete(scores, label) > 0).all()
    assert list(state.plan.removed[g.id]) == [label]
    result = graphprune.prune(m, example_inputs=(x[:1],), method="taylor", ratio=0.125, round_to=1, calib=(x, y))
    assert result.model.a.out_channels == 7
    kept = result.model.a.weight.detach()
    original = torch.cat([m.a.weight[:5], m.a.weight[6:]]).detach()
    assert torch.equal(kept, original)


def test_zero_gradient_channel_scores_zero():
    m = ConvNet()
    with torch.no_grad():
        m.b.weight[:, 2] = 0  # nothing reads channel 2 of relu(a(x)): its gradient is zero everywhere
    x, y = data((3, 8, 8), 5)
    state = plan_module(m, (x[:1],), method="taylor", ratio=0.2, round_to=1, calib=(x, y))
    g = group_of(state, "a.weight")
    label = g.labels[next(s for s in g.params if s.tensor == "a.weight")][2]
    assert state.scores[g.id][label] == 0
    assert np.argmin(state.scores[g.id]) == label


def test_reference_model_verifies_against_the_masked_original():
    spec = REFERENCE_MODELS["resnet_basic"]
    m = spec.build()
    x, y = data(spec.input_shape[1:], 10, n=16)
    result = graphprune.prune(m, example_inputs=(x[:1],), method="taylor", ratio=0.5, round_to=1, calib=(x, y),
                              scope="global")
    assert result.report.verification.ok
    assert result.report.after.params < result.report.before.params
    taylor = next(p for p in result.report.passes if p.name == "TaylorScore")
    assert taylor.stats["points"] == 16 and not taylor.stats["groups_without_activation"]


def test_custom_loss_and_dict_calib():
    m = MLP()
    x, y = data((4,), 3)
    calls = []

    def loss(out, t):
        calls.append(len(t))
        return nn.functional.cross_entropy(out, t)

    a = plan_module(m, (x[:1],), method="taylor", round_to=1, calib={"x": x.numpy(), "labels": y.numpy()}, loss=loss)
    b = plan_module(m, (x[:1],), method="taylor", round_to=1, calib=(x, y))
    assert calls == [20]
    for gid in b.scores:
        np.testing.assert_allclose(a.scores[gid], b.scores[gid])


@pytest.mark.parametrize("options,needle", [
    ({"method": "taylor"}, "needs a torch model and labels"),
    ({"method": "taylor", "calib": (1, 2, 3)}, "calib must be (inputs, targets)"),
    ({"method": "taylor", "calib": {"x": np.zeros(2)}}, "needs a 'labels' array"),
    ({"method": "taylor", "calib": ([1], [1]), "loss": 3}, "loss must be a callable"),
    ({"method": "magnitude", "loss": lambda o, t: o}, "taylor only"),
])
def test_config_errors_are_one_line(options, needle):
    with pytest.raises(UsageError) as info:
        graphprune.PruneConfig(**options)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_path_refuses_taylor(tmp_path):
    m = MLP().eval()
    x, y = data((4,), 3)
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(m, (x[:1],), str(path), dynamo=False)
    with pytest.raises(UsageError, match="needs a torch model and labels") as info:
        graphprune.prune(path, method="taylor", calib=(x.numpy(), y.numpy()))
    assert "\n" not in str(info.value)
    r = subprocess.run([sys.executable, "-m", "graphprune.cli", "prune", str(path), "--method", "taylor"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and "needs a torch model and labels" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_torch_model_with_npz_labels(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),"
        " nn.Linear(8, 4))\n")
    x, y = data((3, 8, 8), 4)
    np.savez(tmp_path / "calib.npz", images=x.numpy(), labels=y.numpy())
    r = subprocess.run([sys.executable, "-m", "graphprune.cli", "prune", "net.py:build", "--example-input", "1,3,8,8",
                        "--method", "taylor", "--calib", "calib.npz", "--round-to", "1", "-o", "small.pt"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "verification: passed" in r.stdout
    small = torch.load(tmp_path / "small.pt", weights_only=False)
    assert small[0].out_channels == 4
