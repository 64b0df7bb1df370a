"""Small random-init Hugging Face models of the families people prune, built from configs in code (no downloads):
``transformers`` is an optional dependency (the ``hf`` extra). Every builder returns ``(model, example_inputs)``
with the model in eval mode, ``use_cache`` off, and weights re-drawn at std 1/sqrt(fan-in) so activations stay of
order one through the random layers (the library's 0.02 init would make most outputs vanish).

Sizes: hidden 64, 2 layers, 4 heads (2 KV heads for the grouped-query families, 1 for Gemma's multi-query), MLP 128,
sequence 8, vocabulary 128, images 32x32; ConvNeXt with stages 16-128 wide, one block each; MobileViT with
transformer widths 16-32 over 2 heads. :func:`llama_lm` and :func:`lm_data` are a model and token data for
``graphprune train models/hf.py:llama_lm --data tokens.npz --loss lm``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

SEQ, VOCAB, HIDDEN, LAYERS, HEADS, FFN = 8, 128, 64, 2, 4, 128
TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


def ids() -> torch.Tensor:
    return torch.randint(3, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(0))


def image() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def decoder(config_cls: str, model_cls: str, **extra) -> Callable[[], tuple[torch.nn.Module, tuple]]:
    def build():
        import transformers as tf

        cfg = getattr(tf, config_cls)(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN,
                                      num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=64,
                                      use_cache=False, **TOKENS, **extra)
        return getattr(tf, model_cls)(cfg), (ids(),)
    return build


def bert_classifier():
    import transformers as tf

    cfg = tf.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=64, num_labels=5)
    return tf.BertForSequenceClassification(cfg), (ids(),)


def vit_classifier():
    import transformers as tf

    cfg = tf.ViTConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                       intermediate_size=FFN, image_size=32, patch_size=8, num_channels=3, num_labels=5)
    return tf.ViTForImageClassification(cfg), (image(),)


def gpt2_lm():
    import transformers as tf

    cfg = tf.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=64, use_cache=False,
                        bos_token_id=1, eos_token_id=2)
    return tf.GPT2LMHeadModel(cfg), (ids(),)


def whisper_encoder():
    import transformers as tf

    cfg = tf.WhisperConfig(vocab_size=VOCAB, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS,
                           encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
                           decoder_ffn_dim=FFN, num_mel_bins=16, max_source_positions=16, max_target_positions=16,
                           decoder_start_token_id=1, **TOKENS)
    features = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(0))  # 2 × max_source_positions frames
    return tf.WhisperModel(cfg).get_encoder(), (features,)


def t5_encoder():
    import transformers as tf

    cfg = tf.T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=16, d_ff=FFN, num_layers=LAYERS, num_heads=HEADS)
    return tf.T5EncoderModel(cfg), (ids(),)


def convnext_classifier():
    import transformers as tf

    cfg = tf.ConvNextConfig(num_channels=3, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], image_size=32,
                            num_labels=5)
    return tf.ConvNextForImageClassification(cfg), (image(),)


def mobilevit_classifier():
    """MobileViT-XXS-like, smaller: at 32x32 the last stage's 1x1 map is interpolated up to one 2x2 patch."""
    import transformers as tf

    cfg = tf.MobileViTConfig(num_channels=3, image_size=32, patch_size=2, hidden_sizes=[16, 24, 32],
                             neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 64], num_attention_heads=2, expand_ratio=2.0,
                             num_labels=5)
    return tf.MobileViTForImageClassification(cfg), (image(),)


HF_MODELS: dict[str, Callable[[], tuple[torch.nn.Module, tuple]]] = {
    "llama": decoder("LlamaConfig", "LlamaForCausalLM", num_key_value_heads=2),
    "qwen3": decoder("Qwen3Config", "Qwen3ForCausalLM", num_key_value_heads=2, head_dim=16),
    "mistral": decoder("MistralConfig", "MistralForCausalLM", num_key_value_heads=2),
    "phi3": decoder("Phi3Config", "Phi3ForCausalLM", num_key_value_heads=2),
    "gemma": decoder("GemmaConfig", "GemmaForCausalLM", num_key_value_heads=1, head_dim=16),
    "bert": bert_classifier,
    "vit": vit_classifier,
    "gpt2": gpt2_lm,
    "whisper_encoder": whisper_encoder,
    "t5_encoder": t5_encoder,
    "convnext": convnext_classifier,
    "mobilevit": mobilevit_classifier,
}


def llama_lm() -> tuple[torch.nn.Module, tuple]:
    """The small Llama of :data:`HF_MODELS` with its example token ids: ``graphprune train models/hf.py:llama_lm``."""
    return build("llama")


def lm_data(points: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids a language model can learn, for ``graphprune train --loss lm``: ``points`` sequences of SEQ ids
    counting up by one from a random start (wrapping past the special ids 0-2), so each next token follows from
    the last; ``labels`` are the ids themselves (the loss shifts them)."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, VOCAB - 3, (points, 1))
    ids = (3 + (start + np.arange(SEQ)) % (VOCAB - 3)).astype(np.int64)
    return {"input_ids": ids, "labels": ids}


def liven(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight matrix and kernel re-drawn at std 1/sqrt(fan-in); biases and norms kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / max(p[0].numel(), 1) ** 0.5)
    return model


def build(name: str, seed: int = 0) -> tuple[torch.nn.Module, tuple]:
    """``(model, example_inputs)`` of family ``name``, seeded, eval mode."""
    torch.manual_seed(seed)
    model, inputs = HF_MODELS[name]()
    return liven(model, seed).eval(), inputs
