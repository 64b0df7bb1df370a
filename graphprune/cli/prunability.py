"""``graphprune prunability MODEL --data FILE``: the smallest fraction of the model kept without retraining while
the loss stays within a tolerance (Kuhn et al. 2021), with the curve (:mod:`graphprune.tools.prunability`)."""

from __future__ import annotations

import json
from pathlib import Path

from graphprune import io
from graphprune.cli.common import add_common
from graphprune.frontends.onnx.load import parse_input_shapes
from graphprune.pipeline.presets import METHODS
from graphprune.tools.prunability import prunability


def add_parser(sub) -> None:
    p = sub.add_parser("prunability", help="smallest fraction of the model that can be kept without retraining "
                       "while the loss stays within a tolerance (Kuhn et al. 2021), with the curve")
    p.add_argument("model", help="input ONNX file")
    p.add_argument("--data", required=True, metavar="FILE", help=".npz with arrays named like the model inputs "
                   "(axis 0 = points) and optionally an integer array 'labels' (loss: cross-entropy with them; "
                   "without: the drift from the unpruned outputs); or .npy for a one-input model")
    p.add_argument("--tolerance", type=float, default=0.1, help="β: relative loss rise allowed (default 0.1); "
                   "without labels, the relative output drift allowed")
    p.add_argument("--accuracy-tolerance", type=float, default=0.005, help="prune potential (labels only): "
                   "accuracy drop allowed, absolute (default 0.005 = 0.5 points)")
    p.add_argument("--method", default="magnitude", choices=sorted(METHODS), help="pruning method, run at ratio = "
                   "1 - kept (default magnitude, global ranking)")
    p.add_argument("--grid", type=int, default=10, metavar="N", help="kept fractions 1/N, 2/N, ..., 1 (default 10)")
    p.add_argument("--resolution", type=float, default=0.01, help="bisection stops at this kept-fraction width")
    p.add_argument("--round-to", type=int, default=1, metavar="N", help="channel rounding (default 1: none)")
    p.add_argument("--max-group-ratio", type=float, default=0.9, help="most any channel group may lose")
    p.add_argument("--verify", choices=("off", "end"), default="end", help="verify every pruned model (default)")
    p.add_argument("--json", action="store_true", help="print the result (curve included) as JSON")
    p.add_argument("--plot", metavar="PNG", help="write the loss / accuracy curve here")
    add_common(p)


def command(args) -> int:
    model_path = Path(args.model)
    if args.plot:
        io.check_output(Path(args.plot), model_path)
    options = {} if args.method == "lowrank" else {"max_group_ratio": args.max_group_ratio}
    result = prunability(model_path, Path(args.data), tolerance=args.tolerance, method=args.method, grid=args.grid,
                         resolution=args.resolution, accuracy_tolerance=args.accuracy_tolerance,
                         input_shapes=parse_input_shapes(args.input_shape), round_to=args.round_to,
                         verify=args.verify, **options)
    if args.plot:
        result.plot(args.plot, input_path=model_path)
    if args.json:
        print(json.dumps(result.to_dict() | ({"plot": args.plot} if args.plot else {}), indent=2, default=str))
    elif not args.quiet:
        print(result.summary())
        if args.plot:
            print(f"wrote {args.plot}")
    return 0
