"""Nothing lost: the input is never modified, outputs appear whole or not at all, even when interrupted."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from graphprune import io
from graphprune.cli.main import main


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_input_is_never_modified_by_any_subcommand(exported, tmp_path):
    src = exported("mobilenet_v2")
    before = sha(src)
    assert main([str(src), "-o", str(tmp_path / "a.onnx"), "-q"]) == 0
    assert main(["inspect", str(src), "--json", "-q"]) == 0
    assert main(["verify", str(src), str(tmp_path / "a.onnx"), "-q"]) == 0
    assert sha(src) == before


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        io.write_bytes_atomic(tmp_path / "out.onnx", b"x" * 1000)
    assert os.listdir(tmp_path) == []


def test_existing_output_survives_a_failed_write(tmp_path, monkeypatch):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old")
    monkeypatch.setattr(io.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        io.write_bytes_atomic(out, b"new")
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.onnx"]


def test_sigterm_during_save_leaves_no_partial_file(exported, tmp_path):
    src, out = exported("plain_cnn"), tmp_path / "out.onnx"
    script = textwrap.dedent(f"""
        import time, graphprune.io as gio
        real = gio.os.replace
        def slow_replace(a, b):
            open({str(tmp_path / 'ready')!r}, 'w').close()
            time.sleep(30)
            real(a, b)
        gio.os.replace = slow_replace
        from graphprune.cli.main import main
        raise SystemExit(main([{str(src)!r}, "-o", {str(out)!r}, "-q"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "ready").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the temporary file exists mid-write
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready"]
    assert "interrupted" in err


def test_outputs_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_bytes_atomic(tmp_path / "out.onnx", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.onnx").stat().st_mode & 0o777 == 0o644
