"""graphprune.torch.finetune: the CPU path, schedules, user optimizer, evaluation callback, hooks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn

import graphprune
import graphprune.torch as gt
from graphprune.errors import UsageError
from graphprune.torch.finetune import FinetuneResult, default_device
from graphprune.torch.finetune import finetune as finetune_fn


def data(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))


def acc(model, loader):
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    return float((model(x).argmax(1) == y).float().mean())


def test_finetune_trains_on_cpu_and_records_history(capsys):
    loader = data()
    model = net()
    result = gt.finetune(model, loader, epochs=8, lr=0.1, eval_fn=lambda m: acc(m, loader), device="cpu")
    assert isinstance(result, FinetuneResult) and result.model is model and not model.training
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.history[-1]["eval"] > 0.9
    assert next(model.parameters()).device.type == "cpu"
    err = capsys.readouterr().err  # not a terminal: one line per epoch
    assert err.count("epoch ") == 8 and "eval" in err


def test_lr_schedules():
    loader = data()
    cos = finetune_fn(net(), loader, epochs=4, lr=0.1, schedule="cosine", progress=False, device="cpu")
    assert cos.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # annealed to 0 over all steps
    step = finetune_fn(net(), loader, epochs=4, lr=0.1, schedule="step", progress=False, device="cpu")
    assert [h["lr"] for h in step.history] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    const = finetune_fn(net(), loader, epochs=2, lr=0.05, schedule="constant", progress=False, device="cpu")
    assert [h["lr"] for h in const.history] == [0.05, 0.05]
    with pytest.raises(UsageError):
        finetune_fn(net(), loader, epochs=1, lr=0.1, schedule="linear")
    with pytest.raises(UsageError):
        finetune_fn(net(), loader, epochs=1)


def test_user_optimizer_and_default_device(monkeypatch):
    model = net()
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    r = finetune_fn(model, data(), epochs=1, optimizer=opt, schedule="constant", progress=False, device="cpu")
    assert r.history[0]["lr"] == 0.5
    finetune_fn(model, data(), epochs=1, lr=0.01, optimizer=opt, schedule="constant", progress=False, device="cpu")
    assert opt.param_groups[0]["lr"] == 0.01
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device().type == "cpu"
    r = finetune_fn(net(), data(), epochs=1, lr=0.01, progress=False)  # device=None -> CPU here
    assert next(r.model.parameters()).device.type == "cpu"


def test_after_any_method_and_with_tpp_hooks():
    loader = data()
    model = gt.finetune(net(), loader, epochs=5, lr=0.1, progress=False, device="cpu").model
    x0 = (torch.zeros(1, 6),)
    small = graphprune.prune(model, example_inputs=x0, method="magnitude", ratio=0.5, round_to=1).model
    assert small[0].out_features == 8
    before = acc(small.eval(), loader)
    tuned = gt.finetune(small, loader, epochs=6, lr=0.1, progress=False, device="cpu").model
    assert acc(tuned, loader) > max(0.85, before)
    tpp = gt.TPP(model, example_inputs=x0, ratio=0.5, schedule="fast", delta=0.1, every=1, stabilise=5)
    gt.finetune(model, loader, epochs=4, lr=0.05, schedule="constant", hooks=tpp, progress=False, device="cpu")
    assert tpp.done and tpp.iteration == 16
    assert tpp.finish()[0].out_features == 8


def test_module_and_function_are_both_callable():
    import graphprune.torch.finetune as module

    assert callable(module) and callable(gt.finetune)
    r = module(net(), data(), epochs=1, lr=0.01, progress=False, device="cpu")
    assert isinstance(r, FinetuneResult)
