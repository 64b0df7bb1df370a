"""The torch.fx frontend: canonicalisation to ONNX op names, naming, value handling, untraceable modules."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from graphprune.channels.analysis import analyse  # noqa: E402
from graphprune.errors import GraphPruneError, ModelLoadError  # noqa: E402
from graphprune.frontends.fx.frontend import UntraceableModelError, load  # noqa: E402
from graphprune.frontends.fx.ops import TABLE  # noqa: E402
from graphprune.channels.rules import RULES  # noqa: E402
from models import REFERENCE_MODELS  # noqa: E402


def ops(source) -> list[str]:
    return [n.op for n in source.graph.nodes]


class Mixed(nn.Module):
    """One of each common pattern, functional and module forms."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()
        self.w = nn.Parameter(torch.randn(8, 1, 3, 3))
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y = F.conv2d(y, self.w, padding=1, groups=8)
        a, b = torch.split(y, [3, 5], dim=1)
        y = torch.cat([a * 2.0, b - 1], 1) + y
        y = F.adaptive_avg_pool2d(y, 1)
        y = y.view(y.size(0), -1)[:, :4]
        t = self.fc(self.ln(y.unsqueeze(1).permute(0, 1, 2)))  # 3-D input: MatMul + Add
        return F.softmax(t.mean(dim=1), dim=-1)


def test_canonical_ops_and_names():
    source = load(Mixed().eval(), torch.randn(2, 3, 8, 8))
    got = ops(source)
    for op in ("Conv", "BatchNormalization", "Clip", "Split", "Mul", "Sub", "Concat", "Add", "GlobalAveragePool",
               "Reshape", "Slice", "Unsqueeze", "Transpose", "LayerNormalization", "MatMul", "ReduceMean", "Softmax"):
        assert op in got, op
    assert not [o for o in got if o.startswith("Unknown:")]
    g = source.graph
    assert g.tensor("conv.weight").is_const and g.tensor("bn.running_var").is_const
    assert g.shape("conv.weight") == (8, 3, 3, 3)
    fconv = source.ir_node("conv2d", "Conv")
    assert fconv.attr("group") == 8 and fconv.inputs[1] == "w"
    bn = next(n for n in g.nodes if n.op == "BatchNormalization")
    assert bn.inputs == ("conv", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var") and bn.source == "bn"
    reshape = next(n for n in g.nodes if n.op == "Reshape")
    assert g.value(reshape.inputs[1]).tolist() == [2, 8]  # the propagated shape, as a constant
    matmul = next(n for n in g.nodes if n.op == "MatMul")
    assert g.shape(matmul.inputs[1]) == (4, 6)  # Transpose(fc.weight): (in, out)
    assert source.fixes["view"] == "view" and source.fixes["split"] == "split" and source.fixes["conv2d"] == "conv_groups"
    # every op the table produces has a channel rule
    assert all(op in RULES for op in got)


def test_table_ops_all_have_rules():
    assert {c.op for c in TABLE.values()} <= set(RULES)


def test_reference_models_lower_without_unknown_ops():
    for name, spec in REFERENCE_MODELS.items():
        source = load(spec.build(), torch.randn(spec.input_shape))
        assert not [o for o in ops(source) if o.startswith("Unknown:")], name
        assert analyse(source.graph).prunable, name


def test_linear_is_gemm_on_2d_input():
    source = load(nn.Sequential(nn.Linear(4, 5)), torch.randn(3, 4))
    (gemm,) = source.graph.nodes
    assert gemm.op == "Gemm" and gemm.attr("transB") == 1 and gemm.inputs[1:] == ("0.weight", "0.bias")


class WithUnknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        return self.c(torch.cumsum(y, 1))  # no table entry: freezes what it touches


def test_unknown_op_freezes_what_it_touches_and_is_named():
    source = load(WithUnknown(), torch.randn(1, 3, 4, 4))
    cg = analyse(source.graph)
    assert [n.op for n in cg.unmapped] == ["Unknown:torch.cumsum"]
    frozen = {s.tensor for g in cg.groups if g.frozen for s in g.params}
    assert "b.weight" in frozen and "c.weight" in frozen
    assert any(s.tensor == "a.weight" for g in cg.prunable for s in g.params)  # a → b still prunable


def test_tied_parameters_are_one_tensor():
    m = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    m[2].weight = m[0].weight
    source = load(m, torch.randn(2, 6))
    assert source.paths["0.weight"] == ("0.weight", "2.weight")
    assert "2.weight" not in source.graph.tensors


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return y / y.abs().max().item()


def test_data_dependent_value_is_an_unknown_node():
    source = load(DataDependent(), torch.randn(1, 3, 4, 4))
    assert source.kinds["item"] == "data"
    div = next(n for n in source.graph.nodes if n.op == "Div")
    assert div.inputs[1] == "item" and not source.graph.tensor("item").is_const


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


def test_untraceable_module_raises_one_clear_line():
    with pytest.raises(UntraceableModelError) as info:
        load(Branchy(), torch.randn(2, 2))
    message = str(info.value)
    assert "\n" not in message and "Branchy" in message and "onnx" in message.lower()
    assert isinstance(info.value, ModelLoadError) and isinstance(info.value, GraphPruneError)


def test_shape_propagation_leaves_training_state_alone():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    before = m[1].running_mean.clone()
    load(m, torch.randn(2, 3, 4, 4))
    assert m.training and m[1].training and torch.equal(m[1].running_mean, before)
    assert int(m[1].num_batches_tracked) == 0


def test_recurrent_layers_lower_to_one_node_per_layer():
    spec = REFERENCE_MODELS["lstm_classifier"]  # 2 layers, bidirectional, batch_first, hidden 24
    source = load(spec.build(), torch.randn(spec.input_shape))
    g = source.graph
    layers = [n for n in g.nodes if n.op == "LSTM"]
    assert len(layers) == 2 and all(n.source == "rnn" for n in layers)
    assert all(n.attr("hidden_size") == 24 and n.attr("direction") == "bidirectional" for n in layers)
    producer = {o: n for n in g.nodes for o in n.outputs}

    def params_behind(t):  # the real parameters a lowering-made W / R / B is stacked from (Unsqueeze, Concat)
        if t in source.paths:
            return {t}
        if g.tensor(t).is_const:
            return set()
        return set().union(*(params_behind(i) for i in producer[t].inputs if i))
    x, w, r, b = layers[1].inputs[:4]
    assert g.shape(x) == (7, 2, 48) and g.shape(w) == (2, 96, 48) and g.shape(r) == (2, 96, 24)
    assert params_behind(w) == {"rnn.weight_ih_l1", "rnn.weight_ih_l1_reverse"}
    assert params_behind(b) == {"rnn.bias_ih_l1", "rnn.bias_hh_l1", "rnn.bias_ih_l1_reverse", "rnn.bias_hh_l1_reverse"}
    cg = analyse(g)
    hidden = [grp for grp in cg.prunable if any(s.tensor == "rnn.weight_hh_l0" for s in grp.params)]
    assert len(hidden) == 1 and hidden[0].n_units == 24  # every layer and direction: one hidden_size
    assert {s.tensor for s in hidden[0].params} >= {f"rnn.{k}_l{i}{d}" for k in ("weight_ih", "weight_hh", "bias_ih")
                                                     for i in (0, 1) for d in ("", "_reverse")} | {"fc.weight"}


class Projected(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 8, proj_size=3)
        self.fc = nn.Linear(3 + 8, 2)

    def forward(self, x):
        y, (_, c) = self.rnn(x)
        return self.fc(torch.cat([y[-1], c[-1]], 1))


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_recurrent_projection_is_an_unknown_node_with_named_results():
    source = load(Projected(), torch.randn(5, 2, 4))
    assert [o for o in ops(source) if o.startswith("Unknown:")] == ["Unknown:LSTM"]
    assert source.tensors["rnn"] == ("getitem", ("getitem_2", "getitem_3"))  # torch's (output, (h_n, c_n))
    unknown = next(n for n in source.graph.nodes if n.op == "Unknown:LSTM")
    assert unknown.outputs == ("getitem", "getitem_2", "getitem_3")
