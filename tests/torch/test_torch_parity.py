"""Parity: the fx path and the ONNX-export path find the same channel groups and, with the same scores, the
same plan, for every reference model.

Groups are compared as sets of *parameter spaces* ``(parameter name, torch axis)``. The ONNX side is the
TorchScript export with BatchNorm kept and no constant folding (the ``legacy_bn`` flavour of the session
fixture), which keeps parameter names; the transposed weights of a Linear on a 3-D input become folded
constants with new names, and are matched to their parameter by value (``W.T``), axes swapped. Activation
spaces are not compared: their names differ by construction (fx node names vs ONNX value names).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from graphprune.api import load as load_onnx  # noqa: E402
from graphprune.config import PruneConfig  # noqa: E402
from graphprune.frontends.fx import load as load_fx  # noqa: E402
from graphprune.methods import METHODS  # noqa: E402
from graphprune.state import PruneState  # noqa: E402
from models import REFERENCE_MODELS  # noqa: E402


def onnx_parameter_names(graph, module) -> dict[str, tuple[str, tuple[int, ...] | None]]:
    """ONNX constant → (torch name, axis permutation or None): by name, else by value (transposed matrices)."""
    tensors = {k: v.detach().numpy() for k, v in module.state_dict().items() if v.is_floating_point()}
    out = {}
    for name, t in graph.tensors.items():
        if not t.is_const or not t.shape or not np.issubdtype(t.value.dtype, np.floating):
            continue
        if name in tensors and np.array_equal(tensors[name], t.value):
            out[name] = (name, None)
            continue
        hits = [k for k, v in tensors.items() if v.ndim == 2 and v.T.shape == t.value.shape and np.array_equal(v.T, t.value)]
        if len(hits) == 1:
            out[name] = (hits[0], (1, 0))
    return out


def torch_space(names, space) -> tuple[str, int] | None:
    if space.tensor not in names:
        return None
    name, perm = names[space.tensor]
    return name, space.axis if perm is None else perm[space.axis]


def summary(state: PruneState, names) -> dict:
    cg = state.channels

    def params(group):
        return frozenset(filter(None, (torch_space(names, s) for s in group.params)))

    scores = {params(g): np.sort(state.scores[g.id]) for g in cg.prunable}
    plan = {torch_space(names, s): tuple(k.tolist()) for s, k in state.plan.keep.items() if torch_space(names, s)}
    return {"prunable": {params(g): g.n_units for g in cg.prunable},
            "frozen": {params(g) for g in cg.candidates if g.frozen},
            "scores": scores, "plan": plan}


def run(source, ratio: float) -> PruneState:
    state = PruneState.start(source)
    for p in METHODS["magnitude"](PruneConfig(ratio=ratio))[:-1]:  # analyse, score, select (no removal)
        state = p(state)
    return state


@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_fx_and_onnx_paths_agree(exported, name):
    spec = REFERENCE_MODELS[name]
    module = spec.build()
    fx_source = load_fx(module, torch.randn(spec.input_shape))
    onnx_source = load_onnx(exported(name, "legacy_bn"))
    fx_names = {t: (paths[0], None) for t, paths in fx_source.paths.items()}
    onnx_names = onnx_parameter_names(onnx_source.graph, module)
    assert set(n for n, _ in onnx_names.values()) == set(n for n, _ in fx_names.values())  # every parameter matched
    for ratio in (0.3, 0.5):
        a, b = summary(run(fx_source, ratio), fx_names), summary(run(onnx_source, ratio), onnx_names)
        assert a["prunable"] == b["prunable"]  # same groups, same number of units
        assert a["frozen"] == b["frozen"]
        assert a["scores"].keys() == b["scores"].keys()
        for key in a["scores"]:
            np.testing.assert_allclose(a["scores"][key], b["scores"][key], rtol=1e-6)
        assert a["plan"] == b["plan"] and a["plan"]  # same kept indices in every parameter space
