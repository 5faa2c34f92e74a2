"""Similarity: item/item neighbours from co-interactions of positive (user, track) pairs.

The matrix is binary: a user either has a positive interaction with a track or not. For two
tracks i and j, `co_count` is the number of users they share. The measures:

- cosine:  co(i, j) / sqrt(n_i * n_j)
- rp3beta: sum over shared users u of 1 / |u|, divided by n_i and by n_j ** beta. A user with a
  long history counts less, and a popular target track is damped by the exponent beta
  (beta = 0 is plain item-based random-walk similarity).

Pairs sharing fewer than `min_co_count` users are dropped; each track keeps its top `k`.
"""

from __future__ import annotations

import logging
import time

import numba
import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import schema as s
from recsys.config import SimilarityConfig
from recsys.ids import IdMap
from recsys.stages.feedback import POSITIVE

log = logging.getLogger(__name__)

NEIGHBOUR_ID = "neighbour_id"
SCORE = "score"
CO_COUNT = "co_count"
RANK = "rank"


def positive_matrix(feedback: pl.DataFrame) -> tuple[sp.csr_matrix, IdMap, IdMap]:
    """The binary user x track matrix of positive pairs, with its user and track id maps."""
    pos = feedback.filter(pl.col(POSITIVE)).select(s.USER_ID, s.TRACK_ID)
    users, tracks = IdMap(pos[s.USER_ID]), IdMap(pos[s.TRACK_ID])
    pos = users.to_index(pos, s.USER_ID, alias="u")
    pos = tracks.to_index(pos, s.TRACK_ID, alias="t")
    rows, cols = pos["u"].to_numpy(), pos["t"].to_numpy()
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(len(users), len(tracks)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix, users, tracks


def similar_tracks(feedback: pl.DataFrame, cfg: SimilarityConfig) -> pl.DataFrame:
    """Top-k neighbours per track: track_id, neighbour_id, score, co_count, rank (from 1)."""
    started = time.perf_counter()
    matrix, _, tracks = positive_matrix(feedback)
    src, dst, score, co = neighbours(matrix, cfg)
    frame = pl.DataFrame(
        {
            s.TRACK_ID: tracks.to_ids(src),
            NEIGHBOUR_ID: tracks.to_ids(dst),
            SCORE: score.astype(np.float64),
            CO_COUNT: co.astype(np.int64),
        }
    )
    frame = frame.sort([s.TRACK_ID, SCORE, NEIGHBOUR_ID], descending=[False, True, False])
    frame = frame.with_columns(pl.int_range(1, pl.len() + 1).over(s.TRACK_ID).alias(RANK))
    log.info(
        "similarity (%s): %s tracks, %s neighbour pairs in %.1f s",
        cfg.measure, f"{len(tracks):,}", f"{frame.height:,}", time.perf_counter() - started,
    )
    return frame


def neighbours(
    matrix: sp.csr_matrix, cfg: SimilarityConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrays (track, neighbour, score, co_count) of each track's top-k neighbours, ordered by
    track, then score descending, then neighbour index."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sum_duplicates()
    item_users = matrix.T.tocsr()
    n_items = np.diff(item_users.indptr).astype(np.float64)
    activity = np.diff(matrix.indptr).astype(np.float64)
    user_weight = 1.0 / np.maximum(activity, 1.0) if cfg.measure == "rp3beta" else np.ones_like(activity)
    measure = MEASURES.index(cfg.measure)
    dst, score, co = _top_k_kernel(
        item_users.indptr.astype(np.int64), item_users.indices.astype(np.int32),
        matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32),
        user_weight, n_items, measure, float(cfg.beta), int(cfg.min_co_count), int(cfg.k),
        numba.get_num_threads() * 8,
    )
    found = dst >= 0
    src = np.repeat(np.arange(item_users.shape[0]), cfg.k)[found.ravel()]
    return src, dst[found], score[found], co[found]


MEASURES = ("cosine", "rp3beta")


@numba.njit(cache=True, nogil=True)
def _score(measure, co, weighted, n_i, n_j, beta):
    if measure == 0:
        return co / np.sqrt(n_i * n_j)
    return weighted / n_i / n_j**beta


@numba.njit(cache=True, nogil=True)
def _sift_down(heap_score, heap_item, size, pos):
    # A min-heap on (score, -item): the root is the weakest of the kept neighbours.
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _weaker(heap_score[right], heap_item[right], heap_score[left], heap_item[left]):
            child = right
        if _weaker(heap_score[child], heap_item[child], heap_score[pos], heap_item[pos]):
            heap_score[pos], heap_score[child] = heap_score[child], heap_score[pos]
            heap_item[pos], heap_item[child] = heap_item[child], heap_item[pos]
            pos = child
        else:
            return


@numba.njit(cache=True, nogil=True)
def _weaker(score_a, item_a, score_b, item_b):
    """Whether neighbour a ranks below b: a lower score, or the same score and a larger index."""
    return score_a < score_b or (score_a == score_b and item_a > item_b)


@numba.njit(cache=True, parallel=True)
def _top_k_kernel(
    iu_ptr, iu_idx, ui_ptr, ui_idx, user_weight, n_items, measure, beta, min_co, k, chunks
):
    """For every item, accumulate co-counts over its users' items in a dense buffer, then keep
    the k best neighbours in a heap. Items are dealt round-robin into `chunks` chunks that the
    threads share, so a few heavy items do not land on one thread."""
    items = len(iu_ptr) - 1
    out_item = np.full((items, k), -1, dtype=np.int64)
    out_score = np.zeros((items, k), dtype=np.float64)
    out_co = np.zeros((items, k), dtype=np.int64)
    for chunk in numba.prange(chunks):
        co = np.zeros(items, dtype=np.int32)
        weighted = np.zeros(items, dtype=np.float64)
        touched = np.empty(items, dtype=np.int32)
        heap_score = np.empty(k, dtype=np.float64)
        heap_item = np.empty(k, dtype=np.int64)
        for i in range(chunk, items, chunks):
            n_touched = 0
            for p in range(iu_ptr[i], iu_ptr[i + 1]):
                u = iu_idx[p]
                w = user_weight[u]
                for q in range(ui_ptr[u], ui_ptr[u + 1]):
                    j = ui_idx[q]
                    if co[j] == 0:
                        touched[n_touched] = j
                        n_touched += 1
                    co[j] += 1
                    weighted[j] += w
            size = 0
            for t in range(n_touched):
                j = touched[t]
                if j != i and co[j] >= min_co:
                    s_ij = _score(measure, co[j], weighted[j], n_items[i], n_items[j], beta)
                    if size < k:
                        heap_score[size] = s_ij
                        heap_item[size] = j
                        size += 1
                        if size == k:
                            for pos in range(k // 2 - 1, -1, -1):
                                _sift_down(heap_score, heap_item, k, pos)
                    elif _weaker(heap_score[0], heap_item[0], s_ij, j):
                        heap_score[0] = s_ij
                        heap_item[0] = j
                        _sift_down(heap_score, heap_item, k, 0)
            # Best first: order the kept neighbours by score descending, then index.
            order = np.argsort(heap_item[:size])
            ranked = order[np.argsort(-heap_score[:size][order], kind="mergesort")]
            for r in range(size):
                j = heap_item[ranked[r]]
                out_item[i, r] = j
                out_score[i, r] = heap_score[ranked[r]]
                out_co[i, r] = co[j]
            for t in range(n_touched):
                co[touched[t]] = 0
                weighted[touched[t]] = 0.0
    return out_item, out_score, out_co
