"""The ``graphprune`` command. Every subcommand calls the Python API (:mod:`graphprune.api`).

Exit codes: 0 ok, 1 verification failed, 2 bad input or usage, 3 unsupported model under --strict,
4 internal error, 130 interrupted. Errors are one line on stderr; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
import warnings
from pathlib import Path

from graphprune import __version__, api, io
from graphprune.errors import GraphPruneError, UsageError
from graphprune.frontends import pyfile
from graphprune.frontends.onnx.load import parse_input_shapes
from graphprune.pipeline.presets import METHODS
from graphprune.pipeline.stages import THEN_METHODS

SUBCOMMANDS = ("prune", "inspect", "verify", "bench", "prunability", "train")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`UsageError` (one line, exit 2) rather than a usage dump."""

    def error(self, message: str):  # noqa: D102
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", metavar="NAME:D0,D1,...",
                   help="static shape for an input with dynamic dims, e.g. input:1,3,224,224 (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail; tracebacks on errors")


def build_parser() -> Parser:
    parser = Parser(prog="graphprune", description="Structured pruning of ONNX models, verified against the "
                    "masked original. 'graphprune MODEL.onnx ...' is short for 'graphprune prune MODEL.onnx ...'.")
    parser.add_argument("--version", action="version", version=f"graphprune {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    p = sub.add_parser("prune", help="prune channels and write a smaller, verified model")
    p.add_argument("model", help="input ONNX file (never modified), or a torch model as FILE.py:FUNCTION")
    p.add_argument("--example-input", action="append", metavar="D0,D1,...",
                   help="torch model: shape of a seeded example input (repeat per forward argument)")
    p.add_argument("--weights", metavar="FILE", help="torch model: a state_dict checkpoint (read weights-only)")
    p.add_argument("-o", "--output", help="output file (default: MODEL.pruned.onnx next to the input)")
    p.add_argument("--method", default="magnitude", choices=sorted(METHODS), help="scoring method (default: magnitude); "
                   "'sipp' zeroes individual weights and does NOT shrink shapes (unstructured sparsity)")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of channels to remove, in [0, 1) (default 0.5)")
    p.add_argument("--norm", type=int, choices=(1, 2), default=1, help="magnitude norm (default 1)")
    p.add_argument("--global", dest="scope", action="store_const", const="global", default="local",
                   help="rank units across all groups (default: the ratio applies to each group)")
    p.add_argument("--max-group-ratio", type=float, default=0.9, help="with --global: most any group may lose")
    p.add_argument("--threshold", type=float, help="remove every unit whose score is <= T instead of a ratio")
    p.add_argument("--round-to", type=int, default=16, metavar="N",
                   help="keep a multiple of N channels per group (default 16, measured: misaligned counts lose much of the "
                        "onnxruntime speed-up; groups of at most N channels are not rounded)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="never prune channels touched by nodes matching this name pattern (fnmatch; repeatable)")
    p.add_argument("--strict", action="store_true", help="fail (exit 3) if any op has no channel rule")
    p.add_argument("--verify", choices=("off", "end", "each"), default="end", help="verification (default: end)")
    p.add_argument("--report", metavar="FILE", help="write the JSON report here")
    p.add_argument("--plot", metavar="FILE.png", help="write a chart of per-layer channels before / after (matplotlib)")
    p.add_argument("--latency", action="store_true", help="measure onnxruntime latency before and after")
    p.add_argument("--fold", action="store_true", help="then fold BatchNorm into the Conv before it and drop "
                   "Identity / Dropout (verified to equal the unfolded model within tolerance)")
    p.add_argument("--seed", type=int, default=0, help="seed for verification inputs and random choices")
    p.add_argument("--then", action="append", default=[], choices=THEN_METHODS,
                   help="run this method after --method in the same pipeline (e.g. --then lowrank)")
    p.add_argument("--energy", type=float, help="low rank: smallest rank keeping this fraction of Σσ² (default 0.9)")
    p.add_argument("--rank-ratio", type=float, help="low rank: keep this fraction of each layer's full rank")
    p.add_argument("--sv-threshold", type=float, help="low rank: keep singular values > T (absolute)")
    p.add_argument("--scheme", choices=("channel", "spatial"), default="channel",
                   help="low rank conv scheme: channel (kxk then 1x1) or spatial (kx1 then 1xk) (default channel)")
    p.add_argument("--calib", metavar="FILE", help="sampling / sipp: calibration inputs, .npz (arrays named like the "
                   "model inputs, axis 0 = points) or .npy (one input); without it, seeded random inputs (data-free); "
                   "taylor (FILE.py:FUNCTION only): .npz with the inputs and 'labels'")
    p.add_argument("--max-points", type=int, default=256, metavar="N", help="sampling / sipp: use at most N "
                   "calibration points (default 256)")
    p.add_argument("--budget", choices=("params", "macs"), default="params", help="sampling: --ratio is the "
                   "fraction of parameters or of MACs to remove, met by one ε shared by all layers (default params)")
    p.add_argument("--sampling", choices=("deterministic", "randomized"), default="deterministic",
                   help="sampling: keep the top channels by sensitivity (default), or draw them (--seed) and "
                        "reweight the kept ones by count/(m·p)")
    p.add_argument("--delta", type=float, default=1e-16, help="sampling / sipp: failure probability δ of the "
                   "sampling bound (default 1e-16)")
    p.add_argument("--sipp-mode", choices=("deterministic", "randomized", "hybrid"), default="deterministic",
                   help="sipp: global top weights by sensitivity (default), per-neuron sampling with reweighting, "
                        "or per neuron whichever bound is smaller; --ratio is the fraction of weights zeroed")
    add_common(p)

    p = sub.add_parser("inspect", help="show the channel groups: sizes, couplings, prunable or frozen and why")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="also list groups without parameters")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN")
    p.add_argument("--dot", metavar="FILE", help="also write the space graph as Graphviz text")
    p.add_argument("--html", metavar="FILE", help="also write one self-contained offline HTML page (graph, groups, "
                   "per-layer channels; before/after bars with --pruned or --plan)")
    p.add_argument("--pruned", metavar="FILE", help="a model graphprune pruned from MODEL: show its plan (kept/removed "
                   "per group, channels before/after per layer)")
    p.add_argument("--plan", metavar="FILE", help="a plan as JSON (Plan.to_json): same as --pruned")
    add_common(p)

    p = sub.add_parser("verify", help="check a pruned model against its original (uses the stored plan)")
    p.add_argument("original")
    p.add_argument("pruned")
    p.add_argument("--json", action="store_true")
    add_common(p)

    from graphprune.tools.bench import add_parser as add_bench_parser
    add_common(add_bench_parser(sub))

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
    from graphprune.cli.train import add_parser as add_train_parser
    add_train_parser(sub)
    return parser


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "prune")
    verbose = "-v" in argv or "--verbose" in argv
    signal.signal(signal.SIGTERM, interrupted)  # so a killed run still removes its temporary file
    if not verbose:
        warnings.simplefilter("ignore")  # library warnings are noise in a pipeline's log; -v shows them
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        from graphprune import progress
        progress.set_quiet(getattr(args, "quiet", False))
        from graphprune.tools.bench import command as cmd_bench
        return {"prune": cmd_prune, "inspect": cmd_inspect, "verify": cmd_verify, "bench": cmd_bench,
                "prunability": cmd_prunability, "train": cmd_train}[args.command](args)
    except GraphPruneError as exc:
        if verbose:
            traceback.print_exc()
        print(f"graphprune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("graphprune: interrupted; nothing written", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, unless -v
        if verbose:
            traceback.print_exc()
        print(f"graphprune: internal error: {type(exc).__name__}: {exc} (run with -v and report it)", file=sys.stderr)
        return 4


def cmd_prune(args) -> int:
    from graphprune.report.data import print_report

    torch_model = pyfile.is_torch_spec(args.model)
    model_path = Path(args.model.rsplit(":", 1)[0] if torch_model else args.model)
    default = model_path.with_name(model_path.stem + ".pruned.pt") if torch_model else io.default_output(model_path)
    output = Path(args.output) if args.output else default
    io.check_output(output, model_path)
    if args.report:
        io.check_output(Path(args.report), model_path)
    if args.plot:
        io.check_output(Path(args.plot), model_path)
    if torch_model:
        model = pyfile.load_module(args.model, args.weights)
        extra = {"example_inputs": pyfile.example_inputs(args.example_input, args.seed)}
    else:
        if args.example_input or args.weights:
            raise UsageError("--example-input and --weights are for torch models (FILE.py:FUNCTION)")
        model, extra = model_path, {}
    result = api.prune(model, **extra, method=args.method, ratio=args.ratio, norm=args.norm, scope=args.scope,
                       threshold=args.threshold, round_to=args.round_to, max_group_ratio=args.max_group_ratio,
                       exclude=tuple(args.exclude), strict=args.strict, verify=args.verify,
                       input_shapes=parse_input_shapes(args.input_shape), seed=args.seed, latency=args.latency,
                       energy=args.energy, rank_ratio=args.rank_ratio, sv_threshold=args.sv_threshold,
                       scheme=args.scheme, then=tuple(args.then), calib=args.calib, max_points=args.max_points,
                       budget=args.budget, sampling=args.sampling, delta=args.delta, sipp_mode=args.sipp_mode,
                       fold=args.fold)
    result.save(output)
    if args.report:
        report = result.report.to_dict() | {"input": str(model_path), "output": str(output)}
        io.write_text_atomic(Path(args.report), json.dumps(report, indent=2, default=str), model_path)
    if args.plot:
        from graphprune.report.data import write_plot
        write_plot(result.report, Path(args.plot), model_path)
    if not args.quiet:
        print_report(result.report, verbose=args.verbose)
        print(f"wrote {output}")
        if args.plot:
            print(f"wrote {args.plot}")
    return 0


def cmd_inspect(args) -> int:
    from graphprune.report.inspect import command

    return command(args)


def cmd_verify(args) -> int:
    from graphprune import progress
    with progress.task("verifying"):
        v = api.verify_files(Path(args.original), Path(args.pruned), parse_input_shapes(args.input_shape))
    if args.json:
        from dataclasses import asdict
        print(json.dumps(asdict(v), indent=2))
    elif not args.quiet:
        for name, status in v.checks.items():
            print(f"{name:16} {status}")
        if v.drift is not None:
            print(f"{'drift':16} max abs {v.drift.max_abs:.3g}, cosine {v.drift.cosine:.4f}")
        print("verified" if v.ok else "NOT verified")
    return 0 if v.ok else 1


def cmd_train(args) -> int:
    from graphprune.cli.train import run

    return run(args)


def cmd_prunability(args) -> int:
    from graphprune.tools.prunability import prunability

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


if __name__ == "__main__":
    sys.exit(main())
