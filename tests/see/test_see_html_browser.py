"""The inspect HTML page in headless Chromium: it loads with no console message or error, its script runs, and
the DOM holds the space graph and every group. A screenshot is kept in the test's tmp dir."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from graphprune.cli.main import main

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                           *args], capture_output=True, text=True, timeout=120)


def test_page_renders_graph_and_groups_without_errors(pruned_pair, tmp_path, capsys):
    src, small = pruned_pair
    page = tmp_path / "inspect.html"
    assert main(["inspect", str(src), "--pruned", str(small), "--html", str(page), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)

    run = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console  # the page logs nothing: any console line is an error or a warning
    dom = run.stdout
    assert 'data-ready="1"' in dom, "the page script did not finish"
    assert "<body data-errors" not in dom and not re.search(r'<body[^>]*data-errors', dom)
    n_spaces = sum(len(g["spaces"]) for g in data["groups"])
    assert re.search(r'id="n-rendered">(\d+)<', dom).group(1) == str(n_spaces)  # counted by the script in the DOM
    assert len(re.findall(r'class="space(?: frozen)?"', dom)) == n_spaces and 'class="edge"' in dom
    for g in data["groups"]:
        assert f'<tr class="group {g["status"]}" data-group="{g["id"]}"' in dom
    assert dom.count('class="bar after"') == len(data["layers"])

    shot = tmp_path / "inspect.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1000", "--hide-scrollbars", page.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
