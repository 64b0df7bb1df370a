"""The command line: outputs, reports, exit codes, one-line errors, and the input left untouched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import onnx
import pytest

from graphprune.cli.main import main


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "graphprune.cli", *map(str, args)], capture_output=True, text=True)


def test_prune_writes_a_verified_smaller_model_and_a_report(exported, tmp_path):
    src = exported("resnet_basic")
    before = sha(src)
    out, rep = tmp_path / "small.onnx", tmp_path / "report.json"
    r = run_cli(src, "--ratio", "0.5", "-o", out, "--report", rep)
    assert r.returncode == 0, r.stderr
    assert "verification: passed" in r.stdout and "params" in r.stdout
    assert sha(src) == before
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    report = json.loads(rep.read_text())
    assert report["verification"]["ok"] and report["params"]["after"] < report["params"]["before"]
    assert report["output"] == str(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_default_output_sits_next_to_the_input(exported, tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(exported("plain_cnn").read_bytes())
    assert main([str(src), "--ratio", "0.3", "-q"]) == 0
    assert (tmp_path / "m.pruned.onnx").exists()


def test_inspect_json_and_table(exported):
    src = exported("resnet_basic")
    r = run_cli("inspect", src, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert sum(g["status"] == "prunable" for g in data["groups"]) == 6
    assert any("graph input" in w for g in data["groups"] for w in g["frozen_because"])
    table = run_cli("inspect", src)
    assert table.returncode == 0 and "prunable" in table.stdout


def test_verify_accepts_the_pruned_model_and_rejects_a_tampered_one(exported, tmp_path):
    src, out = exported("vgg"), tmp_path / "v.onnx"
    assert main([str(src), "--ratio", "0.5", "-o", str(out), "-q"]) == 0
    assert run_cli("verify", src, out).returncode == 0
    m = onnx.load(str(out))
    w = next(i for i in m.graph.initializer if len(i.dims) == 4)
    arr = onnx.numpy_helper.to_array(w).copy()
    arr[0] += 1.0
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    r = run_cli("verify", src, bad)
    assert r.returncode == 1 and "NOT verified" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["{m}", "--ratio", "1.0"], "out of range"),
    (["{m}", "--ratio", "-0.1"], "out of range"),
    (["{m}", "--method", "nope"], "invalid choice"),
    (["{m}", "--bogus"], "unrecognized arguments"),
    (["{m}", "--exclude", "no_such_node*"], "matches no node"),
    (["{m}", "-o", "{m}"], "never overwrites its input"),
    (["{m}", "-o", "/nonexistent/dir/x.onnx"], "does not exist"),
    (["{m}", "--input-shape", "input:1,3"], "does not fit"),
    (["{m}", "--input-shape", "garbage"], "expected NAME:D0,D1"),
    (["{missing}"], "no such file"),
    (["{empty}"], "empty file"),
    (["{junk}"], "not a valid ONNX protobuf"),
    (["{dir}"], "not a file"),
])
def test_bad_input_is_one_line_and_exit_2(exported, tmp_path, args, needle):
    m = exported("plain_cnn")
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage" * 10 + m.read_bytes()[:50])
    paths = {"m": m, "missing": tmp_path / "missing.onnx", "empty": tmp_path / "empty.onnx",
             "junk": tmp_path / "junk.onnx", "dir": tmp_path}
    r = run_cli(*[a.format(**paths) for a in args])
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_verbose_shows_the_traceback(tmp_path):
    r = run_cli(tmp_path / "missing.onnx", "-v")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_truncated_model_is_refused(exported, tmp_path):
    data = exported("resnet_basic").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    r = run_cli(cut)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_failed_verification_writes_nothing(exported, tmp_path, monkeypatch):
    from graphprune.channels.rules import RULES, Rule

    src, out = exported("densenet_block"), tmp_path / "never.onnx"

    def offsets_all_zero(ctx):
        from graphprune.channels.rules import IDENTITY, Offset
        y = ctx.node.outputs[0]
        for x in ctx.node.inputs:
            for k in range(ctx.rank(y)):
                ctx.couple_axes(x, k, y, k, Offset(0) if k == 1 else IDENTITY)

    monkeypatch.setitem(RULES, "Concat", Rule(("Concat",), offsets_all_zero, "broken"))
    code = main([str(src), "--ratio", "0.5", "-o", str(out), "-q"])
    assert code in (1, 4)
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_dynamic_batch_needs_an_input_shape(tmp_path, exported):
    m = onnx.load(str(exported("plain_cnn")))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    dyn = tmp_path / "dyn.onnx"
    onnx.save(m, str(dyn))
    r = run_cli(dyn, "-o", tmp_path / "o.onnx")
    assert r.returncode == 2 and "--input-shape input:1,3,32,32" in r.stderr
    r = run_cli(dyn, "-o", tmp_path / "o.onnx", "--input-shape", "input:2,3,32,32", "-q")
    assert r.returncode == 0, r.stderr
