"""Speed and scale: time and peak memory of load + analyse + select + emit + save as graphs grow.

    python benchmarks/scale.py [--layers 100 1000 10000] [--verify-upto 1000] [--gpt2] [--out benchmarks/results/scale.json]

* Synthetic deep graphs built with onnx.helper: a stem conv, then residual blocks ``x + conv(relu(conv(x)))``
  (``--width`` channels, 8×8 feature maps), then a pooled Gemm head; ``--layers`` counts the convs.
* A GPT-2-small-sized transformer (12 layers, width 768, 12 heads, MLP 3072, 50257-way head, sequence 32,
  124M parameters; hand-written attention as in ``models/attention.py``), pruned in its MLP hidden size and heads.

Modes: ``pipeline`` (load → analyse → score → select → emit → save, each stage timed, no report), ``off`` and
``end`` (the whole ``graphprune.prune`` with its report, verification off / on). Each case runs in a child process, so its peak RSS (VmHWM; ``resource.getrusage`` where /proc is absent) is its own; the RSS
of the same process right after imports is reported too. Timings are wall clock on this (shared) machine; no
assertion is made about them. Verification off for every case and, up to ``--verify-upto`` layers, on as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def deep_resnet(layers: int, width: int = 16, side: int = 8, seed: int = 0):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def w(name, *shape, scale=0.1):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def conv(x, cin, cout, i, scale=0.1):
        y = f"conv{i}"
        nodes.append(helper.make_node("Conv", [x, w(f"w{i}", cout, cin, 3, 3, scale=scale), w(f"b{i}", cout, scale=scale)], [y], name=y,
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        return y

    x = conv("input", 3, width, 0)
    n = 1
    while n + 2 <= layers:
        h = conv(x, width, width, n)
        r = f"relu{n}"
        nodes.append(helper.make_node("Relu", [h], [r], name=r))
        h = conv(r, width, width, n + 1, scale=0.01)
        y = f"add{n}"
        nodes.append(helper.make_node("Add", [x, h], [y], name=y))
        x, n = y, n + 2
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat", axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", w("fc_w", 10, width), w("fc_b", 10)], ["output"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def gpt2(layers: int = 12, d: int = 768, heads: int = 12, hidden: int = 3072, vocab: int = 50257, seq: int = 32,
         seed: int = 0):
    """A GPT-2-shaped decoder over input embeddings (1, seq, d): pre-LN blocks, causal attention, GELU MLP."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    hd = d // heads

    def c(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def w(name, *shape, scale=0.02):
        return c(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def op(kind, inputs, name, **attrs):
        nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name

    def ln(x, p):
        return op("LayerNormalization", [x, c(f"{p}_g", np.ones(d, np.float32)), c(f"{p}_b", np.zeros(d, np.float32))], p,
                  axis=-1, epsilon=1e-5)

    def linear(x, p, cin, cout):
        return op("Add", [op("MatMul", [x, w(f"{p}_w", cin, cout)], f"{p}_mm"), w(f"{p}_b", cout)], p)

    mask = np.triu(np.full((seq, seq), -1e4, np.float32), 1)
    c("causal", mask)
    c("split_shape", np.array([1, seq, heads, hd], np.int64))
    c("merge_shape", np.array([1, seq, d], np.int64))
    c("scale", np.array(hd ** -0.5, np.float32))
    x = op("Add", ["input", w("wpe", seq, d)], "embed")
    for i in range(layers):
        p = f"h{i}"
        a = ln(x, f"{p}_ln1")
        q, k, v = (op("Reshape", [linear(a, f"{p}_{n}", d, d), "split_shape"], f"{p}_{n}_split") for n in "qkv")
        q = op("Transpose", [q], f"{p}_qT", perm=[0, 2, 1, 3])
        k = op("Transpose", [k], f"{p}_kT", perm=[0, 2, 3, 1])
        v = op("Transpose", [v], f"{p}_vT", perm=[0, 2, 1, 3])
        s = op("Add", [op("Mul", [op("MatMul", [q, k], f"{p}_qk"), "scale"], f"{p}_scaled"), "causal"], f"{p}_masked")
        att = op("Softmax", [s], f"{p}_softmax", axis=-1)
        y = op("Transpose", [op("MatMul", [att, v], f"{p}_av")], f"{p}_yT", perm=[0, 2, 1, 3])
        y = linear(op("Reshape", [y, "merge_shape"], f"{p}_merge"), f"{p}_proj", d, d)
        x = op("Add", [x, y], f"{p}_res1")
        m = ln(x, f"{p}_ln2")
        m = linear(op("Gelu", [linear(m, f"{p}_fc", d, hidden)], f"{p}_gelu"), f"{p}_out", hidden, d)
        x = op("Add", [x, m], f"{p}_res2")
    x = ln(x, "ln_f")
    nodes.append(helper.make_node("MatMul", [x, w("lm_head", d, vocab)], ["output"], name="lm_head"))
    graph = helper.make_graph(nodes, "gpt2_small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, seq, d])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, seq, vocab])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])  # Gelu is opset 20
    model.ir_version = 9
    return model


def rss_mb() -> float:
    """Peak RSS of this process image in MiB. Linux keeps ``ru_maxrss`` across fork + exec, so a child would
    report its parent's peak (the parent built the model); VmHWM belongs to the exec'd image. getrusage is the
    fallback where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(kind: str, layers: int, verify: str, folder: str) -> dict:
    import onnx

    import graphprune

    base_rss = rss_mb()
    src = Path(folder) / f"{kind}_{layers}.onnx"
    model = onnx.load(str(src), load_external_data=False)
    weight_bytes = sum(int(np.prod(i.dims)) * 4 for i in model.graph.initializer)
    n_nodes = len(model.graph.node)
    del model
    if verify == "pipeline":
        return pipeline_only(kind, layers, src, n_nodes, weight_bytes, base_rss)
    t0 = time.perf_counter()
    result = graphprune.prune(src, ratio=0.5, budget="channels", verify=verify)
    t1 = time.perf_counter()
    result.save(Path(folder) / f"{kind}_{layers}.{verify}.pruned.onnx")
    t2 = time.perf_counter()
    rep = result.report
    return {"kind": kind, "layers": layers, "nodes": n_nodes, "verify": verify, "prune_s": round(t1 - t0, 3),
            "save_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
            "passes_s": {p.name: round(p.seconds, 3) for p in rep.passes},
            "verified": bool(rep.verification and rep.verification.ok) if verify != "off" else None,
            "params_before": rep.before.params, "params_after": rep.after.params,
            "macs_ratio": rep.after.macs / max(rep.before.macs, 1), "groups_pruned": rep.groups_pruned,
            "weight_mb": round(weight_bytes / 2**20, 1), "rss_after_imports_mb": round(base_rss, 1),
            "peak_rss_mb": round(rss_mb(), 1),
            "peak_rss_over_weights": round(rss_mb() / max(weight_bytes / 2**20, 1e-9), 2),
            "peak_rss_above_imports_over_weights": round((rss_mb() - base_rss) / max(weight_bytes / 2**20, 1e-9), 2)}


def pipeline_only(kind, layers, src, n_nodes, weight_bytes, base_rss) -> dict:
    """load → AnalyseChannels → MagnitudeScore → Select → RemoveChannels → save, each timed; no report, no
    verification (``graphprune.prune`` also builds the report, whose per-group views are timed separately)."""
    from graphprune.api import load
    from graphprune.io import save_model_atomic
    from graphprune.passes import AnalyseChannels, MagnitudeScore, RemoveChannels, Select
    from graphprune.pipeline.state import PruneState

    stages = {}
    t = time.perf_counter()
    state = PruneState.start(load(src))
    stages["load"] = time.perf_counter() - t
    for p in (AnalyseChannels(), MagnitudeScore(), Select(ratio=0.5, budget="channels"), RemoveChannels()):
        t = time.perf_counter()
        state = p(state)
        stages[p.name] = time.perf_counter() - t
    t = time.perf_counter()
    save_model_atomic(state.model, Path(src).with_suffix(".pipeline.pruned.onnx"), Path(src))
    stages["save"] = time.perf_counter() - t
    total = sum(stages.values())
    return {"kind": kind, "layers": layers, "nodes": n_nodes, "verify": "pipeline", "total_s": round(total, 3),
            "stages_s": {k: round(v, 3) for k, v in stages.items()},
            "weight_mb": round(weight_bytes / 2**20, 1), "rss_after_imports_mb": round(base_rss, 1),
            "peak_rss_mb": round(rss_mb(), 1),
            "peak_rss_over_weights": round(rss_mb() / max(weight_bytes / 2**20, 1e-9), 2),
            "peak_rss_above_imports_over_weights": round((rss_mb() - base_rss) / max(weight_bytes / 2**20, 1e-9), 2)}


def run_case(kind: str, layers: int, verify: str, folder: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(layers), verify, folder]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode or not lines:
        return {"kind": kind, "layers": layers, "verify": verify, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, nargs="*", default=[100, 1000, 10000])
    ap.add_argument("--verify-upto", type=int, default=1000)
    ap.add_argument("--gpt2", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/scale.json")
    ap.add_argument("--child", nargs=4)
    args = ap.parse_args()
    if args.child:
        kind, layers, verify, folder = args.child
        print(json.dumps(child(kind, int(layers), verify, folder)))
        return
    import onnx

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        cases = [("deep_resnet", n) for n in args.layers] + ([("gpt2_small", 12)] if args.gpt2 else [])
        for kind, n in cases:
            model = deep_resnet(n) if kind == "deep_resnet" else gpt2(n)
            onnx.save(model, str(Path(folder) / f"{kind}_{n}.onnx"))
            del model
            modes = ("pipeline", "off", "end") if n <= args.verify_upto or kind == "gpt2_small" else ("pipeline",)
            for verify in modes:
                row = run_case(kind, n, verify, folder)
                rows.append(row)
                print(json.dumps(row), flush=True)
    per_layer = {mode: {r["layers"]: round(1e3 * r["total_s"] / r["layers"], 3) for r in rows
                        if r["kind"] == "deep_resnet" and r["verify"] == mode and "total_s" in r}
                 for mode in ("pipeline", "off", "end")}
    out = {"machine": platform.platform(), "cpu_count": os.cpu_count(), "rows": rows, "ms_per_layer": per_layer}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("ms per layer:", per_layer)


if __name__ == "__main__":
    main()
