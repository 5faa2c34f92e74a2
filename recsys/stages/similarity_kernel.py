"""The compiled core of item/item similarity: a top-k sparse product over one half of the pairs.

Co-counts are symmetric, so each pair of tracks is computed once. For a track i, the kernel walks
its users and, in each user's (sorted) history, only the tracks j after i, accumulating into
dense buffers the co-count and the weighted dot product with every j reached. Each pair (i, j)
then offers j to i's neighbours and i to j's, both scored from the same dot product. Work is
half the sum over users of their squared history length, with no intermediate matrix.

Each thread keeps a top-k heap per track for the pairs it computed (a track's neighbours come
from several threads, as the thread that computes a pair is the one holding its lower track);
the heaps are merged at the end. Most offers lose to the weakest neighbour a heap holds: that
score is kept per track in a small dense array, so a losing offer costs one comparison. Memory:
the inputs, threads x tracks x k heap entries, and a few dense buffers per thread.

Scores are `dot(i, j) * source[i] * target[j]`, except Jaccard, which needs the two masses:
`dot / (mass[i] + mass[j] - dot)`.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def _weaker(score_a, item_a, score_b, item_b):
    """Whether neighbour a ranks below b: a lower score, or the same score and a larger index."""
    return score_a < score_b or (score_a == score_b and item_a > item_b)


@numba.njit(cache=True, nogil=True)
def _compact(b_score, b_item, b_co, b_size, floor, slot, k, capacity):
    """Keep the k best entries of a full buffer (by score, then smaller index) and set its
    floor to the weakest score kept: later offers below it cannot enter the top k."""
    base = slot * capacity
    scores = b_score[base:base + capacity]
    kth = np.partition(scores, capacity - k)[capacity - k]  # the k-th largest score
    keep = np.empty(capacity, dtype=np.int64)
    n = 0
    for e in range(capacity):
        if scores[e] > kth:
            keep[n] = e
            n += 1
    ties = np.empty(capacity - n, dtype=np.int64)
    n_ties = 0
    for e in range(capacity):
        if scores[e] == kth:
            ties[n_ties] = e
            n_ties += 1
    tie_items = b_item[base:base + capacity][ties[:n_ties]]
    for e in ties[:n_ties][np.argsort(tie_items, kind="mergesort")][:k - n]:
        keep[n] = e
        n += 1
    kept = np.sort(keep[:n])
    for r in range(n):
        e = base + kept[r]
        b_score[base + r] = b_score[e]
        b_item[base + r] = b_item[e]
        b_co[base + r] = b_co[e]
    b_size[slot] = n
    floor[slot] = kth


@numba.njit(cache=True, nogil=True, inline="always")
def _offer(b_score, b_item, b_co, b_size, floor, slot, k, capacity, score, item, co):
    """Offer a neighbour to the buffer of `slot` (one worker's candidates for one track)."""
    if score < floor[slot]:
        return
    if b_size[slot] == capacity:
        _compact(b_score, b_item, b_co, b_size, floor, slot, k, capacity)
        if score < floor[slot]:
            return
    e = slot * capacity + b_size[slot]
    b_score[e] = score
    b_item[e] = item
    b_co[e] = co
    b_size[slot] += 1


@numba.njit(cache=True)
def _positions(iu_ptr, ui_ptr, ui_idx):
    """For each entry (track i, user u) of the track x user matrix, the position of i in u's
    row of the user x track matrix (both with sorted indices)."""
    fill = iu_ptr[:-1].copy()
    pos = np.empty(iu_ptr[-1], dtype=np.int64)
    for u in range(len(ui_ptr) - 1):
        for q in range(ui_ptr[u], ui_ptr[u + 1]):
            i = ui_idx[q]
            pos[fill[i]] = q
            fill[i] += 1
    return pos


@numba.njit(cache=True, nogil=True)
def _accumulate(i, iu_ptr, iu_idx, iu_val, pos, ui_ptr, ui_idx, ui_val, user_weight,
                weighted, co, dot, touched):
    """Add track i's co-counts (and weighted dot products) with every later track its users
    reached; return how many distinct tracks were touched (listed in `touched`)."""
    n_touched = 0
    for p in range(iu_ptr[i], iu_ptr[i + 1]):
        u = iu_idx[p]
        start, end = pos[p] + 1, ui_ptr[u + 1]
        if weighted:
            w = iu_val[p] * user_weight[u]
            for q in range(start, end):
                j = ui_idx[q]
                if co[j] == 0:
                    touched[n_touched] = j
                    n_touched += 1
                co[j] += 1
                dot[j] += w * ui_val[q]
        else:
            for q in range(start, end):
                j = ui_idx[q]
                if co[j] == 0:
                    touched[n_touched] = j
                    n_touched += 1
                co[j] += 1
    return n_touched


@numba.njit(cache=True, parallel=True)
def top_k_neighbours(
    iu_ptr, iu_idx, iu_val, ui_ptr, ui_idx, ui_val,
    user_weight, source, target, mass, label, weighted, jaccard, min_co, k, threads,
):
    """The k best neighbours of every track.

    `iu_*` is the track x user CSR matrix and `ui_*` its transpose (user x track), both with
    sorted indices and the interaction weights as values. With `weighted` False (every weight
    and user weight 1) the dot product is the co-count and only that is accumulated. Returns
    (neighbour, score, co_count), each of shape (tracks, k), best first (ties by smaller
    index), -1 where a track has fewer neighbours. Tracks are dealt round-robin to `threads`
    workers, each with its own heaps.

    `label` gives each row's track index in the caller's numbering: ties are broken, and the
    output rows and neighbours numbered, by it. The caller numbers the tracks here in a
    random order, so that the offers a heap receives come in no particular order of score;
    in an order of rising scores (popular tracks first, under a measure that favours the
    rare), nearly every offer would replace the weakest neighbour.
    """
    items = len(iu_ptr) - 1
    pos = _positions(iu_ptr, ui_ptr, ui_idx)
    capacity = 2 * k
    b_score = np.empty(threads * items * capacity, dtype=np.float64)
    b_item = np.empty(threads * items * capacity, dtype=np.int32)
    b_co = np.empty(threads * items * capacity, dtype=np.int32)
    b_size = np.zeros(threads * items, dtype=np.int64)
    floor = np.full(threads * items, -np.inf)

    for worker in numba.prange(threads):
        co = np.zeros(items, dtype=np.int32)
        dot = np.zeros(items, dtype=np.float64)
        touched = np.empty(items, dtype=np.int32)
        own = worker * items
        for i in range(worker, items, threads):
            n_touched = _accumulate(i, iu_ptr, iu_idx, iu_val, pos, ui_ptr, ui_idx, ui_val,
                                    user_weight, weighted, co, dot, touched)
            for t in range(n_touched):
                j = touched[t]
                c = co[j]
                co[j] = 0
                d = dot[j] if weighted else np.float64(c)
                if weighted:
                    dot[j] = 0.0
                if c < min_co:
                    continue
                if jaccard:
                    score_ij = d / (mass[i] + mass[j] - d)
                    score_ji = score_ij
                else:
                    score_ij = d * source[i] * target[j]
                    score_ji = d * source[j] * target[i]
                _offer(b_score, b_item, b_co, b_size, floor, own + i, k, capacity, score_ij,
                       label[j], c)
                _offer(b_score, b_item, b_co, b_size, floor, own + j, k, capacity, score_ji,
                       label[i], c)

    return _merge(b_score, b_item, b_co, b_size, label, k, capacity, threads)


@numba.njit(cache=True, parallel=True)
def _merge(b_score, b_item, b_co, b_size, label, k, capacity, threads):
    """Each track's k best neighbours over the buffers of every worker, best first, in the
    rows and numbering of `label`."""
    items = len(label)
    out_item = np.full((items, k), -1, dtype=np.int32)
    out_score = np.zeros((items, k), dtype=np.float64)
    out_co = np.zeros((items, k), dtype=np.int32)
    for i in numba.prange(items):
        total = 0
        for w in range(threads):
            total += b_size[w * items + i]
        score = np.empty(total, dtype=np.float64)
        item = np.empty(total, dtype=np.int32)
        co = np.empty(total, dtype=np.int32)
        n = 0
        for w in range(threads):
            slot = w * items + i
            for e in range(b_size[slot]):
                score[n] = b_score[slot * capacity + e]
                item[n] = b_item[slot * capacity + e]
                co[n] = b_co[slot * capacity + e]
                n += 1
        # By score descending, then by index: sort by index, then stably by score.
        order = np.argsort(item)
        ranked = order[np.argsort(-score[order], kind="mergesort")]
        row = label[i]
        for r in range(min(k, total)):
            e = ranked[r]
            out_item[row, r] = item[e]
            out_score[row, r] = score[e]
            out_co[row, r] = co[e]
    return out_item, out_score, out_co
