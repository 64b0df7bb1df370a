"""``--eval DATA.npz``: top-1 accuracy before and after on labelled data, and the committed first-run example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import graphprune
from graphprune.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


def test_the_committed_example_keeps_its_accuracy_at_half_the_params(tmp_path):
    """The README's first run, as the API call the CLI makes (sampling + reconstruction at 0.5)."""
    r = graphprune.prune(EXAMPLE / "digits_resnet.onnx", method="sampling", ratio=0.5, calib=EXAMPLE / "calib.npz",
                         reconstruct=True, eval_data=EXAMPLE / "test.npz")
    a = r.report.accuracy
    assert r.report.verification.ok and a["points"] == 450
    assert a["before"] > 0.97 and a["after"] >= a["before"] - 0.01
    assert r.report.after.params <= 0.55 * r.report.before.params


def test_eval_reports_the_accuracy_and_keeps_the_report_small(tmp_path):
    with np.load(EXAMPLE / "test.npz") as d:
        data = {"input": d["input"][:64], "labels": d["labels"][:64]}
    r = graphprune.prune(EXAMPLE / "digits_resnet.onnx", ratio=0.3, eval_data=data)
    hits = r.report.accuracy
    assert hits["points"] == 64 and 0.0 <= hits["after"] <= 1.0
    text = r.report.to_json()
    assert len(text) < 200_000 and json.loads(text)["options"]["eval_data"] == "eval data"  # not the arrays


@pytest.mark.parametrize("arrays, needle", [({"input": None}, "needs an integer 'labels'"),
                                            ({"input": None, "labels": np.zeros(5, np.float32)}, "integer array"),
                                            ({"input": None, "labels": np.full(5, 12)}, "must lie in [0, 10)"),
                                            ({"input": None, "labels": np.zeros(3, np.int64)}, "3 labels for 5")])
def test_bad_eval_data_is_one_line_and_exit_2(tmp_path, capsys, arrays, needle):
    x = np.zeros((5, 1, 8, 8), np.float32)
    np.savez(tmp_path / "bad.npz", **{k: (x if v is None else v) for k, v in arrays.items()})
    code = main([str(EXAMPLE / "digits_resnet.onnx"), "-o", str(tmp_path / "s.onnx"), "--eval", str(tmp_path / "bad.npz"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "s.onnx").exists()
