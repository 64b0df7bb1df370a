"""``graphprune bench MODEL.onnx [SMALL.onnx]``: onnxruntime latency, median and spread, side by side
(:mod:`graphprune.tools.bench`)."""

from __future__ import annotations

import json

from graphprune.cli.common import add_common
from graphprune.frontends.onnx.load import parse_input_shapes
from graphprune.tools.bench import bench, print_bench


def add_parser(sub):
    p = sub.add_parser("bench", help="onnxruntime latency of one model, or of an original and its pruned version "
                       "side by side (median, p10/p90, ratio)")
    p.add_argument("models", nargs="+", metavar="MODEL", help="one or two ONNX files (the second: e.g. the pruned one)")
    p.add_argument("--batch", type=int, nargs="+", metavar="N", help="batch sizes (axis 0 of every input; default: "
                   "the model's own)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="onnxruntime intra-op threads (default 0: "
                   "onnxruntime decides)")
    p.add_argument("--runs", type=int, default=50, metavar="N", help="timed runs per measurement (default 50)")
    p.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed runs first (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--profile", action="store_true", help="two models: each op type's kernel time before / after "
                   "next to the work-bound (every kernel falling with its own work; efficiency = speed-up ÷ MACs "
                   "speed-up), at the analysed shapes")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_common(p)


def command(args) -> int:
    data = bench(args.models, args.batch, threads=args.threads, runs=args.runs, warmup=args.warmup, seed=args.seed,
                 input_shapes=parse_input_shapes(args.input_shape), profile=args.profile)
    if args.json:
        print(json.dumps(data, indent=2))
    elif not args.quiet:
        print_bench(data)
    return 0
