"""PFP's max-product, compiled: per input channel, ``max over rows r, filters f and the channel's columns d of
x_{r,d} · (a_{r,f} · b_{f,d})``, exactly, in float32, without the (rows × filters × columns) tensor.

Why compiled: the bound that skips most products is a decision per (row, column) pair, with a short loop over the
column's largest weights behind it. In numpy each step is a whole-array pass with gathered temporaries (profiled on
resnet50 at 64 px: 8.6 s in these passes against 2.0 s for onnxruntime's forwards); one loop over the pairs reads
each input once and stops where the bound says so. numba compiles it on first use and caches the machine code
on disk, so a later process starts at once. Layers with few filters per group (depthwise) skip the bound and take
every product (:func:`direct_best`), still one pass per row with no (rows × groups × filters × columns)
temporaries: numpy's definition made five of them (efficientnet_b0: 2.0 s of its 5.2 s).

The numbers are the definition's: every product is ``x · (a · b)`` with float32 operands, as
:func:`graphprune.methods.sensitivity.channel_sensitivity_direct` computes it, a bound is the same expression
of larger factors (so it bounds after rounding too), and a max does not depend on the order it is taken in.
No fast-math flag is set (one would let the compiler re-associate the products).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def top_of_row(row, idx, val):  # pragma: no cover - compiled
    """The ``len(idx)`` largest entries of ``row`` into ``idx`` / ``val`` (largest first, ``val`` zeroed by the
    caller); returns the largest entry outside them. One pass, each entry above the smallest kept one inserted."""
    k_top = len(idx)
    rest = row.dtype.type(0)
    for f in range(len(row)):
        v = row[f]
        if v <= val[k_top - 1]:
            if v > rest:
                rest = v
            continue
        if val[k_top - 1] > rest:
            rest = val[k_top - 1]
        j = k_top - 1
        while j > 0 and val[j - 1] < v:
            val[j] = val[j - 1]
            idx[j] = idx[j - 1]
            j -= 1
        val[j] = v
        idx[j] = f
    return rest


@njit(cache=True, nogil=True)
def row_tops(a, k_top):  # pragma: no cover - compiled
    """Per row of ``a`` (R, F) its ``k_top`` largest entries (filters, values; largest first) and the largest
    entry outside them."""
    n_rows, n_filters = a.shape
    k_top = min(k_top, n_filters)
    idx = np.zeros((n_rows, k_top), np.int64)
    val = np.zeros((n_rows, k_top), a.dtype)
    rest = np.zeros(n_rows, a.dtype)
    for r in range(n_rows):
        rest[r] = top_of_row(a[r], idx[r], val[r])
    return idx, val, rest


@njit(cache=True, nogil=True)
def raise_best(rows, gi, a, amax, top, values, rest, bt, kappa, best):  # pragma: no cover - compiled
    """Raise ``best`` (C channels of group ``gi``) to the max over rows and columns of
    ``rows[r, gi, d] · max_f a[r, f] · bt[d, f]``.

    ``rows`` (R, G, D) non-negative inputs; ``a`` (R, F) this sign's ``1 / z`` of group ``gi`` and ``amax`` its
    row maxima; ``bt`` (D, F) this sign's non-negative weight of the group; per column its ``K`` largest entries
    (``top`` (K, D) their filters, ``values`` (K, D) largest first) and ``rest`` (D) the largest entry outside
    them. First every pair gets the product of its column's largest weight (a good threshold early). Then each
    column starts from its channel's best, and a pair whose bound ``x · (max_f a) · b`` beats it walks down the
    column's largest weights, takes the products of its row's ``K`` largest ``a`` (found when a row first needs
    them), and only when even the bound past both (``x · a⁽ᴷ⁺¹⁾ · b⁽ᴷ⁺¹⁾``) beats it takes every filter.

    Loops run over columns innermost, with one running max per column (a per-channel one made the pass four
    times slower, measured): a column does not see a sibling's raise during the pass, which skips a little less
    and changes no value."""
    n_rows, n_cols = rows.shape[0], rows.shape[2]
    k_top, n_filters = top.shape[0], bt.shape[1]
    col = np.zeros(n_cols, best.dtype)
    first_top, first_value = top[0], values[0]
    for r in range(n_rows):
        x_r, a_r = rows[r, gi], a[r]
        for d in range(n_cols):
            col[d] = max(col[d], x_r[d] * (a_r[first_top[d]] * first_value[d]))
    for d in range(n_cols):
        c = d // kappa
        best[c] = max(best[c], col[d])
    for d in range(n_cols):
        col[d] = best[d // kappa]
    row_idx = np.zeros(k_top, np.int64)
    row_val = np.zeros(k_top, a.dtype)
    for r in range(n_rows):
        am = amax[r]
        if am == 0:
            continue
        x_r, a_r = rows[r, gi], a[r]
        row_rest = np.float32(-1.0)  # the row's tops are found when a pair first needs them
        for d in range(n_cols):
            x = x_r[d]
            thr = col[d]
            if x * (am * first_value[d]) <= thr:
                continue
            done = False
            for k in range(1, k_top):
                b = values[k, d]
                if x * (am * b) <= thr:
                    done = True
                    break
                thr = max(thr, x * (a_r[top[k, d]] * b))
            if not done:
                if row_rest < 0:
                    row_val[:] = 0
                    row_rest = top_of_row(a_r, row_idx, row_val)
                for k in range(k_top):
                    thr = max(thr, x * (row_val[k] * bt[d, row_idx[k]]))
                if x * (row_rest * rest[d]) > thr:
                    for f in range(n_filters):
                        thr = max(thr, x * (a_r[f] * bt[d, f]))
            col[d] = thr
    for d in range(n_cols):
        c = d // kappa
        best[c] = max(best[c], col[d])


@njit(cache=True, nogil=True)
def direct_best(rows, w_pos, w_neg, eps, tiny, best):  # pragma: no cover - compiled
    """Raise ``best`` (G, D) to ``max over rows, signs and filters of x · (b / z)``: the definition, for layers
    with few filters per group (depthwise), where bounding saves nothing. ``rows`` (R, G, D) signed: each row is
    taken as its two non-negative parts ``max(±x, 0)``, as :func:`graphprune.methods.sensitivity.split_signs`
    makes them (a part that is all zero contributes nothing, so none is skipped wrongly); ``w_pos`` / ``w_neg``
    (G, F, D): ``max(W, 0)`` and ``max(−W, 0)``. ``z`` of a part is its product with each sign of the weight; a
    ``z`` at or below ``eps`` times the largest of its part (over groups and filters), or below ``tiny``, gives
    nothing, as :func:`graphprune.methods.sensitivity.inverse` rules. One pass per part computes its ``z`` into a
    small buffer, a second takes the products: no (rows × groups × filters × D) tensor."""
    n_rows, n_groups, n_cols = rows.shape
    n_filters = w_pos.shape[1]
    zp = np.empty((n_groups, n_filters), rows.dtype)  # z in the rows' dtype, 1 / z then in float32, as numpy does
    zn = np.empty((n_groups, n_filters), rows.dtype)
    x = np.empty((n_groups, n_cols), rows.dtype)
    zero = rows.dtype.type(0)
    for r in range(n_rows):
        for sign in (rows.dtype.type(1), rows.dtype.type(-1)):
            live = False
            for g in range(n_groups):
                for d in range(n_cols):
                    v = sign * rows[r, g, d]
                    x[g, d] = v if v > 0 else zero
                    live = live or v > 0
            if not live:
                continue
            top_p, top_n = zero, zero
            for g in range(n_groups):
                for f in range(n_filters):
                    sp, sn = zero, zero
                    for d in range(n_cols):
                        sp += x[g, d] * w_pos[g, f, d]
                        sn += x[g, d] * w_neg[g, f, d]
                    zp[g, f], zn[g, f] = sp, sn
                    top_p, top_n = max(top_p, sp), max(top_n, sn)
            for g in range(n_groups):
                for f in range(n_filters):
                    p, n = zp[g, f], zn[g, f]
                    ap = np.float32(1 / p) if p > eps * top_p and p > tiny else np.float32(0.0)
                    an = np.float32(1 / n) if n > eps * top_n and n > tiny else np.float32(0.0)
                    for d in range(n_cols):  # one of the two weights is 0: the sum is the other's term exactly
                        v = (w_pos[g, f, d] * ap + w_neg[g, f, d] * an) * x[g, d]
                        best[g, d] = max(best[g, d], v)
