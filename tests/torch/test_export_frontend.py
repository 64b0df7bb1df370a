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


# ---- what timm and ultralytics models need (their own tests: tests/torch/test_vision.py, in the vision venv) ----


class ConvBlock(torch.nn.Module):
    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(c1, c2, 1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class C2f(torch.nn.Module):
    """Ultralytics' CSP block, as its forward is written: ``cv1``'s output chunked in two halves, the second through
    a bottleneck, all three concatenated; ``forward_split`` splits by ``self.c`` (named like ultralytics' class, so
    the emitter's library fix for it applies)."""

    def __init__(self):
        super().__init__()
        self.c = 8
        self.cv1, self.m, self.cv2 = ConvBlock(4, 2 * self.c), ConvBlock(self.c, self.c), ConvBlock(3 * self.c, 6)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))

    def forward_split(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


C2f.__module__ = "ultralytics.nn.modules.block"


def test_equal_split_pieces_keep_the_same_channels_so_chunk_in_forward_still_fits():
    """An ATen graph records ``chunk(2, 1)`` as ``split(x, 8, 1)``: the pieces are tied (channel i of each half goes
    together), the user's forward chunks the pruned width in the same place, and ``c`` follows."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 6)
    # one group: 8 tied pairs of cv1 and the bottleneck's 8 (the concat); three quarters go, so pairs go too
    result = prune_module(C2f().eval(), (x,), ratio=0.75, budget="channels", round_to=1, capture="export")
    assert result.report.verification.ok and type(result.model) is C2f
    assert any(n.op == "Tie" for n in result.source.graph.nodes)
    kept = next(k for s, k in result.plan.keep.items() if (s.tensor, s.axis) == ("cv1.conv.weight", 0))
    assert 0 < len(kept) < 16 and kept[kept < 8].tolist() == (kept[kept >= 8] - 8).tolist()
    small = result.model
    assert small.cv1.conv.out_channels == 2 * small.c == len(kept)
    with torch.no_grad():
        assert torch.allclose(small.forward_split(x), small(x), atol=1e-6)


class Attention(torch.nn.Module):
    """timm's ``Attention`` forward (timm 1.0): q, k, v by ``unbind`` of one fused projection reshaped by
    ``num_heads`` / ``head_dim``, merged back to ``attn_dim`` (named like timm's class: its library fix applies)."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.num_heads, self.head_dim, self.attn_dim = heads, dim // heads, dim
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, self.attn_dim))


Attention.__module__, Attention.__qualname__ = "timm.layers.attention", "Attention"


def test_unbind_of_fused_qkv_prunes_whole_heads_and_the_attention_attributes_follow():
    torch.manual_seed(0)
    x = torch.randn(1, 5, 32)
    fx_ops = {n.op for n in load(Attention().eval(), (x,), capture="fx").graph.nodes}
    assert not any("unbind" in op for op in fx_ops)  # lowered by torch.fx too (as a Split and Squeezes)
    result = prune_module(Attention().eval(), (x,), ratio=0.5, budget="channels", round_to=1, capture="export")
    small = result.model
    assert result.report.verification.ok and type(small) is Attention
    assert (small.num_heads, small.head_dim, small.attn_dim) == (2, 8, 16)
    assert small.qkv.out_features == 3 * small.attn_dim == 3 * small.proj.in_features


class AnchorHead(torch.nn.Module):
    """YOLO-like: an anchor grid and strides made from the feature map's shape (``arange(w).type_as(y)``,
    ``meshgrid``, ``stack``, ``y.new_full``), cached on the module as ultralytics' ``Detect`` does, and an
    upsampled branch."""

    anchors = torch.empty(0)  # a class attribute until forward caches one, as in ultralytics' Detect

    def __init__(self):
        super().__init__()
        self.conv, self.conv2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        h, w = y.shape[2:]
        sy, sx = torch.meshgrid(torch.arange(h).type_as(y) + 0.5, torch.arange(w).type_as(y) + 0.5, indexing="ij")
        self.anchors = torch.stack((sx, sy), -1).view(-1, 2) * y.new_full((h * w, 1), 8.0)
        up = torch.nn.functional.interpolate(self.conv2(y), scale_factor=2.0, mode="nearest")
        return up, self.anchors + up.mean()


def test_constants_made_from_shapes_fold_and_a_capture_leaves_the_module_as_it_was():
    import copy

    x = torch.randn(1, 3, 4, 4)
    module = AnchorHead().eval()
    source = load(module, (x,), capture="export")
    ops = {n.op for n in source.graph.nodes}
    assert "Resize" in ops and not any(op.startswith("Unknown") for op in ops)
    assert "anchors" not in vars(module)  # torch.export's fake tensor was not left on the module
    copy.deepcopy(module)
    result = prune_module(module, (x,), ratio=0.5, budget="channels", round_to=1, capture="export")
    assert result.report.verification.ok and result.model.conv.out_channels == 4  # y is pruned, not frozen
