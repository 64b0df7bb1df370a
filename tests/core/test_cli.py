"""The command line: outputs, reports, exit codes, one-line errors, and the input left untouched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnx.numpy_helper
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
    (["{m}", "--budget", "latency", "--latency-threads", "-1"], "must be a non-negative integer"),
    (["{m}", "--budget", "latency", "--method", "sampling"], "--budget latency applies to the score methods"),
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


def frozen_model(path):
    """One conv whose output is the graph output: every channel group is frozen, nothing can be removed."""
    w = onnx.numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    g = onnx.helper.make_graph([onnx.helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1])], "g",
                               [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                               [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    onnx.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    return path


def noisy_model(path):
    """A conv net with a constant branch graphsurgeon tries, and fails, to fold (an op of an unknown domain): its
    warning went to stdout, before the JSON."""
    w = onnx.numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    c = onnx.numpy_helper.from_array(np.ones((1, 8, 1, 1), np.float32), "c")
    nodes = [onnx.helper.make_node("Mystery", ["c"], ["m"], domain="com.example"),
             onnx.helper.make_node("Conv", ["input", "w"], ["y"], pads=[1, 1, 1, 1]),
             onnx.helper.make_node("Add", ["y", "m"], ["output"])]
    g = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                               [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 8, 8, 8])], [w, c])
    opsets = [onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.example", 1)]
    onnx.save(onnx.helper.make_model(g, opset_imports=opsets), str(path))
    return path


def test_json_stdout_is_pure_json_even_when_folding_warns(tmp_path):
    r = run_cli("inspect", noisy_model(tmp_path / "noisy.onnx"), "--json")
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # nothing before or after it
    assert "[W]" not in r.stdout + r.stderr and "colored" not in r.stdout + r.stderr


def test_nothing_removed_warns_and_require_removal_exits_5(tmp_path):
    src, out = frozen_model(tmp_path / "frozen.onnx"), tmp_path / "out.onnx"
    r = run_cli(src, "-o", out, "--report", tmp_path / "r.json")
    assert r.returncode == 0 and "WARNING: nothing was removed" in r.stdout
    assert json.loads((tmp_path / "r.json").read_text())["changed"] is False
    out.unlink()
    r = run_cli(src, "-o", out, "--require-removal")
    assert r.returncode == 5 and r.stderr.count("\n") == 1 and "nothing was removed" in r.stderr
    assert not out.exists()


def test_tolerances_are_flags(exported, tmp_path):
    assert main([str(exported("plain_cnn")), "-o", str(tmp_path / "s.onnx"), "--rtol", "1e-3", "--atol", "1e-4", "-q"]) == 0
    assert main(["verify", str(exported("plain_cnn")), str(tmp_path / "s.onnx"), "--rtol", "1e-3", "-q"]) == 0
    r = run_cli(exported("plain_cnn"), "--rtol", "-1")
    assert r.returncode == 2 and "rtol" in r.stderr


def test_a_closed_stdout_is_not_an_internal_error(exported):
    p = subprocess.Popen([sys.executable, "-m", "graphprune.cli", "inspect", str(exported("resnet_basic")), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(1)
    p.stdout.close()
    assert p.wait() in (0, 141) and b"internal error" not in p.stderr.read()


@pytest.mark.parametrize("value", ["zlib:AAAA", "{not json"])
def test_damaged_metadata_is_bad_input_not_a_crash(exported, tmp_path, value):
    src, small = exported("resnet_basic"), tmp_path / "s.onnx"
    assert main([str(src), "--ratio", "0.5", "-o", str(small), "-q"]) == 0
    m = onnx.load(str(small))
    stored = {p.key: p for p in m.metadata_props}["graphprune.plan"]
    assert stored.value.startswith("zlib:")  # the plan is stored compressed: it must not outweigh what was removed
    stored.value = value
    onnx.save(m, str(tmp_path / "damaged.onnx"))
    r = run_cli("verify", src, tmp_path / "damaged.onnx")
    assert r.returncode == 2 and "metadata is damaged" in r.stderr and r.stderr.count("\n") == 1
