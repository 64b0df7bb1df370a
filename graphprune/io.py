"""Writing results: atomically, next to the destination, never over the input."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from graphprune.errors import UsageError

PROTOBUF_LIMIT = 2**31  # protobuf refuses to serialise (and onnxruntime / the checker to read) larger messages


def external_data_threshold() -> int:
    """Models whose tensor data exceeds this many bytes are written with external data (``NAME.data``).

    The one place ``GRAPHPRUNE_EXTERNAL_DATA_THRESHOLD`` is read (tests set it low to exercise the large-model
    path on small models); the default leaves 64 MiB below protobuf's 2 GiB for the graph itself."""
    value = os.environ.get("GRAPHPRUNE_EXTERNAL_DATA_THRESHOLD")
    if value is None:
        return EXTERNAL_DATA_THRESHOLD
    try:
        return int(value)
    except ValueError as exc:
        raise UsageError(f"GRAPHPRUNE_EXTERNAL_DATA_THRESHOLD={value!r} is not a number of bytes") from exc


EXTERNAL_DATA_THRESHOLD = PROTOBUF_LIMIT - 2**26  # tests monkeypatch this (or set the environment variable)
MIN_EXTERNAL_TENSOR_BYTES = 1024  # smaller tensors stay inside the model file, like onnx.save's default
ALIGNMENT = 4096  # tensor offsets in the data file are page-aligned, so onnxruntime can map them


def all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)


def tensor_nbytes(t: TensorProto) -> int:
    """Bytes of a tensor's data held in the proto, from its dims (never touching the data itself)."""
    if t.data_location == TensorProto.EXTERNAL:
        return 0
    if t.data_type == TensorProto.STRING:
        return sum(len(s) for s in t.string_data)
    return math.prod(t.dims) * itemsize(t.data_type)


@functools.lru_cache(maxsize=None)
def itemsize(data_type: int) -> int:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except Exception:
        return 8


def data_size(model: onnx.ModelProto) -> int:
    """Bytes of tensor data in ``model``: its serialised size less the (small) graph structure. Unlike
    ``ByteSize()`` this is safe and cheap on protos over 2 GB."""
    return sum(tensor_nbytes(t) for t in all_tensors(model))


def is_large(model: onnx.ModelProto) -> bool:
    """True when ``model`` must be written with external data (see :func:`external_data_threshold`)."""
    return data_size(model) > external_data_threshold()


DATA_FIELDS = ("raw_data", "float_data", "double_data", "int32_data", "int64_data", "uint64_data")


def copy_fields(src, dst, skip=()) -> None:
    """Copy every set field of ``src`` into ``dst`` (same message type) except those named in ``skip``."""
    for fd, value in src.ListFields():
        if fd.name in skip:
            continue
        if fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def holds_data(t: TensorProto) -> bool:
    """False for a tensor stripped to its type and dims (:func:`graphprune.frontends.onnx.skeleton`)."""
    from onnx.external_data_helper import uses_external_data

    return (uses_external_data(t) or t.HasField("raw_data") or bool(t.string_data)
            or any(len(getattr(t, name)) for name in DATA_FIELDS[1:]) or 0 in t.dims)


TensorData = Callable[[TensorProto], TensorProto]  # a stripped initializer → a tensor holding its data


@dataclass(frozen=True, eq=False)
class Stripped:
    """A model whose large initializers hold only their type and dims (see
    :func:`graphprune.frontends.onnx.skeleton`), and ``data``, which gives the tensor holding one's data. Written
    out one tensor at a time (:func:`model_file`), it never has a second copy of the weights in memory."""

    model: onnx.ModelProto
    data: TensorData

    @staticmethod
    def over(model: onnx.ModelProto, source: onnx.ModelProto,
             edits: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None) -> Stripped:
        """``model`` with the data of ``source``'s initializers of the same names, passed through ``edits[name]``
        where there is one."""
        by_name = {t.name: t for t in source.graph.initializer}
        edits = dict(edits or {})

        def data(t: TensorProto) -> TensorProto:
            src = by_name[t.name]
            edit = edits.get(t.name)
            return src if edit is None else numpy_helper.from_array(edit(numpy_helper.to_array(src)), t.name)

        return Stripped(model, data)

    def filled(self) -> onnx.ModelProto:
        """The whole model in memory: for small models (large ones go through :func:`model_file`)."""
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        for t in out.graph.initializer:
            if not holds_data(t):
                t.CopyFrom(self.data(t))
        return out


def external_copy(model: onnx.ModelProto | Stripped, data_path: Path, location: str, *,
                  durable: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` whose larger tensors point at ``location`` (their data written to ``data_path``, fsynced)
    instead of holding it: it serialises small. ``model`` itself is not touched: clearing and restoring its
    ``raw_data`` would leave a second copy of the weights in its protobuf arena (upb frees arena memory only with
    the message), and ``onnx.save_model(save_as_external_data=True)`` strips the caller's proto. The top-level
    weights are never copied in memory, only one tensor's bytes at a time on their way to the file. A
    :class:`Stripped` model's initializers take their data from it."""
    model, data = (model.model, model.data) if isinstance(model, Stripped) else (model, None)
    out = onnx.ModelProto()
    copy_fields(model, out, skip=("graph",))
    copy_fields(model.graph, out.graph, skip=("initializer",))
    with open(data_path, "wb") as f:
        def put(dst: TensorProto, data: bytes) -> None:
            offset = f.tell() + (-f.tell() % ALIGNMENT)
            f.seek(offset)
            f.write(data)
            dst.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", offset), ("length", len(data))):
                entry = dst.external_data.add()
                entry.key, entry.value = key, str(value)

        def raw(t: TensorProto) -> bytes:  # typed fields (float_data, int32_data …) as little-endian bytes
            return t.raw_data if t.HasField("raw_data") else numpy_helper.from_array(numpy_helper.to_array(t)).raw_data

        def moves(t: TensorProto) -> bool:
            return (t.data_type not in (TensorProto.STRING, TensorProto.UNDEFINED)
                    and tensor_nbytes(t) >= MIN_EXTERNAL_TENSOR_BYTES)

        def source(t: TensorProto) -> TensorProto:
            return t if data is None or holds_data(t) else data(t)

        for t in model.graph.initializer:
            dst = out.graph.initializer.add()
            if not moves(t):
                dst.CopyFrom(source(t))
                continue
            copy_fields(t, dst, skip=DATA_FIELDS + ("external_data", "data_location"))
            put(dst, raw(source(t)))
        for t in all_tensors(out):  # Constant attributes and subgraph weights: already copies, edited in place
            if moves(t):
                data = raw(t)
                for name in DATA_FIELDS:
                    t.ClearField(name)
                del t.external_data[:]
                put(t, data)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    return out


def write_model_files(model: onnx.ModelProto | Stripped, path: Path, *, durable: bool = True) -> tuple[Path, Path]:
    """Write ``path`` and ``path``.data (external data, named relative to ``path``), not atomically: for a private
    folder (:func:`model_file`, :func:`save_model_atomic`). ``durable``: fsync both (outputs, not scratch files)."""
    path = Path(path)
    data_path = path.with_name(path.name + ".data")
    small = external_copy(model, data_path, data_path.name, durable=durable)
    with open(path, "wb") as f:
        f.write(small.SerializeToString())
        f.flush()
        if durable:
            os.fsync(f.fileno())
    return path, data_path


@contextlib.contextmanager
def model_file(model: onnx.ModelProto | Stripped, folder: str | os.PathLike | None = None) -> Iterator[Path]:
    """``model`` written with external data into a private temporary folder, removed on exit: for the readers
    that take a path (onnxruntime, the ONNX checker) when a proto is over 2 GB, or large enough that the copies
    of an in-memory load matter (see :func:`graphprune.runtime.session`)."""
    with tempfile.TemporaryDirectory(prefix="graphprune-", dir=folder) as d:
        path, _ = write_model_files(model, Path(d) / "model.onnx", durable=False)
        yield path


def default_output(input_path: Path, suffix: str = ".pruned") -> Path:
    return input_path.with_name(input_path.stem + suffix + input_path.suffix)


def check_output(path: Path, input_path: Path | None) -> Path:
    path = Path(path)
    if input_path is not None and path.resolve() == Path(input_path).resolve():
        raise UsageError(f"output {path} is the input; graphprune never overwrites its input, choose another -o")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"output folder {folder} is not writable")
    return path


def write_bytes_atomic(path: Path, data: bytes | Iterable[bytes]) -> Path:
    """Write ``data`` (bytes, or its parts in order) to a temporary file in the same folder, fsync, then rename:
    readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        with os.fdopen(fd, "wb") as f:
            for part in [data] if isinstance(data, bytes) else data:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_model_atomic(model: onnx.ModelProto, path: Path, input_path: Path | None = None) -> Path:
    """One file, or over :func:`external_data_threshold` ``path`` plus ``path``.data (see :func:`save_large_atomic`)."""
    check_output(path, input_path)
    if is_large(model):
        return save_large_atomic(model, Path(path), input_path)
    return write_bytes_atomic(path, serialised_parts(model))


GRAPH_FIELD, INITIALIZER_FIELD = 7, 5  # ModelProto.graph, GraphProto.initializer
STREAM_MIN_BYTES = 2**20  # initializers this large are serialised (and written) one at a time


def serialised_parts(model: onnx.ModelProto) -> Iterator[bytes]:
    """``model``'s protobuf encoding in parts, one initializer at a time, so that saving never holds a serialised
    copy of the weights (``SerializeToString`` holds two: protobuf's buffer and Python's bytes).

    Protobuf parsers merge repeated occurrences of a message field (the encoding's documented rule for embedded
    messages), concatenating their repeated fields in order: the model without its graph, the graph without its
    initializers, then graph occurrences holding the initializers (one each from :data:`STREAM_MIN_BYTES`, the
    smaller ones between them together) parse back to ``model`` exactly."""
    if all(tensor_nbytes(t) < STREAM_MIN_BYTES for t in model.graph.initializer):
        yield model.SerializeToString()  # nothing large: one part is as lean, and faster
        return
    head = onnx.ModelProto()
    copy_fields(model, head, skip=("graph",))
    graph = onnx.GraphProto()
    copy_fields(model.graph, graph, skip=("initializer",))
    yield head.SerializeToString()
    yield from graph_occurrence(graph.SerializeToString())
    small = onnx.GraphProto()  # consecutive small initializers share one occurrence: order is kept
    for init in model.graph.initializer:
        if tensor_nbytes(init) < STREAM_MIN_BYTES:
            small.initializer.add().CopyFrom(init)
            continue
        if small.initializer:
            yield from graph_occurrence(small.SerializeToString())
            del small.initializer[:]
        payload = init.SerializeToString()
        yield from graph_occurrence(field_header(INITIALIZER_FIELD, len(payload)), payload)
    if small.initializer:
        yield from graph_occurrence(small.SerializeToString())


def graph_occurrence(*parts: bytes) -> Iterator[bytes]:
    """One occurrence of ``ModelProto.graph`` whose encoded body is ``parts`` concatenated (not copied)."""
    yield field_header(GRAPH_FIELD, sum(len(p) for p in parts))
    yield from parts


def field_header(field: int, length: int) -> bytes:
    """Tag and length of a protobuf field of wire type 2 (length-delimited), its payload to follow."""
    return varint(field << 3 | 2) + varint(length)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def input_files(input_path: Path | None) -> set[Path]:
    """The input model and the external data files it names (resolved): none of them may be overwritten."""
    if input_path is None:
        return set()
    input_path = Path(input_path)
    files = {input_path.resolve()}
    try:
        from onnx.external_data_helper import ExternalDataInfo, uses_external_data

        m = onnx.load_model(str(input_path), load_external_data=False)
        files |= {(input_path.parent / ExternalDataInfo(t).location).resolve()
                  for t in all_tensors(m) if uses_external_data(t)}
    except Exception:  # an unreadable input cannot have been pruned; its name is still protected
        pass
    return files


def save_large_atomic(model: onnx.ModelProto, path: Path, input_path: Path | None = None) -> Path:
    """Write ``path`` and ``path``.data so that a reader never sees a model without its data: both go into a
    temporary folder next to the destination, are fsynced, then the data file is renamed into place first and
    the model file last. On any failure (SIGTERM included: the CLI turns it into KeyboardInterrupt) the
    temporary folder is removed and a data file already moved is put back as it was."""
    path = Path(path)
    folder = path.resolve().parent
    final_model, final_data = folder / path.name, folder / (path.name + ".data")
    protected = input_files(input_path)
    if final_data.resolve() in protected:
        raise UsageError(f"the external data file {final_data} belongs to the input; graphprune never overwrites "
                         f"its input, choose another -o")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder))
    moved = False
    try:
        tmp_model, tmp_data = write_model_files(model, tmp / path.name)
        mode = 0o666 & ~current_umask()
        os.chmod(tmp_model, mode)
        os.chmod(tmp_data, mode)
        backup = tmp / "previous.data"
        if final_data.exists():  # kept (a hard link, no copy) until the model is in place, to undo a failure
            try:
                os.link(final_data, backup)
            except OSError:
                backup = None
        else:
            backup = None
        os.replace(tmp_data, final_data)
        moved = True
        os.replace(tmp_model, final_model)
        moved = False
        fsync_folder(folder)
    except BaseException:
        if moved:
            if backup is not None and backup.exists():
                os.replace(backup, final_data)
            else:
                final_data.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str, input_path: Path | None = None) -> Path:
    check_output(path, input_path)
    return write_bytes_atomic(path, text.encode())
