"""How counts and parameters are written in every view."""

from __future__ import annotations

from typing import Any


def fmt_count(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def fmt_bytes(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def fmt_param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
