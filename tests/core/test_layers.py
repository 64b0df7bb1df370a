"""The house: imports go down the layers of docs/ARCHITECTURE.md and never form a cycle (function-level imports
counted), a function-level import of a project module is only ever the optional torch dependency, no submodule is
shadowed by a function, passes run only through the runner, and ``graphprune.passes`` is this checkout's."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import networkx as nx

import graphprune
import graphprune.passes

ROOT = Path(graphprune.__file__).resolve().parent.parent

# lowest first; a module may import its own layer and the ones below (first matching prefix wins)
LAYERS = [
    ("foundation", ["graphprune.errors", "graphprune.ir", "graphprune.io", "graphprune.progress", "graphprune.workers",
                    "graphprune.points",
                    "graphprune.runtime", "graphprune.gsgraph"]),
    ("lowering and channels", ["graphprune.frontends.onnx.proto", "graphprune.frontends.onnx.lower",
                               "graphprune.frontends.onnx.fold", "graphprune.frontends.onnx.control_flow", "graphprune.frontends.onnx.untie",
                               "graphprune.frontends.onnx.load",
                               "graphprune.frontends.onnx.narrow",
                               "graphprune.frontends.fx.lowering", "graphprune.frontends.fx.aten",
                               "graphprune.frontends.fx.ops", "graphprune.frontends.fx.trace",
                               "graphprune.frontends.fx.export",
                               "graphprune.frontends.pyfile", "graphprune.channels"]),
    ("methods", ["graphprune.methods"]),
    ("emit", ["graphprune.emit"]),
    ("verify", ["graphprune.verify"]),
    ("pipeline", ["graphprune.pipeline.state", "graphprune.pipeline.base", "graphprune.pipeline.runner"]),
    ("passes", ["graphprune.passes"]),
    ("presets, frontends, report", ["graphprune.pipeline.presets", "graphprune.frontends", "graphprune.report"]),
    ("config", ["graphprune.config"]),
    ("api", ["graphprune.api"]),
    ("tools", ["graphprune.tools", "graphprune.torch"]),
    ("cli", ["graphprune.cli", "graphprune"]),
]


def modules() -> dict[str, Path]:
    out = {}
    for base, package in ((ROOT / "graphprune", "graphprune"), (ROOT / "passes", "graphprune.passes")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts and parts[-1] == "__main__":
                continue
            out[".".join([package, *parts])] = path
    return out


def layer(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer of tests/core/test_layers.py")


def imports(mods: dict[str, Path]):
    """(importer, imported project module, inside a function?) for every import outside ``TYPE_CHECKING``."""
    def visit(node, in_function, name):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from visit(child, True, name)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                for alias in child.names:
                    target = f"{child.module}.{alias.name}"
                    target = target if target in mods else child.module
                    if target in mods:
                        yield name, target, in_function
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name in mods:
                        yield name, alias.name, in_function
            else:
                yield from visit(child, in_function, name)

    for name, path in mods.items():
        yield from visit(ast.parse(path.read_text()), False, name)


def imports_torch(path: Path) -> bool:
    return bool(re.search(r"^(import torch|from torch[ .])", path.read_text(), re.M))


def imports_a_heavy_library(path: Path) -> bool:
    """torch (an optional extra) or numba (a compiler: ~0.3 s to import, needed only by the sampling kernels),
    the two a module may import inside a function so that a run which does not use them does not pay for them."""
    return imports_torch(path) or bool(re.search(r"^(import numba|from numba[ .])", path.read_text(), re.M))


def test_imports_form_no_cycle_and_go_down_the_layers():
    mods = modules()
    edges = list(imports(mods))
    g = nx.DiGraph((a, b) for a, b, _ in edges if a != b)
    assert not list(nx.simple_cycles(g)), "import cycles"
    upward = [(a, b) for a, b, _ in edges if layer(b) > layer(a)]
    assert not upward, f"imports that climb a layer: {upward}"


def test_function_level_imports_are_only_the_heavy_optional_ones():
    mods = modules()
    lazy = {(a, b) for a, b, inside in imports(mods) if inside}
    assert all(imports_a_heavy_library(mods[b]) for _, b in lazy), sorted(lazy)


def test_no_submodule_is_shadowed_by_a_name_of_the_package():
    for name in graphprune.__all__:
        assert importlib.util.find_spec(f"graphprune.{name}") is None or name == "__version__", name


def test_passes_come_from_this_checkout_and_run_only_through_the_runner():
    assert Path(graphprune.passes.__file__).resolve().parent == ROOT / "passes"
    callers = [name for name, path in modules().items()
               if re.search(r"(?<![.\w])step\(p|\.call\(state", path.read_text())
               and not name.startswith("graphprune.pipeline.")]
    assert not callers, callers
