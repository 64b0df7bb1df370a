"""TRP hooks and the torch decomposition (graphprune.torch.trp, graphprune.torch.lowrank)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from graphprune.torch.lowrank import decompose_module, decompose_module_report  # noqa: E402
from graphprune.torch.trp import TRP  # noqa: E402


def test_package_import_is_light():
    code = "import sys, graphprune.torch; assert 'torch' not in sys.modules, 'graphprune.torch imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- decompose_module


CONVS = {
    "1x1": dict(kernel_size=1),
    "3x3": dict(kernel_size=3, padding=1),
    "3x3_nobias": dict(kernel_size=3, padding=1, bias=False),
    "strided": dict(kernel_size=3, stride=2, padding=1),
    "strided_rect": dict(kernel_size=(3, 5), stride=(2, 3), padding=(1, 2)),
    "dilated": dict(kernel_size=3, dilation=2, padding=2),
    "same": dict(kernel_size=(3, 4), padding="same"),
    "reflect": dict(kernel_size=3, padding=1, padding_mode="reflect"),
    "grouped": dict(kernel_size=3, padding=1, groups=2),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("scheme", ["channel", "spatial"])
@pytest.mark.parametrize("name", sorted(CONVS) + ["linear"])
def test_full_rank_decomposition_is_exact(name, scheme):
    torch.manual_seed(0)
    layer = nn.Linear(12, 20) if name == "linear" else nn.Conv2d(6, 10, **CONVS[name])
    x = torch.randn(2, 3, 12) if name == "linear" else torch.randn(2, 6, 11, 13)
    small, (decision,) = decompose_module_report(layer, rank_ratio=1.0, scheme=scheme, only_if_cheaper=False,
                                                 example_input=x)
    assert decision.decomposed and decision.rank == decision.full_rank
    assert isinstance(small, nn.Sequential) and [n for n, _ in small.named_children()] == ["lowrank_a", "lowrank_b"]
    with torch.no_grad():
        torch.testing.assert_close(small(x), layer(x), rtol=1e-4, atol=1e-5)


def test_decomposition_at_rank_r_equals_the_truncated_weight():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    small = decompose_module(conv, rank_ratio=0.25, scheme="spatial", only_if_cheaper=False)
    w = conv.weight.detach().double().numpy()
    m = w.transpose(1, 2, 0, 3).reshape(8 * 3, 16 * 3)
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    r = small.lowrank_a.out_channels
    assert r == 6  # ceil(0.25 * 24)
    w_r = ((u[:, :r] * s[:r]) @ vt[:r]).reshape(8, 3, 16, 3).transpose(2, 0, 1, 3)
    ref = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    ref.load_state_dict({"weight": torch.from_numpy(w_r).float(), "bias": conv.bias.detach()})
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(small(x), ref(x), rtol=1e-4, atol=1e-5)


def test_decompose_module_replaces_by_name_and_skips_what_costs_more():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                        nn.Conv2d(4, 64, 3, padding=1), nn.Flatten(), nn.Linear(64 * 6 * 6, 10))
    with torch.no_grad():  # make the big conv low rank so that it pays
        net[3].weight.copy_(net[3].weight[:2].repeat(32, 1, 1, 1))
    x = torch.randn(1, 3, 6, 6)
    small, decisions = decompose_module_report(net, energy=1.0, example_input=x)
    by_name = {d.name: d for d in decisions}
    assert "2" not in by_name  # depthwise: never a candidate
    assert not by_name["0"].decomposed and "would not lower MACs" in by_name["0"].why
    assert not by_name["5"].decomposed
    assert by_name["3"].decomposed and by_name["3"].rank == 2 and by_name["3"].macs_after < by_name["3"].macs_before
    assert isinstance(small[3], nn.Sequential) and isinstance(small[0], nn.Conv2d)
    assert isinstance(net[3], nn.Conv2d)  # the input module is untouched
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x), rtol=1e-4, atol=1e-4)  # rank 2 weight: exact at energy 1


# --------------------------------------------------------------------------- TRP


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def test_nuclear_subgradient_is_added_to_the_grad():
    model = tiny()
    trp = TRP(model, energy=0.9, nuclear_weight=0.5)
    model(torch.randn(2, 3, 4, 4)).sum().backward()
    before = {n: m.weight.grad.clone() for n, m in trp.targets.items()}
    trp.before_step()
    lin = model[3].weight.detach().double().numpy()
    u, s, vt = np.linalg.svd(lin, full_matrices=False)
    r = int(np.searchsorted(np.cumsum(s ** 2) / np.sum(s ** 2), 0.9) + 1)
    expected = 0.5 * (u[:, :r] @ vt[:r])
    np.testing.assert_allclose((model[3].weight.grad - before["3"]).double().numpy(), expected, atol=1e-5)
    conv = model[0].weight.detach().double().numpy().reshape(16, -1)  # channel scheme: n x c k k
    u, s, vt = np.linalg.svd(conv, full_matrices=False)
    r = int(np.searchsorted(np.cumsum(s ** 2) / np.sum(s ** 2), 0.9) + 1)
    expected = 0.5 * (u[:, :r] @ vt[:r]).reshape(16, 3, 3, 3)
    np.testing.assert_allclose((model[0].weight.grad - before["0"]).double().numpy(), expected, atol=1e-5)


def test_projection_every_m_steps_lowers_rank():
    model = tiny()
    trp = TRP(model, energy=0.8, every=3, nuclear_weight=0.0, scheme="spatial")
    full = torch.linalg.matrix_rank(model[3].weight.detach()).item()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    projected = []
    for _ in range(6):
        opt.zero_grad()
        model(torch.randn(4, 3, 4, 4)).pow(2).mean().backward()
        trp.before_step()
        opt.step()
        projected.append(trp.after_step())
    assert projected == [False, False, True, False, False, True]
    r_lin, full_lin = trp.ranks["3"]
    assert r_lin < full_lin == full
    assert torch.linalg.matrix_rank(model[3].weight.detach()).item() == r_lin
    w = model[0].weight.detach()
    spatial = w.permute(1, 2, 0, 3).reshape(3 * 3, 16 * 3)
    assert torch.linalg.matrix_rank(spatial).item() == trp.ranks["0"][0] < 9


def test_decompose_after_trp_equals_the_trained_model():
    model = tiny()
    trp = TRP(model, energy=0.9)
    ranks = trp.project()
    small = trp.decompose(example_input=torch.randn(1, 3, 4, 4))
    assert isinstance(small[3], nn.Sequential) and hasattr(small[3], "lowrank_a")
    assert small[3].lowrank_a.out_features == ranks["3"]  # the projection's rank, not a second energy cut
    x = torch.randn(5, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-4)
    assert isinstance(model[3], nn.Linear)  # decompose() returns a copy
    with torch.no_grad():
        model[3].weight.add_(0.01 * torch.randn_like(model[3].weight))  # changed since the projection
    assert trp.decomposition_ranks()["3"] == trp.current_ranks()["3"]


def test_trp_rejects_bad_options():
    with pytest.raises(ValueError):
        TRP(tiny(), every=0)
    with pytest.raises(ValueError):
        TRP(tiny(), scheme="diagonal")
