"""Calibration points along axis 0, as the activation runners of every frontend see them.

Points are stacked along axis 0 of every model input. An intermediate tensor usually keeps them there, one row
per point, but a model may merge the points with another axis: MobileViT's attention reads ``(4, 64, 144)`` per
point (the 2×2 positions of a patch times the batch), an exported multi-head attention ``(heads, L, d)``. Run
point by point (or chunk by chunk) and stacked, such a tensor holds ``rows`` rows per point, point after point;
keeping only the first ``n`` rows of ``n`` points (as if there were one row per point) silently dropped three
quarters of MobileViT's attention inputs. These helpers count rows per point instead.
"""

from __future__ import annotations

import numpy as np


def rows_per_point(value: np.ndarray, points: int) -> int | None:
    """Rows of axis 0 per point of a tensor computed for ``points`` points, or None when its axis 0 does not
    scale with them (a tensor of fewer rows than points, or not a multiple: not stacked point after point)."""
    if value.ndim == 0 or points <= 0:
        return None
    rows, rest = divmod(int(value.shape[0]), points)
    return rows if rows and not rest else None


def first_points(value: np.ndarray, n: int, points: int) -> np.ndarray:
    """The rows of the first ``n`` of the ``points`` points ``value`` was computed for (a last chunk padded to a
    full one). A tensor whose axis 0 does not scale with the points keeps its first ``n`` rows."""
    rows = rows_per_point(value, points)
    return value[:n * (rows or 1)]


def agrees(got: np.ndarray, alone: np.ndarray, n: int, alone_points: int, at_end: bool = False) -> bool:
    """``got``, computed for ``n`` points at once, has the rows per point and row shape of ``alone`` (computed
    for ``alone_points`` of them alone), and the rows of those points (its first ones, or its last ones
    ``at_end``) are ``alone``'s."""
    rows = rows_per_point(alone, alone_points)
    if rows is None or got.shape[0] != n * rows or got.shape[1:] != alone.shape[1:]:
        return False
    scale = max(1.0, float(np.abs(alone).max(initial=0)))
    part = got[len(got) - len(alone):] if at_end else got[:len(alone)]
    return bool(np.allclose(part, alone, rtol=1e-4, atol=1e-5 * scale))
