"""The compiled core of item/item similarity: a top-k sparse product, one track at a time.

For a track i, the kernel walks its users and their tracks, accumulating into dense buffers the
co-count and the weighted dot product with every track j reached; it then scores each j and
keeps the k best in a heap. Work is the sum over users of their squared history length, with no
intermediate matrix: memory is the inputs, the outputs and a few buffers per thread.

Scores are separable, `dot(i, j) * source[i] * target[j]`, except Jaccard, which needs the two
masses: `dot / (mass[i] + mass[j] - dot)`.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def _weaker(score_a, item_a, score_b, item_b):
    """Whether neighbour a ranks below b: a lower score, or the same score and a larger index."""
    return score_a < score_b or (score_a == score_b and item_a > item_b)


@numba.njit(cache=True, nogil=True)
def _sift_down(heap_score, heap_item, size, pos):
    # A min-heap: the root is the weakest of the neighbours kept so far.
    while True:
        child = 2 * pos + 1
        if child >= size:
            return
        right = child + 1
        if right < size and _weaker(heap_score[right], heap_item[right],
                                    heap_score[child], heap_item[child]):
            child = right
        if not _weaker(heap_score[child], heap_item[child], heap_score[pos], heap_item[pos]):
            return
        heap_score[pos], heap_score[child] = heap_score[child], heap_score[pos]
        heap_item[pos], heap_item[child] = heap_item[child], heap_item[pos]
        pos = child


@numba.njit(cache=True, nogil=True)
def _push(heap_score, heap_item, size, k, score, item):
    """Offer one neighbour to a heap holding `size` of at most `k`; return the new size."""
    if size < k:
        heap_score[size] = score
        heap_item[size] = item
        size += 1
        if size == k:
            for pos in range(k // 2 - 1, -1, -1):
                _sift_down(heap_score, heap_item, k, pos)
    elif _weaker(heap_score[0], heap_item[0], score, item):
        heap_score[0] = score
        heap_item[0] = item
        _sift_down(heap_score, heap_item, k, 0)
    return size


@numba.njit(cache=True, nogil=True)
def _accumulate(i, iu_ptr, iu_idx, iu_val, ui_ptr, ui_idx, ui_val, user_weight, weighted,
                co, dot, touched):
    """Add track i's co-counts (and weighted dot products) with every track its users reached;
    return how many distinct tracks were touched (listed in `touched`)."""
    n_touched = 0
    for p in range(iu_ptr[i], iu_ptr[i + 1]):
        u = iu_idx[p]
        start, end = ui_ptr[u], ui_ptr[u + 1]
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
    user_weight, source, target, mass, weighted, jaccard, min_co, k, chunks,
):
    """The k best neighbours of every track.

    `iu_*` is the track x user CSR matrix and `ui_*` its transpose (user x track), with the
    interaction weights as values. With `weighted` False (every weight and user weight 1) the
    dot product is the co-count and only that is accumulated. Returns (neighbour, score,
    co_count), each of shape (tracks, k), best first (ties by smaller index), -1 where a track
    has fewer neighbours. Tracks are dealt round-robin into `chunks` chunks so that heavy
    tracks spread over the threads.
    """
    items = len(iu_ptr) - 1
    out_item = np.full((items, k), -1, dtype=np.int32)
    out_score = np.zeros((items, k), dtype=np.float64)
    out_co = np.zeros((items, k), dtype=np.int32)
    for chunk in numba.prange(chunks):
        co = np.zeros(items, dtype=np.int32)
        dot = np.zeros(items, dtype=np.float64)
        touched = np.empty(items, dtype=np.int32)
        heap_score = np.empty(k, dtype=np.float64)
        heap_item = np.empty(k, dtype=np.int64)
        for i in range(chunk, items, chunks):
            n_touched = _accumulate(i, iu_ptr, iu_idx, iu_val, ui_ptr, ui_idx, ui_val,
                                    user_weight, weighted, co, dot, touched)
            size = 0
            for t in range(n_touched):
                j = touched[t]
                if j == i or co[j] < min_co:
                    continue
                d = dot[j] if weighted else np.float64(co[j])
                if jaccard:
                    score = d / (mass[i] + mass[j] - d)
                else:
                    score = d * source[i] * target[j]
                # Most candidates lose to the weakest kept neighbour: reject them here, inline,
                # as a call per candidate costs more than the whole accumulation.
                if size == k and not _weaker(heap_score[0], heap_item[0], score, j):
                    continue
                size = _push(heap_score, heap_item, size, k, score, j)

            # Best first: by score descending, then by index.
            order = np.argsort(heap_item[:size])
            ranked = order[np.argsort(-heap_score[:size][order], kind="mergesort")]
            for r in range(size):
                j = heap_item[ranked[r]]
                out_item[i, r] = j
                out_score[i, r] = heap_score[ranked[r]]
                out_co[i, r] = co[j]
            for t in range(n_touched):
                co[touched[t]] = 0
                if weighted:
                    dot[touched[t]] = 0.0
    return out_item, out_score, out_co
