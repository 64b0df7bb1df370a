"""TPP regulariser (graphprune.torch.tpp): penalty value, gradients, schedule, shrinking, near-lossless removal."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn

import graphprune
from graphprune.errors import UsageError
from graphprune.torch.tpp import SCHEDULES, TPP, gram_loss, masked_gram_loss

X0 = (torch.zeros(1, 3, 8, 8),)


class Net(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class Residual(nn.Module):
    """A residual pair: conv1/bn1 and conv2/bn2 outputs are one coupled unit."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(a + self.bn2(self.conv2(a))).mean((2, 3)))


def task(n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    teacher = torch.randn(3 * 8 * 8, 4, generator=g)
    return x, (x.flatten(1) @ teacher).argmax(1)


def regularise(model, tpp, steps=None, lr=0.01, seed=0):
    x, y = task(seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for step in range(steps if steps is not None else tpp.total_steps):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx]) + tpp.penalty()
        opt.zero_grad()
        loss.backward()
        tpp.before_step()
        opt.step()
        tpp.after_step()
    return model.eval()


def test_package_exports_are_lazy():
    code = ("import sys, graphprune, graphprune.torch as gt; assert 'torch' not in sys.modules; "
            "from graphprune.torch.tpp import TPP; assert gt.TPP is TPP; f = gt.finetune; assert callable(f); "
            "from graphprune.torch.trp import TRP; assert gt.TRP is TRP")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_penalty_matches_a_hand_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    tpp = TPP(model, example_inputs=(torch.zeros(1, 3),), ratio=0.5)
    (layer,) = tpp.layers
    w = model[0].weight.detach().double().numpy()
    assert layer.name == "0"
    l1 = np.abs(w).mean(1)
    np.testing.assert_array_equal(np.flatnonzero(~layer.keep.numpy()), np.sort(np.argsort(l1)[:2]))
    keep = layer.keep.numpy()
    total = 0.0
    for i in range(4):
        for j in range(4):
            if not (keep[i] and keep[j]):
                total += float(w[i] @ w[j]) ** 2
    expected = 1000 * 0.3 * total / 16
    tpp.lam = 0.3
    assert float(tpp.penalty().detach()) == pytest.approx(expected, rel=1e-5)
    assert float(layer.loss().detach()) == pytest.approx(total / 16, rel=1e-5)
    tpp.lam = 0.0
    assert float(tpp.penalty()) == 0.0


def test_kept_kept_gram_entries_get_no_gradient():
    torch.manual_seed(0)
    keep = torch.tensor([True, False, True, True, False])
    m = keep.double()
    penalised = 1 - torch.outer(m, m)
    w = torch.randn(5, 7, dtype=torch.float64)
    gram = (w @ w.t()).requires_grad_()
    masked_gram_loss(gram, penalised).backward()
    kk = torch.outer(keep, keep)
    assert torch.all(gram.grad[kk] == 0)
    assert torch.all(gram.grad[~kk] != 0)
    # through the weights: with the pruned filters at zero, the penalty has no gradient at all
    w2 = w.clone()
    w2[~keep] = 0
    w2.requires_grad_()
    gram_loss(w2, penalised).backward()
    assert torch.count_nonzero(w2.grad) == 0


def test_l2_on_pruned_filters_bias_and_bn_goes_to_the_gradients():
    torch.manual_seed(0)
    model = Net()
    tpp = TPP(model, example_inputs=X0, ratio=0.5)
    assert [layer.name for layer in tpp.layers] == ["conv1", "conv2"]
    assert {s.path for s in tpp.slices} == {"conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "conv2.bias",
                                            "bn2.weight", "bn2.bias"}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    tpp.lam = 0.5
    tpp.before_step()
    for s in tpp.slices:
        removed = s.removed
        g, p = s.param.grad, s.param.detach()
        torch.testing.assert_close(g[removed], 0.5 * p[removed])
        assert torch.all(g[~removed] == 0)
    assert torch.all(model.fc.weight.grad == 0)


def test_schedules():
    assert SCHEDULES["paper"] == {"delta": 1e-4, "every": 10, "ceiling": 1.0, "stabilise": 10_000}
    paper = TPP(Net(), example_inputs=X0, ratio=0.5)
    assert paper.total_steps == 110_000
    fast = TPP(Net(), example_inputs=X0, ratio=0.5, schedule="fast")
    assert fast.total_steps <= 400
    lams = []
    while not fast.done:
        fast.after_step()
        lams.append(fast.lam)
    assert len(lams) == fast.total_steps and lams[0] == 0 and lams[1] == pytest.approx(0.01)
    assert max(lams) == 1.0 and lams.index(1.0) < 300
    custom = TPP(Net(), example_inputs=X0, ratio=0.5, schedule="fast", delta=0.25, every=1, stabilise=3)
    for expected in (0.25, 0.5, 0.75, 1.0):
        custom.after_step()
        assert custom.lam == expected
    assert custom.phase == "stabilise"
    for _ in range(3):
        custom.after_step()
    assert custom.done and custom.lam == 1.0
    restored = TPP(Net(), example_inputs=X0, ratio=0.5, delta=0.25, every=1, stabilise=3)
    restored.load_state_dict(custom.state_dict())
    assert restored.done
    with pytest.raises(UsageError):
        TPP(Net(), example_inputs=X0, schedule="slow")
    with pytest.raises(UsageError):
        TPP(Net())


def test_coupled_residual_unit_is_regularised_in_every_layer():
    model = Residual()
    tpp = TPP(model, example_inputs=X0, ratio=0.5, budget="channels")
    assert [layer.name for layer in tpp.layers] == ["conv1", "conv2"]
    k1, k2 = (layer.keep for layer in tpp.layers)
    assert torch.equal(k1, k2) and int(k1.sum()) == 4
    assert {s.path for s in tpp.slices} >= {"bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias"}


def test_plan_given_or_from_another_module():
    model = Net()
    plan = graphprune.plan(model, example_inputs=X0, method="magnitude", ratio=0.25, budget="channels", round_to=1)
    tpp = TPP(model, plan)
    assert all(int((~layer.keep).sum()) == 2 for layer in tpp.layers)
    with pytest.raises(UsageError, match="example_inputs"):
        tpp.finish()
    with pytest.raises(UsageError, match="no conv / linear"):
        TPP(nn.Sequential(nn.Linear(3, 4)), plan)


def test_pruned_filters_shrink_far_below_kept_ones():
    torch.manual_seed(0)
    model = Net()
    tpp = TPP(model, example_inputs=X0, ratio=0.5, schedule="fast", delta=0.05, every=1, stabilise=0)
    before = tpp.norm_ratio()
    regularise(model, tpp, steps=60)
    assert tpp.lam == 1.0
    for kept, pruned in tpp.filter_norms().values():
        assert pruned.max() < 0.1 * kept.mean(), (kept, pruned)
    assert tpp.norm_ratio() < 0.05 * before


def test_removal_after_tpp_changes_outputs_far_less_than_before():
    torch.manual_seed(0)
    model = regularise(Net(), TPP(Net(), example_inputs=X0, ratio=0.5), steps=100)  # a trained model (λ = 0)
    x = task(64, seed=1)[0]

    def relative_change(m, small):
        with torch.no_grad():
            a, b = m.eval()(x), small.eval()(x)
        return float((a - b).norm() / a.norm())

    l1 = graphprune.prune(model, example_inputs=X0, method="magnitude", ratio=0.5, budget="channels", round_to=1).model
    before = relative_change(model, l1)
    reg = copy.deepcopy(model)
    tpp = TPP(reg, example_inputs=X0, ratio=0.5, budget="channels", schedule="fast", delta=0.05, every=1,
              stabilise=20, zero_in_stabilisation=False)
    regularise(reg, tpp, seed=2)
    assert tpp.done
    small = tpp.finish(zero=False, verify=False)  # the removal alone, on the weights as TPP left them
    after = relative_change(reg, small)
    assert before > 0.05
    assert after < 0.1 * before, (before, after)
    assert [small.conv1.out_channels, small.conv2.out_channels] == [4, 4]
    # finish() with zeroing: the result is verified against the masked model and equals it
    small = tpp.finish()
    assert tpp.verification.ok and relative_change(reg, small) < 1e-5
