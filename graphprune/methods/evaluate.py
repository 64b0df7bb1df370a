"""Top-1 accuracy on labelled data, before and after pruning (``--eval DATA.npz``).

Verification proves the pruned model equals the masked original; it says nothing about how much accuracy the
removed channels carried. With held-out labelled data the report gives that too, measured on the runtime the
model ships on. The data format is the one ``prunability`` and ``taylor`` read: arrays named like the model's
inputs (axis 0 = points) and an integer ``labels`` array for the first output, whose axis 1 is the class axis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import onnx

from graphprune.errors import UsageError
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.methods.calib import LABELS, ActivationRunner, CalibInput, as_dict, load_file, model_inputs, validate

EVAL_BATCH = 256  # points per run: small models run the whole set at once, large ones stay within memory


@dataclass(frozen=True)
class Labelled:
    """Validated inputs and labels, and where they came from (for messages and the report)."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray
    where: str

    @property
    def n_points(self) -> int:
        return int(len(self.labels))


def read_labelled(data: Any, source: LoadedModel) -> Labelled:
    """``data`` (a ``.npz`` path or a dict of arrays with ``labels``) checked against ``source``'s inputs."""
    data = data.data if isinstance(data, CalibInput) else data
    where = f"--eval {data}" if isinstance(data, (str, os.PathLike)) else "eval data"
    arrays = load_file(data) if isinstance(data, (str, os.PathLike)) else data
    names = list(model_inputs(source))
    arrays = as_dict(arrays, names, where) if not isinstance(arrays, np.ndarray) else {}
    if LABELS not in arrays:
        raise UsageError(f"{where}: needs an integer '{LABELS}' array next to the inputs")
    labels = np.asarray(arrays[LABELS])
    if not (np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_):
        raise UsageError(f"{where}: '{LABELS}' must be an integer array, got {labels.dtype}")
    inputs = validate({k: v for k, v in arrays.items() if k != LABELS}, model_inputs(source), where)
    if len(labels) != len(next(iter(inputs.values()))):
        raise UsageError(f"{where}: {len(labels)} labels for {len(next(iter(inputs.values())))} points")
    return Labelled(inputs, labels.astype(np.int64), where)


def top1(model: onnx.ModelProto, source: LoadedModel, data: Labelled) -> float:
    """Fraction of points whose first output's arg-max over axis 1 is the label, run in onnxruntime."""
    output = model.graph.output[0].name
    runner = ActivationRunner(model, [output], source.input_shapes)
    hits = 0
    for start in range(0, data.n_points, EVAL_BATCH):
        batch = {k: v[start:start + EVAL_BATCH] for k, v in data.inputs.items()}
        logits = runner.run(batch)[output]
        labels = data.labels[start:start + EVAL_BATCH]
        hits += int((logits.argmax(axis=1) == check_labels(labels, logits, data.where)).sum())
    return hits / max(1, data.n_points)


def check_labels(labels: np.ndarray, logits: np.ndarray, where: str) -> np.ndarray:
    """``labels`` as int64 once they fit ``logits`` (class axis 1): integer, one per point (and position), in range.
    Shared with ``prunability``."""
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_):
        raise UsageError(f"{where}: 'labels' must be an integer array, got {labels.dtype}")
    if logits.ndim < 2:
        raise UsageError(f"{where}: labels need an output with a class axis 1; the first output has shape "
                         f"{tuple(logits.shape)}")
    want = (logits.shape[0], *logits.shape[2:])
    if tuple(labels.shape) != want:
        raise UsageError(f"{where}: 'labels' has shape {tuple(labels.shape)}; the first output "
                         f"{tuple(logits.shape)} needs {want}")
    n_classes = logits.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise UsageError(f"{where}: 'labels' must lie in [0, {n_classes}) for an output with {n_classes} classes")
    return labels.astype(np.int64)
