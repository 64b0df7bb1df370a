"""ONNX frontend: load safely, pin input shapes, fold constants, infer shapes, lower to the IR.

Folding comes first because exported models often compute weights (``Constant``, ``ConstantOfShape``) and
shapes (``Shape → Gather → Concat → Reshape``) inside the graph; channel rules need them as plain constants.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from graphprune.errors import InputShapeError, ModelLoadError
from graphprune.gsgraph import export_lean
from graphprune.io import DATA_FIELDS, copy_fields
from graphprune.ir import Graph, Node, Tensor

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
        model = fold_until_stable(with_input_shapes(original, shapes, copy=path is None))
        del original
        graph = to_ir(model)
    return LoadedModel(model=model, graph=graph, input_shapes=shapes, path=path,
                       given=source if path is None else None, declared=declared)


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
    from graphprune.runtime import max_opset

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
    from graphprune.runtime import check_model

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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return None


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (old exporters list weights as inputs too)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


Signature = Mapping[str, tuple[tuple[str, int, tuple], ...]]  # "input" / "output" → (name, element type, dims)


def signature(model: onnx.ModelProto) -> Signature:
    """A model's interface: its real inputs and its outputs, with element types and declared dims (a dynamic
    dim as its name, or None; no shape at all as None)."""
    def sig(vis):
        return tuple((v.name, v.type.tensor_type.elem_type,
                      declared_shape(v) if v.type.tensor_type.HasField("shape") else None) for v in vis)

    return {"input": sig(graph_inputs(model)), "output": sig(model.graph.output)}


def declared_shape(vi: onnx.ValueInfoProto) -> tuple[int | str | None, ...]:
    dims = vi.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)


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


def with_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], *,
                      copy: bool = True) -> onnx.ModelProto:
    """``model`` with static input shapes and stale intermediate shapes dropped (they may hold dynamic dims): a
    copy, or with ``copy=False`` ``model`` itself, edited."""
    if copy:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    else:
        out = model
    for vi in out.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            for d, s in zip(dims, shapes[vi.name]):
                d.Clear()
                d.dim_value = s
    for vi in out.graph.output:  # recomputed from the static inputs
        vi.type.tensor_type.ClearField("shape")
    del out.graph.value_info[:]
    return out


SKELETON_MIN_ELEMENTS = 4096


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose large initializers keep their type and dims but not their data.

    Shape inference reads data only from small constants (shapes, axes); dropping the weights saves
    serialising the whole model for it, which dominated load time on ResNet-50-sized graphs. The copy is built
    field by field, so the weights are never copied, not even for a moment."""
    out = onnx.ModelProto()
    copy_fields(model, out, skip=("graph",))
    copy_fields(model.graph, out.graph, skip=("initializer",))
    for init in model.graph.initializer:
        light = out.graph.initializer.add()
        if int(np.prod(init.dims, dtype=np.int64)) >= SKELETON_MIN_ELEMENTS:
            copy_fields(init, light, skip=DATA_FIELDS)
        else:
            light.CopyFrom(init)
    return out


def inferred_shapes(model: onnx.ModelProto, *, strict: bool = False) -> onnx.ModelProto:
    """``model`` (edited in place and returned) with value infos and output shapes from shape inference."""
    weights = {i.name for i in model.graph.initializer if int(np.prod(i.dims, dtype=np.int64)) >= SKELETON_MIN_ELEMENTS}
    light = skeleton(model) if weights else model
    inferred = onnx.shape_inference.infer_shapes(light, strict_mode=strict, data_prop=True)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return inferred_shapes(model)
    except Exception as exc:
        raise ModelLoadError(f"ONNX shape inference failed: {str(exc).splitlines()[0]}") from exc


def fold(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and shape sub-graphs, name every node uniquely, and infer static shapes."""
    model = infer_shapes(shape_ranges_as_slices(model))
    try:
        graph = gs.import_onnx(model)
        graph.fold_constants(fold_shapes=True, error_ok=True).cleanup().toposort()
        name_nodes(graph)
        folded = export_lean(graph)
    except Exception as exc:
        raise ModelLoadError(f"cannot fold constants: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    # graphsurgeon writes initializers only as initializers, which IR < 4 does not allow (they had to be inputs)
    folded.ir_version = max(model.ir_version, 4)
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    return infer_shapes(folded)


def shape_ranges_as_slices(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (edited in place) with every ``Shape(x, start, end)`` (opset 15) written as ``Shape(x)`` then a
    ``Slice`` of that range. graphsurgeon's shape folding ignores ``start`` / ``end`` and would fold the whole
    shape (the dynamo exporter's LSTM ``initial_h`` for a dynamic batch came out (2, 2, 7, 6, 24)); a Slice it
    folds right."""
    nodes = list(model.graph.node)
    if not any(n.op_type == "Shape" and n.domain in ("", "ai.onnx") and n.attribute for n in nodes):
        return model
    out: list[onnx.NodeProto] = []
    for i, n in enumerate(nodes):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type != "Shape" or n.domain not in ("", "ai.onnx") or not attrs:
            kept = onnx.NodeProto()
            kept.CopyFrom(n)  # a detached copy: the repeated field is cleared below
            out.append(kept)
            continue
        tag = f"{n.name or n.output[0]}::range{i}"
        bounds = [(f"{tag}/starts", int(attrs.get("start", 0))), (f"{tag}/ends", int(attrs.get("end", 2**62))),
                  (f"{tag}/axes", 0)]
        model.graph.initializer.extend(numpy_helper.from_array(np.array([v], np.int64), name) for name, v in bounds)
        out.append(onnx.helper.make_node("Shape", list(n.input), [f"{tag}/shape"], name=n.name))
        out.append(onnx.helper.make_node("Slice", [f"{tag}/shape", *(name for name, _ in bounds)], list(n.output),
                                         name=f"{tag}/slice"))
    del model.graph.node[:]
    model.graph.node.extend(out)
    return model


MAX_FOLD_ROUNDS = 8


def fold_until_stable(model: onnx.ModelProto) -> onnx.ModelProto:
    """:func:`fold`, again while ``Shape`` nodes remain and each round removes nodes: a shape that only
    inference after a fold makes static (Swin's window padding, computed from ``Shape`` of a folded tensor)
    is folded by the next round. Graphs whose shape arithmetic folds at once (most CNNs) take one round."""
    model = fold(model)
    for _ in range(MAX_FOLD_ROUNDS - 1):
        if not any(n.op_type == "Shape" for n in model.graph.node):
            break
        again = fold(model)
        if len(again.graph.node) >= len(model.graph.node):
            break
        model = again
    return model


def name_nodes(graph: gs.Graph) -> None:
    """Give every node a unique, stable name: plans, reports and ``--exclude`` refer to nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(graph.nodes):
        name = node.name or f"{node.op}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def to_ir(model: onnx.ModelProto) -> Graph:
    """Lower a folded, shape-inferred proto to the IR (top-level graph; subgraphs become captures)."""
    g = model.graph
    tensors: dict[str, Tensor] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        tensors[vi.name] = value_info_tensor(vi)
    for init in g.initializer:
        tensors[init.name] = initializer_tensor(init)
    nodes = tuple(lower_node(n) for n in g.node)
    for n in nodes:
        for t in n.touched:
            tensors.setdefault(t, Tensor(t, None, None))
    inits = {i.name for i in g.initializer}
    return Graph(nodes=nodes, tensors=tensors, inputs=tuple(i.name for i in g.input if i.name not in inits),
                 outputs=tuple(o.name for o in g.output), opset=default_opset(model) or 0)


def initializer_tensor(init: onnx.TensorProto) -> Tensor:
    """A constant of the IR. Small ones (shapes, axes, scales: what rules read) are decoded now; large ones are
    decoded from ``init`` when read, so that the weights live once, in the proto (which the IR keeps alive)."""
    shape = tuple(int(d) for d in init.dims)
    if int(np.prod(shape, dtype=np.int64)) < SKELETON_MIN_ELEMENTS or init.data_type == onnx.TensorProto.STRING:
        arr = decoded(init)
        return Tensor(init.name, tuple(arr.shape), arr.dtype, arr)
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
    except Exception as exc:
        raise ModelLoadError(f"initializer '{init.name}' has unknown element type {init.data_type}") from exc
    return Tensor(init.name, shape, dtype, functools.partial(decoded, init))


def decoded(init: onnx.TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(init)
    except Exception as exc:
        raise ModelLoadError(f"initializer '{init.name}' is corrupt: {first_line(exc)}") from exc


def value_info_tensor(vi: onnx.ValueInfoProto) -> Tensor:
    tt = vi.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else None
    shape = None
    if tt.HasField("shape"):
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        shape = dims if all(d >= 0 for d in dims) else None
    return Tensor(vi.name, shape, dtype)


def lower_node(node: onnx.NodeProto) -> Node:
    attrs, captures = {}, []
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            captures += [t for sub in graphs for t in outer_names(sub)]
            attrs[a.name] = "<subgraph>"
        else:
            value = onnx.helper.get_attribute_value(a)
            attrs[a.name] = decode(value)
    return Node(name=node.name, op=node.op_type, inputs=tuple(node.input), outputs=tuple(node.output),
                attrs=attrs, domain=node.domain, captures=tuple(dict.fromkeys(captures)), source=node.name)


def decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return tuple(decode(v) for v in value)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return value


def outer_names(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph reads but does not define: tensors captured from the enclosing scope."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    used: list[str] = []
    for n in graph.node:
        used += [t for t in n.input if t and t not in defined]
        for a in n.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []
            used += [t for s in subs for t in outer_names(s) if t not in defined]
        defined.update(n.output)
    return used


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME:1,3,224,224`` strings (the CLI's ``--input-shape``)."""
    from graphprune.errors import UsageError

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
