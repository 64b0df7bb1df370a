"""Hugging Face modules after the resize: the size attributes their ``forward`` reads, and the config fields that
describe the new sizes, so the pruned model runs, generates, and ``save_pretrained`` → ``from_pretrained`` builds
the same model again. Duck-typed on what a module or config holds (no transformers import).

* **Module attributes**: ``Conv1D.nf`` (GPT-2's transposed linear); GPT-2 attention's ``split_size``, ``embed_dim``
  and ``num_heads``; the head counts decoder, BERT-style and T5 attention keep (``num_heads``, ``num_key_value_heads``,
  ``num_key_value_groups``, ``num_attention_heads``, ``all_head_size``, T5's ``n_heads`` and ``inner_dim``), from
  the resized projections and the unchanged head dimension.
* **Config**: the hidden width, heads, KV heads, head dimension and MLP width, measured on the resized module, under
  whichever of each family's names the config has (``hidden_size`` / ``n_embd`` / ``d_model`` …). A config holds
  one size per kind: when layers differ (``scope="global"``), or the family derives the head dimension from the
  hidden width and heads and that no longer holds, the config is left and the report says why.
  A family that reads ``config.head_dim`` when it is there but derives it from the hidden width and heads
  otherwise (Phi-3) gets ``head_dim`` written where the derivation no longer holds, if the class then sizes its
  attention as pruned (checked on the meta device).
* **Constants derived from the config** (:func:`fold_embedding_scale`): Gemma multiplies its embeddings by
  ``sqrt(hidden_size)``, a non-persistent buffer ``from_pretrained`` recomputes from the config. A narrower hidden
  width would change it on reload, so the embedding rows are multiplied by ``c = old scale / new scale`` and the
  buffer set to the new scale: the embedding output is the same number. A tied LM head reads those rows too, so
  the final norm before it is divided by ``c`` (its weight, applied as ``(1 + w)`` or as ``w``; its bias): the
  logits are the same, the base model's last hidden state (not an output of the LM) is ``1/c`` of before.
* **What the config cannot describe** (:func:`unsized`): the parameters the plan resized to a shape the class
  built from the updated config would not have (Whisper sizes its attention projections and first conv from
  ``d_model``, which stays whole as the encoder's output). The torch frontend excludes the nodes reading them and
  plans again, so the result reloads; a model whose layers differ (``scope="global"``) is left as the user asked.
* **Rebuild check** (:func:`rebuild_problem`): the model class built from the updated config, with the pruned
  weights loaded, must compute what the pruned model computes; where it does not, the report says
  ``from_pretrained`` will not rebuild it and names the first difference.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import torch
from torch import nn

CONFIG_FIELDS = {
    "hidden": ("hidden_size", "n_embd", "d_model", "dim"),
    "heads": ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"),
    "kv_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim", "d_kv"),
    "intermediate": ("intermediate_size", "n_inner", "d_ff", "encoder_ffn_dim", "hidden_dim"),
}


def out_features(m: nn.Module) -> int:
    """Output width of a Linear or of GPT-2's Conv1D (weight stored (in, out))."""
    w = m.weight
    return int(w.shape[1] if type(m).__name__ == "Conv1D" else w.shape[0])


def fix_modules(model: nn.Module, heads_of: dict[nn.Module, tuple[int, int, int]]) -> None:
    """The size attributes ``forward`` reads, from the resized weights and each attention module's heads
    (measured before any attribute changed: see the module docstring)."""
    for m in model.modules():
        if type(m).__name__ == "Conv1D" and hasattr(m, "nf"):
            m.nf = int(m.weight.shape[1])
            if hasattr(m, "nx"):
                m.nx = int(m.weight.shape[0])
    for m, (q, kv, head_dim) in heads_of.items():
        if hasattr(m, "c_attn") and hasattr(m, "split_size"):  # GPT-2: q, k and v in one Conv1D
            m.split_size, m.embed_dim = q * head_dim, out_features(m.c_proj)
        for name, value in (("num_heads", q), ("num_attention_heads", q), ("n_heads", q), ("num_key_value_heads", kv),
                            ("num_key_value_groups", q // max(kv, 1)), ("all_head_size", q * head_dim),
                            ("inner_dim", q * head_dim)):
            if isinstance(getattr(m, name, None), int):
                setattr(m, name, value)


def attention_heads(m: nn.Module) -> tuple[int, int, int] | None:
    """(query heads, key / value heads, head dimension) of an attention module, from its projections."""
    head_dim = getattr(m, "head_dim", None) or getattr(m, "attention_head_size", None) or \
        getattr(m, "key_value_proj_dim", None)  # T5
    if not isinstance(head_dim, int) or head_dim < 1:
        return None
    if all(isinstance(getattr(m, p, None), nn.Linear) for p in ("q", "k", "v", "o")):  # T5: q, k, v, o
        return out_features(m.q) // head_dim, out_features(m.k) // head_dim, head_dim
    if all(hasattr(m, p) for p in ("q_proj", "k_proj")):
        return out_features(m.q_proj) // head_dim, out_features(m.k_proj) // head_dim, head_dim
    if all(hasattr(m, p) for p in ("query", "key")):
        return out_features(m.query) // head_dim, out_features(m.key) // head_dim, head_dim
    if hasattr(m, "c_attn") and not getattr(m, "is_cross_attention", False):
        q = out_features(m.c_attn) // 3 // head_dim
        return q, q, head_dim
    if hasattr(m, "qkv_proj") and isinstance(getattr(m, "num_key_value_heads", None), int):
        # Phi-3: [q | k | v] in one projection; whole KV groups go, so each keeps its share of query heads
        rep = m.config.num_attention_heads // m.num_key_value_heads
        kv = out_features(m.qkv_proj) // head_dim // (rep + 2)
        return rep * kv, kv, head_dim
    return None


def mlp_widths(model: nn.Module) -> Iterator[int]:
    """The MLP width of every layer: the up / first projection of each MLP block."""
    for name, m in model.named_modules():
        if isinstance(getattr(m, "gate_up_proj", None), nn.Linear):  # Phi-3: gate and up in one projection
            yield out_features(m.gate_up_proj) // 2
            continue
        for attr in ("up_proj", "fc1", "c_fc", "wi"):
            if isinstance(getattr(m, attr, None), nn.Module) and hasattr(getattr(m, attr), "weight"):
                yield out_features(getattr(m, attr))
                break
        else:
            if name.endswith("intermediate") and isinstance(getattr(m, "dense", None), nn.Linear):
                yield out_features(m.dense)


def input_embeddings(model: nn.Module) -> nn.Module | None:
    """``get_input_embeddings()``, or None where the family has none (vision models raise NotImplementedError)."""
    try:
        return model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except NotImplementedError:
        return None


def hidden_width(model: nn.Module) -> int | None:
    embeddings = input_embeddings(model)
    if isinstance(embeddings, nn.Embedding):
        return int(embeddings.weight.shape[1])
    conv = next((m for m in (embeddings.modules() if embeddings is not None else ()) if isinstance(m, nn.Conv2d)), None)
    return int(conv.out_channels) if conv is not None else None


def stage_widths(model: nn.Module) -> list[int] | None:
    """The width of every stage of a staged CNN whose config lists one per stage (ConvNeXt's ``hidden_sizes``):
    the output channels of each stage's last conv, when the model has a ``stages`` list of that length."""
    listed = getattr(model.config, "hidden_sizes", None)
    if not isinstance(listed, (list, tuple)):
        return None
    for m in model.modules():
        stages = getattr(m, "stages", None)
        if isinstance(stages, nn.ModuleList) and len(stages) == len(listed):
            convs = [[c for c in stage.modules() if isinstance(c, nn.Conv2d)] for stage in stages]
            return [int(c[-1].out_channels) for c in convs] if all(convs) else None
    return None


def measured(model: nn.Module, heads_of: dict[nn.Module, tuple[int, int, int]]) -> dict[str, set[int]]:
    sizes: dict[str, set[int]] = {kind: set() for kind in CONFIG_FIELDS}
    for q, kv, head_dim in heads_of.values():
        sizes["heads"].add(q)
        sizes["kv_heads"].add(kv)
        sizes["head_dim"].add(head_dim)
    sizes["intermediate"].update(mlp_widths(model))
    hidden = hidden_width(model)
    if hidden is not None:
        sizes["hidden"].add(hidden)
    return sizes


def adapt(model: nn.Module) -> tuple[str, ...]:
    """A resized Hugging Face model made whole again (:func:`fix_modules`, :func:`update_config`); the report
    lines. Any other module is left as it is."""
    if not hasattr(getattr(model, "config", None), "save_pretrained"):
        return ()
    heads_of = {m: heads for m in model.modules() if (heads := attention_heads(m)) is not None}
    sizes = measured(model, heads_of)
    fix_modules(model, heads_of)
    notes = update_config(model, sizes, stage_widths(model))
    return notes + fold_embedding_scale(model)


def on_meta(model: nn.Module) -> nn.Module | None:
    """``type(model)(model.config)`` on the meta device: the shapes and the constants computed from the config
    that ``from_pretrained`` would build, without allocating or initialising weights; None where the class cannot
    be built from the config (:func:`rebuild_problem` then says why)."""
    try:
        with torch.device("meta"):
            return type(model)(model.config)
    except Exception:  # noqa: BLE001 - any failure of a foreign constructor means "not buildable"
        return None


def unsized(model: nn.Module, original: nn.Module) -> tuple[str, ...]:
    """The state-dict names of ``model`` (a resized copy of ``original``) whose shape the plan changed to one the
    class built from ``model.config`` would not have: what the config cannot describe. Empty for a module without
    a Hugging Face config, and where layers differ in size (the config holds one size per kind, and the user asked
    for a plan per layer: the report says it will not rebuild)."""
    if not hasattr(getattr(model, "config", None), "save_pretrained"):
        return ()
    heads_of = {m: heads for m in model.modules() if (heads := attention_heads(m)) is not None}
    if any(len(values) > 1 for values in measured(model, heads_of).values()):
        return ()
    again = on_meta(model)
    if again is None:
        return ()
    theirs, before = again.state_dict(), original.state_dict()
    return tuple(k for k, v in model.state_dict().items()
                 if k in theirs and k in before and v.shape != theirs[k].shape and v.shape != before[k].shape)


def fold_embedding_scale(model: nn.Module) -> tuple[str, ...]:
    """Embeddings scaled by a constant the class computes from the config (``embed_scale``, rebuilt from
    ``scalar_embed_scale``: Gemma's ``sqrt(hidden_size)``) keep their output when the constant changes with the
    pruned width: the rows are multiplied by ``c = old / new``, and a tied output layer is compensated at the norm
    before it (:func:`divide_norm`). The report lines; none when nothing changed."""
    again = on_meta(model)
    if again is None:
        return ()
    notes, rebuilt = [], dict(again.named_modules())
    for name, m in model.named_modules():
        scale = getattr(m, "embed_scale", None)
        new = getattr(rebuilt.get(name), "scalar_embed_scale", None)
        if not isinstance(scale, torch.Tensor) or scale.numel() != 1 or not isinstance(new, float):
            continue
        old = float(scale)
        if abs(old - new) <= 1e-6 * abs(new):
            continue
        c = old / new
        tied = getattr(model.get_output_embeddings(), "weight", None) is m.weight \
            if hasattr(model, "get_output_embeddings") else False
        norm = final_norm(model) if tied else None
        if tied and norm is None:
            notes.append(f"{name} is scaled by {old:.6g} here and by {new:.6g} in the class built from the config, "
                         "and its weight is tied to the output layer with no norm before it to compensate")
            continue
        with torch.no_grad():
            m.weight.copy_((m.weight.double() * c).to(m.weight.dtype))
            scale.fill_(new)
            m.scalar_embed_scale = new
            if norm is not None:
                divide_norm(norm, c)
        where = " and the final norm divided by it (the tied LM head reads the same rows)" if norm is not None else ""
        notes.append(f"Hugging Face: {name} scaled its output by {old:.6g}; the class built from the pruned config "
                     f"scales by {new:.6g}, so its rows were multiplied by {c:.6g}{where}")
    return tuple(notes)


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm whose output the LM head reads: the base model's ``norm`` (Gemma, Llama-style decoders)."""
    norm = getattr(getattr(model, "base_model", None), "norm", None)
    return norm if isinstance(getattr(norm, "weight", None), torch.Tensor) else None


def divide_norm(norm: nn.Module, c: float) -> None:
    """``norm``'s output divided by ``c``: its weight is applied as ``(1 + w)`` (Gemma's RMSNorm: the output of a
    zero weight is not zero) or as ``w``; a bias is divided too."""
    probe = copy.deepcopy(norm).float()
    with torch.no_grad():
        probe.weight.zero_()
        if getattr(probe, "bias", None) is not None:
            probe.bias.zero_()
        offset = bool(probe(torch.ones(1, probe.weight.shape[-1])).abs().max() > 0)
        w = norm.weight.double()
        norm.weight.copy_(((1 + w) / c - 1 if offset else w / c).to(norm.weight.dtype))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_((norm.bias.double() / c).to(norm.bias.dtype))


def update_config(model: nn.Module, sizes: dict[str, set[int]], stages: list[int] | None = None) -> tuple[str, ...]:
    """``model.config`` with the pruned ``sizes`` (one per kind) and per-stage widths ``stages`` (a config that
    lists one per stage: ``hidden_sizes``); the report lines for what it could not say."""
    config: Any = model.config
    notes, written = [], []
    if stages is not None and list(config.hidden_sizes) != stages:
        config.hidden_sizes = stages
        written.append(f"hidden_sizes={stages}")
    for kind, values in {k: set(v) for k, v in sizes.items()}.items():
        fields = [f for f in CONFIG_FIELDS[kind] if getattr(config, f, None) is not None or
                  (kind == "head_dim" and f == "head_dim" and hasattr(config, f))]
        if not values or not fields:
            continue
        if len(values) > 1:
            notes.append(f"the config cannot describe per-layer sizes ({kind}: {sorted(values)}); "
                         "save_pretrained -> from_pretrained will not rebuild this model (prune with scope='local')")
            continue
        value = values.pop()
        for f in fields:
            if getattr(config, f) != value:
                setattr(config, f, value)
                written.append(f"{f}={value}")
    heads, hidden = (getattr(config, f, None) for f in ("num_attention_heads", "hidden_size"))
    if heads and hidden and not hasattr(config, "head_dim") and sizes["head_dim"] and \
            hidden / heads not in sizes["head_dim"]:
        if len(sizes["head_dim"]) == 1 and reads_head_dim(model, min(sizes["head_dim"])):
            written.append(f"head_dim={config.head_dim}")
        else:
            notes.append(f"the config derives the head dimension as hidden_size / num_attention_heads = "
                         f"{hidden / heads:g}, but the heads are {sorted(sizes['head_dim'])} wide: from_pretrained "
                         "will not rebuild this model")
    if written:
        notes.insert(0, f"Hugging Face config updated: {', '.join(written)}")
    return tuple(notes)


def reads_head_dim(model: nn.Module, head_dim: int) -> bool:
    """Whether the class takes ``config.head_dim`` when the config has one (Phi-3 reads it, else derives it from
    the hidden width and heads): ``head_dim`` is written, kept if every attention of the class built from the
    config on the meta device is then ``head_dim`` wide, and removed again otherwise (Whisper ignores it)."""
    config: Any = model.config
    config.head_dim = head_dim
    again = on_meta(model)
    widths = {getattr(m, "head_dim", None) for m in (again.modules() if again is not None else ())
              if attention_heads(m) is not None}
    if widths == {head_dim}:
        return True
    del config.head_dim
    return False


def rebuild_problem(model: nn.Module, inputs: tuple[Any, ...]) -> str | None:
    """Why ``type(model)(model.config)`` with ``model``'s weights does not compute what ``model`` does on
    ``inputs`` (what ``from_pretrained`` of a ``save_pretrained`` would give), or None when it does."""
    try:
        with torch.no_grad():
            again = type(model)(model.config).to(next(model.parameters()).dtype)
            again.load_state_dict(model.state_dict(), strict=True)
            again.eval()
            was = model.training
            model.eval()
            a, b = model(*inputs), again(*inputs)
            model.train(was)
    except Exception as exc:  # a config the class cannot be built from, missing or unexpected weights
        text = [t.strip() for t in str(exc).strip().splitlines() if t.strip()]
        # load_state_dict's first line only names the class: the first mismatch says which size the config misses
        detail = next((t for t in text if t.startswith(("size mismatch", "Missing key", "Unexpected key"))),
                      text[0] if text else "")
        return f"{type(exc).__name__}: {detail}"
    first = (lambda out: out.logits if hasattr(out, "logits") else out[0] if isinstance(out, (tuple, list)) else
             next(iter(out.values())) if isinstance(out, dict) else out)
    x, y = first(a), first(b)
    if not torch.allclose(x, y, rtol=1e-4, atol=1e-5):
        return f"the model rebuilt from the config computes something else (max difference {float((x - y).abs().max()):.3g})"
    return None
