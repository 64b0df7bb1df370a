"""Low rank: below which MAC saving does a decomposition stop paying? (the default of ``--min-saving``)

    python benchmarks/lowrank_min_saving.py [--threads 1] [--batches 1 8] [--round-to 1 16] [--rounds 9]
                                            [--runs 20] [--out benchmarks/results/lowrank_min_saving.json]

A decomposition replaces one Conv / Gemm / MatMul by two: one more node, one more kernel launch, one more
intermediate tensor written and read. For one-layer models of a few shapes (small and large convs, 1x1 convs,
Gemm, a token MatMul) and target MAC savings of 0-50 %, the layer is decomposed by ``LowRank`` (channel scheme)
at the largest rank that saves at least that much: any rank (``--round-to 1``), or a multiple of 16 as the
default ``--round-to 16`` leaves it (onnxruntime's blocked conv layouts favour such counts). The original and
the decomposed models are timed in onnxruntime (CPU, ``ORT_ENABLE_ALL``) in interleaved rounds (``--rounds`` x
``--runs`` runs each after warm-up). On a shared machine neighbours only ever slow a round down, so the latency
used is the fastest round's median (the ratio of the round medians' medians is recorded too). Per shape, batch,
rounding and thread count the result records the latency ratio at each saving and the **break-even saving**: the
smallest measured saving from which the decomposed layer is faster at that and every larger saving measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
SAVINGS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)

# name: (op, activation shape without batch, weight shape, attributes)
SHAPES = {
    "conv3x3_c1_n32_8x8": ("Conv", (1, 8, 8), (32, 1, 3, 3), {"pads": [1, 1, 1, 1]}),  # digits_vgg's stem
    "conv3x3_16_32x32": ("Conv", (16, 32, 32), (16, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    "conv3x3_64_16x16": ("Conv", (64, 16, 16), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    "conv3x3_256_14x14": ("Conv", (256, 14, 14), (256, 256, 3, 3), {"pads": [1, 1, 1, 1]}),
    "conv1x1_256_14x14": ("Conv", (256, 14, 14), (256, 256, 1, 1), {}),
    "gemm_512": ("Gemm", (512,), (512, 512), {"transB": 1}),
    "gemm_2048x1024": ("Gemm", (2048,), (1024, 2048), {"transB": 1}),
    "matmul_128x768": ("MatMul", (128, 768), (768, 768), {}),
}


def layer_model(op: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], attrs: dict,
                batch: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if op != "MatMul":
        inits.append(numpy_helper.from_array(rng.standard_normal(w_shape[0]).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node(op, inputs, ["y"], name="layer", **attrs)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *x_shape])
    graph = helper.make_graph([node], "layer", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def rank_for(saving: float, k: int, n: int, full: int, round_to: int) -> int:
    """The largest rank whose two factors (k x r, r x n) save at least ``saving`` of the k x n MACs, a multiple of
    ``round_to`` when the full rank is larger than that (as ``methods.lowrank.rounded`` leaves ranks); at least
    ``round_to`` (or 1)."""
    r = min(full, int(np.floor((1.0 - saving) * k * n / (k + n))))
    if 1 < round_to < full:
        return max(round_to, r // round_to * round_to)
    return max(1, r)


def decomposed(model: onnx.ModelProto, rank: int, full: int):
    from graphprune.api import load
    from graphprune.passes.lowrank import LowRank
    from graphprune.pipeline.state import PruneState

    state = PruneState.start(load(model))
    out = LowRank(rank_ratio=rank / full, round_to=1, only_if_cheaper=False, min_saving=0.0)(state)
    (layer,) = out.history[-1].stats["decomposed"]
    return out.model, layer


def session(model: onnx.ModelProto, threads: int):
    from graphprune.runtime import session as runtime_session

    return runtime_session(model, threads=threads)


def interleaved(models: dict[str, onnx.ModelProto], x: np.ndarray, rounds: int, runs: int, threads: int) -> dict:
    """Per model, the median latency (ms) of each round, the rounds interleaved across the models."""
    sessions = {k: session(m, threads) for k, m in models.items()}
    for s in sessions.values():
        for _ in range(5):
            s.run(None, {"x": x})
    from speedup import round_medians  # benchmarks/ is on the path when a benchmark runs as a script

    return round_medians(sessions, {"x": x}, rounds, runs)


def break_even(points: list[dict]) -> float | None:
    """The smallest measured saving from which every larger one is faster than the original (None: never)."""
    best = None
    for p in sorted(points, key=lambda p: -p["macs_saving"]):
        if p["latency_ratio"] >= 1.0:
            break
        best = p["macs_saving"]
    return best


def summarise(rows: list[dict]) -> dict:
    """How many rows never got faster, and the median / largest break-even saving of the others."""
    found = [r["break_even_saving"] for r in rows if r["break_even_saving"] is not None]
    return {"rows": len(rows), "never_faster": [f"{r['shape']} b={r['batch']}" for r in rows
                                                if r["break_even_saving"] is None],
            "break_even_median": float(np.median(found)) if found else None,
            "break_even_max": float(np.max(found)) if found else None,
            "break_even": {f"{r['shape']} b={r['batch']}": r["break_even_saving"] for r in rows}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="*", default=[1])
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    ap.add_argument("--round-to", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/lowrank_min_saving.json"))
    args = ap.parse_args()
    rows = []
    for name, (op, x_shape, w_shape, attrs) in SHAPES.items():
        n = w_shape[0]
        k = int(np.prod(w_shape[1:]))
        if op != "Conv":
            k, n = w_shape[::-1] if attrs.get("transB") else w_shape
        full = min(k, n)
        for batch in args.batches:
            model = layer_model(op, x_shape, w_shape, attrs, batch)
            x = np.random.default_rng(1).standard_normal((batch, *x_shape)).astype(np.float32)
            for round_to in args.round_to:
                ranks = sorted({rank_for(s, k, n, full, round_to) for s in SAVINGS}, reverse=True)
                variants, layers = {"original": model}, {}
                for r in ranks:
                    variants[r], layers[r] = decomposed(model, r, full)
                for threads in args.threads:
                    rounds = interleaved(variants, x, args.rounds, args.runs, threads)
                    lat = {key: min(v) for key, v in rounds.items()}
                    points = [{"rank": r, "full_rank": full,
                               "macs_saving": 1 - layers[r]["macs_after"] / layers[r]["macs_before"],
                               "latency_ms": lat[r], "latency_ratio": lat[r] / lat["original"],
                               "latency_ratio_median": float(np.median(rounds[r]) / np.median(rounds["original"]))}
                              for r in ranks]
                    row = {"shape": name, "op": op, "batch": batch, "round_to": round_to, "threads": threads,
                           "original_ms": lat["original"], "break_even_saving": break_even(points), "points": points}
                    rows.append(row)
                    ratios = " ".join(f"{p['macs_saving']:.0%}:{p['latency_ratio']:.2f}" for p in points)
                    be = row["break_even_saving"]
                    print(f"{name:20s} b={batch} rt={round_to:2d} t={threads} {lat['original']:8.3f} ms  break-even "
                          f"{'never' if be is None else f'{be:.0%}'}  [{ratios}]", flush=True)
    summary = {f"round_to={rt}": summarise([r for r in rows if r["round_to"] == rt]) for rt in args.round_to}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "cpu_count": os.cpu_count(),
                               "onnxruntime_graph_optimization": "ORT_ENABLE_ALL", "target_savings": SAVINGS,
                               "summary": summary, "rows": rows}, indent=2))
    print(summary)


if __name__ == "__main__":
    main()
