"""Real speed-up: onnxruntime CPU latency before / after pruning, next to the MACs ratio, then after folding.

    python benchmarks/speedup.py [--zoo build/zoo224] [--models resnet18 ...] [--ratios 0.3 0.5 0.7]
                                 [--batches 1 8] [--rounds 5] [--runs 15] [--threads 1] [--round-to 1 8]
                                 [--budget channels|params|macs]

Models: torchvision exports at 224×224 (``zoo_export.py --side 224 --out build/zoo224``). For each model, ratio
and ``--round-to``: prune (verified against the masked original), then fold BatchNorm into Conv and drop
Identity / Dropout (``passes/fold.py``, verified equal to the unfolded model). Latency: the original, the pruned
and the folded model are timed in interleaved rounds (``--rounds`` × ``--runs`` runs each, after warm-up), so a
neighbour's job slows all three alike; reported: median of the per-round medians, and the spread (min and max
of the round medians). The batch axis is rewritten to 1 or 8 in both models (torchvision CNNs bake no batch
size into their Reshapes; the run checks it).

    realised speed-up = latency before / latency after;   MACs speed-up = MACs before / MACs after
    efficiency        = realised speed-up / MACs speed-up   (1.0: latency falls exactly as MACs do)

``--profile`` adds, per row, onnxruntime's kernel-by-kernel profile of the original and the pruned model (the
two taking turns, batch as analysed) next to the *work-bound*: each kernel's original time scaled by its own
node's work ratio (MACs for Conv / Gemm / MatMul, elements read and written for every other op, activations for
the runtime's own layout kernels). ``bound_efficiency`` is the efficiency a graph whose every kernel falls exactly
with its work would have: where ops linear in the width (LayerNorm, GELU, Softmax, Transpose …) take a share of
the time, it is below 1 whatever is pruned, because they fall with the width while the MACs fall with its square.
``kernel_over_bound`` (bound time ÷ measured kernel time) says how much of it the emitted graph realises.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnx


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name for i in out.graph.initializer}
    for vi in [*out.graph.input, *out.graph.output]:
        if vi.name not in inits and vi.type.tensor_type.shape.dim:
            vi.type.tensor_type.shape.dim[0].dim_value = batch
    del out.graph.value_info[:]
    return out


def session(model: onnx.ModelProto, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def round_medians(sessions: dict, feeds: dict, rounds: int, runs: int) -> dict[str, list[float]]:
    """Per session, the median latency (ms) of each of ``rounds`` rounds of ``runs`` runs, rounds interleaved across
    the sessions so that drifting machine load hits each alike."""
    medians: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feeds)
                times.append((time.perf_counter() - t0) * 1e3)
            medians[k].append(float(np.median(times)))
    return medians


def interleaved(models: dict[str, onnx.ModelProto], batch: int, rounds: int, runs: int, threads: int) -> dict:
    sessions = {k: session(with_batch(m, batch), threads) for k, m in models.items()}
    name = sessions["before"].get_inputs()[0].name
    shape = [batch, *[d.dim_value for d in models["before"].graph.input[0].type.tensor_type.shape.dim[1:]]]
    x = {name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for s in sessions.values():  # warm-up, and the batch rewrite must run
        for _ in range(3):
            s.run(None, x)
    medians = round_medians(sessions, x, rounds, runs)
    return {k: {"median_ms": float(np.median(v)), "min_ms": float(np.min(v)), "max_ms": float(np.max(v)),
                "round_medians_ms": [round(t, 3) for t in v]} for k, v in medians.items()}


def work_bound(result, threads: int, runs: int = 20) -> dict:
    """The original and the pruned model profiled kernel by kernel, against each kernel scaled by its work."""
    from graphprune.frontends.onnx.load import load
    from graphprune.tools.kernels import breakdown

    return breakdown(result.source, load(result.model, result.source.input_shapes), threads=threads,
                     runs=runs).to_json()


def main() -> None:
    import graphprune
    from graphprune.emit.fold import fold_model
    from graphprune.verify.compare import verify_same

    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default="build/zoo224")
    ap.add_argument("--models", nargs="*", default=["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "regnet_x_400mf"])
    ap.add_argument("--ratios", type=float, nargs="*", default=[0.3, 0.5, 0.7])
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    ap.add_argument("--round-to", type=int, nargs="*", default=[1])
    ap.add_argument("--budget", default="channels", choices=("channels", "params", "macs"),
                    help="what --ratios are fractions of (default channels, the stored results' meaning; the "
                         "prune default is params)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="add the kernel profile and its work-bound to each row")
    ap.add_argument("--out", default="benchmarks/results/speedup.json")
    args = ap.parse_args()
    rows = []
    out = Path(args.out)
    for name in args.models:
        path = Path(args.zoo) / f"{name}.onnx"
        if not path.exists():
            print(f"{name}: {path} missing (run zoo_export.py --side 224 --out {args.zoo})")
            continue
        for ratio in args.ratios:
            for rt in args.round_to:
                r = graphprune.prune(path, ratio=ratio, budget=args.budget, round_to=rt, verify="end")
                folded, stats = fold_model(r.model)
                fv = verify_same(r.model, folded, r.source.input_shapes, label="equals_unfolded", what="folded - unfolded")
                base_folded, _ = fold_model(r.source.model)  # the same post-pass on the unpruned model
                macs = r.report.after.macs / r.report.before.macs
                bound = work_bound(r, args.threads) if args.profile else None
                for batch in args.batches:
                    lat = interleaved({"before": r.source.model, "before_folded": base_folded, "after": r.model,
                                       "after_folded": folded}, batch, args.rounds, args.runs, args.threads)
                    b, a, af = lat["before"]["median_ms"], lat["after"]["median_ms"], lat["after_folded"]["median_ms"]
                    row = {"model": name, "ratio": ratio, "budget": args.budget, "round_to": rt, "batch": batch,
                           "threads": args.threads,
                           "verified": r.report.verification.ok, "fold_verified": fv.ok, "fold": stats,
                           "fold_max_error": fv.max_error,
                           "params_ratio": r.report.after.params / r.report.before.params, "macs_ratio": macs,
                           "latency": lat, "latency_ratio": a / b, "speedup": b / a, "macs_speedup": 1 / macs,
                           "efficiency": (b / a) * macs, "speedup_folded": lat["before_folded"]["median_ms"] / af,
                           "efficiency_folded": (lat["before_folded"]["median_ms"] / af) * macs}
                    if bound is not None:
                        row["work_bound"] = bound
                    rows.append(row)
                    print(f"{name:16s} r={ratio:.1f} rt={rt} b={batch} MACs {macs:6.1%}  "
                          f"{b:7.2f} → {a:7.2f} ms [{lat['after']['min_ms']:.2f}–{lat['after']['max_ms']:.2f}]  "
                          f"speed-up {b / a:4.2f}× vs MACs {1 / macs:4.2f}×  eff {row['efficiency']:.2f}  "
                          f"folded {row['speedup_folded']:4.2f}× (eff {row['efficiency_folded']:.2f})"
                          + (f"  kernels eff {bound['kernel_efficiency']:.2f}, work-bound {bound['bound_efficiency']:.2f}"
                             if bound else ""), flush=True)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps({"machine": platform.platform(), "cpu_count": os.cpu_count(),
                                               "onnxruntime_graph_optimization": "ORT_ENABLE_ALL", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
