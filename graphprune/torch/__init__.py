"""Torch-only tools (training hooks and module rewrites). Importing this package imports nothing heavy: load the
submodule you need, e.g. ``from graphprune.torch.trp import TRP`` or ``from graphprune.torch.lowrank import
decompose_module``; each of them imports torch.
"""
