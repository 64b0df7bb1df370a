"""Fine-tune a (pruned) module: a plain supervised loop for people without their own, after any method.

    from graphprune.torch import finetune

    result = finetune(small, train_loader, epochs=30, lr=1e-2, schedule="step",
                      eval_fn=lambda m: {"acc": accuracy(m, val_loader)})
    small = result.model            # trained in place, returned in eval mode; result.history: one dict per epoch

Defaults: SGD with momentum 0.9 and weight decay 5e-4 (the TPP paper's fine-tuning), cross-entropy loss on the
logits (``output.logits`` of a Hugging Face model; :func:`lm_loss` for a causal language model), LR
schedule ``"cosine"`` (per step, to 0) or ``"step"`` (÷10 at 50 % and 75 % of the epochs; the paper's CIFAR
schedule is 120 epochs with steps at 60 and 90), or ``"constant"``. A user-given ``optimizer`` is used as it is
(its LR set to ``lr`` when ``lr`` is given). ``hooks``: an object with any of ``penalty()``, ``before_step()``,
``after_step()`` (a :class:`~graphprune.torch.tpp.TPP`, a TRP) called at the usual points, so the same loop
runs a regularisation phase. ``device``: CUDA when available, else CPU, unless given; the model and every batch
are moved there. A ``DistributedSampler`` gets ``set_epoch(epoch)``.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from graphprune.errors import UsageError

LRSchedule = Literal["cosine", "step", "constant"]


@dataclass(eq=False)
class FinetuneResult:
    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: epoch, loss, lr, seconds, eval


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to(x, device) for x in batch)
    if isinstance(batch, dict):
        return {k: to(v, device) for k, v in batch.items()}
    return batch


def call(model: nn.Module, x: Any) -> torch.Tensor:
    return model(*x) if isinstance(x, (tuple, list)) else model(x)


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model's output: a tensor, a Hugging Face output's ``logits``, or a tuple's first element."""
    if isinstance(output, torch.Tensor):
        return output
    if getattr(output, "logits", None) is not None:
        return output.logits
    if isinstance(output, (tuple, list)) and output:
        return logits_of(output[0])
    raise UsageError(f"cannot find logits in a model output of type {type(output).__name__}")


def cross_entropy(output: Any, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits (class axis 1) against integer ``targets``: the default loss."""
    return nn.functional.cross_entropy(logits_of(output), targets)


def lm_loss(output: Any, tokens: torch.Tensor) -> torch.Tensor:
    """Causal language-model loss: each position's logits ``(N, T, vocabulary)`` predict the next token of
    ``tokens`` ``(N, T)`` (the token ids themselves, as Hugging Face's ``labels``; -100 entries are ignored)."""
    logits = logits_of(output)
    if logits.dim() != 3 or tuple(tokens.shape) != tuple(logits.shape[:2]):
        raise UsageError(f"a language-model loss needs logits (N, T, V) and tokens (N, T); got "
                         f"{tuple(logits.shape)} and {tuple(tokens.shape)}")
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                                       ignore_index=-100)


def finetune(model: nn.Module, loader: Iterable, *, epochs: int, lr: float | None = None,
             optimizer: torch.optim.Optimizer | None = None, schedule: LRSchedule = "cosine",
             eval_fn: Callable[[nn.Module], Any] | None = None, progress: bool = True,
             device: str | torch.device | None = None, loss_fn: Callable | None = None, momentum: float = 0.9,
             weight_decay: float = 5e-4, milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1,
             hooks: Any = None) -> FinetuneResult:
    """Train ``model`` on ``loader`` (an iterable of ``(x, y)`` batches, re-iterated each epoch) for ``epochs``
    epochs; see the module docstring. ``eval_fn(model)`` runs after every epoch in eval mode; its result is
    stored in the history and shown by the progress output (a rich bar on a terminal, else one line per epoch on
    stderr)."""
    if epochs < 0:
        raise UsageError(f"epochs={epochs} must be >= 0")
    if schedule not in ("cosine", "step", "constant"):
        raise UsageError(f"schedule '{schedule}' must be 'cosine', 'step' or 'constant'")
    if optimizer is None and lr is None:
        raise UsageError("finetune needs lr (or an optimizer)")
    device = torch.device(device) if device is not None else default_device()
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.to(device)
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    loss_fn = loss_fn or cross_entropy
    try:
        steps_per_epoch = len(loader)  # type: ignore[arg-type]
    except TypeError:
        steps_per_epoch = None
    if schedule == "cosine":
        if steps_per_epoch is None:
            raise UsageError("schedule 'cosine' steps per batch and needs a loader with len(); use 'step'")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * steps_per_epoch))
    elif schedule == "step":
        marks = sorted({round(f * epochs) for f in milestones if 0 < round(f * epochs) < epochs})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, marks, gamma)
    else:
        scheduler = None
    penalty = getattr(hooks, "penalty", None)
    before = getattr(hooks, "before_step", None)
    after = getattr(hooks, "after_step", None)
    history: list[dict[str, Any]] = []
    bar = Progress(epochs, steps_per_epoch) if progress else None
    try:
        for epoch in range(epochs):
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            model.train()
            t0, total, count = time.perf_counter(), 0.0, 0
            for batch in loader:
                x, y = to(batch[0], device), to(batch[1], device)
                loss = loss_fn(call(model, x), y)
                if penalty is not None:
                    loss = loss + penalty()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if before is not None:
                    before()
                optimizer.step()
                if after is not None:
                    after()
                if schedule == "cosine":
                    scheduler.step()
                total += float(loss.detach())
                count += 1
                if bar is not None:
                    bar.step(total / count)
            record = {"epoch": epoch + 1, "loss": total / max(count, 1), "lr": optimizer.param_groups[0]["lr"],
                      "seconds": time.perf_counter() - t0}
            if schedule == "step":
                scheduler.step()
            if eval_fn is not None:
                model.eval()
                with torch.no_grad():
                    record["eval"] = eval_fn(model)
            history.append(record)
            if bar is not None:
                bar.epoch(record)
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    return FinetuneResult(model, history)


class Progress:
    """A rich progress bar on a terminal; otherwise one line per epoch on stderr."""

    def __init__(self, epochs: int, steps_per_epoch: int | None) -> None:
        self.bar = None
        if sys.stderr.isatty():
            try:
                from rich.progress import Progress as RichProgress

                self.bar = RichProgress(transient=True)
                self.bar.start()
                total = epochs * steps_per_epoch if steps_per_epoch else None
                self.task = self.bar.add_task("fine-tune", total=total)
            except ImportError:
                self.bar = None
        self.epochs = epochs

    def step(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=f"fine-tune loss {loss:.4f}")

    def epoch(self, record: dict[str, Any]) -> None:
        text = (f"epoch {record['epoch']}/{self.epochs} loss {record['loss']:.4f} lr {record['lr']:.3g}"
                + (f" eval {record['eval']}" if "eval" in record else ""))
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _CallableModule(types.ModuleType):
    """``graphprune.torch.finetune`` is both this submodule and the function: calling the module calls the
    function, whichever of the two the package attribute holds (see graphprune/torch/__init__.py)."""

    def __call__(self, *args, **kwargs) -> FinetuneResult:
        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
