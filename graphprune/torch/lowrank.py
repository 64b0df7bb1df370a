"""Low-rank decomposition of torch modules: each ``nn.Conv2d`` / ``nn.Linear`` worth it becomes an
``nn.Sequential`` of two modules named ``lowrank_a`` and ``lowrank_b``.

    from graphprune.torch.lowrank import decompose_module
    small = decompose_module(model, energy=0.9, example_input=torch.randn(1, 3, 32, 32))

The math (matrix views, rank rule, factors, MACs) is :mod:`graphprune.lowrank`, shared with the ONNX pass:

* ``nn.Linear`` (out, in): ``lowrank_a`` = Linear(in, r, no bias) with S_r V_rᵀ, ``lowrank_b`` = Linear(r, out)
  with U_r and the bias;
* ``nn.Conv2d``, channel scheme: ``lowrank_a`` = r·G filters of c/G×kh×kw with the original stride, padding,
  dilation, padding mode and groups; ``lowrank_b`` = 1×1 conv to n with the bias;
* spatial scheme: ``lowrank_a`` = kh×1 conv (H stride / padding / dilation), ``lowrank_b`` = 1×kw conv (the W
  ones) with the bias.

A layer is replaced only when its MACs fall. With ``example_input`` the count uses the real input and output
sizes; without it, a conv is counted per output pixel with the input width taken as stride × output width.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from graphprune.methods import lowrank as lr


@dataclass(frozen=True)
class LayerDecision:
    """What happened to one candidate module."""

    name: str
    kind: str  # "linear", "channel" or "spatial"
    rank: int
    full_rank: int
    macs_before: int
    macs_after: int
    decomposed: bool
    why: str = ""


# --------------------------------------------------------------------------- matrix views (torch, on device)


def kind_of(module: nn.Module, scheme: lr.Scheme) -> str:
    return "linear" if isinstance(module, nn.Linear) else scheme


def matrices(weight: torch.Tensor, module: nn.Module, scheme: lr.Scheme) -> torch.Tensor:
    """The (G, rows, cols) stack the scheme decomposes (torch twin of :func:`graphprune.lowrank.conv_matrices`)."""
    if isinstance(module, nn.Linear):
        return weight[None]
    g = module.groups
    n, cg, kh, kw = weight.shape
    per = weight.reshape(g, n // g, cg, kh, kw)
    if scheme == "channel":
        return per.reshape(g, n // g, -1)
    return per.permute(0, 2, 3, 1, 4).reshape(g, cg * kh, (n // g) * kw)


def from_matrices(mats: torch.Tensor, module: nn.Module, scheme: lr.Scheme) -> torch.Tensor:
    shape = module.weight.shape
    if isinstance(module, nn.Linear) or scheme == "channel":
        return mats.reshape(shape)
    g = module.groups
    n, cg, kh, kw = shape
    return mats.reshape(g, cg, kh, n // g, kw).permute(0, 3, 1, 2, 4).reshape(shape)


def rank_of(singular_values: torch.Tensor, rule: lr.RankRule) -> tuple[int, int]:
    """(r, full) for a (G, k) stack of singular values: the largest r any group needs."""
    s = singular_values.detach().reshape(-1, singular_values.shape[-1]).double().cpu().numpy()
    return max(rule.rank(row) for row in s), s.shape[-1]


def is_candidate(module: nn.Module, scheme: lr.Scheme) -> bool:
    """A Linear or a 2-D Conv2d that some rank ≥ 1 could make cheaper (depthwise convs never are)."""
    if isinstance(module, nn.Linear):
        return True
    if type(module) is not nn.Conv2d:  # subclasses may change forward: leave them alone
        return False
    return layer_macs(module, 1, scheme, None) < layer_macs(module, None, scheme, None)


def targets(model: nn.Module, scheme: lr.Scheme, include: Iterable[str] | None = None,
            exclude: Iterable[str] = ()) -> dict[str, nn.Module]:
    """Candidate modules by qualified name, filtered by fnmatch patterns ``include`` / ``exclude``."""
    inc, exc = (None if include is None else tuple(include)), tuple(exclude)
    out = {}
    for name, m in model.named_modules():
        if not is_candidate(m, scheme):
            continue
        if inc is not None and not any(fnmatch.fnmatchcase(name, p) for p in inc):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exc):
            continue
        out[name] = m
    return out


# --------------------------------------------------------------------------- MACs


def layer_macs(module: nn.Module, r: int | None, scheme: lr.Scheme,
               shapes: tuple[tuple[int, ...], tuple[int, ...]] | None) -> int:
    """MACs of ``module`` (``r`` None) or of its rank-r pair; ``shapes`` = (input shape, output shape)."""
    if isinstance(module, nn.Linear):
        rows = 1 if shapes is None else int(np.prod(shapes[1][:-1], dtype=np.int64))
        return lr.matmul_macs(rows, module.in_features, module.out_features, r)
    w = tuple(module.weight.shape)
    if shapes is None:  # per output pixel; the input is stride × wider than the output
        sh, sw = module.stride
        in_shape, out_shape = (1, w[1] * module.groups, sh, sw), (1, w[0], 1, 1)
    else:
        in_shape, out_shape = shapes
    return lr.conv_macs(out_shape, in_shape, w, module.groups, r, scheme)


def record_shapes(model: nn.Module, names: Iterable[str], example_input) -> dict[str, tuple]:
    """(input shape, output shape) of each named module on one forward pass of ``example_input``."""
    shapes, hooks = {}, []
    for name in names:
        m = model.get_submodule(name)

        def hook(mod, args, out, name=name):
            shapes[name] = (tuple(args[0].shape), tuple(out.shape))

        hooks.append(m.register_forward_hook(hook))
    modes = {m: m.training for m in model.modules()}
    model.eval()  # no running-statistics updates from this pass
    try:
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return shapes


# --------------------------------------------------------------------------- building the pair


def pair(module: nn.Module, r: int, scheme: lr.Scheme) -> nn.Sequential:
    """The two modules replacing ``module`` at rank r (factors computed in float64 by the shared math)."""
    w = module.weight.detach()
    wn = w.double().cpu().numpy()
    like = dict(device=w.device, dtype=w.dtype)
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        u, svt = lr.factor(wn, r)  # (out, r), (r, in)
        a = nn.Linear(module.in_features, r, bias=False, **like)
        b = nn.Linear(r, module.out_features, bias=bias, **like)
        first, second = svt, u
    else:
        g = module.groups
        first, second = lr.conv_factors(wn, r, g, scheme)
        common = dict(groups=g, padding_mode=module.padding_mode, **like)
        if scheme == "channel":
            a = nn.Conv2d(module.in_channels, g * r, module.kernel_size, stride=module.stride,
                          padding=module.padding, dilation=module.dilation, bias=False, **common)
            b = nn.Conv2d(g * r, module.out_channels, 1, bias=bias, **common)
        else:
            (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
            pad = module.padding
            pa, pb = (pad, pad) if isinstance(pad, str) else ((pad[0], 0), (0, pad[1]))
            a = nn.Conv2d(module.in_channels, g * r, (kh, 1), stride=(sh, 1), padding=pa, dilation=(dh, 1),
                          bias=False, **common)
            b = nn.Conv2d(g * r, module.out_channels, (1, kw), stride=(1, sw), padding=pb, dilation=(1, dw),
                          bias=bias, **common)
    with torch.no_grad():
        a.weight.copy_(torch.from_numpy(np.ascontiguousarray(first)))
        b.weight.copy_(torch.from_numpy(np.ascontiguousarray(second)))
        if bias:
            b.bias.copy_(module.bias.detach())
    seq = nn.Sequential()
    seq.add_module("lowrank_a", a)
    seq.add_module("lowrank_b", b)
    return seq.train(module.training)


# --------------------------------------------------------------------------- the entry points


def decompose_module_report(module: nn.Module, *, energy: float | None = None, rank_ratio: float | None = None,
                            sv_threshold: float | None = None, scheme: lr.Scheme = "channel", round_to: int = 1,
                            ranks: Mapping[str, int] | None = None, include: Iterable[str] | None = None,
                            exclude: Iterable[str] = (), example_input=None, only_if_cheaper: bool = True,
                            inplace: bool = False) -> tuple[nn.Module, list[LayerDecision]]:
    """:func:`decompose_module`, plus one :class:`LayerDecision` per candidate (decomposed or why not)."""
    if scheme not in ("channel", "spatial"):
        raise ValueError(f"scheme '{scheme}' must be 'channel' or 'spatial'")
    rule = lr.RankRule(energy, rank_ratio, sv_threshold, round_to)
    out = module if inplace else copy.deepcopy(module)
    chosen = targets(out, scheme, include, exclude)
    shapes = record_shapes(out, chosen, example_input) if example_input is not None else {}
    decisions = []
    for name, m in chosen.items():
        if example_input is not None and name not in shapes:
            decisions.append(LayerDecision(name, kind_of(m, scheme), 0, 0, 0, 0, False, "not run by example_input"))
            continue
        with torch.no_grad():
            s = torch.linalg.svdvals(matrices(m.weight.detach().double(), m, scheme))
        r, full = rank_of(s, rule)
        if ranks is not None and name in ranks:
            r = max(1, min(int(ranks[name]), full))
        before = layer_macs(m, None, scheme, shapes.get(name))
        after = layer_macs(m, r, scheme, shapes.get(name))
        if only_if_cheaper and after >= before:
            decisions.append(LayerDecision(name, kind_of(m, scheme), r, full, before, after, False,
                                           f"rank {r} of {full} would not lower MACs ({before} -> {after})"))
            continue
        decisions.append(LayerDecision(name, kind_of(m, scheme), r, full, before, after, True))
        new = pair(m, r, scheme)
        if name == "":
            out = new
        else:
            parent, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent) if parent else out, child, new)
    return out, decisions


def decompose_module(module: nn.Module, *, energy: float | None = None, rank_ratio: float | None = None,
                     sv_threshold: float | None = None, scheme: lr.Scheme = "channel", round_to: int = 1,
                     ranks: Mapping[str, int] | None = None, include: Iterable[str] | None = None,
                     exclude: Iterable[str] = (), example_input=None, only_if_cheaper: bool = True,
                     inplace: bool = False) -> nn.Module:
    """A copy of ``module`` (the module itself when ``inplace``) whose ``nn.Conv2d`` / ``nn.Linear`` layers are
    replaced by ``nn.Sequential(lowrank_a, lowrank_b)`` where that lowers MACs.

    Rank: one of ``energy`` (default 0.9), ``rank_ratio``, ``sv_threshold`` (absolute), rounded up to a multiple
    of ``round_to``; ``ranks`` maps module names to fixed ranks. ``include`` / ``exclude``: fnmatch patterns on
    qualified module names. ``example_input``: a batch (or tuple of inputs) used to count real MACs."""
    return decompose_module_report(module, energy=energy, rank_ratio=rank_ratio, sv_threshold=sv_threshold,
                                   scheme=scheme, round_to=round_to, ranks=ranks, include=include, exclude=exclude,
                                   example_input=example_input, only_if_cheaper=only_if_cheaper,
                                   inplace=inplace)[0]
