"""Parity: the fx path and the ONNX-export path find the same channel groups and, with the same scores, the
same plan, for every reference model.

Groups are compared as sets of *parameter spaces* ``(parameter name, torch axis)``. The ONNX side is the
TorchScript export with BatchNorm kept and no constant folding (the ``legacy_bn`` flavour of the session
fixture), which keeps parameter names; the transposed weights of a Linear on a 3-D input become folded
constants with new names, and are matched to their parameter by value (``W.T``), axes swapped. The W / R / B
inputs of an exported LSTM / GRU / RNN are folded too: each stacks the layer's directions on axis 0 and
reorders torch's gate blocks (i,f,g,o → i,o,f,c; r,z,n → z,r,h), B concatenates ``bias_ih`` and ``bias_hh``;
they are matched to their parameters by value under that reordering, and kept indices are mapped back through
it. Activation spaces are not compared: their names differ by construction (fx node names vs ONNX value names).

One structural difference is expected: ``nn.LSTM`` / ``nn.GRU`` have one ``hidden_size`` for all their layers,
so the fx lowering couples the hidden units of every layer (through ``h_n``, the per-layer final states stacked
on axis 0, exactly what the module returns), while the ONNX export has one node per layer and the ONNX emitter
can size each layer on its own. For the stacked recurrent reference models the fx groups are therefore unions
of ONNX groups (:func:`test_fx_and_onnx_paths_agree`); single-layer recurrent modules agree exactly
(:func:`test_single_layer_recurrent_parity`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from graphprune.api import load as load_onnx  # noqa: E402
from graphprune.config import PruneConfig  # noqa: E402
from graphprune.frontends.fx.frontend import load as load_fx  # noqa: E402
from graphprune.pipeline import presets  # noqa: E402
from graphprune.pipeline.state import PruneState  # noqa: E402
from models import REFERENCE_MODELS  # noqa: E402


@dataclass(frozen=True, eq=False)
class Piece:
    """A torch parameter inside a (possibly folded) IR constant: IR axis → torch axis; along ``row_axis`` the IR
    positions ``offset + i`` hold the torch rows ``rows[i]`` (recurrent gate blocks), elsewhere positions agree."""

    name: str
    axes: dict[int, int]
    row_axis: int = -1
    offset: int = 0
    rows: np.ndarray | None = None

    def space(self, axis: int) -> tuple[str, int] | None:
        return (self.name, self.axes[axis]) if axis in self.axes else None

    def kept(self, axis: int, kept: np.ndarray) -> tuple[int, ...]:
        kept = np.asarray(kept)
        if axis != self.row_axis:
            return tuple(kept.tolist())
        inside = kept[(kept >= self.offset) & (kept < self.offset + len(self.rows))] - self.offset
        return tuple(sorted(self.rows[inside].tolist()))


def fx_parameter_names(source) -> dict[str, list[Piece]]:
    return {t: [Piece(paths[0], {k: k for k in range(len(source.graph.shape(t)))})] for t, paths in source.paths.items()}


GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN": (0,)}  # ONNX gate block b holds torch block order[b]


def onnx_parameter_names(graph, module) -> dict[str, list[Piece]]:
    """ONNX constant → its torch parameters: by name, else by value (transposed matrices, recurrent W / R / B)."""
    tensors = {k: v.detach().numpy() for k, v in module.state_dict().items() if v.is_floating_point()}
    out: dict[str, list[Piece]] = {}
    for name, t in graph.tensors.items():
        if not t.is_const or not t.shape or not np.issubdtype(t.value.dtype, np.floating):
            continue
        if name in tensors and np.array_equal(tensors[name], t.value):
            out[name] = [Piece(name, {k: k for k in range(t.value.ndim)})]
            continue
        hits = [k for k, v in tensors.items() if v.ndim == 2 and v.T.shape == t.value.shape and np.array_equal(v.T, t.value)]
        if len(hits) == 1:
            out[name] = [Piece(hits[0], {0: 1, 1: 0})]
    for node in graph.nodes:
        if node.op not in GATE_ORDER:
            continue
        h = int(node.attr("hidden_size"))
        rows = np.concatenate([np.arange(h) + g * h for g in GATE_ORDER[node.op]])  # ONNX row r is torch row rows[r]
        for slot in (1, 2, 3):
            const = node.input(slot)
            value = graph.value(const) if const else None
            if value is None:
                continue
            halves = 2 if slot == 3 else 1
            pieces = []
            for d in range(value.shape[0]):
                for half in range(halves):
                    part = value[d][half * len(rows):(half + 1) * len(rows)]
                    torch_order = np.empty_like(part)
                    torch_order[rows] = part
                    hits = [k for k, v in tensors.items() if v.shape == torch_order.shape and np.array_equal(v, torch_order)]
                    assert len(hits) == 1, (node.name, slot, d, half, hits)
                    axes = {1: 0, 2: 1} if value.ndim == 3 else {1: 0}
                    pieces.append(Piece(hits[0], axes, row_axis=1, offset=half * len(rows), rows=rows))
            out[const] = pieces
    return out


def summary(state: PruneState, names: dict[str, list[Piece]]) -> dict:
    cg = state.channels

    def params(group):
        return frozenset(filter(None, (p.space(s.axis) for s in group.params for p in names.get(s.tensor, ()))))

    scores = {params(g): np.sort(state.scores[g.id]) for g in cg.prunable}
    plan = {p.space(s.axis): p.kept(s.axis, k) for s, k in state.plan.keep.items() for p in names.get(s.tensor, ())
            if p.space(s.axis)}
    return {"prunable": {params(g): g.n_units for g in cg.prunable},
            "frozen": {params(g) for g in cg.candidates if g.frozen},
            "scores": scores, "plan": plan}


def run(source, ratio: float) -> PruneState:
    state = PruneState.start(source)
    # round_to=1: exact unit counts (with the default 8, shufflenet_unit's 16-unit group keeps all at ratio 0.3);
    # budget="channels": each group loses `ratio` of its units, whatever each frontend counts as parameters
    for p in presets.planning(PruneConfig(ratio=ratio, budget="channels", round_to=1)):  # analyse, score, select
        state = p(state)
    return state


STACKED_RECURRENT = {"lstm_classifier", "gru_classifier"}  # nn.LSTM / nn.GRU with num_layers=2


def assert_same(a: dict, b: dict) -> None:
    assert a["prunable"] == b["prunable"]  # same groups, same number of units
    assert a["frozen"] == b["frozen"]
    assert a["scores"].keys() == b["scores"].keys()
    for key in a["scores"]:
        np.testing.assert_allclose(a["scores"][key], b["scores"][key], rtol=1e-6)
    assert a["plan"] == b["plan"] and a["plan"]  # same kept indices in every parameter space


def assert_unions(a: dict, b: dict) -> None:
    """fx groups of a stacked RNN: the ONNX per-layer hidden groups merged (same units: unit h of every layer);
    every other group, its scores and its plan are the same."""
    merged = {g for g in a["prunable"] if g not in b["prunable"]}
    assert len(merged) == 1
    (hidden,) = merged
    parts = [g for g in b["prunable"] if g <= hidden]
    assert len(parts) >= 2 and frozenset().union(*parts) == hidden
    assert all(b["prunable"][g] == a["prunable"][hidden] for g in parts)
    rest = {g: n for g, n in b["prunable"].items() if g not in parts}
    assert {g: n for g, n in a["prunable"].items() if g != hidden} == rest
    assert a["frozen"] == b["frozen"]
    for key in rest:
        np.testing.assert_allclose(a["scores"][key], b["scores"][key], rtol=1e-6)
    same = {s for g in rest for s in g}
    assert {s: k for s, k in a["plan"].items() if s in same} == {s: k for s, k in b["plan"].items() if s in same}
    assert all(len(a["plan"][s]) == len(a["plan"][("rnn.weight_hh_l0", 1)]) for s in hidden if s[1] == 1
               and s[0].startswith("rnn.weight_hh"))  # one hidden size for every layer and direction


@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_fx_and_onnx_paths_agree(exported, name):
    spec = REFERENCE_MODELS[name]
    module = spec.build()
    fx_source = load_fx(module, torch.randn(spec.input_shape))
    onnx_source = load_onnx(exported(name, "legacy_bn"))
    fx_names = fx_parameter_names(fx_source)
    onnx_names = onnx_parameter_names(onnx_source.graph, module)
    every = [{p.name for ps in names.values() for p in ps} for names in (onnx_names, fx_names)]
    assert every[0] == every[1]  # every parameter matched
    for ratio in (0.3, 0.5):
        a, b = summary(run(fx_source, ratio), fx_names), summary(run(onnx_source, ratio), onnx_names)
        (assert_unions if name in STACKED_RECURRENT else assert_same)(a, b)


class OneLayer(nn.Module):
    def __init__(self, cell: type[nn.Module], bidirectional: bool, batch_first: bool):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.rnn = cell(16, 12, batch_first=batch_first, bidirectional=bidirectional)
        self.fc = nn.Linear(12 * (2 if bidirectional else 1), 10)
        self.batch_first = batch_first

    def forward(self, x):
        y, _ = self.rnn(torch.relu(self.embed(x)))
        return self.fc(y[:, -1] if self.batch_first else y[-1])


@pytest.mark.parametrize("cell, bidirectional, batch_first", [
    (nn.LSTM, True, True), (nn.GRU, False, False), (nn.GRU, True, True), (nn.RNN, True, False)])
def test_single_layer_recurrent_parity(tmp_path, cell, bidirectional, batch_first):
    import warnings

    from models.common import finalize

    torch.manual_seed(0)
    module = finalize(OneLayer(cell, bidirectional, batch_first))
    x = torch.randn((2, 5, 6) if batch_first else (5, 2, 6))
    path = tmp_path / "rnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), input_names=["input"], output_names=["output"], opset_version=17,
                          dynamo=False, do_constant_folding=False)
    fx_source, onnx_source = load_fx(module, x), load_onnx(path)
    fx_names, onnx_names = fx_parameter_names(fx_source), onnx_parameter_names(onnx_source.graph, module)
    every = [{p.name for ps in names.values() for p in ps} for names in (onnx_names, fx_names)]
    assert every[0] == every[1]
    for ratio in (0.3, 0.5):
        assert_same(summary(run(fx_source, ratio), fx_names), summary(run(onnx_source, ratio), onnx_names))
