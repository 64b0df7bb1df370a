"""Torch-only tools (training hooks and module rewrites). Importing this package imports nothing heavy: the names
below load their submodule (which imports torch) on first use.

    from graphprune.torch import TPP, finetune          # or graphprune.torch.TPP, graphprune.torch.finetune
    from graphprune.torch.trp import TRP                # or graphprune.torch.TRP
    from graphprune.torch.lowrank import decompose_module
    from graphprune.torch import iterative_prune        # prune, fine-tune, repeat (learning rate rewound)
"""

from __future__ import annotations

import importlib

_LAZY = {
    "TPP": ("tpp", "TPP"),
    "finetune": ("finetune", "finetune"),
    "FinetuneResult": ("finetune", "FinetuneResult"),
    "TRP": ("trp", "TRP"),
    "decompose_module": ("lowrank", "decompose_module"),
    "iterative_prune": ("iterative", "iterative_prune"),
}
__all__ = ["TPP", "TRP", "FinetuneResult", "decompose_module", "finetune", "iterative_prune"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'graphprune.torch' has no attribute '{name}'")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    # importing the submodule graphprune.torch.finetune set the package attribute "finetune" to the submodule;
    # put the function there instead (the submodule is callable too, see finetune.py, so either works)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
