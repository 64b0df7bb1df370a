"""Hugging Face models (built from configs, random weights: models/hf.py) come back from ``graphprune.prune`` as
smaller modules of their own class, captured by torch.export (torch.fx traces none of them), verified against the
masked original; grouped-query attention loses whole KV groups with their query heads, multi-query attention keeps
its heads, and a decoder still generates."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import graphprune  # noqa: E402
from models.hf import build  # noqa: E402


def pruned(name: str):
    """Half of every group's channels (``budget="channels"``): the tests count whole heads and widths."""
    model, inputs = build(name)
    result = graphprune.prune(model, example_inputs=inputs, ratio=0.5, budget="channels", round_to=1)
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


def test_gemma_multi_query_attention_keeps_its_heads_whole():
    model, _, result = pruned("gemma")
    attn = result.model.model.layers[0].self_attn
    assert attn.k_proj.weight.shape[0] == model.model.layers[0].self_attn.k_proj.weight.shape[0]  # the one KV head
    assert attn.q_proj.weight.shape[0] == model.model.layers[0].self_attn.q_proj.weight.shape[0]
    assert any("head dimension" in why for g in result.report.groups for why in g.frozen_because)
    # Gemma scales its embeddings by sqrt(hidden_size) of the config it is built with: the report says so
    assert any("will not rebuild" in note for note in result.report.notes)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3", "mistral", "phi3", "bert", "vit", "gpt2"])
def test_more_families_prune_and_verify(name):
    _, _, result = pruned(name)
    assert result.report.after.params < 0.6 * result.report.before.params
