"""``graphprune train FILE.py:FUNCTION --data train.npz``: prune a torch model with a data set and fine-tune it.

``--method tpp`` regularises the chosen units first (TPP, fast schedule), then removes them; any other method
prunes at once. Both then fine-tune for ``--epochs`` and report accuracy on ``--val`` (or the training data).
The ``.npz`` holds the forward's inputs (named like its arguments, or the only array besides ``labels``) and an
integer array ``labels``.
"""

from __future__ import annotations

import argparse
import io as _io
import math
import warnings
from pathlib import Path

from graphprune import api, io
from graphprune.errors import UsageError
from graphprune.frontends import pyfile
from graphprune.passes.taylor import read_data


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="prune a torch model with a data set (TPP or any method) and fine-tune it")
    p.add_argument("model", help="FILE.py:FUNCTION returning the nn.Module")
    p.add_argument("--example-input", action="append", metavar="D0,D1,...", required=True,
                   help="shape of an example input (repeat per forward argument)")
    p.add_argument("--weights", metavar="FILE", help="a state_dict checkpoint (read weights-only)")
    p.add_argument("--data", required=True, metavar="NPZ", help="training inputs and integer 'labels'")
    p.add_argument("--val", metavar="NPZ", help="validation data for the accuracy report (default: --data)")
    p.add_argument("--method", default="tpp", help="tpp (default) or any pruning method of 'graphprune prune'")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of the model's params to remove (--budget)")
    p.add_argument("--budget", choices=("params", "macs", "channels"), default=None,
                   help="what --ratio is a fraction of (default params; channels: of each group's channels)")
    p.add_argument("--round-to", type=int, default=1, metavar="N")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs after removal")
    p.add_argument("--lr", type=float, default=1e-2, help="fine-tuning learning rate (SGD, momentum 0.9)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="FILE.pt (torch.save of the module) or FILE.onnx")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")


def loader_from(path: str, model_source, batch_size: int, seed: int, shuffle: bool = True):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    inputs, labels = read_data(path, model_source, who=f"--data {path}")
    dataset = TensorDataset(*[x.float() if x.is_floating_point() else x for x in inputs], labels.long())
    gen = torch.Generator().manual_seed(seed)
    batches = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen)
    return [((*b[:-1],) if len(b) > 2 else b[0], b[-1]) for b in batches] if not shuffle else ReShuffled(batches)


class ReShuffled:
    """Re-iterable ``(inputs, labels)`` batches (the fine-tune loop walks it once per epoch)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        for b in self.batches:
            yield ((*b[:-1],) if len(b) > 2 else b[0]), b[-1]

    def __len__(self):
        return len(self.batches)


def accuracy(model, batches) -> float:
    import torch

    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in batches:
            out = model(*x) if isinstance(x, tuple) else model(x)
            right += int((out.argmax(1) == y).sum())
            total += len(y)
    return right / max(total, 1)


def command(args: argparse.Namespace) -> int:
    import torch  # the optional dependency: the rest of the CLI runs without it

    from graphprune.torch.finetune import finetune
    from graphprune.torch.tpp import TPP
    from graphprune.torch.api import load_module

    output = io.check_output(Path(args.output), Path(args.model.rsplit(":", 1)[0]))
    model = pyfile.load_module(args.model, args.weights)
    x0 = pyfile.example_inputs(args.example_input, args.seed)
    source = load_module(model, x0)
    train = loader_from(args.data, source, args.batch_size, args.seed)
    val = loader_from(args.val or args.data, source, 256, args.seed, shuffle=False)
    before = accuracy(model, val)
    if args.method == "tpp":
        tpp = TPP(model, example_inputs=x0, ratio=args.ratio, schedule="fast", budget=args.budget)
        reg_epochs = math.ceil(tpp.total_steps / max(len(train), 1))
        finetune(model, train, epochs=reg_epochs, lr=1e-3, schedule="constant", hooks=tpp, progress=not args.quiet)
        small = tpp.finish(x0)
    else:
        try:
            small = api.prune(model, example_inputs=x0, method=args.method, ratio=args.ratio, budget=args.budget,
                              round_to=args.round_to).model
        except TypeError as exc:
            raise UsageError(f"method '{args.method}': {exc}") from exc
    pruned = accuracy(small, val)
    small = finetune(small, train, epochs=args.epochs, lr=args.lr, progress=not args.quiet).model
    after = accuracy(small, val)
    params = [sum(p.numel() for p in m.parameters()) for m in (model, small)]
    if output.suffix == ".onnx":
        data = export_bytes(small.eval(), x0)
    else:
        buffer = _io.BytesIO()
        torch.save(small, buffer)
        data = buffer.getvalue()
    io.write_bytes_atomic(output, data)
    if not args.quiet:
        print(f"method {args.method}, ratio {args.ratio}: params {params[0]:,} -> {params[1]:,} "
              f"({params[1] / params[0]:.1%})")
        print(f"accuracy: original {before:.2%}, pruned {pruned:.2%}, after {args.epochs} fine-tuning epochs "
              f"{after:.2%}")
        print(f"wrote {output}")
    return 0


def export_bytes(model, example_inputs) -> bytes:
    import torch

    buffer = _io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example_inputs, buffer, opset_version=17, dynamo=False)
    return buffer.getvalue()
