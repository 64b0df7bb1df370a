"""The PyTorch API: prune an ``nn.Module``; the result is a smaller ``nn.Module``. These are
:func:`graphprune.prune` / ``plan`` / ``inspect`` through the torch frontend, with its own options.

    from graphprune.torch.api import prune_module
    result = prune_module(model, (x,), ratio=0.5)      # options: those of graphprune.prune
    small = result.model                                # train it, save it, export it
    print(result.report)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from graphprune import api
from graphprune.config import PruneConfig
from graphprune.frontends.fx.frontend import TORCH, Baked, Capture, TorchFrontend, TorchPruneResult, UntraceableModelError, load
from graphprune.frontends.fx.trace import TorchSource
from graphprune.pipeline.state import PruneState

__all__ = ["TorchPruneResult", "UntraceableModelError", "inspect_module", "load_module", "plan_module",
           "prune_module"]


def load_module(module: nn.Module, example_inputs: Any, capture: Capture = "auto") -> TorchSource:
    """Capture and lower ``module`` (raises :class:`UntraceableModelError` when it cannot be captured)."""
    return load(module, example_inputs, capture)


def inspect_module(module: nn.Module, example_inputs: Any, exclude=()) -> api.Inspection:
    """Channel groups, what is frozen and why, and the cost, without changing anything."""
    return api.inspect(module, exclude=exclude, example_inputs=example_inputs)


def plan_module(module: nn.Module | TorchSource, example_inputs: Any = None, config: PruneConfig | None = None,
                **options) -> PruneState:
    """Analyse, score and select: the state holds ``channels``, ``scores`` and ``plan``; ``state.source`` is the
    :class:`TorchSource` (pass one instead of a module to skip tracing again)."""
    frontend = module.frontend if isinstance(module, TorchSource) and module.frontend is not None else TORCH
    return api.planned_state(frontend, module, PruneConfig.make(config, **options), example_inputs=example_inputs)


def prune_module(module: nn.Module, example_inputs: Any, config: PruneConfig | None = None, *,
                 baked: Baked = "graphmodule", capture: Capture = "auto", **options) -> TorchPruneResult:
    """:func:`graphprune.prune` for a module. ``baked``: what to do when the forward has literal channel counts
    (``x.view(1, 256)``, ``torch.split(x, [12, 20])``, ``x[:, :16]``): ``"graphmodule"`` prunes through them and
    returns an fx.GraphModule with the literals rewritten; ``"freeze"`` leaves those channels alone so the result
    stays an instance of the module's own class. ``capture``: ``"auto"`` (torch.fx, else torch.export), ``"fx"``
    or ``"export"``."""
    frontend = TorchFrontend(baked, capture)
    return api.run(frontend, module, PruneConfig.make(config, **options), example_inputs=example_inputs)
