"""Transformers lose their hidden width too: through LayerNorm, RMSNorm written out of small ops, GRN, embeddings
and residual adds, in both exporters' ONNX and on the torch path, verified against the renormalised oracle; and
what pruned before (whole KV groups with their query heads, MLP widths) still does."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import graphprune  # noqa: E402
from models.llm import TRANSFORMER_MODELS  # noqa: E402

# budget="channels", ratio 0.5: with every width pruned about 0.25 is left; the hidden width alone frozen gave 0.5-0.6
MAX_PARAMS = 0.40


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transformers")
    done = {}

    def export(name: str, flavour: str):
        if (name, flavour) not in done:
            spec = TRANSFORMER_MODELS[name]
            path = folder / f"{name}.{flavour}.onnx"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(spec.build(), (spec.example(),), str(path), input_names=["input"],
                                  output_names=["output"], opset_version=18 if flavour == "dynamo" else 17,
                                  dynamo=flavour == "dynamo")
            done[name, flavour] = path
        return done[name, flavour]

    return export


def params_ratio(result) -> float:
    return result.report.after.params / result.report.before.params


@pytest.mark.parametrize("flavour", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", list(TRANSFORMER_MODELS))
def test_every_width_prunes_and_verifies(onnx_file, name, flavour):
    result = graphprune.prune(onnx_file(name, flavour), ratio=0.5, budget="channels", round_to=1)
    assert result.report.verification.ok
    assert params_ratio(result) <= MAX_PARAMS, [g.frozen_because for g in result.report.groups if g.frozen_because]
    assert result.plan.renormalised  # the hidden width runs through normalisations


@pytest.mark.parametrize("flavour", ["legacy", "dynamo"])
def test_llama_loses_whole_kv_groups_hidden_width_and_mlp_width(onnx_file, flavour):
    result = graphprune.prune(onnx_file("llama_like", flavour), ratio=0.5, budget="channels", round_to=1)
    kept = {r["weight"]: (r["in"]["after"], r["out"]["after"]) for r in result.report.layers}
    shapes = sorted(kept.values())
    assert shapes.count((16, 8)) == 4  # k and v of both layers: one of 2 KV groups (8 = one head of 8)
    assert shapes.count((16, 16)) == 4  # q (two query heads of the kept KV group) and o of both layers
    assert shapes.count((16, 32)) == 4 and shapes.count((32, 16)) == 2  # gate, up (64 → 32) and down
    embedding = next(t for t in result.model.graph.initializer if t.dims and t.dims[0] == 64 and len(t.dims) == 2)
    assert tuple(embedding.dims) == (64, 16)  # the token embedding's hidden axis shrank with the stream


@pytest.mark.parametrize("flavour", ["legacy", "dynamo"])
def test_llama_query_heads_inside_each_kv_group(onnx_file, flavour, tmp_path):
    """``query_heads=True`` on the ONNX export: q loses one query head in each of the 2 KV groups (32 → 16 outputs),
    o the matching inputs, k and v keep both KV heads (16 outputs); the file verifies on its own."""
    path = onnx_file("llama_like", flavour)
    result = graphprune.prune(path, ratio=0.5, budget="channels", round_to=1, query_heads=True)
    assert result.report.verification.ok
    shapes = sorted((r["in"]["after"], r["out"]["after"]) for r in result.report.layers)
    assert shapes.count((16, 16)) == 8  # q, k, v and o of both layers: k / v keep 2 heads of 8, q 2 of 4 heads
    assert not any(r["out"]["before"] == 16 and r["out"]["after"] < 16 for r in result.report.layers)
    assert graphprune.verify_files(path, result.save(tmp_path / "small.onnx")).ok

def test_the_renormalised_plan_survives_the_file(onnx_file, tmp_path):
    path = onnx_file("bert_like", "legacy")
    out = graphprune.prune(path, ratio=0.5, round_to=1).save(tmp_path / "small.onnx")
    assert graphprune.verify_files(path, out).ok


@pytest.mark.parametrize("name", ["bert_like", "vit_like", "convnext_like"])
def test_the_torch_path_prunes_the_same_widths_and_verifies(onnx_file, name):
    spec = TRANSFORMER_MODELS[name]
    module = spec.build()
    result = graphprune.prune(module, example_inputs=(spec.example(),), ratio=0.5, round_to=1)
    assert result.report.verification.ok and result.plan.renormalised
    onnx_result = graphprune.prune(onnx_file(name, "legacy"), ratio=0.5, round_to=1)
    assert abs(params_ratio(result) - params_ratio(onnx_result)) < 0.01
    small = result.model
    assert not isinstance(small, torch.fx.GraphModule)
    norms = [m for m in small.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.normalized_shape[0] == m.weight.shape[0] < 32 for m in norms)


def test_group_norm_loses_whole_groups_on_the_torch_path():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.GroupNorm(4, 16), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.normal_(0, 0.1)
    result = graphprune.prune(net, example_inputs=(torch.randn(1, 3, 8, 8),), ratio=0.5, budget="channels",
                              round_to=1)
    assert result.report.verification.ok and not result.plan.renormalised  # whole groups: their own statistics
    small = result.model
    assert small[0].out_channels == 8 and small[1].num_groups == 2 and small[1].weight.shape == (8,)
    x = torch.randn(2, 3, 8, 8)
    assert np.isfinite(small(x).detach().numpy()).all()
