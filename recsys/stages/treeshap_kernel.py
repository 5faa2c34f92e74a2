"""The compiled core of our TreeSHAP: exact path-dependent SHAP values in time linear in depth.

For one row and one leaf l of a tree, let P be the distinct features split on along the leaf's
path; for each j in P, `z_j` is the product of the cover ratios (child rows / parent rows) of
the path's edges on j, and `o_j` is 1 when the row follows every one of those edges, else 0.
The path-dependent Shapley value of a feature i in P from this leaf is (Lundberg et al., 2020,
rewritten with the Beta integral k!(d-1-k)!/d! = the integral of t^k (1-t)^(d-1-k) over [0, 1]):

    phi_i += v_l (o_i - z_i) * integral over [0, 1] of prod_{j in P, j != i} f_j(t) dt,
    f_j(t) = z_j + t (o_j - z_j).

The integrand is a polynomial of degree |P| - 1, so a Gauss-Legendre rule with ceil(D / 2)
points (D the most distinct features on any path of the tree) integrates it exactly. At those
points the products of every leaf are shared along the tree, as in Linear TreeSHAP (Yu et al.,
NeurIPS 2022): one pass down multiplies each node's product G by its edge's factor, one pass up
sums the leaves' values times G below each node (S), and each edge adds its feature's share
S(t) / f(t). An edge on a feature already split on higher up the path replaces that edge's
factor (the ratio of the two), and takes back the share the higher edge counted for the leaves
below it; the sums cancel point by point, so the rule stays exact.

Whether a row follows an edge is all the kernel decides per row: every factor and share above
depends only on the node and on three cases, precomputed per node and point (`ratio`, `share`):
0 the row left the path on this feature (here or higher up), 1 it follows the higher edge but
not this one, 2 it follows this edge and any higher one on the feature. Per row and tree the
work is a few multiply-adds per node and point: O(leaves x depth), against O(leaves x depth^2)
for the original algorithm.
"""

from __future__ import annotations

import numba
import numpy as np

MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2
# LightGBM's kZeroThreshold, a float: under missing_type Zero, |x| up to it is missing.
ZERO_THRESHOLD = float(np.float32(1e-35))
ROWS_PER_BLOCK = 64  # rows that share one pass over a tree's tables while they are in cache


@numba.njit(cache=True, nogil=True, inline="always")
def _goes_left(x, threshold, default_left, missing_type):
    """LightGBM's numerical decision: NaN is 0 unless NaN is the missing value; a missing value
    takes the default side; otherwise left when x <= threshold."""
    if np.isnan(x) and missing_type != MISSING_NAN:
        x = 0.0
    if missing_type == MISSING_ZERO and -ZERO_THRESHOLD <= x <= ZERO_THRESHOLD:
        return default_left
    if missing_type == MISSING_NAN and np.isnan(x):
        return default_left
    return x <= threshold


@numba.njit(cache=True, nogil=True)
def _explain_tree(x, start, end, nq, feature, threshold, default_left, missing_type, left,
                  right, parent, prev, value, ratio, share, goes_left, follows, case, g, s,
                  out):
    """Add one tree's SHAP values for row `x` to `out` (the tree's nodes are start..end-1 in
    preorder, so a parent comes before its children)."""
    # Down: the side the row takes at each split; whether it follows each edge and every
    # higher edge on the edge's feature; the product G at each node.
    for q in range(nq):
        g[0, q] = 1.0
    for node in range(start, end):
        k = node - start
        if k > 0:
            p = parent[node] - start
            taken = goes_left[p] == (left[parent[node]] == node)
            higher = prev[node]
            if higher < 0:
                follows[k] = taken
                case[k] = 2 if taken else 0
            else:
                was = follows[higher - start]
                follows[k] = taken and was
                case[k] = 2 if follows[k] else (1 if was else 0)
            c = case[k]
            for q in range(nq):
                g[k, q] = g[p, q] * ratio[node, c, q]
        if feature[node] >= 0:
            goes_left[k] = _goes_left(x[feature[node]], threshold[node], default_left[node],
                                      missing_type[node])

    # Up: S, the leaves' values times G summed below each node; each edge adds its share.
    for node in range(end - 1, start, -1):
        k = node - start
        if feature[node] < 0:
            for q in range(nq):
                s[k, q] = value[node] * g[k, q]
        else:
            a, b = left[node] - start, right[node] - start
            for q in range(nq):
                s[k, q] = s[a, q] + s[b, q]
        c = case[k]
        total = 0.0
        for q in range(nq):
            total += s[k, q] * share[node, c, q]
        out[feature[parent[node]]] += total


@numba.njit(cache=True, nogil=True)
def _explain_rows(x, first, last, tree_start, tree_points, feature, threshold, default_left,
                  missing_type, left, right, parent, prev, value, ratio, share, max_nodes, out):
    """Add every tree's SHAP values for rows first..last-1 of `x` to `out`, a tree at a time,
    so that a tree's tables are read from the cache for all the rows."""
    points = ratio.shape[2]
    goes_left = np.zeros(max_nodes, dtype=np.bool_)
    follows = np.zeros(max_nodes, dtype=np.bool_)
    case = np.zeros(max_nodes, dtype=np.int8)
    g = np.empty((max_nodes, points))
    s = np.empty((max_nodes, points))
    for tree in range(len(tree_start) - 1):
        start, end = tree_start[tree], tree_start[tree + 1]
        if end - start < 2:
            continue  # a single leaf: its value is all expected value
        for row in range(first, last):
            _explain_tree(x[row], start, end, tree_points[tree], feature, threshold,
                          default_left, missing_type, left, right, parent, prev, value,
                          ratio, share, goes_left, follows, case, g, s, out[row])


@numba.njit(cache=True, parallel=True)
def shap_values(x, tree_start, tree_points, feature, threshold, default_left, missing_type,
                left, right, parent, prev, value, ratio, share, max_nodes, out):
    """Add every tree's SHAP values for each row of `x` to `out` (rows x features), threads
    taking blocks of ROWS_PER_BLOCK rows."""
    n_rows = x.shape[0]
    for block in numba.prange((n_rows + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        first = block * ROWS_PER_BLOCK
        _explain_rows(x, first, min(first + ROWS_PER_BLOCK, n_rows), tree_start, tree_points,
                      feature, threshold, default_left, missing_type, left, right, parent,
                      prev, value, ratio, share, max_nodes, out)


@numba.njit(cache=True, nogil=True)
def shap_values_serial(x, tree_start, tree_points, feature, threshold, default_left,
                       missing_type, left, right, parent, prev, value, ratio, share, max_nodes,
                       out):
    """`shap_values` in the calling thread: for a list or two, starting threads costs more
    than it saves (and on a busy machine waits for a free core)."""
    _explain_rows(x, 0, x.shape[0], tree_start, tree_points, feature, threshold, default_left,
                  missing_type, left, right, parent, prev, value, ratio, share, max_nodes, out)
