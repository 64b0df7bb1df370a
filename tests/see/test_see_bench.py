"""graphprune bench: median and p10/p90 per model and batch size, the ratio, and a clear answer for a batch size a
static-batch export cannot take."""

from __future__ import annotations

import json

import onnx

from graphprune.tools.bench import bench
from graphprune.cli.main import main

FAST = ["--runs", "3", "--warmup", "1"]


def dynamic_batch(src, path):
    m = onnx.load(str(src))
    for vi in list(m.graph.input) + list(m.graph.output):
        d = vi.type.tensor_type.shape.dim[0]
        d.Clear()
        d.dim_param = "N"
    onnx.save(m, str(path))
    return path


def test_side_by_side_json_with_ratio_and_refused_batch(pruned_pair, capsys):
    src, small = pruned_pair
    assert main(["bench", str(src), str(small), "--batch", "1", "4", "--json", "--threads", "1", *FAST]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider") and data["threads"] == 1
    one, four = data["rows"]
    assert one["batch"] == 1 and len(one["results"]) == 2 and one["ratio"] > 0
    assert all(r["p10"] <= r["median"] <= r["p90"] for r in one["results"])
    assert all("static batch dimension of 1" in r["error"] for r in four["results"]) and "ratio" not in four


def test_dynamic_batch_is_repinned(exported, tmp_path):
    path = dynamic_batch(exported("plain_cnn"), tmp_path / "dyn.onnx")
    data = bench([path], [1, 4], runs=3, warmup=1)
    assert [r["results"][0]["input_shapes"]["input"][0] for r in data["rows"]] == [1, 4]


def test_table_shows_ratio_and_why_a_batch_is_not_applied(pruned_pair, capsys, wide):
    src, small = pruned_pair
    assert main(["bench", str(src), str(small), "--batch", "1", "2", *FAST]) == 0
    out = capsys.readouterr().out
    assert "ratio" in out and "p10–p90" in out and "n/a" in out
    assert "batch 2 cannot be applied: input 'input' has a static batch dimension of 1" in out


def test_bad_usage_exits_2(pruned_pair, capsys):
    src, small = pruned_pair
    assert main(["bench", str(src), str(small), str(src)]) == 2
    assert main(["bench", str(src), "--runs", "0"]) == 2
    assert "error" in capsys.readouterr().err
