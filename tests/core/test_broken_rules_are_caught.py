"""The masked-original oracle must catch a wrong coupling: break a rule on purpose and pruning must fail.

Each broken rule is plausible (the classic concat / split / flatten index bugs of pruning tools), fits every
size check, and still produces a model that runs; only the oracle can tell it is wrong.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphprune
from graphprune.errors import InternalError, VerificationError
from graphprune.channels.rules import RULES, Block, Gather, Offset, Rule, RuleContext
from graphprune.channels.rules import IDENTITY


def concat_offsets_reversed(ctx: RuleContext) -> None:
    """Bug: the inputs' offsets are assigned in reverse order."""
    y = ctx.node.outputs[0]
    r = ctx.rank(y)
    axis = int(ctx.attr("axis")) % r
    inputs = [t for t in ctx.node.inputs if t]
    offsets = np.cumsum([0] + [ctx.shape(t)[axis] for t in reversed(inputs)])[:-1][::-1]
    total = ctx.shape(y)[axis]
    for x, off in zip(inputs, offsets):
        size = ctx.shape(x)[axis]
        off = min(int(off), total - size)
        for k in range(r):
            ctx.couple_axes(x, k, y, k, Offset(off) if k == axis else IDENTITY)


def flatten_channels_last(ctx: RuleContext) -> None:
    """Bug: channel c ↔ features c, c+C, c+2C … (a channels-last layout the graph does not have)."""
    x, y = ctx.node.inputs[0], ctx.node.outputs[0]
    c = ctx.shape(x)[1]
    n = ctx.shape(y)[1]
    ctx.couple_axes(x, 0, y, 0)
    # feature f belongs to channel f % C: express it as y[f] ↔ x[f % C]
    ctx.couple_axes(y, 1, x, 1, Gather(np.arange(n) % c))


def split_offsets_zero(ctx: RuleContext) -> None:
    """Bug: every output of a Split is taken to start at offset 0."""
    x = ctx.node.inputs[0]
    r = ctx.rank(x)
    axis = int(ctx.attr("axis", 0)) % r
    for y in ctx.node.outputs:
        for k in range(r):
            ctx.couple_axes(y, k, x, k, Offset(0) if k == axis else IDENTITY)


def conv_bias_shifted(ctx: RuleContext) -> None:
    """Bug: the conv bias is coupled to the output channels shifted by one (a wrong permutation)."""
    x, w, y = ctx.node.inputs[0], ctx.node.inputs[1], ctx.node.outputs[0]
    ctx.couple_axes(x, 0, y, 0)
    ctx.couple_axes(w, 0, y, 1)
    ctx.couple_axes(x, 1, w, 1)
    if ctx.node.input(2):
        n = ctx.shape(y)[1]
        ctx.couple_axes(ctx.node.inputs[2], 0, y, 1, Gather((np.arange(n) + 1) % n))
    if int(ctx.attr("group", 1)) != 1:
        raise AssertionError("test model has only dense convs")


CASES = [
    ("Concat", concat_offsets_reversed, "densenet_block", "legacy"),
    ("Flatten", flatten_channels_last, "vgg", "legacy"),
    ("Split", split_offsets_zero, "grouped_split", "dynamo"),
    ("Conv", conv_bias_shifted, "plain_cnn", "legacy"),
]


@pytest.mark.parametrize("op,broken,model,flavour", CASES, ids=[c[0] for c in CASES])
def test_broken_rule_fails_verification(monkeypatch, exported, op, broken, model, flavour):
    path = exported(model, flavour)
    assert graphprune.prune(path, ratio=0.5).report.verification.ok  # the real rule verifies
    monkeypatch.setitem(RULES, op, Rule((op,), broken, "broken"))
    with pytest.raises((VerificationError, InternalError)):
        graphprune.prune(path, ratio=0.5, scope="global", round_to=1)


def test_block_map_is_what_flatten_uses(exported):
    """The real Flatten rule couples channel i to features [s·i, s·i+s)."""
    from graphprune.api import inspect

    ins = inspect(exported("vgg", "legacy"))
    maps = [d["map"] for _, _, d in ins.channels.nx.edges(data=True) if d["node"].endswith("Flatten")]
    assert any(isinstance(m, Block) and m.s > 1 for m in maps)
