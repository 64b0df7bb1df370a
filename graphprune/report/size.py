"""File sizes before and after pruning, in bytes: what a user sees on disk, which params alone do not tell (a
weight stored as int8 or float16 takes a quarter or half of a float32 one's bytes; the report says when the pruned
file came out larger than the original)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from graphprune import io


def file_sizes(source: Any, model: Any) -> dict[str, Any] | None:
    """``{"before", "after", "ratio"}``: the original's file (with its external data) or given proto, and ``model``
    as :meth:`PruneResult.save` writes it (give or take the framing of a streamed save). None for a model that is
    not an ONNX proto (a torch module)."""
    if not isinstance(model, onnx.ModelProto):
        return None
    before = source_bytes(source)
    after = proto_bytes(model)
    if before is None:
        return None
    return {"before": before, "after": after, "ratio": after / max(before, 1)}


def source_bytes(source: Any) -> int | None:
    """The original's size: its file plus the external data files it names, or the given proto serialised."""
    given, path = getattr(source, "given", None), getattr(source, "path", None)
    if isinstance(given, onnx.ModelProto):
        return proto_bytes(given)
    if path is None or not Path(path).is_file():
        return None
    return Path(path).stat().st_size + external_bytes(Path(path), source)


def external_bytes(path: Path, source: Any) -> int:
    """Bytes of the external data files of the model at ``path`` (0 without any). The file is parsed again only when
    its weights cannot all be in it (the folded model holds more tensor bytes than the file): it is small then."""
    model = getattr(source, "model", None)
    if not isinstance(model, onnx.ModelProto) or io.data_size(model) <= path.stat().st_size:
        return 0
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    skeleton = onnx.load_model(str(path), load_external_data=False)
    files = {ExternalDataInfo(t).location for t in _get_all_tensors(skeleton) if uses_external_data(t)}
    return sum((path.parent / f).stat().st_size for f in files if (path.parent / f).is_file())


def proto_bytes(model: onnx.ModelProto) -> int:
    """Serialised size; over protobuf's 2 GB (written with external data) the structure plus the tensor data."""
    if not io.is_large(model):
        return model.ByteSize()
    return io.data_size(model) + sum(n.ByteSize() for n in model.graph.node)


def larger_file_note(sizes: dict[str, Any] | None) -> tuple[str, ...]:
    """The report line for a pruned file larger than its original (none otherwise): it should never be, so say it."""
    if not sizes or sizes["after"] <= sizes["before"]:
        return ()
    return (f"the pruned file ({sizes['after']:,} bytes) is larger than the original ({sizes['before']:,} bytes): "
            "what it saves in weights is less than graphprune's metadata (the plan), or a weight is stored wider",)
