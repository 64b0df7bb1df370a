"""graphprune inspect: terminal view with node names, --json, --dot, --html (self-contained), --pruned, --plan."""

from __future__ import annotations

import json
import re

import graphprune
from graphprune.cli.main import main


def test_terminal_view_names_layers_not_raw_tensors(exported, capsys, wide):
    assert main(["inspect", str(exported("resnet_basic"))]) == 0
    out = capsys.readouterr().out
    assert "produced by" in out and "read by" in out
    assert "/layers/layers.0/conv1/Conv" in out and "/fc/Gemm" in out
    groups_table = out.split("layers")[0]
    assert "onnx::Conv_" not in groups_table  # node names, not initializer names
    assert "8 channel groups: 6 prunable (224 removable units), 2 frozen" in out
    assert "graph input" in out and "graph output" in out


def test_json_groups_couple_layers_and_layers_have_channels(exported, capsys):
    assert main(["inspect", str(exported("resnet_basic")), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["prunable"] == 6 and data["totals"]["layers"] == 10
    g4 = next(g for g in data["groups"] if "/stem/stem.0/Conv" in g["produced_by"])
    assert g4["status"] == "prunable" and "/layers/layers.0/conv1/Conv" in g4["read_by"]
    assert any("Add" in n for n in g4["through"])
    frozen = [g for g in data["groups"] if g["status"] == "frozen"]
    assert all(g["frozen_because"] and any(s["frozen"] for s in g["spaces"]) for g in frozen)
    fc = next(r for r in data["layers"] if r["name"] == "/fc/Gemm")
    assert fc["in"] == {"before": 64, "after": 64} and fc["out"]["before"] == 10


def test_pruned_model_gives_kept_and_before_after(pruned_pair, capsys, wide):
    src, small = pruned_pair
    assert main(["inspect", str(src), "--pruned", str(small), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["units_removed"] == 112
    assert sum(g["removed"] for g in data["groups"]) == 112
    assert all(g["kept"] + g["removed"] == (g["units"] or g["size"]) for g in data["groups"])
    stem = data["layers"][0]
    assert stem["out"] == {"before": 16, "after": 8} and stem["params"]["after"] < stem["params"]["before"]
    assert main(["inspect", str(src), "--pruned", str(small)]) == 0
    assert "16 → 8" in capsys.readouterr().out


def test_plan_file_is_the_same_as_the_pruned_model(pruned_pair, tmp_path, capsys):
    import onnx

    src, small = pruned_pair
    meta = {p.key: p.value for p in onnx.load(str(small), load_external_data=False).metadata_props}
    plan = tmp_path / "plan.json"
    plan.write_text(meta["graphprune.plan"])
    assert main(["inspect", str(src), "--plan", str(plan), "--json"]) == 0
    via_plan = json.loads(capsys.readouterr().out)
    assert main(["inspect", str(src), "--pruned", str(small), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == via_plan["layers"]


def test_plan_of_another_model_is_a_usage_error(pruned_pair, exported, capsys):
    _, small = pruned_pair
    assert main(["inspect", str(exported("plain_cnn")), "--pruned", str(small)]) == 2
    assert "does not belong" in capsys.readouterr().err


def test_dot_is_graphviz_with_clusters_and_frozen_marked(exported, tmp_path):
    dot = tmp_path / "g.dot"
    assert main(["inspect", str(exported("resnet_basic")), "--dot", str(dot), "-q"]) == 0
    text = dot.read_text()
    assert text.startswith("graph graphprune {") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    assert len(re.findall(r"subgraph cluster_g\d+", text)) == 8
    assert 'color="red"' in text and " -- " in text
    assert "output of /layers/layers.0/conv1/Conv" in text


def test_html_is_one_offline_file(pruned_pair, tmp_path):
    src, small = pruned_pair
    page = tmp_path / "g.html"
    assert main(["inspect", str(src), "--pruned", str(small), "--html", str(page), "-q"]) == 0
    text = page.read_text()
    no_xmlns = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in no_xmlns and "https://" not in no_xmlns and "//cdn" not in no_xmlns
    assert "<link" not in text and " src=" not in text and "@import" not in text
    assert '<svg id="space-graph"' in text and 'id="groups"' in text and 'class="bar after"' in text
    assert len(re.findall(r'class="space(?: frozen)?"', text)) == sum(len(g.spaces) for g in graphprune.inspect(src).channels.candidates)
