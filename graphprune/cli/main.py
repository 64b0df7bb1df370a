"""The ``graphprune`` command. Every subcommand (one module each here) calls the Python API.

Exit codes: 0 ok, 1 verification failed, 2 bad input or usage, 3 unsupported model under --strict,
4 internal error, 5 nothing removed under --require-removal, 130 interrupted, 141 stdout closed by its reader
(e.g. ``| head``: stop quietly). Errors are one line on stderr; ``-v`` adds the traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
import warnings

from graphprune import __version__, progress
from graphprune.cli import bench, inspect, prunability, prune, train, verify
from graphprune.cli.common import Parser
from graphprune.errors import GraphPruneError

COMMANDS = {"prune": prune, "inspect": inspect, "verify": verify, "bench": bench, "prunability": prunability,
            "train": train}


def build_parser() -> Parser:
    parser = Parser(prog="graphprune", description="Structured pruning of ONNX models, verified against the "
                    "masked original. 'graphprune MODEL.onnx ...' is short for 'graphprune prune MODEL.onnx ...'.")
    parser.add_argument("--version", action="version", version=f"graphprune {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
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
        progress.set_quiet(getattr(args, "quiet", False))
        return COMMANDS[args.command].command(args)
    except GraphPruneError as exc:
        if verbose:
            traceback.print_exc()
        print(f"graphprune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # so the interpreter's final flush does not raise again
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("graphprune: interrupted; nothing written", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, unless -v
        if verbose:
            traceback.print_exc()
        print(f"graphprune: internal error: {type(exc).__name__}: {exc} (run with -v and report it)", file=sys.stderr)
        return 4
