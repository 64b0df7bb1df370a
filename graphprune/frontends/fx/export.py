"""torch.export capture: ``torch.export.export(module, args, strict=False)``, then ``run_decompositions({})`` (in-place
ops become functional, higher-order ops are inlined, dropout leaves the eval graph, while ``linear``,
``scaled_dot_product_attention``, ``layer_norm``, ``conv*d`` and ``embedding`` stay whole), lowered to the IR through
the one op table (:mod:`.ops`: its ATen entries are :mod:`.aten`).

The unlifted program (``ep.module()``) reads every parameter and buffer by its qualified name, so IR constants are
named like the module's attributes and the torch emitter resizes them in the user's own module. Lifted constants
and non-persistent buffers (rotary ``inv_freq``, position ids) and whatever is computed from them alone (causal
masks, rotary tables) become ``Constant`` nodes, whose rule freezes them: nothing the module computes at run time is
ever sliced.
The module is captured in eval mode, as verification runs it; its flags and whatever ``forward`` caches on
it are restored afterwards (:func:`~.trace.untouched`).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from graphprune.frontends.fx.trace import Lowering, TorchSource, as_inputs, first_line, propagate, untouched


class ExportError(Exception):
    """torch.export could not capture the module (the message is its first line)."""


def capture(module: nn.Module, example_inputs: Any) -> TorchSource:
    """Capture ``module`` with torch.export (non-strict) and lower it; :class:`ExportError` when it cannot."""
    inputs = as_inputs(example_inputs)
    try:
        with untouched(module), torch.no_grad(), warnings.catch_warnings():  # its flags, what forward caches on it
            warnings.filterwarnings("ignore", message="The tensor attributes? .* (was|were) assigned during export")
            module.eval()
            program = torch.export.export(module, inputs, strict=False).run_decompositions({})
    except Exception as exc:  # torch.export raises many kinds: unsupported ops, guards on data, pytree types
        raise ExportError(first_line(exc)) from exc
    graph = program.module()
    values = propagate(graph, inputs, type(module).__name__)
    return Lowering(module, graph, values, fold_constants=True, capture="torch.export").run(inputs)
