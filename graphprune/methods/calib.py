"""Calibration data, and activations gathered from it batch by batch.

Data comes as a ``.npz`` file (arrays named like the model's inputs), a ``.npy`` file (a model with one input),
or from Python: an array, a dict of arrays, or an iterable of batches (arrays or dicts). Axis 0 is the point
(batch) axis and may have any size; every other axis must match the analysed input shape. Dtypes must be of
the same kind as the input's (float for float, integer for integer); values are cast to the exact dtype.

Without data, seeded standard-normal inputs of the declared shape stand in, and the calibration says it is
*data-free* (the report carries that note): data-informed scores from random inputs measure the weights'
response to noise, not to the data the model will see.

Activations are gathered by running the model in onnxruntime with the needed intermediate tensors added as
graph outputs, one batch at a time; the caller reduces each batch (running maxima, sums) before the next
one runs, so the activations of all points are never held at once.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import onnx

from graphprune import progress as bars
from graphprune.errors import UsageError, VerificationError
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.frontends.onnx.lower import to_ir
from graphprune.frontends.onnx.proto import graph_inputs
from graphprune.ir import Graph
from graphprune.methods.edits import with_values
from graphprune.points import agrees, first_points
from graphprune.runtime import run, session

CalibData = Any  # str | PathLike | np.ndarray | Mapping[str, np.ndarray] | Iterable[np.ndarray | Mapping]


@dataclass(frozen=True, eq=False)
class Calibration:
    """Calibration points for every model input (axis 0 = points), and where they came from."""

    inputs: Mapping[str, np.ndarray]
    data_free: bool
    source: str

    @property
    def n_points(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0

    def head(self, n: int) -> "Calibration":
        """The first ``n`` points."""
        if n >= self.n_points:
            return self
        return Calibration(MappingProxyType({k: v[:n] for k, v in self.inputs.items()}), self.data_free, self.source)

    def take(self, indices: np.ndarray) -> "Calibration":
        """The points at ``indices`` (in that order)."""
        return Calibration(MappingProxyType({k: v[indices] for k, v in self.inputs.items()}), self.data_free,
                           self.source)

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.n_points, max(1, size)):
            yield {k: v[start:start + size] for k, v in self.inputs.items()}

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "points": self.n_points, "data_free": self.data_free}

    @property
    def note(self) -> str | None:
        if self.data_free:
            return (f"data-free: no calibration data given, so {self.n_points} seeded random inputs stood in; "
                    "pass --calib FILE for data-informed scores")
        return None


class CalibInput:
    """Calibration data given from Python, as :class:`graphprune.PruneConfig` holds it: never deep-copied,
    printed as a short description (reports stay small), and an iterable of batches is read once, here."""

    def __init__(self, data: CalibData):
        if isinstance(data, CalibInput):
            data = data.data
        elif not isinstance(data, (np.ndarray, Mapping, str, os.PathLike)) and isinstance(data, Iterable):
            data = tuple(data)
        self.data = data

    def __deepcopy__(self, memo) -> "CalibInput":
        return self

    def __repr__(self) -> str:
        d = self.data
        if isinstance(d, np.ndarray):
            return f"<array {d.dtype}{list(d.shape)}>"
        if isinstance(d, Mapping):
            return "<arrays " + ", ".join(f"{k}: {np.asarray(v).dtype}{list(np.shape(v))}" for k, v in d.items()) + ">"
        return f"<{len(d)} batches>" if isinstance(d, tuple) else f"<{type(d).__name__}>"

    __str__ = __repr__


# ---- loading and validation ----------------------------------------------------------------------------


def load_file(path: str | os.PathLike) -> np.ndarray | dict[str, np.ndarray]:
    """Read a ``.npz`` (dict of arrays) or ``.npy`` (one array) file; pickles are refused."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--calib {p}: no such file")
    if p.suffix not in (".npz", ".npy"):
        raise UsageError(f"--calib {p}: expected a .npz (arrays named like the model inputs) or .npy file")
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return data
        with data:
            return {k: np.asarray(data[k]) for k in data.files}
    except Exception as exc:
        raise UsageError(f"--calib {p}: cannot read it ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc


def model_inputs(source) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Input name → (analysed shape, dtype): an ONNX file's declared inputs, a torch capture's IR inputs."""
    if not isinstance(source, LoadedModel):
        g = source.graph
        return {name: (tuple(g.shape(name)), np.dtype(g.tensor(name).dtype)) for name in g.inputs}
    out = {}
    for vi in graph_inputs(source.model):
        if vi.name in source.input_shapes:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
            out[vi.name] = (tuple(source.input_shapes[vi.name]), dtype)
    return out


def as_dict(item: Any, names: list[str], where: str) -> dict[str, np.ndarray]:
    if isinstance(item, Mapping):
        return {str(k): np.asarray(v) for k, v in item.items()}
    if isinstance(item, (np.ndarray, list, tuple)) or np.isscalar(item):
        if len(names) != 1:
            raise UsageError(f"{where}: a single array was given, but the model has {len(names)} inputs {names}; "
                             "use a .npz / dict keyed by input name")
        return {names[0]: np.asarray(item)}
    raise UsageError(f"{where}: expected an array or a dict of arrays, got {type(item).__name__}")


def collect(data: CalibData, names: list[str]) -> tuple[dict[str, np.ndarray], str]:
    """Normalise any accepted form to one dict of arrays (points concatenated) and a description."""
    if isinstance(data, CalibInput):
        data = data.data
    if isinstance(data, (str, os.PathLike)):
        return as_dict(load_file(data), names, f"--calib {data}"), str(data)
    if isinstance(data, (np.ndarray, Mapping)):
        return as_dict(data, names, "calibration data"), "arrays"
    if isinstance(data, Iterable):
        parts = [as_dict(b, names, f"calibration batch {i}") for i, b in enumerate(data)]
        if not parts:
            raise UsageError("calibration data: the iterable of batches is empty")
        keys = set(parts[0])
        for i, part in enumerate(parts):
            if set(part) != keys:
                raise UsageError(f"calibration batch {i} names inputs {sorted(part)}, batch 0 names {sorted(keys)}")
        try:
            merged = {k: np.concatenate([p[k] for p in parts], axis=0) for k in keys}
        except ValueError as exc:
            raise UsageError(f"calibration batches do not stack along axis 0: {exc}") from exc
        return merged, f"{len(parts)} batches"
    raise UsageError(f"calibration data: expected a .npz/.npy path, an array, a dict or an iterable of batches, "
                     f"got {type(data).__name__}")


LABELS = "labels"


def validate(arrays: dict[str, np.ndarray], inputs: Mapping[str, tuple[tuple[int, ...], np.dtype]],
             where: str) -> dict[str, np.ndarray]:
    """Names, shapes (axis 0 free), dtype kinds and finiteness; returns arrays cast to the input dtypes.
    A ``labels`` array (the format ``prunability`` and ``taylor`` read) is ignored unless the model has such an input."""
    if LABELS in arrays and LABELS not in inputs:
        arrays = {k: v for k, v in arrays.items() if k != LABELS}
    missing = sorted(set(inputs) - set(arrays))
    extra = sorted(set(arrays) - set(inputs))
    if missing or extra:
        what = (f"lacks input(s) {missing}" if missing else "") + ("; " if missing and extra else "") + \
               (f"has array(s) {extra} that are not model inputs" if extra else "")
        raise UsageError(f"{where} {what}; the model's inputs are {sorted(inputs)}")
    out, counts = {}, {}
    for name, (shape, dtype) in inputs.items():
        arr = arrays[name]
        if arr.ndim != len(shape) or tuple(arr.shape[1:]) != tuple(shape[1:]):
            expected = "(N, " + ", ".join(map(str, shape[1:])) + ")"
            raise UsageError(f"{where}: input '{name}' has shape {tuple(arr.shape)}; the model expects {expected} "
                             "(any N points)")
        if arr.shape[0] == 0:
            raise UsageError(f"{where}: input '{name}' holds no points")
        if kind(arr.dtype) != kind(dtype):
            raise UsageError(f"{where}: input '{name}' has dtype {arr.dtype}; the model expects {dtype}")
        if kind(dtype) == "f" and not np.all(np.isfinite(arr)):
            raise UsageError(f"{where}: input '{name}' holds NaN or infinite values")
        out[name] = np.ascontiguousarray(arr.astype(dtype, copy=False))
        counts[name] = arr.shape[0]
    if len(set(counts.values())) > 1:
        raise UsageError(f"{where}: inputs have different numbers of points {counts}")
    return out


def kind(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return "f"
    if dtype == np.bool_:
        return "b"
    if np.issubdtype(dtype, np.integer):
        return "i"
    return dtype.kind


def prepare(data: CalibData | None, source, *, max_points: int = 256, seed: int = 0) -> Calibration:
    """Validated calibration points (at most ``max_points``, the first ones), or seeded random ones."""
    inputs = model_inputs(source)
    if data is None:
        return random_calibration(inputs, max_points, seed)
    arrays, described = collect(data, list(inputs))
    where = f"--calib {data}" if isinstance(data, (str, os.PathLike)) else "calibration data"
    checked = validate(arrays, inputs, where)
    return Calibration(MappingProxyType(checked), False, described).head(max_points)


RANDOM_CHUNK = 1 << 22  # elements drawn at once for data-free points: the draws are float64 / int64, 8 bytes each


def random_calibration(inputs: Mapping[str, tuple[tuple[int, ...], np.dtype]], n: int, seed: int) -> Calibration:
    """``n`` seeded points per input: standard normal floats, small non-negative integers, random bools.

    Drawn a few points at a time into the array of the input's own dtype: the same values as one draw of all
    (the generator's stream does not depend on how it is cut), without a float64 copy of every point at once
    (512 points of an 800 × 608 detector: 6 GB of float64 beside the 3 GB kept)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in inputs.items():
        out[name] = np.empty((n, *shape[1:]), bool if kind(dtype) == "b" else dtype)
        step = max(1, RANDOM_CHUNK // max(1, int(np.prod(shape[1:], dtype=np.int64))))
        for start in range(0, n, step):
            part = (min(step, n - start), *shape[1:])
            if kind(dtype) == "f":
                out[name][start:start + step] = rng.standard_normal(part)
            elif kind(dtype) == "b":
                out[name][start:start + step] = rng.random(part) < 0.5
            else:
                out[name][start:start + step] = rng.integers(0, 2, part)
    return Calibration(MappingProxyType(out), True, "random (data-free)")


# ---- running the model with intermediate outputs --------------------------------------------------------


def expose(model: onnx.ModelProto, names: Iterable[str], relax_batch: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are ``names`` (intermediate tensors); with ``relax_batch`` the inputs'
    axis 0 is symbolic and no intermediate shape is declared, so any number of points can run at once."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    infos = {vi.name: vi for vi in (*g.value_info, *g.output)}
    del g.output[:]
    for name in names:
        vi = onnx.ValueInfoProto()
        if name in infos:
            vi.CopyFrom(infos[name])
        else:
            vi.name = name
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        if relax_batch:
            vi.type.tensor_type.ClearField("shape")
        g.output.append(vi)
    if relax_batch:
        follow_batch_in_reshapes(g, infos)
        del g.value_info[:]
        inits = {i.name for i in g.initializer}
        for vi in g.input:
            if vi.name not in inits and vi.type.tensor_type.shape.dim:
                d = vi.type.tensor_type.shape.dim[0]
                d.Clear()
                d.dim_param = "points"
    return out


def follow_batch_in_reshapes(g: onnx.GraphProto, infos: Mapping[str, onnx.ValueInfoProto]) -> None:
    """Where folding baked the analysed batch size into a Reshape's target (``[1, 128, 4, 64]`` from a
    ``Shape → Gather → Concat`` chain), let the copy with a symbolic batch axis follow the points, so it runs a
    batch at once: the first entry becomes 0, "as the input's axis 0", where the input's axis 0 has that size at
    the analysed shapes; else, where the output's shape is known, the target becomes that shape with its first
    entry -1, so a batch merged into axis 0 grows with the points (MobileViT's unfold to ``[1152, 2, 8, 2]``, its
    attention's ``[4, 16, -1, 48]``). At the analysed shapes each is the same Reshape. Exported transformers
    (BERT: 20 such Reshapes; MobileViT: 54) then run a batch in one call instead of one call per point. Whether
    the result is right for more points is not assumed: :class:`ActivationRunner` trusts the copy only when its
    first and last points match them alone (a batch merged behind another axis mixes points, and is refused)."""
    inits = {i.name: i for i in g.initializer}
    changed: dict[tuple[str, tuple[int, ...]], str] = {}
    for node in g.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[0] in inits or node.input[1] not in inits:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        target = onnx.numpy_helper.to_array(inits[node.input[1]])
        if target.ndim != 1 or not len(target) or target[0] <= 0:
            continue
        relaxed = relaxed_target(target, known_dims(infos, node.input[0]), known_dims(infos, node.output[0]))
        if relaxed is None:
            continue
        key = (node.input[1], relaxed)
        if key not in changed:
            name = f"{node.input[1]}/follows_batch" + (f"_{len(changed)}" if changed else "")
            g.initializer.append(onnx.numpy_helper.from_array(np.array(relaxed, np.int64), name))
            changed[key] = name
        node.input[1] = changed[key]


def known_dims(infos: Mapping[str, onnx.ValueInfoProto], name: str) -> tuple[int, ...] | None:
    """The shape of tensor ``name`` at the analysed shapes, 0 for an axis without a known size; None when even
    its rank is unknown."""
    if name not in infos or not infos[name].type.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value for d in infos[name].type.tensor_type.shape.dim)


def relaxed_target(target: np.ndarray, x_dims: tuple[int, ...] | None,
                   y_dims: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """A Reshape target that gives the same result at the analysed shapes and lets axis 0 follow the points
    (see :func:`follow_batch_in_reshapes`), or None."""
    if x_dims and x_dims[0] > 0 and target[0] == x_dims[0]:
        return (0, *(int(t) for t in target[1:]))
    if y_dims and len(y_dims) == len(target) and all(d > 0 for d in y_dims):
        return (-1, *y_dims[1:])
    return None


def exposed_session(model: onnx.ModelProto):
    """A session on a model with intermediate tensors exposed; without graph optimisations where onnxruntime's
    full optimiser refuses it (measured: a BatchNormalization output of a pruned ResNet block exposed, "Failed to
    find node output", onnxruntime 1.32, while the same tensor of the unpruned model loads): the values are the
    same up to float reassociation, and calibration statistics do not need the fused kernels."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime's Python layer prints its provider retry
            return session(model)
    except VerificationError:
        return session(model, optimize=False)


class ActivationRunner:
    """Runs the exposed model on batches of any size.

    It first tries a copy with a symbolic batch axis (one run per batch). Constant folding may have baked the
    analysed batch size into the graph (a Reshape to ``[1, 256]``), so that copy is trusted only when its first
    batch runs and its first points match what it gives for them alone, at the analysed batch size (the static
    model's computation: one session, not two); otherwise batches run in chunks of the analysed batch size
    through the static model (the last chunk padded by repeating its first point), whose session is made then.
    """

    def __init__(self, model: onnx.ModelProto, names: list[str], input_shapes: Mapping[str, tuple[int, ...]]):
        self.names = list(dict.fromkeys(names))
        inputs = {vi.name for vi in graph_inputs(model)}
        self.passthrough = [n for n in self.names if n in inputs]
        self.computed = [n for n in self.names if n not in inputs]
        self.static_batch = min((s[0] for s in input_shapes.values() if s), default=1)
        self.static = None
        self.model = model
        self.relaxed = None
        self.mode: str | None = None

    def run(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {n: batch[n] for n in self.passthrough}
        if not self.computed:
            return out
        values = None
        if self.mode is None:
            self.mode, values = self.choose(batch)
        if values is None:
            values = self.run_relaxed(batch) if self.mode == "relaxed" else self.run_static(batch)
        out.update(values)
        return out

    def choose(self, batch: Mapping[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray] | None]:
        """The mode, and when it is ``relaxed`` the first batch's values its trial computed (the batch is not run
        a second time: on resnet50 that run was a sixth of the calibration's onnxruntime time). The copy is
        trusted when its rows per point are the analysed ones and its first and last points equal what it gives
        for them alone: a batch merged into another axis the wrong way round mixes points."""
        n = len(next(iter(batch.values())))
        b = self.static_batch
        if n <= b:
            return "static", None
        try:
            self.relaxed = exposed_session(expose(self.model, self.computed, relax_batch=True))
            got = self.run_relaxed(batch)
            head = self.run_relaxed({k: v[:b] for k, v in batch.items()})
            tail = self.run_relaxed({k: v[n - b:] for k, v in batch.items()})
        except Exception:
            return "static", None
        if all(agrees(got[name], head[name], n, b) and agrees(got[name], tail[name], n, b, at_end=True)
               for name in self.computed):
            return "relaxed", got
        return "static", None

    def run_relaxed(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.computed, run(self.relaxed, batch)))

    def run_static(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.static is None:
            self.static = exposed_session(expose(self.model, self.computed))
        n = len(next(iter(batch.values())))
        b = self.static_batch
        chunks: dict[str, list[np.ndarray]] = {k: [] for k in self.computed}
        for start in range(0, n, b):
            feed = {}
            for k, v in batch.items():
                part = v[start:start + b]
                if len(part) < b:
                    part = np.concatenate([part, np.repeat(part[:1], b - len(part), axis=0)])
                feed[k] = part
            for name, value in zip(self.computed, run(self.static, feed)):
                chunks[name].append(first_points(value, min(b, n - start), b))
        return {k: np.concatenate(v, axis=0) for k, v in chunks.items()}


ACTIVATION_BUDGET = 1 << 26  # elements of exposed activations per batch (256 MB of float32)


def batch_for(graph, names: Iterable[str], requested: int, budget: int = ACTIVATION_BUDGET) -> int:
    """The requested batch size, made smaller when one batch of the exposed tensors would exceed ``budget``."""
    per_point = sum(int(np.prod(graph.shape(n)[1:], dtype=np.int64)) for n in set(names) if graph.shape(n))
    return max(1, min(requested, budget // max(1, per_point)))


def show_progress(progress: bool | None) -> bool:
    return bars.enabled(progress)


class OnnxAccess:
    """What the data-informed methods read from an ONNX model, and the protocol every frontend's access follows
    (``frontend.access(source)``; the torch one is :class:`graphprune.frontends.fx.activations.TorchAccess`): the
    model's IR, its activations by IR tensor name on calibration batches, a copy with new constant values, and the
    names of its outputs."""

    def __init__(self, input_shapes: Mapping[str, tuple[int, ...]]):
        self.input_shapes = input_shapes

    def ir(self, model: onnx.ModelProto) -> Graph:
        return to_ir(model)

    def activations(self, model: onnx.ModelProto, names: Iterable[str]) -> ActivationRunner:
        return ActivationRunner(model, list(names), self.input_shapes)

    def with_values(self, model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
        return with_values(model, values)

    def outputs(self, model: onnx.ModelProto) -> list[str]:
        return [o.name for o in model.graph.output]


def gather(model: Any, names: Iterable[str], calib: Calibration, on_batch: Callable[[dict[str, np.ndarray]], None],
           *, input_shapes: Mapping[str, tuple[int, ...]], batch_size: int = 32, progress: bool | None = None,
           description: str = "calibrating", access: Any = None) -> int:
    """Run ``model`` on every calibration batch and hand ``on_batch`` the tensors ``names`` of that batch.

    ``on_batch`` must reduce what it needs (running maxima, sums) and keep nothing else. Returns the number of
    points processed. A progress bar shows on a terminal (``progress=None``), never in pipes or logs. ``access``
    reads the activations (:class:`OnnxAccess` of ``input_shapes`` when None). The batches run one after the
    other in this thread: running the model one batch ahead in a background thread was measured no faster on 2
    cores (resnet50 at 64 px: onnxruntime's runs 2.0 -> 3.6 s and the reduction 8.6 -> 11 s, slowed by each other).
    """
    runner = (access or OnnxAccess(input_shapes)).activations(model, names)
    batches = calib.batches(batch_size)
    total = -(-calib.n_points // max(1, batch_size))
    for batch in bars.track(batches, description, total=total, progress=progress):
        on_batch(runner.run(batch))
    return calib.n_points
