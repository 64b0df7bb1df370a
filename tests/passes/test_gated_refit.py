"""ReLU-aware refits (graphprune.methods.gated_refit): the gate computes what onnxruntime's Relu or Clip (ReLU6)
outputs (through a BatchNorm of either sign, a residual sum, or straight), re-targeting the clamped rows lowers the
error after the clamp where a linear fit cannot (the floor and a ceiling alike), and on the trained digits model the
refit's error at the ReLUs is lower with it than without."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.frontends.onnx.lower import to_ir
from graphprune.methods import reconstruct as rc
from graphprune.methods.gated_refit import Gate, activated, gated_error, gated_fit, thresholds
from graphprune.methods.reconstruct import Moments, gate_of

C = 4


def graph(tail: str) -> onnx.ModelProto:
    """x → Conv(1×1, C channels) → z → [BN] → [Add other] → Relu (Clip(0, 6): ``clip``; Sigmoid: ``sigmoid``); the
    BN's γ has a negative entry."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.normal(size=(C, 3, 1, 1)).astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["z"])]
    cur = "z"
    if "bn" in tail:
        gamma = np.array([1.5, -0.7, 0.3, 2.0], np.float32)
        for name, v in (("g", gamma), ("b", rng.normal(size=C)), ("m", rng.normal(size=C)),
                        ("v", rng.uniform(0.5, 2, size=C))):
            init.append(numpy_helper.from_array(np.asarray(v, np.float32), name))
        nodes.append(helper.make_node("BatchNormalization", ["z", "g", "b", "m", "v"], ["n"]))
        cur = "n"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])]
    if "add" in tail:
        inputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [2, C, 5, 5]))
        nodes.append(helper.make_node("Add", [cur, "other"], ["s"]))
        cur = "s"
    if "clip" in tail:  # ReLU6 as the exporters write it: bounds as constant inputs
        init += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0.0), ("hi", 6.0))]
        nodes.append(helper.make_node("Clip", [cur, "lo", "hi"], ["out"]))
    else:
        nodes.append(helper.make_node("Sigmoid" if "sigmoid" in tail else "Relu", [cur], ["out"]))
    g = helper.make_graph(nodes, "gate", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], init)
    return onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def run_with(model: onnx.ModelProto, feed: dict, names: list[str]) -> dict:
    """The named tensors of ``model`` on ``feed`` in onnxruntime (a copy of it with them as outputs)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in probe.graph.output], sess.run(None, feed)))


@pytest.mark.parametrize("tail", ["bn", "bn_add", "plain", "add", "bn_clip", "bn_add_clip"])
def test_the_gate_computes_what_onnxruntime_outputs(tail):
    model = graph(tail)
    g = to_ir(model)
    gate = gate_of(g, "z", through_add="add" in tail)
    assert isinstance(gate, Gate)
    rng = np.random.default_rng(1)
    feed = {"x": 4 * rng.normal(size=(2, 3, 5, 5)).astype(np.float32)}  # wide enough to reach ReLU6's ceiling
    if "add" in tail:
        feed["other"] = rng.normal(size=(2, C, 5, 5)).astype(np.float32)
    got = run_with(model, feed, ["z", "out"])
    def rows(a):  # (R, G=1, F) as the refit lays them out
        return np.moveaxis(a, 1, -1).reshape(-1, 1, C)

    other = rows(feed["other"]) if "add" in tail else None
    z = rows(got["z"]).astype(np.float64)
    out = activated(z, thresholds(gate, z.shape, other), gate)
    np.testing.assert_allclose(out, rows(got["out"]), rtol=1e-5, atol=1e-5)
    assert (out == 0).mean() > 0.2 and ((out == 6).mean() > 0.05 if "clip" in tail else gate.hi == np.inf)


def test_no_gate_without_a_clamp_or_behind_an_unexpected_sum():
    assert gate_of(to_ir(graph("bn_sigmoid")), "z", through_add=False) is None
    assert gate_of(to_ir(graph("bn_add")), "z", through_add=False) is None  # a sum the refit does not fit
    assert gate_of(to_ir(graph("bn")), "z", through_add=True) is None


def synthetic(rng, r=4000, d=6, f=5):
    """Rows whose original output is mostly dead after the ReLU, fitted from fewer columns than made it."""
    x_all = rng.normal(size=(r, 1, d + 3))
    y = np.einsum("rgd,gdf->rgf", x_all, rng.normal(size=(1, d + 3, f))) - 1.0  # ~60 % dead
    return x_all[:, :, :d], y


def test_re_targeting_the_dead_rows_lowers_the_error_after_the_relu():
    rng = np.random.default_rng(0)
    x, y = synthetic(rng)
    gate = Gate(np.zeros(5), np.array([1.0, -1, 1, 1, -1]), 0.0, np.inf, False)
    tau = np.zeros_like(y)
    m = Moments(1, x.shape[2], y.shape[2])
    m.add(x, y)
    prior = np.zeros((1, x.shape[2], 5))
    w, b = m.solve(1e-6, True, prior=prior)
    linear = gated_error((x, y, tau), gate, w, b)
    aware = gated_error((x, y, tau), gate, *gated_fit(m, (x, y, tau), gate, w, b, 1e-6, True, prior, 1.0))
    assert aware < 0.95 * linear  # measured 0.938
    # with the sign ignored (every channel as if γ > 0) the live and dead sides swap: it no longer helps
    wrong = Gate(np.zeros(5), np.ones(5), 0.0, np.inf, False)
    assert gated_error((x, y, tau), gate, *gated_fit(m, (x, y, tau), wrong, w, b, 1e-6, True, prior, 1.0)) > aware


def test_a_ceiling_is_re_targeted_as_the_floor_is():
    # ReLU6: rows the original saturates at 6 owe nothing above it; a fit that knows it beats the ReLU-only one
    rng = np.random.default_rng(3)
    x, y = synthetic(rng)
    y = 4 * y + 6  # a good share above the ceiling
    tau = np.zeros_like(y)
    m = Moments(1, x.shape[2], 5)
    m.add(x, y)
    prior = np.zeros((1, x.shape[2], 5))
    w, b = m.solve(1e-6, True, prior=prior)
    relu6 = Gate(np.zeros(5), np.ones(5), 0.0, 6.0, False)
    relu = Gate(np.zeros(5), np.ones(5), 0.0, np.inf, False)
    assert ((activated(y, tau, relu6) == 6).mean() > 0.2)
    errors = [gated_error((x, y, tau), relu6, *f) for f in
              ((w, b), gated_fit(m, (x, y, tau), relu, w, b, 1e-6, True, prior, 1.0),
               gated_fit(m, (x, y, tau), relu6, w, b, 1e-6, True, prior, 1.0))]
    assert errors[2] < min(errors[:2]) and errors[2] < 0.95 * errors[0], errors  # measured 0.88 of the linear


def test_a_sample_of_the_rows_scaled_up_steps_as_all_of_them():
    # a layer too large to keep every row keeps a uniform share; its sums scaled by 1 / rate estimate the full ones
    rng = np.random.default_rng(2)
    x, y = synthetic(rng, r=40000)
    gate = Gate(np.zeros(5), np.ones(5), 0.0, np.inf, False)
    tau = np.zeros_like(y)
    m = Moments(1, x.shape[2], 5)
    m.add(x, y)
    prior = np.zeros((1, x.shape[2], 5))
    w, b = m.solve(1e-6, True, prior=prior)
    full = gated_fit(m, (x, y, tau), gate, w, b, 1e-6, True, prior, 1.0)
    share = rng.random(len(x)) < 0.25
    part = gated_fit(m, (x[share], y[share], tau[share]), gate, w, b, 1e-6, True, prior, share.mean())
    e_lin, e_full, e_part = (gated_error((x, y, tau), gate, *f) for f in ((w, b), full, part))
    assert e_part < e_lin and e_part == pytest.approx(e_full, rel=0.05)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"  # the trained digits ResNet that ships


def relu_errors(monkeypatch) -> dict[bool, float]:
    """Relative squared error after every ReLU of the trained digits ResNet pruned to 9 % of its params and
    refitted on its 512 calibration points, against the original at the kept channels, on the 450 held-out test
    digits: with the ReLU-aware refits (True) and without (False: no gate found)."""
    from graphprune.api import load
    from graphprune.channels.rules import Space
    from graphprune.methods.calib import ActivationRunner, Calibration
    from graphprune.methods.edits import with_values

    path = EXAMPLE / "digits_resnet.onnx"
    calib = Calibration({"input": np.load(EXAMPLE / "calib.npz")["input"]}, False, "examples/digits/calib.npz")
    fresh = {"input": np.load(EXAMPLE / "test.npz")["input"]}
    result = graphprune.prune(path, ratio=0.913, budget="params", round_to=1, verify="off")
    source, pruned = load(path), to_ir(result.model)
    relus = [n.outputs[0] for n in pruned.nodes if n.op == "Relu"]
    want = ActivationRunner(source.model, relus, source.input_shapes).run(fresh)
    out = {}
    for aware in (True, False):
        with monkeypatch.context() as m:
            if not aware:
                m.setattr(rc, "gate_of", lambda *a, **k: None)
            refits, _ = rc.reconstruct(source.graph, source.model, result.model, result.plan, calib,
                                       source.input_shapes, inputs="sequential")
        assert any(r.relu_aware for r in refits) == aware
        got = ActivationRunner(with_values(result.model, {k: v for r in refits for k, v in r.values.items()}),
                               relus, source.input_shapes).run(fresh)
        num = den = 0.0
        for name in relus:
            kept = result.plan.kept(Space(name, 1))
            w = (want[name] if kept is None else np.take(want[name], kept, axis=1)).astype(np.float64)
            num, den = num + float(np.sum((got[name] - w) ** 2)), den + float(np.sum(w ** 2))
        out[aware] = num / den
    return out


def test_relu_aware_refits_lower_the_error_after_the_relus(monkeypatch):
    errors = relu_errors(monkeypatch)
    assert errors[True] < 0.95 * errors[False], errors


def test_relu_aware_reconstruction_verifies_and_reports(exported):
    result = graphprune.prune(exported("resnet_basic", "legacy_bn"), ratio=0.5, round_to=1, reconstruct=True,
                              reconstruct_points=256)
    stats = next(p.stats for p in result.report.passes if p.name == "Reconstruct")
    assert result.report.verification.ok
    assert 0 < stats["relu_aware"] <= stats["refitted"]
    from graphprune.report.data import render_text

    assert f"({stats['relu_aware']} to what the ReLU / Clip after them passes)" in render_text(result.report)
