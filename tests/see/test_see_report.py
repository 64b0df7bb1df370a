"""The prune report per method: JSON (groups kept/removed, per-layer params and MACs, method parameters, frozen
and why, verification, drift, latency spread), the stdout wording, and --plot."""

from __future__ import annotations

import json

from graphprune.cli.main import main


def prune(src, tmp_path, *args):
    out, rep = tmp_path / "s.onnx", tmp_path / "r.json"
    code = main([str(src), "-o", str(out), "--report", str(rep), *map(str, args)])
    assert code == 0
    return json.loads(rep.read_text())


def test_magnitude_report_has_every_section(exported, tmp_path, capsys, wide):
    r = prune(exported("resnet_basic"), tmp_path, "--ratio", "0.5", "--budget", "channels", "--latency")
    out = capsys.readouterr().out
    assert r["method_parameters"]["MagnitudeScore"] == {"norm": 1}
    detail = r["groups"]["detail"]
    assert sum(g["removed"] for g in detail) == r["units_removed"] == 112
    assert all(g["kept"] == g["units"] - g["removed"] for g in detail)
    assert any("/stem/stem.0/Conv" in g["produced_by"] for g in detail)
    assert {f["why"][0].split(" (")[0] for f in r["frozen"]} == {"graph input", "graph output"}
    layers = {row["name"]: row for row in r["layers"]}
    conv = layers["/layers/layers.0/conv1/Conv"]
    assert conv["out"] == {"before": 16, "after": 8} and conv["macs"]["after"] * 4 == conv["macs"]["before"]
    assert sum(row["params"]["after"] for row in r["layers"]) == r["params"]["after"]
    assert r["verification"]["ok"] and r["verification"]["max_error"] < 1e-4
    assert set(r["verification"]["drift"]) == {"max_abs", "cosine", "top1_agreement"}
    assert {"median", "p10", "p90"} <= set(r["latency_ms"]["before"])
    assert "method: magnitude (ratio=0.5, local, norm=1)" in out
    assert "channels removed: 112 of 224 in 6 groups; 2 of 8 channel groups frozen" in out
    assert "verification: passed (max |pruned - masked original|" in out
    assert "latency p10–p90" in out and "layers changed" in out


def test_the_default_ratio_is_reported_as_a_fraction_of_params(exported, tmp_path, capsys, wide):
    r = prune(exported("resnet_basic"), tmp_path, "--ratio", "0.5")
    out = capsys.readouterr().out
    assert "method: magnitude (ratio=0.5 of params, local, norm=1" in out
    assert r["method_parameters"]["Select"]["budget"] == "params"
    assert abs(r["params"]["after"] / r["params"]["before"] - 0.5) < 0.05


def test_lowrank_wording_is_about_layers_not_channels(exported, tmp_path, capsys, wide):
    r = prune(exported("resnet_basic"), tmp_path, "--method", "lowrank", "--energy", "0.9", "--min-saving", "0")
    out = capsys.readouterr().out
    assert "channels removed" not in out and "masked original" not in out
    assert "low rank (energy 0.9, channel scheme):" in out and "layers decomposed" in out
    assert "verification: passed (max |decomposed - truncated original|" in out
    assert r["method_parameters"]["LowRank"]["rule"] == "energy 0.9"
    assert any(row["lowrank"] and row["params"]["after"] < row["params"]["before"] for row in r["layers"])


def test_channels_then_lowrank_names_both_oracles(exported, tmp_path, capsys, wide):
    prune(exported("plain_cnn"), tmp_path, "--ratio", "0.5", "--then", "lowrank", "--min-saving", "0")
    out = capsys.readouterr().out
    assert "method: magnitude → lowrank" in out and "channels removed:" in out and "low rank (" in out
    assert "every stage against its oracle (channels: pruned - masked original; LowRank: decomposed - truncated" in out


def test_sipp_reports_zeroed_weights_and_epsilon(exported, tmp_path, capsys, wide):
    r = prune(exported("plain_cnn"), tmp_path, "--method", "sipp", "--ratio", "0.5", "--max-points", "16")
    out = capsys.readouterr().out
    assert "channels removed" not in out and "weights zeroed:" in out
    stats = r["method_parameters"]["SiPPSparsify"]
    assert {"epsilon", "delta", "sparsity", "mode"} <= set(stats)
    assert "pruned - original with the same weights edited" in out
    assert any(row["params"]["nonzero_after"] < row["params"]["after"] for row in r["layers"])


def test_sampling_reports_epsilon_and_delta(exported, tmp_path, capsys, wide):
    r = prune(exported("plain_cnn"), tmp_path, "--method", "sampling", "--ratio", "0.4", "--max-points", "16")
    out = capsys.readouterr().out
    assert "ε=" in out and "δ=1e-16" in out and "channels removed:" in out
    assert {"epsilon", "delta", "budget"} <= set(r["method_parameters"]["SamplingSelect"])


def test_plot_writes_a_png(exported, tmp_path, capsys):
    png = tmp_path / "layers.png"
    src = exported("plain_cnn")
    assert main([str(src), "-o", str(tmp_path / "s.onnx"), "--plot", str(png), "-q"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    assert main([str(src), "-o", str(tmp_path / "t.onnx"), "--plot", str(src)]) == 2  # never the input
