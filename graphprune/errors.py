"""Typed errors. Each carries the process exit code the CLI returns for it.

Exit codes (documented in the README): 0 ok, 1 verification failed, 2 bad input or usage,
3 unsupported model under ``--strict``, 4 internal error (a bug: please report with ``-v``), 5 nothing removed
under ``--require-removal``.
"""

from __future__ import annotations


class GraphPruneError(Exception):
    """Base of every error graphprune raises on purpose; the message names the problem and the fix."""

    exit_code = 2


class UsageError(GraphPruneError):
    """A flag or argument is out of range or inconsistent."""


class ModelLoadError(GraphPruneError):
    """The model file cannot be read, parsed or trusted."""


class InputShapeError(GraphPruneError):
    """A graph input has dynamic dimensions and no ``--input-shape`` was given for it."""


class UnsupportedModelError(GraphPruneError):
    """Under ``--strict``: some channel spaces are frozen because an op has no channel rule."""

    exit_code = 3


class NothingRemovedError(GraphPruneError):
    """Under ``--require-removal``: the run changed nothing (every group frozen, or too little to remove)."""

    exit_code = 5


class VerificationError(GraphPruneError):
    """The emitted model is not equal to the masked original, or fails the checker or onnxruntime."""

    exit_code = 1


class InternalError(GraphPruneError):
    """A rule or emitter produced something inconsistent: a bug in graphprune."""

    exit_code = 4
