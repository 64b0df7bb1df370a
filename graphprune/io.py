"""Writing results: atomically, next to the destination, never over the input."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from .errors import UsageError


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


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
    check_output(path, input_path)
    try:
        data = model.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GB
        raise UsageError(f"model too large to serialise in one file: {exc}") from exc
    return write_bytes_atomic(path, data)


def write_text_atomic(path: Path, text: str, input_path: Path | None = None) -> Path:
    check_output(path, input_path)
    return write_bytes_atomic(path, text.encode())
