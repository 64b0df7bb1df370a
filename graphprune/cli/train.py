"""``graphprune train FILE.py:FUNCTION --data train.npz``: prune a torch model with a data set and fine-tune it.

``--method tpp`` regularises the chosen units first (TPP, fast schedule), then removes them; any other method
prunes at once. Both then fine-tune for ``--epochs`` and report the loss (and, for classifiers, the accuracy) on
``--val`` (or the training data) before pruning, after it and after fine-tuning. The ``.npz`` holds the forward's
inputs (named like its arguments, or the only array besides ``labels``) and an integer array ``labels``.

``--loss lm`` trains a causal language model (a Hugging Face ``…ForCausalLM``, captured by torch.export): the
data is token ids (N, T) and each position predicts the next token (``labels`` default to the ids themselves).
FUNCTION may return ``(module, example_inputs)`` (token ids, which ``--example-input`` shapes cannot give).
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

LOSSES = ("cross-entropy", "lm")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="prune a torch model with a data set (TPP or any method) and fine-tune it")
    p.add_argument("model", help="FILE.py:FUNCTION returning the nn.Module (or the module and its example inputs)")
    p.add_argument("--example-input", action="append", metavar="D0,D1,...",
                   help="shape of a seeded example input (repeat per forward argument); not needed when FUNCTION "
                        "returns (module, example_inputs)")
    p.add_argument("--weights", metavar="FILE", help="a state_dict checkpoint (read weights-only)")
    p.add_argument("--data", required=True, metavar="NPZ", help="training inputs and integer 'labels'")
    p.add_argument("--loss", choices=LOSSES, default="cross-entropy",
                   help="cross-entropy of the class logits (default), or lm: next-token cross-entropy of a causal "
                        "language model over token ids (N, T), labels default to the ids")
    p.add_argument("--val", metavar="NPZ", help="validation data for the accuracy report (default: --data)")
    p.add_argument("--method", default="tpp", help="tpp (default) or any pruning method of 'graphprune prune'")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of the model's params to remove (--budget)")
    p.add_argument("--budget", choices=("params", "macs", "channels"), default=None,
                   help="what --ratio is a fraction of (default params; channels: of each group's channels)")
    p.add_argument("--round-to", type=int, default=1, metavar="N")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs after removal (per round with --steps)")
    p.add_argument("--steps", type=int, default=1, metavar="K",
                   help="iterative pruning (any method but tpp): K rounds of prune to (1 - ratio)^(k/K) of the "
                        "budget, then --epochs of fine-tuning with the learning rate rewound (default 1: one-shot)")
    p.add_argument("--lr", type=float, default=1e-2, help="fine-tuning learning rate (SGD, momentum 0.9)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="FILE.pt (torch.save of the module) or FILE.onnx")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")


def read_npz(path: str, loss: str) -> dict:
    """The arrays of ``path``; for ``--loss lm`` without ``labels``, the one array of token ids is its own target."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"--data {path}: not a readable .npz ({exc})") from None
    if loss == "lm" and "labels" not in data and len(data) == 1:
        data["labels"] = next(iter(data.values()))
    return data


def loader_from(path: str, model_source, batch_size: int, seed: int, shuffle: bool = True, loss: str = "cross-entropy"):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    inputs, labels = read_data(read_npz(path, loss), model_source, who=f"--data {path}")
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


def evaluate(model, batches, loss_fn, classify: bool) -> tuple[float, float | None]:
    """(mean loss per point, top-1 accuracy or None) of ``model`` on ``batches``, in eval mode."""
    import torch

    from graphprune.torch.finetune import call, logits_of

    model.eval()
    right = total = 0
    loss = 0.0
    with torch.no_grad():
        for x, y in batches:
            out = call(model, x)
            loss += float(loss_fn(out, y)) * len(y)
            if classify:
                right += int((logits_of(out).argmax(1) == y).sum())
            total += len(y)
    return loss / max(total, 1), (right / max(total, 1) if classify else None)


def command(args: argparse.Namespace) -> int:
    import torch  # the optional dependency: the rest of the CLI runs without it

    from graphprune.torch.finetune import cross_entropy, finetune, lm_loss
    from graphprune.torch.tpp import TPP
    from graphprune.torch.api import load_module

    output = io.check_output(Path(args.output), Path(args.model.rsplit(":", 1)[0]))
    model, x0 = pyfile.load_with_inputs(args.model, args.weights)
    if args.example_input or x0 is None:
        x0 = pyfile.example_inputs(args.example_input, args.seed)
    x0 = x0 if isinstance(x0, tuple) else (x0,)
    source = load_module(model, x0, capture="auto")
    loss_fn, classify = (lm_loss, False) if args.loss == "lm" else (cross_entropy, True)
    train = loader_from(args.data, source, args.batch_size, args.seed, loss=args.loss)
    val = loader_from(args.val or args.data, source, 256, args.seed, shuffle=False, loss=args.loss)
    before = evaluate(model, val, loss_fn, classify)
    if args.steps < 1:
        raise UsageError(f"steps {args.steps} must be a positive integer")
    if args.steps != 1 and args.method == "tpp":
        raise UsageError("--steps (iterative pruning) applies to the one-shot methods, not to tpp, which "
                         "regularises before removing")
    if args.steps != 1:
        return iterative_command(args, model, x0, train, val, loss_fn, classify, before, output)
    if args.method == "tpp":
        tpp = TPP(model, example_inputs=x0, ratio=args.ratio, schedule="fast", budget=args.budget)
        reg_epochs = math.ceil(tpp.total_steps / max(len(train), 1))
        finetune(model, train, epochs=reg_epochs, lr=1e-3, schedule="constant", hooks=tpp, progress=not args.quiet,
                 loss_fn=loss_fn)
        small = tpp.finish(x0)
    else:
        try:
            small = api.prune(model, example_inputs=x0, method=args.method, ratio=args.ratio, budget=args.budget,
                              round_to=args.round_to).model
        except TypeError as exc:
            raise UsageError(f"method '{args.method}': {exc}") from exc
    pruned = evaluate(small, val, loss_fn, classify)
    small = finetune(small, train, epochs=args.epochs, lr=args.lr, progress=not args.quiet, loss_fn=loss_fn).model
    after = evaluate(small, val, loss_fn, classify)
    params = write_module(small, model, x0, output)
    if not args.quiet:
        print(f"method {args.method}, ratio {args.ratio}: params {params[0]:,} -> {params[1]:,} "
              f"({params[1] / params[0]:.1%})")
        print(stages(f"loss ({args.loss})", [before[0], pruned[0], after[0]], ".4f", args.epochs))
        if classify:
            print(stages("accuracy", [before[1], pruned[1], after[1]], ".2%", args.epochs))
        print(f"wrote {output}")
    return 0


def iterative_command(args, model, x0, train, val, loss_fn, classify: bool, before, output: Path) -> int:
    """``--steps K``: :func:`graphprune.torch.iterative.iterative_prune`, the loss (and accuracy) after each round."""
    from graphprune.torch.iterative import iterative_prune

    if args.epochs < 0:
        raise UsageError(f"epochs {args.epochs} must be >= 0")
    try:
        result = iterative_prune(model, train, x0, ratio=args.ratio, steps=args.steps, epochs=args.epochs, lr=args.lr,
                                 method=args.method, budget=args.budget, round_to=args.round_to, loss_fn=loss_fn,
                                 eval_fn=lambda m: evaluate(m, val, loss_fn, classify), progress=not args.quiet)
    except TypeError as exc:
        raise UsageError(f"method '{args.method}': {exc}") from exc
    params = write_module(result.model, model, x0, output)
    if not args.quiet:
        print(f"method {args.method}, ratio {args.ratio} in {args.steps} rounds: params {params[0]:,} -> "
              f"{params[1]:,} ({params[1] / params[0]:.1%})")
        index = 1 if classify else 0
        fmt = ".2%" if classify else ".4f"
        label = "accuracy" if classify else f"loss ({args.loss})"
        print(f"{label}: original {format(before[index], fmt)}")
        for r in result.rounds:
            print(f"  round {r.round}: {r.params:,} params, pruned {format(r.pruned[index], fmt)}, after "
                  f"{args.epochs} fine-tuning epochs {format(r.finetuned[index], fmt)}")
        print(f"wrote {output}")
    return 0


def write_module(small, model, x0, output: Path) -> tuple[int, int]:
    """``small`` to ``output`` (ONNX or torch.save), atomically; the params of ``model`` and ``small``."""
    import torch

    if output.suffix == ".onnx":
        data = export_bytes(small.eval(), x0)
    else:
        buffer = _io.BytesIO()
        torch.save(small, buffer)
        data = buffer.getvalue()
    io.write_bytes_atomic(output, data)
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in small.parameters())


def stages(label: str, values: list[float], fmt: str, epochs: int) -> str:
    """``label: original …, pruned …, after N fine-tuning epochs …``."""
    a, b, c = (format(v, fmt) for v in values)
    return f"{label}: original {a}, pruned {b}, after {epochs} fine-tuning epochs {c}"


def export_bytes(model, example_inputs) -> bytes:
    import torch

    buffer = _io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example_inputs, buffer, opset_version=17, dynamo=False)
    return buffer.getvalue()
