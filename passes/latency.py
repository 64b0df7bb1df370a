"""Measure the model's latency table (per-node cost curves on this machine's runtime) for ``--budget latency``.

The frontend profiles the model at a few widths and fits the curves (:mod:`graphprune.methods.latency`), or reads
them from its cache; selection then spends the budget where the time falls.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.pipeline.state import PruneState

from graphprune.pipeline.base import Pass, PassResult


@dataclass(frozen=True, kw_only=True)
class MeasureLatency(Pass):
    """``threads``: onnxruntime intra-op threads to measure with (0: its default); ``round_to``: the rounding the
    plan will have, so the widths profiled are ones a plan can reach; ``cache``: read and write the table cache."""

    threads: int = 0
    round_to: int = 1
    cache: bool = True
    requires = ("channels",)
    provides = ("latency",)
    runs_on = frozenset({"onnx"})
    refusal = ("--budget latency measures layers in onnxruntime, on ONNX models; export the module to ONNX, or use "
               "--budget params / macs")

    def call(self, state: PruneState) -> PassResult:
        table, cached = state.frontend.latency_table(state.source, state.channels, threads=self.threads,
                                                     round_to=self.round_to, cache=self.cache)
        full = table.predict(state.channels)
        stats = {"predicted_ms": full, "fit_error": table.fit_error, "cached": cached, "threads": self.threads,
                 "provider": table.key.get("provider")}
        if self.threads != 1:  # measured in benchmarks/latency_budget.py: -42 % to +50 % with 2 threads
            stats["notes"] = [f"the latency model is measured reliable with one thread; with {self.threads or 'all'} "
                              "threads its prediction was off by up to 50 % (--latency-threads 1)"]
        return PassResult(state.with_(latency=table), modified=False, stats=stats)
