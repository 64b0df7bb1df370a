"""Fixtures for the 'see it' tests: one pruned resnet_basic per session (shared, read-only)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def pruned_pair(exported, tmp_path_factory):
    """(original, pruned) paths: resnet_basic with half its channels removed by magnitude."""
    import graphprune

    src = exported("resnet_basic")
    out = tmp_path_factory.mktemp("see") / "resnet_basic.small.onnx"
    graphprune.prune(src, ratio=0.5, budget="channels").save(out)
    return src, out


@pytest.fixture
def wide(monkeypatch):
    """A wide terminal, so rich does not fold node names in the captured output."""
    monkeypatch.setenv("COLUMNS", "240")
