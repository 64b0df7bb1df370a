"""The latency table of an ONNX model, measured on this machine's onnxruntime and cached.

The model is emitted at a few widths (:data:`FRACTIONS` of every prunable group kept, counts rounded as a plan
would round them), the versions profiled kernel by kernel, taking turns run by run (:func:`graphprune.runtime.profile`:
the sessions of all five are open at once), and the per-node curves of :mod:`graphprune.methods.latency` fitted to them. The table is cached under ``$GRAPHPRUNE_CACHE``
(default ``~/.cache/graphprune``) by what it depends on: the folded model's bytes, the analysed input shapes, the
execution provider, threads, onnxruntime's version, the CPU and the rounding, so a second run of the same model on
the same machine reads it back instead of measuring.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from graphprune import io, progress, runtime
from graphprune.channels.analysis import ChannelGraph
from graphprune.channels.plan import Plan
from graphprune.frontends.onnx.load import LoadedModel
from graphprune.methods.latency import FORMAT, LatencyTable, Sample, activation_elements, attribute, fit, \
    node_features
from graphprune.methods.budget import ShapeView, keep_one_per_space, round_kept

FRACTIONS = (1.0, 0.75, 0.5, 0.375, 0.25)  # widths profiled: the budget search predicts between them
RUNS = 10


def cache_folder() -> Path:
    return Path(os.environ.get("GRAPHPRUNE_CACHE") or Path.home() / ".cache" / "graphprune") / "latency"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table_key(source: LoadedModel, threads: int, round_to: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    for part in io.serialised_parts(source.model):
        digest.update(part)
    digest.update(json.dumps(sorted((k, list(v)) for k, v in source.input_shapes.items())).encode())
    return {"format": FORMAT, "model": digest.hexdigest(), "provider": runtime.providers()[0], "threads": threads,
            "onnxruntime": ort.__version__, "cpu": cpu_name(), "cores": os.cpu_count(), "round_to": round_to,
            "fractions": list(FRACTIONS), "runs": RUNS}


def uniform_plan(cg: ChannelGraph, fraction: float, round_to: int) -> Plan:
    """Every prunable group keeps ``fraction`` of its units (its last ones go: for timing, which ones does not
    matter), rounded as selection rounds."""
    removed = {}
    for group in cg.prunable:
        gid = group.id
        count = round_kept(group.n_units, int(np.floor((1.0 - fraction) * group.n_units + 1e-9)), round_to)
        chosen = np.arange(group.n_units - count, group.n_units, dtype=np.int64)
        removed[gid] = keep_one_per_space(group, np.zeros(group.n_units), chosen)
    return Plan.from_removed(cg, {g: r for g, r in removed.items() if len(r)}, {"latency_probe": fraction})


def measured(source: LoadedModel, cg: ChannelGraph, plans: list[Plan], threads: int) -> list[Sample]:
    """Profile the model with each plan applied (the versions taking turns) and split each version's kernel time
    over the IR's nodes."""
    models = [source.model if plan.empty else source.frontend.emit(source, source.model, plan).model for plan in plans]
    feeds = runtime.seeded_inputs(source.model, source.input_shapes)
    index = {n.name: i for i, n in enumerate(cg.graph.nodes)}
    samples = []
    for plan, prof in zip(plans, runtime.profile(models, feeds, runs=RUNS, threads=threads)):
        owner = attribute(prof.op_types, cg.graph)
        node_ms = np.zeros(len(index))
        other = 0.0
        for kernel, ms in prof.kernel_ms.items():
            if owner[kernel] is None:
                other += ms
            else:
                node_ms[index[owner[kernel]]] += ms
        view = ShapeView(cg, {s: len(k) for s, k in plan.keep.items() if not s.virtual})
        feats = np.array([node_features(view, n) for n in cg.graph.nodes], np.float64).reshape(-1, 2)
        samples.append(Sample(feats, node_ms, activation_elements(view, cg.graph), other, prof.wall_ms))
    return samples


def latency_table(source: LoadedModel, cg: ChannelGraph, *, threads: int = 0, round_to: int = 1,
                  cache: bool = True) -> tuple[LatencyTable, bool]:
    """The model's latency table and whether it came from the cache."""
    key = table_key(source, threads, round_to)
    path = cache_folder() / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + ".json")
    if cache and path.is_file():
        try:
            table = LatencyTable.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            table = None  # a damaged cache entry is measured again, and overwritten
        if table is not None and table.nodes == tuple(n.name for n in cg.graph.nodes):
            return table, True
    with progress.task("measuring latency"):
        samples = measured(source, cg, [uniform_plan(cg, f, round_to) for f in FRACTIONS], threads)
    table = fit([n.name for n in cg.graph.nodes], samples, key)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        io.write_text_atomic(path, json.dumps(table.to_json()))
    return table, False

