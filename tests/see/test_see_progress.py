"""Progress bars: drawn for every pipeline step and verification when forced (a terminal), silent in pipes and
with --quiet; one shared display even when steps nest (calibration inside scoring)."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console

from graphprune import progress


@pytest.fixture
def forced():
    buf = io.StringIO()
    progress.set_quiet(False)  # the CLI's -q in an earlier in-process test sets it
    progress.set_forced(True, Console(file=buf, force_terminal=True, width=120))
    yield buf
    progress.set_forced(False)
    progress.set_quiet(False)


def test_every_step_and_verification_get_a_line(exported, forced):
    import graphprune

    graphprune.prune(exported("plain_cnn"), method="sampling", ratio=0.3, max_points=8)
    text = forced.getvalue()
    for step in ("Calibrate", "AnalyseChannels", "SensitivityScore", "SamplingSelect", "RemoveChannels", "verifying"):
        assert step in text, step
    assert "PFP sensitivity" in text  # the nested per-batch bar of the scoring pass shares the display


def test_nested_tasks_share_one_display(forced):
    with progress.task("outer", total=2) as advance:
        assert list(progress.track(range(3), "inner")) == [0, 1, 2]
        advance()
    text = forced.getvalue()
    assert "outer" in text and progress._state["active"] is None


def test_quiet_wins_over_forced(forced):
    progress.set_quiet(True)
    assert not progress.enabled() and not progress.enabled(True)
    assert list(progress.track([1, 2], "x")) == [1, 2]
    assert forced.getvalue() == ""


def test_not_a_tty_means_no_bars(exported, tmp_path):
    src = exported("plain_cnn")
    r = subprocess.run([sys.executable, "-m", "graphprune.cli", str(src), "-o", str(tmp_path / "s.onnx")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    assert not progress.enabled()  # pytest's stderr is captured: not a terminal
