"""Export reference models to ONNX with static shapes.

Two exporters are supported:

* ``dynamo=False`` (default): the legacy TorchScript exporter at the
  requested opset (17). In eval mode it folds BatchNorm into the preceding
  Conv; initializers are named like ``onnx::Conv_35`` and nodes like
  ``/block1/block1.0/Conv``.
* ``dynamo=True``: the ``torch.export`` + onnxscript exporter. It has no
  implementations below opset 18 (a lower request triggers a version
  conversion that can fail noisily and leave the model at 18), so
  ``max(opset, 18)`` is used. Its optimizer also folds BatchNorm into Conv
  (keeping the parameter name, bias as ``<weight>_bias``); nodes are named
  like ``node_Conv_53``. Weights are written into the ``.onnx`` file
  (``external_data=False``).

CLI::

    python -m models.export --out DIR [--dynamo] [--opset N] [--only NAME ...]

writes ``DIR/NAME.onnx`` for every reference model (or just ``--only``).
"""

from __future__ import annotations

import argparse
import pathlib
import warnings
from collections.abc import Sequence
from os import PathLike

import onnx
import torch
from torch import nn

from models.registry import BENCHMARK_MODELS, REFERENCE_MODELS, ModelSpec

DYNAMO_MIN_OPSET = 18


def export_onnx(
    spec_or_module: ModelSpec | nn.Module,
    path: str | PathLike[str],
    input_shape: tuple[int, ...] | None = None,
    *,
    dynamo: bool = False,
    opset: int = 17,
) -> pathlib.Path:
    """Export a model to ``path`` with one input "input" and one output "output".

    ``spec_or_module`` is a :class:`ModelSpec` (built fresh, its input shape
    used unless ``input_shape`` is given) or an ``nn.Module`` (then
    ``input_shape`` is required). The model is put in eval mode and exported
    under ``torch.no_grad()`` with static shapes. Returns the written path.
    """
    if isinstance(spec_or_module, ModelSpec):
        model = spec_or_module.build()
        shape = tuple(input_shape or spec_or_module.input_shape)
    elif isinstance(spec_or_module, nn.Module):
        if input_shape is None:
            raise ValueError("input_shape is required when exporting an nn.Module")
        model, shape = spec_or_module, tuple(input_shape)
    else:
        raise TypeError(f"expected ModelSpec or nn.Module, got {type(spec_or_module).__name__}")

    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    common = dict(input_names=["input"], output_names=["output"])
    with torch.no_grad(), warnings.catch_warnings():
        if dynamo:
            warnings.filterwarnings("ignore", ".*LeafSpec", FutureWarning)  # torch-internal
            torch.onnx.export(
                model, (x,), str(out), **common,
                opset_version=max(opset, DYNAMO_MIN_OPSET),
                dynamo=True, external_data=False, verbose=False,
            )
        else:
            # The legacy exporter is a deliberate choice here; silence its nags.
            warnings.filterwarnings("ignore", "You are using the legacy TorchScript",
                                    DeprecationWarning)
            warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
            torch.onnx.export(model, (x,), str(out), **common, opset_version=opset,
                              dynamo=False)
    _check_self_contained(out)
    return out


def _check_self_contained(path: pathlib.Path) -> None:
    """Fail if the exported model keeps any weights in external data files."""
    proto = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise RuntimeError(f"{path}: initializers stored externally: {external[:5]}")


def main(argv: Sequence[str] | None = None) -> int:
    known = {**REFERENCE_MODELS, **BENCHMARK_MODELS}
    parser = argparse.ArgumentParser(prog="python -m models.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    parser.add_argument("--dynamo", action="store_true", help="use the torch.export exporter")
    parser.add_argument("--opset", type=int, default=17, help="opset (dynamo uses >= 18)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(known),
                        help="export only these models (benchmark models allowed)")
    args = parser.parse_args(argv)
    for name in args.only or list(REFERENCE_MODELS):
        path = export_onnx(known[name], args.out / f"{name}.onnx",
                           dynamo=args.dynamo, opset=args.opset)
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
