"""docs/ops.md is generated from the rule registry: fail when it is stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_ops_md_matches_the_rule_registry():
    spec = importlib.util.spec_from_file_location("gen_ops", DOCS / "gen_ops.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main(["--check"]) == 0, "docs/ops.md is stale: run 'python docs/gen_ops.py'"
    from graphprune.channels.rules import RULES

    text = (DOCS / "ops.md").read_text()
    assert all(op in text for op in RULES)
