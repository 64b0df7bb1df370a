"""Which frontend takes a model. The torch frontends import torch, so they are imported only for a model that
is an ``nn.Module`` (torch already imported by whoever built it); the ONNX path never imports torch.

A new frontend adds one line to :data:`FRONTENDS` (module, attribute): the first that accepts the model takes it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from graphprune.errors import UsageError
from graphprune.frontends.base import Frontend

FRONTENDS = (
    ("graphprune.frontends.onnx.frontend", "ONNX", ()),
    ("graphprune.frontends.fx.frontend", "TORCH", ("torch",)),  # needs: modules that must already be imported
)


def frontend_for(model: Any) -> Frontend:
    """The frontend for ``model`` (a path or ``onnx.ModelProto``; an ``nn.Module``)."""
    for module, name, needs in FRONTENDS:
        if all(n in sys.modules for n in needs):
            frontend = getattr(importlib.import_module(module), name)
            if frontend.accepts(model):
                return frontend
    raise UsageError(f"cannot prune a {type(model).__name__}: give an ONNX file or onnx.ModelProto, or a "
                     "torch.nn.Module with example_inputs")
