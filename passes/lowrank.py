"""Low-rank decomposition: replace a Conv / Gemm / MatMul with a constant weight by two thinner ops.

* Gemm, MatMul: W ≈ U_r · (S_r V_rᵀ), two ops of the same type (Gemm keeps transA / transB / alpha / beta / C).
* Conv, channel-wise: r filters of c×k×k with the original strides, pads and dilations, then a 1×1 conv back to
  n carrying the bias. Spatial-wise (2-D): a kh×1 conv with r filters (the H stride / pads / dilation), then a
  1×kw conv to n (the W ones) with the bias. Grouped convs are decomposed per group with one shared rank, so
  both new convs keep ``group``.

A layer is decomposed only when its real MAC count (output spatial size included) falls; every other candidate
is listed in the pass stats with the reason. New nodes are named ``<node>/lowrank_a`` and ``<node>/lowrank_b``;
what was decomposed (node, weight, scheme, rank) is stored in the model's metadata under
``graphprune.lowrank`` so that the verifier can rebuild the truncated original.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphprune.gsgraph import export_like
from graphprune.methods import lowrank as lr
from graphprune.methods.cost import node_macs
from graphprune.emit.onnx import checked_shapes
from graphprune.frontends.onnx.load import to_ir
from graphprune.ir import Graph, Node
from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult

OPS = ("Conv", "Gemm", "MatMul")
Kind = Literal["matrix", "channel", "spatial"]


@dataclass(frozen=True)
class Layer:
    """One decomposed layer (stored as JSON in the model's metadata)."""

    node: str
    op: str
    weight: str  # the initializer that was factored
    kind: Kind  # "matrix" for Gemm / MatMul, the scheme for Conv
    groups: int
    rank: int
    full_rank: int
    macs_before: int
    macs_after: int

    def truncated(self, w: np.ndarray, rank: int | None = None) -> np.ndarray:
        """``w`` with the rank this layer was decomposed at (or ``rank``): the truncated-original weight."""
        r = self.rank if rank is None else rank
        if self.kind == "matrix":
            return lr.truncate(w, r).astype(w.dtype)
        return lr.truncate_conv(w, r, self.groups, self.kind)


@dataclass(frozen=True)
class Skipped:
    node: str
    op: str
    why: str


# --------------------------------------------------------------------------- choosing layers


def plan_layers(graph: Graph, rule: lr.RankRule, scheme: lr.Scheme, *, exclude=(), ops=OPS,
                only_if_cheaper: bool = True) -> tuple[list[Layer], list[Skipped]]:
    layers, skipped = [], []
    for node in graph.nodes:
        if node.op not in ops or node.domain not in ("", "ai.onnx"):
            continue
        if any(fnmatch.fnmatchcase(node.name, p) for p in exclude):
            skipped.append(Skipped(node.name, node.op, "excluded by --exclude"))
            continue
        decision = decide(graph, node, rule, scheme)
        if isinstance(decision, str):
            skipped.append(Skipped(node.name, node.op, decision))
        elif only_if_cheaper and decision.macs_after >= decision.macs_before:
            skipped.append(Skipped(node.name, node.op, f"rank {decision.rank} of {decision.full_rank} would not lower "
                                   f"MACs ({decision.macs_before} -> {decision.macs_after})"))
        else:
            layers.append(decision)
    return layers, skipped


def weight_input(graph: Graph, node: Node) -> int | str:
    """Index of the constant weight input, or why there is none."""
    if node.op == "Conv":
        idx = 1
    elif node.op == "Gemm":
        idx = 1
        if graph.is_const(node.input(0)):
            return "input A is a constant; only a constant B (the weight) is decomposed"
    else:
        consts = [i for i in (1, 0) if graph.is_const(node.input(i))]
        if len(consts) != 1:
            return "needs exactly one constant input (the weight)"
        idx = consts[0]
    value = graph.value(node.input(idx))
    if value is None:
        return "the weight is computed at run time, not a constant"
    if not np.issubdtype(value.dtype, np.floating):
        return f"the weight is {value.dtype}, not floating point"
    if node.op != "Conv" and value.ndim != 2:
        return f"the weight has rank {value.ndim}; only 2-D weights are decomposed"
    users = graph.consumers.get(node.input(idx), ())
    if len(users) > 1:
        others = ", ".join(n.name for n in users if n is not node)
        return f"the weight is shared with {others}; decomposing would duplicate it"
    return idx


def decide(graph: Graph, node: Node, rule: lr.RankRule, scheme: lr.Scheme) -> Layer | str:
    """The decomposition of ``node`` under ``rule`` (MACs before and after), or why it cannot be decomposed."""
    idx = weight_input(graph, node)
    if isinstance(idx, str):
        return idx
    w = graph.value(node.input(idx))
    before = node_macs(graph, node)
    y = graph.shape(node.outputs[0])
    if y is None or not before:
        return "static shapes unknown; cannot count MACs"
    if node.op == "Conv":
        x = graph.shape(node.inputs[0])
        groups = int(node.attr("group", 1))
        if scheme == "spatial" and w.ndim != 4:
            return f"the spatial scheme needs a 2-D conv (this one has {w.ndim - 2} spatial axes)"
        if x is None:
            return "static shapes unknown; cannot count MACs"
        r, full = lr.matrix_ranks(lr.conv_matrices(w, groups, scheme), rule)
        after = lr.conv_macs(y, x, w.shape, groups, r, scheme)
        return Layer(node.name, node.op, node.input(idx), scheme, groups, r, full, before, after)
    r, full = lr.matrix_ranks(w[None], rule)
    k, n = (w.shape[1], w.shape[0]) if matrix_transposed(node, idx) else w.shape
    rows = int(np.prod(y, dtype=np.int64)) // n
    after = lr.matmul_macs(rows, k, n, r)
    return Layer(node.name, node.op, node.input(idx), "matrix", 1, r, full, before, after)


def matrix_transposed(node: Node, idx: int) -> bool:
    """Whether the stored weight is (out, in) rather than (in, out) as the product sees it."""
    if node.op == "Gemm":
        return bool(node.attr("transB", 0))
    return idx == 0  # MatMul(W, X): W is (out, in)


# --------------------------------------------------------------------------- surgery


def decompose_model(model: onnx.ModelProto, layers: list[Layer], *, full_rank: bool = False) -> onnx.ModelProto:
    """``model`` with every layer replaced by its two factors (at full rank when ``full_rank``)."""
    g = gs.import_onnx(model)
    nodes = {n.name: n for n in g.nodes}
    opset = next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), 0)
    for layer in layers:
        node = nodes[layer.node]
        r = layer.full_rank if full_rank else layer.rank
        build = {"Conv": conv_pair, "Gemm": gemm_pair, "MatMul": matmul_pair}[node.op]
        g.nodes.extend(build(node, layer, r, opset))
        node.inputs.clear()
        node.outputs.clear()
    g.cleanup().toposort()
    out = export_like(g, model)
    props = {p.key: p.value for p in model.metadata_props}
    props[lr.LOWRANK_KEY] = json.dumps([asdict(layer) for layer in layers])
    onnx.helper.set_model_props(out, props)
    return checked_shapes(out)


def const(name: str, value: np.ndarray) -> gs.Constant:
    return gs.Constant(name, np.ascontiguousarray(value))


def middle(node: gs.Node) -> gs.Variable:
    return gs.Variable(f"{node.name}/lowrank_a/output", dtype=node.outputs[0].dtype)


def optional(node: gs.Node, i: int) -> gs.Tensor | None:
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None


def conv_pair(node: gs.Node, layer: Layer, r: int, opset: int) -> list[gs.Node]:
    x, w, bias = node.inputs[0], np.asarray(node.inputs[1].values), optional(node, 2)
    nd = w.ndim - 2
    k = list(w.shape[2:])
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    pads = explicit_pads(node, x, k, strides, dilations)
    groups = layer.groups
    first_w, second_w = lr.conv_factors(w, r, groups, layer.kind)
    name = node.name
    if layer.kind == "channel":
        first = dict(kernel_shape=k, strides=strides, pads=pads, dilations=dilations, group=groups)
        second = dict(kernel_shape=[1] * nd, group=groups)
    else:
        (kh, kw), (sh, sw), (dh, dw) = k, strides, dilations
        first = dict(kernel_shape=[kh, 1], strides=[sh, 1], pads=[pads[0], 0, pads[2], 0], dilations=[dh, 1],
                     group=groups)
        second = dict(kernel_shape=[1, kw], strides=[1, sw], pads=[0, pads[1], 0, pads[3]], dilations=[1, dw],
                      group=groups)
    mid = middle(node)
    a = gs.Node("Conv", f"{name}/lowrank_a", first, [x, const(f"{name}/lowrank_a.weight", first_w)], [mid])
    b_inputs = [mid, const(f"{name}/lowrank_b.weight", second_w)] + ([bias] if bias is not None else [])
    b = gs.Node("Conv", f"{name}/lowrank_b", second, b_inputs, [node.outputs[0]])
    return [a, b]


def explicit_pads(node: gs.Node, x: gs.Tensor, k: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """The conv's padding as explicit [begin…, end…], resolving ``auto_pad`` from the input's static shape."""
    nd = len(k)
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return list(node.attrs.get("pads", [0] * (2 * nd)))
    if auto == "VALID":
        return [0] * (2 * nd)
    begin, end = [], []
    for size, kk, s, d in zip(x.shape[2:], k, strides, dilations):
        out = -(-int(size) // s)
        total = max(0, (out - 1) * s + (kk - 1) * d + 1 - int(size))
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def gemm_pair(node: gs.Node, layer: Layer, r: int, opset: int) -> list[gs.Node]:
    a_in, w, c = node.inputs[0], np.asarray(node.inputs[1].values), optional(node, 2)
    trans_b = int(node.attrs.get("transB", 0))
    u, svt = lr.factor(w.T if trans_b else w, r)  # (K, r), (r, N)
    u, svt = u.astype(w.dtype), svt.astype(w.dtype)
    name = node.name
    mid = middle(node)
    first_inputs = [a_in, const(f"{name}/lowrank_a.weight", u.T if trans_b else u)]
    if opset < 11:  # C became optional in opset 11
        first_inputs.append(const(f"{name}/lowrank_a.bias", np.zeros(r, w.dtype)))
    a = gs.Node("Gemm", f"{name}/lowrank_a", {"transA": int(node.attrs.get("transA", 0)), "transB": trans_b},
                first_inputs, [mid])
    attrs = {"alpha": float(node.attrs.get("alpha", 1.0)), "beta": float(node.attrs.get("beta", 1.0)),
             "transB": trans_b}
    b_inputs = [mid, const(f"{name}/lowrank_b.weight", svt.T if trans_b else svt)] + ([c] if c is not None else [])
    b = gs.Node("Gemm", f"{name}/lowrank_b", attrs, b_inputs, [node.outputs[0]])
    return [a, b]


def matmul_pair(node: gs.Node, layer: Layer, r: int, opset: int) -> list[gs.Node]:
    idx = 1 if isinstance(node.inputs[1], gs.Constant) else 0
    x, w = node.inputs[1 - idx], np.asarray(node.inputs[idx].values)
    u, svt = (m.astype(w.dtype) for m in lr.factor(w, r))  # w ≈ u @ svt
    name = node.name
    mid = middle(node)
    wa, wb = const(f"{name}/lowrank_a.weight", u if idx == 1 else svt), const(f"{name}/lowrank_b.weight", svt if idx == 1 else u)
    if idx == 1:  # X @ W = (X @ U_r) @ (S_r V_rᵀ)
        return [gs.Node("MatMul", f"{name}/lowrank_a", {}, [x, wa], [mid]),
                gs.Node("MatMul", f"{name}/lowrank_b", {}, [mid, wb], [node.outputs[0]])]
    # W @ X = U_r @ ((S_r V_rᵀ) @ X)
    return [gs.Node("MatMul", f"{name}/lowrank_a", {}, [wa, x], [mid]),
            gs.Node("MatMul", f"{name}/lowrank_b", {}, [wb, mid], [node.outputs[0]])]


# --------------------------------------------------------------------------- the pass


@dataclass(frozen=True, kw_only=True)
class LowRank(Pass):
    """Decompose Conv / Gemm / MatMul layers where that lowers MACs. Rank: one of ``energy`` (default 0.9),
    ``rank_ratio``, ``sv_threshold``; rounded up to a multiple of ``round_to``. ``exclude``: fnmatch patterns on
    node names never decomposed. ``only_if_cheaper=False`` decomposes regardless of MACs (for tests)."""

    energy: float | None = None
    rank_ratio: float | None = None
    sv_threshold: float | None = None
    scheme: lr.Scheme = "channel"
    round_to: int = 1
    exclude: tuple[str, ...] = ()
    ops: tuple[str, ...] = OPS
    only_if_cheaper: bool = True

    def __post_init__(self) -> None:
        from graphprune.errors import UsageError

        if self.scheme not in ("channel", "spatial"):
            raise UsageError(f"scheme '{self.scheme}' must be 'channel' or 'spatial'")
        self.rule  # validates the rank options

    @property
    def rule(self) -> lr.RankRule:
        return lr.RankRule(self.energy, self.rank_ratio, self.sv_threshold, self.round_to)

    def call(self, state: PruneState) -> PassResult:
        graph = state.source.graph if state.model is state.source.model else to_ir(state.model)
        layers, skipped = plan_layers(graph, self.rule, self.scheme, exclude=self.exclude, ops=self.ops,
                                      only_if_cheaper=self.only_if_cheaper)
        before = sum(layer.macs_before for layer in layers)
        after = sum(layer.macs_after for layer in layers)
        stats = {"rule": self.rule.describe, "scheme": self.scheme, "decomposed": [asdict(x) for x in layers],
                 "skipped": [asdict(s) for s in skipped], "layer_macs_before": before, "layer_macs_after": after,
                 "notes": [summary(layers, skipped, self.rule)]}
        if not layers:
            return PassResult(state, modified=False, stats=stats)
        return PassResult(state.with_(model=decompose_model(state.model, layers)), modified=True, stats=stats)

    def verify_stage(self, source, before: PruneState, after: PruneState, *, rtol: float, atol: float, seed: int):
        """This pass's own oracle: full rank equals ``before``; rank r equals the truncated ``before``."""
        from graphprune.verify.lowrank import verify_lowrank

        return verify_lowrank(before.model, after.model, source.input_shapes, interface=source.model, rtol=rtol,
                              atol=atol, seed=seed)


def summary(layers: list[Layer], skipped: list[Skipped], rule: lr.RankRule) -> str:
    if not layers:
        return f"low rank ({rule.describe}): no layer decomposed; {len(skipped)} skipped"
    ranks = ", ".join(f"{x.node} r={x.rank}/{x.full_rank}" for x in layers[:4]) + (" …" if len(layers) > 4 else "")
    return f"low rank ({rule.describe}): decomposed {len(layers)} layers ({ranks}); {len(skipped)} skipped"
