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
BLOCK_ROWS = 2048


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
    """Arrays (track, neighbour, score, co_count) of each track's top-k neighbours."""
    item_users = matrix.T.tocsr()
    n_items = np.asarray(matrix.sum(axis=0)).ravel()
    weighted = matrix
    if cfg.measure == "rp3beta":
        activity = np.asarray(matrix.sum(axis=1)).ravel()
        weighted = sp.diags(1.0 / np.maximum(activity, 1.0)).dot(matrix).tocsr()

    parts = []
    for start in range(0, item_users.shape[0], BLOCK_ROWS):
        block = item_users[start : start + BLOCK_ROWS]
        co = (block @ matrix).tocsr()
        raw = (block @ weighted).tocsr() if weighted is not matrix else co
        parts.append(_block_top_k(co, raw, start, n_items, cfg))
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0), empty
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))  # type: ignore[return-value]


def _block_top_k(
    co: sp.csr_matrix, raw: sp.csr_matrix, start: int, n_items: np.ndarray, cfg: SimilarityConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Both products share one sparsity pattern; their entries are aligned after sorting.
    raw.sort_indices()
    co.sort_indices()
    rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr)) + start
    cols = co.indices
    counts = co.data
    values = raw.data.astype(np.float64)
    if cfg.measure == "cosine":
        scores = counts / np.sqrt(n_items[rows] * n_items[cols])
    else:
        scores = values / n_items[rows] / np.power(n_items[cols], cfg.beta)

    keep = (rows != cols) & (counts >= cfg.min_co_count)
    rows, cols, counts, scores = rows[keep], cols[keep], counts[keep], scores[keep]

    # Top k per row: order by row, then by score descending, then by column for stable ties.
    order = np.lexsort((cols, -scores, rows))
    rows, cols, counts, scores = rows[order], cols[order], counts[order], scores[order]
    first = np.searchsorted(rows, rows, side="left")
    top = (np.arange(len(rows)) - first) < cfg.k
    return rows[top], cols[top], scores[top], counts[top]
