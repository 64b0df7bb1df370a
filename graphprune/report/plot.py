"""A PNG of a prune report: per-layer output channels and parameters before / after (matplotlib, Agg)."""

from __future__ import annotations

import io as _io
from pathlib import Path

from graphprune.io import check_output, write_bytes_atomic
from graphprune.report.data import PruneReport


def write_plot(report: PruneReport, path, input_path=None):
    """A PNG of per-layer output channels before / after (and parameters, as a second panel), matplotlib Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(report.layers)
    names = [r["name"] for r in rows] or ["(no weighted layers)"]
    y = range(len(names))
    height = max(3.0, 0.28 * len(names) + 1.5)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, height), sharey=True)
    before = [r["out"]["before"] for r in rows] or [0]
    after = [r["out"]["after"] for r in rows] or [0]
    ax1.barh([i - 0.2 for i in y], before, height=0.4, color="#bbbbbb", label="before")
    ax1.barh([i + 0.2 for i in y], after, height=0.4, color="#4e79a7", label="after")
    ax1.set_yticks(list(y), names, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("output channels")
    ax1.legend(loc="lower right")
    pb = [r["params"]["before"] for r in rows] or [0]
    pa = [r["params"]["after"] if r["params"].get("nonzero_after") is None else r["params"]["nonzero_after"]
          for r in rows] or [0]
    ax2.barh([i - 0.2 for i in y], pb, height=0.4, color="#bbbbbb", label="before")
    ax2.barh([i + 0.2 for i in y], pa, height=0.4, color="#f28e2b", label="after (non-zero)")
    ax2.set_xlabel("parameters")
    ax2.legend(loc="lower right")
    pr, mr = report.before.ratio(report.after)
    fig.suptitle(f"graphprune {report.method}: params {pr:.1%}, MACs {mr:.1%} of the original")
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue()) if input_path is None else _write(path, buf.getvalue(), input_path)


def _write(path, data: bytes, input_path):
    check_output(Path(path), input_path)
    return write_bytes_atomic(Path(path), data)
