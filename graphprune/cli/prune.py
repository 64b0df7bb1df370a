"""``graphprune prune MODEL``: prune, verify, write the smaller model (and the report, the plot).

Its option flags are made from :func:`graphprune.config.keywords`, the same description the Python API's keywords
come from, so the CLI and the API cannot drift apart: every flag is passed to :func:`graphprune.prune` by name.
"""

from __future__ import annotations

import json
from pathlib import Path

from graphprune import api, io
from graphprune.cli.common import add_common
from graphprune.config import flag, keywords
from graphprune.errors import UsageError
from graphprune.frontends import pyfile
from graphprune.frontends.onnx.load import parse_input_shapes
from graphprune.pipeline.presets import default_of
from graphprune.report.plot import write_plot
from graphprune.report.text import print_report


def add_option_flags(p) -> list[str]:
    """One flag per keyword that has a CLI spelling; returns their names (the argparse ``dest``)."""
    names = []
    for name, f in keywords().items():
        cli = f.metadata.get("cli")
        if cli is None:
            continue
        kwargs = dict(f.metadata.get("argparse", {}))
        default = default_of(f)
        if kwargs.get("action") == "append":
            default = list(default)
        p.add_argument(*(cli or (flag(name),)), dest=name, default=default, help=f.metadata["help"], **kwargs)
        names.append(name)
    return names


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="prune channels and write a smaller, verified model")
    p.add_argument("model", help="input ONNX file (never modified), or a torch model as FILE.py:FUNCTION")
    p.add_argument("--example-input", action="append", metavar="D0,D1,...",
                   help="torch model: shape of a seeded example input (repeat per forward argument); not needed when "
                        "FUNCTION returns (module, example_inputs)")
    p.add_argument("--weights", metavar="FILE", help="torch model: a state_dict checkpoint (read weights-only)")
    p.add_argument("-o", "--output", help="output file (default: MODEL.pruned.onnx next to the input)")
    p.add_argument("--report", metavar="FILE", help="write the JSON report here")
    p.add_argument("--plot", metavar="FILE.png", help="write a chart of per-layer channels before / after (matplotlib)")
    p.set_defaults(option_names=add_option_flags(p))
    add_common(p)


def command(args) -> int:
    torch_model = pyfile.is_torch_spec(args.model)
    model_path = Path(args.model.rsplit(":", 1)[0] if torch_model else args.model)
    default = model_path.with_name(model_path.stem + ".pruned.pt") if torch_model else io.default_output(model_path)
    output = Path(args.output) if args.output else default
    for target in (output, args.report, args.plot):
        if target:
            io.check_output(Path(target), model_path)
    if torch_model:
        model, inputs = pyfile.load_with_inputs(args.model, args.weights)
        if args.example_input or inputs is None:
            inputs = pyfile.example_inputs(args.example_input, args.seed)
        extra = {"example_inputs": inputs}
    else:
        if args.example_input or args.weights:
            raise UsageError("--example-input and --weights are for torch models (FILE.py:FUNCTION)")
        model, extra = model_path, {}
    options = {name: getattr(args, name) for name in args.option_names}
    result = api.prune(model, **extra, **options, input_shapes=parse_input_shapes(args.input_shape))
    result.save(output)
    if args.report:
        report = result.report.to_dict() | {"input": str(model_path), "output": str(output)}
        io.write_text_atomic(Path(args.report), json.dumps(report, indent=2, default=str), model_path)
    if args.plot:
        write_plot(result.report, Path(args.plot), model_path)
    if not args.quiet:
        print_report(result.report, verbose=args.verbose)
        print(f"wrote {output}")
        if args.plot:
            print(f"wrote {args.plot}")
    return 0
