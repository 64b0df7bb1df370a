"""Hugging Face models (built from configs, random weights: models/hf.py) come back from ``graphprune.prune`` as
smaller modules of their own class, captured by torch.export (torch.fx traces none of them), verified against the
masked original; grouped-query attention loses whole KV groups with their query heads, multi-query attention keeps
its heads, and a decoder still generates."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import graphprune  # noqa: E402
import graphprune.channels  # noqa: E402
from graphprune.channels.analysis import HELD_REASON  # noqa: E402
from models.hf import build  # noqa: E402


def pruned(name: str, **options):
    """Half of every group's channels (``budget="channels"``): the tests count whole heads and widths."""
    model, inputs = build(name)
    result = graphprune.prune(model, example_inputs=inputs, ratio=0.5, budget="channels", round_to=1, **options)
    assert result.report.extra["frontend"] == "torch.export" and result.report.verification.ok
    return model, inputs, result


def test_llama_loses_whole_kv_groups_hidden_and_mlp_width_and_generates():
    model, (ids,), result = pruned("llama")
    small = result.model
    assert type(small) is type(model)
    attn = small.model.layers[0].self_attn
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    assert attn.k_proj.weight.shape[0] == attn.v_proj.weight.shape[0] == head_dim  # 1 of 2 KV groups kept
    assert attn.q_proj.weight.shape[0] == 2 * head_dim  # with its 2 query heads
    assert small.model.embed_tokens.weight.shape[1] < model.config.hidden_size  # the hidden width shrank
    assert result.report.after.params / result.report.before.params <= 0.40
    with torch.no_grad():
        out = small.generate(ids, max_new_tokens=3, do_sample=False, use_cache=False)
    assert out.shape == (1, ids.shape[1] + 3)


def test_the_config_follows_and_save_pretrained_round_trips(tmp_path):
    model, inputs, result = pruned("llama")
    small, config = result.model, result.model.config
    attn = small.model.layers[0].self_attn
    assert config.hidden_size == small.model.embed_tokens.weight.shape[1]
    assert config.num_key_value_heads * config.head_dim == attn.k_proj.weight.shape[0]
    assert config.num_attention_heads * config.head_dim == attn.q_proj.weight.shape[0]
    assert config.intermediate_size == small.model.layers[0].mlp.up_proj.weight.shape[0]
    assert config.head_dim == model.config.head_dim  # heads whole: the head dimension is the original's
    assert any("round-trips" in note for note in result.report.notes)
    small.save_pretrained(tmp_path)
    again = type(small).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(*inputs).logits, small(*inputs).logits)
    assert model.config.hidden_size == 64  # the user's model and its config are untouched


def test_gpt2_attention_attributes_follow_the_fused_projection():
    _, inputs, result = pruned("gpt2")
    attn = result.model.transformer.h[0].attn
    assert attn.split_size == attn.num_heads * attn.head_dim == attn.c_attn.weight.shape[1] // 3
    assert result.model.config.n_embd == result.model.transformer.wte.weight.shape[1] < 64


def reloads_equal(small, inputs, tmp_path, field="logits"):
    """save_pretrained -> from_pretrained gives the pruned model's outputs (what a user's deployment loads)."""
    small.save_pretrained(tmp_path)
    again = type(small).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(getattr(again(*inputs), field), getattr(small(*inputs), field), rtol=1e-5,
                                   atol=1e-6)
    return again


def test_gemma_multi_query_attention_keeps_its_heads_and_reloads_with_its_embedding_scale(tmp_path):
    """Gemma: one KV head stays whole with its query heads; the embeddings are scaled by sqrt(hidden_size) of the
    config the class is built with, so the rows are rescaled for the new width and the final norm before the tied
    LM head divided back: the logits are the same, save_pretrained -> from_pretrained is equal and generates."""
    model, inputs, result = pruned("gemma")
    small = result.model
    attn = small.model.layers[0].self_attn
    assert attn.k_proj.weight.shape[0] == model.model.layers[0].self_attn.k_proj.weight.shape[0]  # the one KV head
    assert attn.q_proj.weight.shape[0] == model.model.layers[0].self_attn.q_proj.weight.shape[0]
    assert any("head dimension" in why for g in result.report.groups for why in g.frozen_because)
    hidden = small.config.hidden_size
    assert hidden == small.model.embed_tokens.weight.shape[1] < model.config.hidden_size
    assert float(small.model.embed_tokens.embed_scale) == pytest.approx(hidden ** 0.5)
    assert any("embed_tokens scaled its output" in note and "final norm" in note for note in result.report.notes)
    assert any("round-trips" in note for note in result.report.notes)
    again = reloads_equal(small, inputs, tmp_path)
    with torch.no_grad():
        out = again.generate(inputs[0], max_new_tokens=3, do_sample=False, use_cache=False)
    assert out.shape == (1, inputs[0].shape[1] + 3)


def test_whisper_encoder_keeps_what_its_config_cannot_describe_and_reloads(tmp_path):
    """Whisper sizes its attention from d_model, which stays whole as the encoder's output: the attention
    projections are excluded and planned again (named in the report), the MLP width shrinks into
    ``encoder_ffn_dim``, and save_pretrained -> from_pretrained is equal."""
    model, inputs, result = pruned("whisper_encoder")
    small = result.model
    fc1 = small.layers[0].fc1
    assert small.config.encoder_ffn_dim == fc1.out_features < model.config.encoder_ffn_dim
    assert small.layers[0].self_attn.q_proj.weight.shape == model.layers[0].self_attn.q_proj.weight.shape
    assert result.report.after.params < result.report.before.params
    assert any("plan made again" in note and "layers.0.self_attn.q_proj" in note for note in result.report.notes)
    assert any(HELD_REASON in why for g in result.report.groups for why in g.frozen_because)
    assert any("round-trips" in note for note in result.report.notes)
    reloads_equal(small, inputs, tmp_path, "last_hidden_state")


def test_t5_attention_loses_whole_heads_and_reloads(tmp_path):
    """T5 (q / k / v / o, ``n_heads``, ``inner_dim``, the config's ``num_heads``): half the heads go, the module
    attributes and the config follow, and save_pretrained -> from_pretrained is equal."""
    model, inputs, result = pruned("t5_encoder")
    small = result.model
    attn = small.encoder.block[0].layer[0].SelfAttention
    assert attn.n_heads == small.config.num_heads == model.config.num_heads // 2
    assert attn.q.weight.shape[0] == attn.inner_dim == attn.n_heads * attn.key_value_proj_dim
    assert any("round-trips" in note for note in result.report.notes)
    reloads_equal(small, inputs, tmp_path, "last_hidden_state")


def check_query_heads(name: str, tmp_path) -> None:
    """``query_heads=True``: q_proj loses whole query heads, the same ones in every KV group, o_proj the matching
    columns; k / v keep every head; the config says the new head count; it reloads equal and generates."""
    model, inputs, result = pruned(name, query_heads=True)
    small, config = result.model, result.model.config
    head_dim, kv = model.config.head_dim, model.config.num_key_value_heads
    rep = model.config.num_attention_heads // kv
    for i, layer in enumerate(small.model.layers):
        attn = layer.self_attn
        rows = result.plan.kept(graphprune.channels.Space(f"model.layers.{i}.self_attn.q_proj.weight", 0))
        heads = rows.reshape(-1, head_dim) // head_dim
        assert (heads == heads[:, :1]).all() and (rows % head_dim == np.tile(np.arange(head_dim), len(heads))).all()
        within = heads[:, 0].reshape(kv, -1) % rep  # kept heads, group by group: the same indices in each
        assert (within == within[:1]).all() and (heads[:, 0].reshape(kv, -1) // rep == np.arange(kv)[:, None]).all()
        assert attn.q_proj.weight.shape[0] == config.num_attention_heads * head_dim == len(rows) < rep * kv * head_dim
        assert attn.k_proj.weight.shape[0] == attn.v_proj.weight.shape[0] == kv * head_dim  # K / V untouched
        assert attn.o_proj.weight.shape[1] == len(rows) and attn.num_key_value_groups == len(heads) // kv
    assert config.num_key_value_heads == kv and config.head_dim == head_dim
    assert any("round-trips" in note for note in result.report.notes)
    small.save_pretrained(tmp_path)
    again = type(small).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(*inputs).logits, small(*inputs).logits)
        out = again.generate(inputs[0], max_new_tokens=3, do_sample=False, use_cache=False)
    assert out.shape == (1, inputs[0].shape[1] + 3)


@pytest.mark.slow  # 8-13 s each (two torch.export captures and the ONNX export check); the rules: tests/core
@pytest.mark.parametrize("name", ["llama", "qwen3", "mistral"])
def test_query_heads_go_inside_each_kv_group(name, tmp_path):
    check_query_heads(name, tmp_path)


def test_convnext_stage_widths_go_to_the_config_and_it_reloads(tmp_path):
    """ConvNeXt: every stage loses half its width (its own channels-first / channels-last LayerNorms follow), the
    config's per-stage ``hidden_sizes`` say the new widths, and save_pretrained -> from_pretrained is equal."""
    model, inputs, result = pruned("convnext")
    small = result.model
    stages = small.convnext.encoder.stages
    assert small.config.hidden_sizes == [s.layers[0].dwconv.out_channels for s in stages] == [8, 16, 32, 64]
    assert all(m.normalized_shape == tuple(m.weight.shape) for m in small.modules()
               if isinstance(m, torch.nn.LayerNorm))
    assert any("round-trips" in note for note in result.report.notes)
    small.save_pretrained(tmp_path)
    again = type(small).from_pretrained(tmp_path).eval()
    with torch.no_grad():  # the same weights; the convs' kernels round differently on the reloaded layout (1e-7)
        torch.testing.assert_close(again(*inputs).logits, small(*inputs).logits, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~12 s: MobileViT's unfolding makes torch.export slow
def test_mobilevit_prunes_verifies_and_says_why_it_does_not_reload():
    """MobileViT: smaller and verified; the unfold of patches merges channels with the batch (frozen, named), and
    its config derives widths it cannot describe (expansions rounded to multiples of 8, head size from the hidden
    width), so the report names the first size from_pretrained would build differently."""
    _, _, result = pruned("mobilevit")
    assert result.report.after.params < 0.5 * result.report.before.params
    assert any("Reshape does not map this axis" in why for g in result.report.groups for why in g.frozen_because)
    assert any("will not rebuild" in note and "size mismatch for" in note for note in result.report.notes)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3", "mistral", "phi3", "bert", "vit", "gpt2"])
def test_more_families_prune_and_verify(name):
    _, _, result = pruned(name)
    assert result.report.after.params < 0.6 * result.report.before.params


@pytest.mark.slow  # ~20 s: three torch.export captures and TPP's 300 regularisation steps
def test_graphprune_train_prunes_and_finetunes_a_causal_lm(tmp_path, monkeypatch, capsys):
    """``graphprune train models/hf.py:llama_lm --loss lm``: TPP regularises the chosen units on token data,
    removes them from the torch.export-captured Llama, fine-tunes, reports the loss at each stage and saves a
    smaller LlamaForCausalLM whose config says its sizes."""
    from pathlib import Path

    from graphprune.cli.main import main
    from models.hf import lm_data

    np.savez(tmp_path / "tokens.npz", input_ids=lm_data(64)["input_ids"])  # labels default to the ids
    spec = f"{Path(__file__).resolve().parents[2] / 'models' / 'hf.py'}:llama_lm"
    monkeypatch.chdir(tmp_path)
    assert main(["train", spec, "--data", "tokens.npz", "--loss", "lm", "--epochs", "3", "--lr", "0.05",
                 "-o", "small.pt"]) == 0
    line = next(t for t in capsys.readouterr().out.splitlines() if t.startswith("loss (lm)"))
    original_loss, pruned_loss, after = (float(t.rsplit(" ", 1)[1]) for t in line.split(", "))
    assert after < original_loss and after < pruned_loss  # fine-tuning lowers the next-token loss
    small = torch.load(tmp_path / "small.pt", weights_only=False)
    original, _ = build("llama")
    assert type(small) is type(original)
    assert sum(p.numel() for p in small.parameters()) < 0.6 * sum(p.numel() for p in original.parameters())
    assert small.config.hidden_size == small.model.embed_tokens.weight.shape[1] < 64
    assert small.config.intermediate_size == small.model.layers[0].mlp.up_proj.weight.shape[0] < 128
    with torch.no_grad():
        assert small.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=2, do_sample=False,
                              use_cache=False).shape == (1, 5)


def test_the_lm_loss_scores_each_position_against_the_next_token():
    from graphprune.errors import UsageError
    from graphprune.torch.finetune import lm_loss

    tokens = torch.tensor([[3, 4, 5, 6]])
    ahead = torch.nn.functional.one_hot(torch.tensor([[4, 5, 6, 0]]), 8).float() * 50  # position t says token t+1
    same = torch.nn.functional.one_hot(tokens, 8).float() * 50  # position t says token t
    assert float(lm_loss(ahead, tokens)) < 1e-6 < 40 < float(lm_loss(same, tokens))
    with pytest.raises(UsageError):
        lm_loss(torch.zeros(1, 5), tokens)  # class logits are not a language model's


@pytest.mark.slow  # ~12 s: two torch.export captures
def test_phi3_writes_the_head_dim_it_reads_when_the_derivation_breaks_and_reloads(tmp_path):
    """Phi-3 derives the head dimension from hidden_size / num_attention_heads unless the config has ``head_dim``.
    With ``query_heads=True`` its heads stay (the fused qkv_proj is sliced at literal offsets) while the hidden
    width halves, so the derivation no longer holds: ``head_dim`` is written (the class reads it) and
    save_pretrained -> from_pretrained is equal."""
    model, inputs, result = pruned("phi3", query_heads=True)
    small, config = result.model, result.model.config
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    assert config.hidden_size == small.model.embed_tokens.weight.shape[1] < model.config.hidden_size
    assert config.head_dim == head_dim != config.hidden_size // config.num_attention_heads
    assert small.model.layers[0].self_attn.qkv_proj.weight.shape[0] == \
        (config.num_attention_heads + 2 * config.num_key_value_heads) * head_dim
    assert any("round-trips" in note for note in result.report.notes)
    reloads_equal(small, inputs, tmp_path)


def test_a_llamas_activations_run_under_vmap_and_equal_the_point_by_point_run():
    # torch.export guards the batch axis, so the points run through torch.func.vmap; its `view`s of batched
    # tensors failed there ("view size is not compatible") and every HF model fell back to one point per run
    from graphprune.frontends.fx.activations import TorchActivations
    from graphprune.frontends.fx.export import capture
    from graphprune.methods.calib import model_inputs, random_calibration

    module, inputs = build("llama")
    source = capture(module, inputs)
    names = [n.outputs[0] for n in source.graph.nodes if n.op == "MatMul"][-3:] + list(source.graph.outputs)
    calib = random_calibration(model_inputs(source), 5, seed=0)
    mapped = TorchActivations(source, names)
    got = mapped.run(calib.inputs)
    assert mapped.mode == "vmap"
    one_by_one = TorchActivations(source, names)
    one_by_one.mode = "chunks"
    want = one_by_one.run(calib.inputs)
    for name in names:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)
