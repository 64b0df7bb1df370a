"""The torch path end to end: every reference model prunes into a smaller nn.Module that equals the masked
original, trains, and exports to ONNX; user-defined forwards; the GraphModule fallback and its alternative."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import fx, nn  # noqa: E402

from graphprune.errors import UsageError  # noqa: E402
from graphprune.torch.api import inspect_module, plan_module, prune_module  # noqa: E402
from models import REFERENCE_MODELS  # noqa: E402


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def sgd_lowers_loss(model: nn.Module, input_shape: tuple[int, ...], steps: int = 5) -> tuple[float, float]:
    """A few SGD steps on one random batch (train mode) with an optimizer built on the pruned parameters."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((4, *input_shape[1:]), generator=g)
    y = torch.randint(0, 10, (4,), generator=g)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1]


# Reference models whose forward bakes channel counts into literals, so the pruned model is the rewritten fx
# GraphModule (report.notes says which call): model → the call kind its note names.
BAKED = {
    "grouped_split": "split",  # torch.split sizes and torch.chunk
    "attention_block": "(reshape): arg 3 would be",  # x.reshape(b, t, self.heads, self.head_dim): the head count
    "packed_attention": "(reshape): arg 4 would be",  # reshape(b, t, 3, self.heads, self.head_dim): the head count
}


@pytest.mark.parametrize("ratio", [0.3, 0.5])
@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_reference_model_prunes_verifies_trains_exports(name, ratio):
    spec = REFERENCE_MODELS[name]
    original = spec.build()
    keys = set(original.state_dict())
    # round_to=1: the ratio, not the rounding, decides (with the default 8, shufflenet_unit's only prunable group,
    # 16 units, keeps all of them at ratio 0.3)
    result = prune_module(original, torch.randn(spec.input_shape), ratio=ratio, round_to=1)
    small, report = result.model, result.report
    v = report.verification
    assert v.ok, v.failure
    assert v.checks == {"forward": "ok", "masked_original": "ok", "onnxruntime": "ok"}
    assert n_params(small) < n_params(original) == report.before.params
    assert report.after.params == n_params(small)
    assert report.after.macs < report.before.macs and report.units_removed > 0
    # the user's model is untouched; the small one keeps parameter names and loads its own state_dict
    assert n_params(spec.build()) == n_params(original) and set(original.state_dict()) == keys
    state = small.state_dict()
    assert set(state) <= keys
    twin = copy.deepcopy(small)
    twin.load_state_dict(state)
    assert small(torch.randn(2, *spec.input_shape[1:])).shape == (2, 10)
    expect_graph_module = name in BAKED
    assert isinstance(small, fx.GraphModule) == expect_graph_module
    notes = [n for n in report.notes if n.startswith("returned an fx.GraphModule")]
    if expect_graph_module:
        assert any(BAKED[name] in n for n in notes), report.notes  # the note names the call and why
    else:
        assert type(small) is type(original) and not notes
    first, last = sgd_lowers_loss(small, spec.input_shape)
    assert last < first


def test_module_attributes_follow_the_new_shapes():
    spec = REFERENCE_MODELS["mobilenet_v2"]
    small = prune_module(spec.build(), torch.randn(spec.input_shape), ratio=0.5).model
    for m in small.modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.shape[0] == m.out_channels and m.weight.shape[1] * m.groups == m.in_channels
        if isinstance(m, nn.BatchNorm2d):
            assert m.weight.shape == m.running_mean.shape == m.running_var.shape == (m.num_features,)
        if isinstance(m, nn.Linear):
            assert m.weight.shape == (m.out_features, m.in_features)
    depthwise = [m for m in small.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert "groups=" in repr(depthwise[0])


class UserNet(nn.Module):
    """Residual add around a depthwise conv, a concat, and a flatten -> Linear head (x.view(x.size(0), -1))."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.pw = nn.Conv2d(16, 16, 1)
        self.branch = nn.Conv2d(16, 8, 3, padding=1)
        self.mix = nn.Conv2d(24, 12, 1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(12 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        y = x + self.pw(F.relu(self.dw(x)))
        z = torch.cat([y, self.branch(y)], dim=1)
        z = self.pool(F.relu(self.mix(z)))
        return self.head(z.view(z.size(0), -1))


def user_net() -> UserNet:
    torch.manual_seed(0)
    m = UserNet()
    with torch.no_grad():
        m.bn.running_mean.normal_(0, 0.1)
        m.bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_user_defined_module():
    original = user_net()
    result = prune_module(original, torch.randn(1, 3, 16, 16), ratio=0.5, budget="channels", round_to=1)
    small = result.model
    assert type(small) is UserNet and result.report.verification.ok, result.report.verification.failure
    # one group: the residual stream (stem, bn, the depthwise conv a whole group per channel, pw) and the branch,
    # joined by the concat (24 units: 16 + 8); a second group: mix -> pool -> view -> head
    assert sorted(g.n_units for g in result.channels.prunable) == [12, 24]
    c = small.stem.out_channels
    assert c < 16 and small.bn.num_features == c and small.pw.in_channels == small.pw.out_channels == c
    assert small.dw.groups == small.dw.in_channels == small.dw.out_channels == c and small.branch.in_channels == c
    assert 1 <= small.branch.out_channels < 8 and small.mix.in_channels == c + small.branch.out_channels
    assert c + small.branch.out_channels == 24 - len(result.plan.removed[max(result.plan.removed, key=lambda g: len(
        result.channels.groups[g].spaces))])
    # flatten -> Linear: each of mix's channels owns 2x2 = 4 head inputs
    assert small.mix.out_channels == 6 and small.head.in_features == 4 * 6 and small.head.out_features == 10
    first, last = sgd_lowers_loss(small, (1, 3, 16, 16))
    assert last < first


class LiteralView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8 * 4, 10)

    def forward(self, x):
        y = F.adaptive_avg_pool2d(self.conv2(torch.relu(self.conv(x))), 2)
        return self.fc(y.reshape(1, 32))  # literal sizes


def test_literal_sizes_give_a_graph_module_or_freeze():
    torch.manual_seed(0)
    m, x = LiteralView().eval(), torch.randn(1, 3, 8, 8)
    result = prune_module(m, x, ratio=0.5, budget="channels", round_to=1)
    assert isinstance(result.model, fx.GraphModule) and result.report.verification.ok
    assert type(result.model).__name__ == "LiteralViewGraphModule"
    assert any("reshape" in note and "would be 32, must be 16" in note for note in result.report.notes)
    assert result.model.fc.in_features == 16 and result.model.conv.out_channels == 8
    assert set(result.model.state_dict()) == set(m.state_dict())
    frozen = prune_module(m, x, ratio=0.5, budget="channels", round_to=1, baked="freeze")
    assert type(frozen.model) is LiteralView and frozen.report.verification.ok
    assert frozen.model.conv2.out_channels == 8 and frozen.model.conv.out_channels == 8  # only the free group
    assert any("frozen" in note for note in frozen.report.notes)


class Functional(nn.Module):
    """Functional depthwise conv with a literal ``groups``, slices with literal bounds, a size used as a number."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Conv2d(3, 8, 1)
        self.w = nn.Parameter(torch.randn(8, 1, 3, 3))
        self.a = nn.Conv2d(4, 4, 1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = F.conv2d(torch.relu(self.inp(x)), self.w, padding=1, groups=8)
        y = y * (1.0 / y.size(1))  # a size used as a number: a constant of the analysed model, as in ONNX
        return self.a(y[:, :4]) + self.b(y[:, 4:])


def test_functional_literals_are_rewritten():
    torch.manual_seed(0)
    m, x = Functional().eval(), torch.randn(1, 3, 8, 8)
    result = prune_module(m, x, ratio=0.5, round_to=1)
    assert result.report.verification.ok, result.report.verification.failure
    gm = result.model
    assert isinstance(gm, fx.GraphModule)
    assert gm.w.shape == (4, 1, 3, 3) and gm.inp.out_channels == 4
    notes = "\n".join(result.report.notes)
    assert "groups would be 8, must be 4" in notes  # F.conv2d
    assert "arg 1 would be 0.25, must be 0.125" in notes  # y * (1 / y.size(1)) keeps the analysed model's value
    assert "slice(None, 4, None)" in notes and "slice(4, None, None)" in notes


def test_exclude_by_module_path():
    spec = REFERENCE_MODELS["resnet_basic"]
    result = prune_module(spec.build(), torch.randn(spec.input_shape), ratio=0.5, exclude=("layers.0.conv1",))
    assert result.report.verification.ok
    assert result.model.layers[0].conv1.out_channels == 16 and result.model.layers[1].conv1.out_channels < 32


def test_ratio_zero_returns_an_equal_copy():
    spec = REFERENCE_MODELS["resnet_basic"]
    original = spec.build()
    result = prune_module(original, torch.randn(spec.input_shape), ratio=0.0)
    assert result.plan.empty and result.model is not original and type(result.model) is type(original)
    x = torch.randn(spec.input_shape)
    assert torch.equal(result.model(x), original(x))


def test_train_mode_module_is_pruned_and_stays_in_train_mode():
    spec = REFERENCE_MODELS["plain_cnn"]
    original = spec.build().train()
    stats = original.block1[1].running_mean.clone()
    result = prune_module(original, torch.randn(spec.input_shape), ratio=0.5)
    assert result.model.training and original.training
    assert torch.equal(original.block1[1].running_mean, stats)


def test_plan_and_inspect():
    spec = REFERENCE_MODELS["vgg"]
    x = torch.randn(spec.input_shape)
    state = plan_module(spec.build(), x, ratio=0.5)
    assert state.plan is not None and not state.plan.empty and state.channels.prunable
    inspection = inspect_module(spec.build(), x)
    assert inspection.cost.params == n_params(spec.build()) and inspection.channels.prunable


def test_strict_refuses_unknown_ops():
    from graphprune.errors import UnsupportedModelError

    class Cumsum(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return torch.cumsum(self.conv(x), 1)

    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(UnsupportedModelError, match="torch.cumsum"):
        prune_module(Cumsum(), x, strict=True)
    report = prune_module(Cumsum(), x, ratio=0.5).report
    assert report.unmapped_ops == ("Unknown:torch.cumsum (cumsum)",) and report.units_removed == 0


def test_methods_that_need_onnx_are_refused():
    spec = REFERENCE_MODELS["plain_cnn"]
    with pytest.raises(UsageError):
        prune_module(spec.build(), torch.randn(spec.input_shape), method="lowrank")


def test_save_pt_and_onnx(tmp_path):
    import onnx

    spec = REFERENCE_MODELS["plain_cnn"]
    result = prune_module(spec.build(), torch.randn(spec.input_shape), ratio=0.5)
    pt = result.save(tmp_path / "small.pt")
    loaded = torch.load(pt, weights_only=False)
    assert n_params(loaded) == n_params(result.model)
    onnx.checker.check_model(onnx.load(str(result.save(tmp_path / "small.onnx"))))


class Recurrent(nn.Module):
    """A recurrent layer whose initial state is computed from the input and whose final states feed the head."""

    def __init__(self, cell: type[nn.Module], bidirectional: bool, batch_first: bool, **kw):
        super().__init__()
        self.lstm, self.batch_first = cell is nn.LSTM, batch_first
        self.dirs = 2 if bidirectional else 1
        self.embed = nn.Linear(5, 8)
        self.init = nn.Linear(5, 12)
        self.rnn = cell(8, 12, num_layers=2, batch_first=batch_first, bidirectional=bidirectional, **kw)
        self.proj = getattr(self.rnn, "proj_size", 0)
        out = self.proj or 12
        self.fc = nn.Linear(out * self.dirs + out + 12, 10)

    def forward(self, x):
        seq = x if self.batch_first else x.transpose(0, 1)
        h0 = torch.tanh(self.init(seq.mean(1))).unsqueeze(0)
        h0 = torch.cat([h0] * (2 * self.dirs), 0)
        if self.proj:  # h0 would have proj_size features
            y, (h, c) = self.rnn(torch.relu(self.embed(x)))
            c = c + h0
        elif self.lstm:
            y, (h, c) = self.rnn(torch.relu(self.embed(x)), (h0, h0 * 0.5))
        else:
            y, h = self.rnn(torch.relu(self.embed(x)), h0)
            c = h
        last = y[:, -1] if self.batch_first else y[-1]
        return self.fc(torch.cat([last, h[-1], c[-2] if self.dirs == 2 else c[-1]], 1))


@pytest.mark.parametrize("cell, bidirectional, batch_first", [(nn.LSTM, True, False), (nn.GRU, False, True),
                                                              (nn.RNN, True, True)])
def test_recurrent_layers_are_resized(cell, bidirectional, batch_first):
    torch.manual_seed(0)
    m = Recurrent(cell, bidirectional, batch_first).eval()
    x = torch.randn(3, 4, 5)  # (B, T, F) for batch_first, (T, B, F) otherwise
    result = prune_module(m, x, ratio=0.5, round_to=1)
    assert result.report.verification.ok, result.report.verification.failure
    small = result.model
    assert type(small) is Recurrent and set(small.state_dict()) == set(m.state_dict())
    rnn, gates = small.rnn, {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cell]
    h, dirs = rnn.hidden_size, small.dirs
    assert 1 <= h < 12 and small.init.out_features == h  # the initial state's producer shrinks with the layer
    assert rnn.input_size == small.embed.out_features
    for k in range(2):
        for sfx in ["", "_reverse"][:dirs]:
            assert getattr(rnn, f"weight_ih_l{k}{sfx}").shape == (gates * h, rnn.input_size if k == 0 else dirs * h)
            assert getattr(rnn, f"weight_hh_l{k}{sfx}").shape == (gates * h, h)
            assert getattr(rnn, f"bias_ih_l{k}{sfx}").shape == getattr(rnn, f"bias_hh_l{k}{sfx}").shape == (gates * h,)
    assert small.fc.in_features == h * dirs + 2 * h
    assert small(torch.randn(2, 4, 5) if batch_first else torch.randn(4, 2, 5)).shape == (2, 10)
    first, last = sgd_lowers_loss(small, (4, 4, 5))  # 4 steps of batch 4 in either layout
    assert last < first


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_recurrent_projection_is_frozen():
    from graphprune.verify.torch import verify

    torch.manual_seed(0)
    m = Recurrent(nn.LSTM, False, True, proj_size=6).eval()
    result = prune_module(m, torch.randn(3, 4, 5), ratio=0.5, round_to=1, verify="off")
    # torch.onnx cannot export an LSTM with projections: the masked-original check only
    check = verify(result.source, result.model, result.plan, onnx_export=False)
    assert check.ok and check.checks["masked_original"] == "ok", check.failure
    rnn_groups = [g for g in result.channels.groups if any(s.tensor.startswith("rnn.") for s in g.params)]
    assert rnn_groups and all(g.frozen for g in rnn_groups)
    assert result.report.unmapped_ops == ("Unknown:LSTM (rnn)",)
    assert result.model.rnn.hidden_size == 12 and result.model.rnn.input_size == 8
    assert result.model.init.out_features == 12


class LayerNorm2d(nn.LayerNorm):
    """timm's: a LayerNorm over the channels of an NCHW map, traced through (it is no torch.nn leaf): its call
    permutes before it normalises, so its size attribute comes from its LayerNormalization, not its first node."""

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def test_a_norm_subclass_traced_through_gets_its_size_from_its_own_normalisation():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), LayerNorm2d(16), nn.Conv2d(16, 4, 1)).eval()
    result = prune_module(model, (torch.randn(1, 3, 8, 8),), ratio=0.5, budget="channels", round_to=1)
    small = result.model
    assert result.report.verification.ok and type(small) is nn.Sequential
    assert small[1].normalized_shape == (8,) == tuple(small[1].weight.shape)
