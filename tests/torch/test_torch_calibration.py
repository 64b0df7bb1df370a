"""Data-informed methods on torch modules: calibration, PFP sampling, the refit choice and layer-wise reconstruction
read activations from the module's own capture (graphprune/frontends/fx/activations.py) and give what the ONNX
path gives on the same weights and points; reconstruction verifies against the refitted masked original."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from graphprune.api import load as load_onnx  # noqa: E402
from graphprune.config import PruneConfig  # noqa: E402
from graphprune.errors import UsageError, VerificationError  # noqa: E402
from graphprune.frontends.fx import activations  # noqa: E402
from graphprune.frontends.fx.frontend import load as load_torch  # noqa: E402
from graphprune.methods.calib import random_calibration, model_inputs  # noqa: E402
from graphprune.pipeline import presets  # noqa: E402
from graphprune.pipeline.state import PruneState  # noqa: E402
from graphprune.torch.api import prune_module  # noqa: E402
from models import REFERENCE_MODELS  # noqa: E402

from tests.torch.test_torch_parity import fx_parameter_names, onnx_parameter_names, summary  # noqa: E402

FAST = {"reconstruct_points": 128, "max_points": 64}


def example(name: str):
    spec = REFERENCE_MODELS[name]
    return spec.build(), (torch.randn(*spec.input_shape),)


def planned(source, **options) -> PruneState:
    state = PruneState.start(source)
    for p in presets.planning(PruneConfig(**options)):
        state = p(state)
    return state


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet_v2", "attention_block", "inception_block"])
def test_sampling_scores_a_module_as_it_scores_its_onnx_export(exported, name):
    # same points (data-free, seeded by the input shape), same weights: the PFP sensitivities agree
    module, x = example(name)
    torch_source, onnx_source = load_torch(module, x), load_onnx(exported(name, "legacy_bn"))
    options = dict(method="sampling", ratio=0.5, round_to=1, max_points=32)
    a = summary(planned(torch_source, **options), fx_parameter_names(torch_source))
    b = summary(planned(onnx_source, **options), onnx_parameter_names(onnx_source.graph, module))
    assert a["scores"].keys() == b["scores"].keys() and a["scores"]
    for key in a["scores"]:
        np.testing.assert_allclose(a["scores"][key], b["scores"][key], rtol=1e-4, atol=1e-9)


def test_a_linear_on_a_sequence_is_a_layer_of_its_parameter():
    # nn.Linear on (B, T, D) lowers to MatMul(x, Transpose(W)): its layer is W itself, (out, in) as stored
    from graphprune.methods.sensitivity import layers

    module, x = example("attention_block")
    g = load_torch(module, x).graph
    found = {lay.weight: lay for lay in layers(g)}
    q = found["blocks.0.attn.q.weight"]
    assert q.op == "MatMul" and q.w_axis == 1
    w = g.value(q.weight)
    np.testing.assert_array_equal(q.matrix(w)[0], w)  # (filters, D)
    np.testing.assert_array_equal(q.unmatrix(q.matrix(w), w.shape), w)


@pytest.mark.parametrize("capture, mode", [("fx", "whole"), ("export", "vmap")])
def test_activations_are_the_modules_own_including_a_linear_product_before_its_bias(capture, mode):
    from graphprune.methods.sensitivity import layers

    module, x = example("attention_block")
    source = load_torch(module, x, capture=capture)
    g = source.graph
    q = next(lay for lay in layers(g) if lay.weight == "blocks.0.attn.q.weight")
    product = g.node_by_name[q.node].outputs[0]  # x @ W.T: the lowering's tensor, no fx node
    assert "::" in product
    linear = g.consumers[product][0]  # + bias
    calib = random_calibration(model_inputs(source), 6, seed=3)
    runner = activations.TorchActivations(source, [product, linear.outputs[0]])
    got = runner.run(calib.inputs)
    assert runner.mode == mode  # torch.export guards the batch axis: vmap runs the example-sized batches
    seen = []
    handle = module.blocks[0].attn.q.register_forward_hook(lambda m, i, o: seen.append(o.detach().numpy()))
    with torch.no_grad():
        module(torch.from_numpy(calib.inputs[g.inputs[0]]))
    handle.remove()
    np.testing.assert_allclose(got[linear.outputs[0]], seen[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[product] + module.blocks[0].attn.q.bias.detach().numpy(), seen[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet_v2", "inception_block", "vgg"])
def test_reconstruction_of_a_module_verifies_against_the_refitted_original_and_raises_the_cosine(name):
    module, x = example(name)
    result = prune_module(module, x, ratio=0.5, reconstruct=True, **FAST)
    checks = result.report.verification.checks
    assert checks["Reconstruct/refitted_masked_original"] == "ok"
    stats = next(p.stats for p in result.report.passes if p.name == "Reconstruct")
    assert stats["applied"] and stats["refitted"] > 0
    assert stats["output_cosine"]["after"] > stats["output_cosine"]["before"]
    assert isinstance(result.model, type(module))


def test_torch_and_onnx_reconstruction_refit_the_same_values(exported):
    # same plan (channel budget, no rounding), same points: the refitted weights agree parameter by parameter
    name = "plain_cnn"
    module, x = example(name)
    options = dict(ratio=0.5, budget="channels", round_to=1, reconstruct=True, **FAST)
    t = prune_module(module, x, **options)
    from graphprune import prune
    o = prune(str(exported(name, "legacy_bn")), **options)
    from onnx import numpy_helper
    inits = {i.name: numpy_helper.to_array(i) for i in o.model.graph.initializer}
    refitted = next(p.stats for p in o.report.passes if p.name == "Reconstruct")
    assert refitted["refitted"] > 0
    state = t.model.state_dict()
    compared = [k for k in inits if k in state]
    assert {k for k in compared if k.endswith("weight")}
    for k in compared:
        np.testing.assert_allclose(state[k].numpy(), inits[k], rtol=2e-3, atol=2e-5, err_msg=k)


def test_a_refitted_weight_the_claim_does_not_name_fails_verification(monkeypatch):
    from graphprune.passes.reconstruct import Reconstruct
    from graphprune.verify.claims import Refitted

    module, x = example("plain_cnn")
    monkeypatch.setattr(Reconstruct, "claim", lambda self, before, after: Refitted(after.plan, after.refitted[1:]))
    with pytest.raises(VerificationError, match="refitted weights"):
        prune_module(module, x, ratio=0.5, reconstruct=True, **FAST)


def test_calibration_data_for_a_module_is_checked_in_one_line():
    module, x = example("plain_cnn")
    good = np.random.default_rng(0).standard_normal((16, *x[0].shape[1:])).astype(np.float32)
    result = prune_module(module, x, method="sampling", ratio=0.5, calib=good)
    assert result.report.verification.ok
    with pytest.raises(UsageError) as err:
        prune_module(module, x, method="sampling", ratio=0.5, calib=good[:, :, :5])
    assert "\n" not in str(err.value)


class Reflect(nn.Module):
    """Convs of every padding geometry: reflect (cut as if zero-padded: the values differ at the border, not the
    shapes), strided valid, same, dilated."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1, padding_mode="reflect")
        self.b = nn.Conv2d(16, 8, 3, stride=2, padding="valid")
        self.c = nn.Conv2d(8, 8, 3, padding="same")
        self.d = nn.Conv2d(8, 8, 3, padding=2, dilation=2)

    def forward(self, x):
        return self.d(torch.relu(self.c(torch.relu(self.b(torch.relu(self.a(x)))))))


def test_conv_geometry_reaches_the_ir_so_patches_are_cut_right():
    from graphprune.methods.sensitivity import layers

    source = load_torch(Reflect().eval(), (torch.randn(1, 3, 12, 12),))
    found = {lay.weight: lay for lay in layers(source.graph)}
    assert found["b.weight"].strides == (2, 2) and found["b.weight"].pads == ((0, 0), (0, 0))
    assert found["c.weight"].pads == ((1, 1), (1, 1))
    assert found["d.weight"].pads == ((2, 2), (2, 2)) and found["d.weight"].dilations == (2, 2)
    assert "a.weight" in found  # reflect padding changes values, not shapes: cut as if zero-padded (documented)
    result = prune_module(Reflect().eval(), (torch.randn(1, 3, 12, 12),), ratio=0.5, reconstruct=True, **FAST)
    assert result.report.verification.ok


def test_the_report_costs_the_refitted_module_from_the_capture_reconstruction_took(monkeypatch):
    from graphprune.frontends.fx import frontend
    from graphprune.methods.cost import cost

    captured = []
    real = activations.trace_module

    def counting(model, example_inputs):
        captured.append(model)
        return real(model, example_inputs)

    monkeypatch.setattr(activations, "trace_module", counting)
    monkeypatch.setattr(frontend, "trace_module", counting)
    module, x = example("resnet_basic")
    result = prune_module(module, x, ratio=0.5, reconstruct=True, **FAST)
    assert next(p.stats for p in result.report.passes if p.name == "Reconstruct")["applied"]
    assert len(captured) == 2  # the user's module (load) and the pruned one (reconstruction): the cost takes no third
    assert result.report.after.params == sum(p.numel() for p in result.model.parameters())
    assert result.report.after.macs == cost(real(result.model, x).graph).macs
