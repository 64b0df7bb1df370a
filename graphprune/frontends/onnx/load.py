"""Loading an ONNX model: read it safely, check it, pin its input shapes, fold constants, lower it to the IR.

Folding comes first because exported models often compute weights (``Constant``, ``ConstantOfShape``) and
shapes (``Shape → Gather → Concat → Reshape``) inside the graph; channel rules need them as plain constants.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from graphprune.errors import InputShapeError, ModelLoadError, UsageError
from graphprune.frontends.onnx.control_flow import fold_model
from graphprune.frontends.onnx.lower import to_ir
from graphprune.frontends.onnx.untie import split_uniform_shared
from graphprune.frontends.onnx.proto import (Signature, declared_shape, default_opset, first_line, graph_inputs,
                                             inferred_shapes, signature, skeleton, with_input_shapes)
from graphprune.ir import Graph
from graphprune.runtime import check_model, max_opset

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()
MAX_INPUT_ELEMENTS = 2**28  # verification feeds seeded inputs of this shape through onnxruntime


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """The folded, named, shape-inferred proto and its IR, and where the source came from: the caller's proto
    (``given``) or a file (``path``). A file's proto is not kept after folding: it would be a second copy of the
    weights for the whole run; :attr:`original` reads it again when it is needed."""

    model: onnx.ModelProto
    graph: Graph
    input_shapes: Mapping[str, tuple[int, ...]]
    path: Path | None = None
    given: onnx.ModelProto | None = None
    declared: Signature | None = None  # the original's inputs and outputs, dynamic dimensions included
    frontend: Any = None  # the :class:`graphprune.frontends.base.Frontend` that loaded it (emit, verify, report)
    decided: tuple[str, ...] = ()  # If nodes folding replaced by their branch: decided at the analysed shapes

    @property
    def original(self) -> onnx.ModelProto:
        """The source as given, untouched."""
        return self.given if self.given is not None else read_model(self.path)


def load(source: str | os.PathLike | onnx.ModelProto,
         input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> LoadedModel:
    """Load ``source`` and lower it. Raises :class:`ModelLoadError` / :class:`InputShapeError` on bad input."""
    path = None if isinstance(source, onnx.ModelProto) else Path(source)
    checked = path is not None and file_passes_checker(path)
    original = source if path is None else read_model(path)
    check_opset(original)
    check_valid(original, path, checker=not checked)
    shapes = resolve_input_shapes(original, input_shapes or {})
    declared = signature(original)
    with paused_gc():  # a proto read here is ours to edit: pinning its shapes needs no copy of the weights
        decided: list[str] = []
        model, _ = split_uniform_shared(fold_model(with_input_shapes(original, shapes, copy=path is None), decided))
        del original
        graph = to_ir(model)
    return LoadedModel(model=model, graph=graph, input_shapes=shapes, path=path,
                       given=source if path is None else None, declared=declared, decided=tuple(decided))


@contextlib.contextmanager
def paused_gc():
    """Pause CPython's cyclic GC: folding and lowering allocate many long-lived objects, and each generation-2
    collection rescans them all (a 10,000-layer graph loaded in 7.2 s instead of 5.6 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_model(path: Path) -> onnx.ModelProto:
    """Parse an ONNX file; external data must stay inside the model's folder."""
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelLoadError(f"{path}: not a valid ONNX protobuf ({type(exc).__name__}); is the file truncated?") from exc
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{path}: parsed, but holds no graph; is it an ONNX model?")
    load_external_data_safely(model, path.parent)
    return model


def load_external_data_safely(model: onnx.ModelProto, base: Path) -> None:
    """Refuse external-data locations that escape ``base`` (absolute, ``..``, symlinks), then load them."""
    from onnx.external_data_helper import (
        ExternalDataInfo,
        _get_all_tensors,
        uses_external_data,
    )

    root = base.resolve()
    external = [t for t in _get_all_tensors(model) if uses_external_data(t)]
    for tensor in external:
        location = ExternalDataInfo(tensor).location
        target = (base / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(root) or target == root:
            raise ModelLoadError(f"tensor '{tensor.name}': external data location '{location}' escapes the model's folder; refusing to read it")
        if not target.is_file():
            raise ModelLoadError(f"tensor '{tensor.name}': external data file '{location}' is missing")
    if external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(base))
        except Exception as exc:
            raise ModelLoadError(f"cannot read external data: {exc}") from exc


def check_opset(model: onnx.ModelProto) -> None:
    opset = default_opset(model)
    if opset is None:
        raise ModelLoadError("model declares no default-domain opset import")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelLoadError(f"opset {opset} is not supported (supported: {MIN_OPSET}..{MAX_OPSET})")
    if opset > max_opset():
        raise ModelLoadError(f"opset {opset} is newer than this onnxruntime runs (up to {max_opset()}), so the result "
                             f"could not be verified; convert the model with onnx.version_converter or upgrade onnxruntime")


def file_passes_checker(path: Path) -> bool:
    """The ONNX checker on the file itself, before Python parses it: checking the parsed proto would serialise
    it for the checker, which parses it again (the weights three times over). On failure the caller checks the
    parsed proto instead, which fails with the precise message (not protobuf, opset, checker)."""
    try:
        onnx.checker.check_model(str(path))
        return True
    except Exception:  # reported by the in-memory checks that follow
        return False


def check_valid(model: onnx.ModelProto, path: Path | None = None, *, checker: bool = True) -> None:
    """The input must pass the ONNX checker (unless ``checker=False``: it passed on the file already), decode,
    and be consistent under strict shape inference: pruning an invalid model would only hide the problem. Over
    protobuf's 2 GB the checker reads ``path`` (the file the model came from) or a temporary copy."""
    try:
        if checker:
            check_model(model, path=path)
    except Exception as exc:
        raise ModelLoadError(f"the model fails the ONNX checker: {first_line(exc)}") from exc
    for init in model.graph.initializer:  # the checker counts every initializer's data against its dims
        try:
            numpy_helper.to_array(init) if int(np.prod(init.dims, dtype=np.int64)) < 2**20 else None
        except Exception as exc:
            raise ModelLoadError(f"initializer '{init.name}' is corrupt: {first_line(exc)}") from exc
    for vi in graph_inputs(model):
        elem = vi.type.tensor_type.elem_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        except Exception:
            dtype = None
        if dtype is None or dtype.kind not in "biuf":
            raise ModelLoadError(f"input '{vi.name}' has element type {elem}; only numeric and bool inputs are supported")
    try:
        inferred_shapes(skeleton(model), strict=True)
    except Exception as exc:
        raise ModelLoadError(f"the model is inconsistent (strict shape inference): {first_line(exc)}") from exc


def resolve_input_shapes(model: onnx.ModelProto, given: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Static shape for every input: from the model, overridden by ``given``; dynamic dims must be given."""
    inputs = {vi.name: vi for vi in graph_inputs(model)}
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise InputShapeError(f"--input-shape names {unknown}, but the model's inputs are {sorted(inputs)}")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, vi in inputs.items():
        if not vi.type.HasField("tensor_type"):
            raise ModelLoadError(f"input '{name}' is not a tensor; only tensor inputs are supported")
        dims = declared_shape(vi)
        if name in given:
            shape = tuple(int(d) for d in given[name])
            if len(shape) != len(dims) or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims, shape)):
                raise InputShapeError(f"--input-shape {name}:{','.join(map(str, shape))} does not fit the model's shape {fmt_dims(dims)}")
        elif all(isinstance(d, int) and d > 0 for d in dims):
            shape = tuple(dims)
        else:
            raise InputShapeError(f"input '{name}' has dynamic shape {fmt_dims(dims)}; pass --input-shape {name}:{example_dims(dims)}")
        if any(s <= 0 for s in shape):
            raise InputShapeError(f"input '{name}': dimensions must be positive, got {shape}")
        if int(np.prod(shape, dtype=np.float64)) > MAX_INPUT_ELEMENTS:
            raise InputShapeError(f"input '{name}' of shape {shape} is too large to verify on (over "
                                  f"{MAX_INPUT_ELEMENTS:,} elements); pass a smaller --input-shape")
        shapes[name] = shape
    return shapes


def fmt_dims(dims) -> str:
    return "[" + ",".join("?" if d in (None, 0) else str(d) for d in dims) + "]"


def example_dims(dims) -> str:
    return ",".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in dims)


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME:1,3,224,224`` strings (the CLI's ``--input-shape``)."""
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape:
            raise UsageError(f"--input-shape '{spec}': expected NAME:D0,D1,... e.g. input:1,3,224,224")
        out[name] = shape
    return out
