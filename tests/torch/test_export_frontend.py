"""torch.export capture: what torch.fx cannot trace is captured by torch.export, lowered through the same op table
to the same IR, pruned by the same rules, emitted back into the user's own module by qualified name, and verified
against the masked original in torch; the report says which capture ran."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import graphprune  # noqa: E402
from graphprune.errors import UsageError  # noqa: E402
from graphprune.frontends.fx.frontend import UntraceableModelError, load  # noqa: E402
from graphprune.torch.api import prune_module  # noqa: E402
from models import REFERENCE_MODELS  # noqa: E402
from models.llm import TRANSFORMER_MODELS  # noqa: E402


@pytest.mark.parametrize("name", ["gpt2_like", "llama_like"])
def test_what_fx_cannot_trace_is_captured_by_export_and_verifies(name):
    spec = TRANSFORMER_MODELS[name]
    module = spec.build()
    with pytest.raises(UntraceableModelError):
        load(module, spec.example())  # torch.fx: torch.ones(t, t) of a traced size
    result = graphprune.prune(module, example_inputs=(spec.example(),), ratio=0.5, budget="channels", round_to=1)
    report = result.report
    assert report.extra["frontend"] == "torch.export" and report.verification.ok
    assert report.after.params / report.before.params <= 0.40 and result.plan.renormalised
    assert type(result.model) is type(module)  # the user's class, resized by qualified name
    names = dict(module.named_parameters())
    assert set(dict(result.model.named_parameters())) == set(names)
    out = result.model(spec.example())
    assert out.shape == module(spec.example()).shape


def test_gqa_loses_whole_kv_groups_with_their_query_heads():
    spec = TRANSFORMER_MODELS["llama_like"]
    small = graphprune.prune(spec.build(), example_inputs=(spec.example(),), ratio=0.5, budget="channels",
                             round_to=1).model
    attn = small.layers[0].attn
    assert attn.k.weight.shape[0] == attn.v.weight.shape[0] == 8  # one KV head of 8 left of 2
    assert attn.q.weight.shape[0] == attn.o.weight.shape[1] == 16  # its two query heads
    assert small.layers[0].mlp.gate.weight.shape[0] == small.layers[0].mlp.up.weight.shape[0] == 32


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet_v2", "transformer_mlp"])
def test_export_and_fx_give_the_same_plan(name):
    spec = REFERENCE_MODELS[name]
    x = torch.randn(spec.input_shape)
    fx_plan = graphprune.plan(spec.build(), example_inputs=(x,), ratio=0.5, round_to=1)
    export = prune_module(spec.build(), (x,), ratio=0.5, round_to=1, capture="export")
    assert export.report.extra["frontend"] == "torch.export" and export.report.verification.ok
    by_space = lambda plan: {(s.tensor, s.axis): tuple(k) for s, k in plan.keep.items()  # noqa: E731
                             if not s.virtual and "." in s.tensor}  # parameters: named alike by both captures
    assert by_space(export.plan) == by_space(fx_plan)


def test_a_forward_with_literal_channel_counts_fails_verification_never_returns_a_wrong_module():
    """torch.split(x, [12, 20]) in forward: torch.fx rewrites the call (a GraphModule); from an ATen graph nothing
    can be rewritten, so the resized module's own forward is what verification runs, and it refuses it."""
    from graphprune.errors import VerificationError

    spec = REFERENCE_MODELS["grouped_split"]
    x = torch.randn(spec.input_shape)
    with pytest.raises(VerificationError, match="forward"):
        prune_module(spec.build(), (x,), ratio=0.5, round_to=1, capture="export")
    assert prune_module(spec.build(), (x,), ratio=0.5, round_to=1).report.verification.ok  # torch.fx: rewritten


def test_an_aten_op_without_an_entry_freezes_what_it_touches_with_its_name():
    class Flip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.b(torch.flip(torch.relu(self.a(x)), [1]))

    ins = graphprune.inspect(Flip().eval(), example_inputs=(torch.randn(2, 8),))
    prunable = prune_module(Flip().eval(), (torch.randn(2, 8),), capture="export", ratio=0.5, round_to=1)
    assert any("aten.flip" in why for g in ins.channels.candidates for why in g.reasons()) or ins.source.capture == "torch.fx"
    assert prunable.plan.empty and any("aten.flip" in op for op in prunable.report.unmapped_ops)


def test_an_uncapturable_module_is_one_line_naming_both_captures():
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(UntraceableModelError) as info:
        graphprune.prune(Branchy(), example_inputs=(torch.randn(2, 2),))
    message = str(info.value)
    assert "\n" not in message and "torch.fx" in message and "torch.export" in message


def test_capture_is_checked():
    with pytest.raises(UsageError, match="capture"):
        prune_module(torch.nn.Linear(2, 2), (torch.randn(1, 2),), capture="jit")


def test_taylor_and_tpp_run_on_a_graph_torch_export_captured():
    from graphprune.torch import TPP

    spec = TRANSFORMER_MODELS["llama_like"]
    g = torch.Generator().manual_seed(1)
    ids, targets = torch.randint(0, 64, (6, 8), generator=g), torch.randint(0, 64, (6, 8), generator=g)

    def loss(out, t):
        return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), t.reshape(-1))

    result = graphprune.prune(spec.build(), example_inputs=(spec.example(),), method="taylor", calib=(ids, targets),
                              loss=loss, ratio=0.5, round_to=1)
    assert result.report.extra["frontend"] == "torch.export" and result.report.verification.ok
    tpp = TPP(spec.build(), example_inputs=(spec.example(),), ratio=0.5)
    small = tpp.finish()
    assert tpp.verification.ok and type(small).__name__ == "LlamaLike"
