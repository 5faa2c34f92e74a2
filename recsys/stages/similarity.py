"""Similarity: item/item neighbours from co-interactions of positive (user, track) pairs.

Each positive (user, track) pair has a weight d: 1, or with a half-life, 2 ** (-age / half-life)
by the time since the pair's last event. For two tracks i and j, `co_count` is the number of
users they share and dot(i, j) the sum over shared users of d(u, i) * d(u, j). With m_i the sum
of a track's weights (its popularity), q_i the root of the sum of their squares, U the number
of users and |u| the length of a user's history, the measures (config `similarity.measure`):

- cooccurrence: dot(i, j), the raw co-count when weights are 1
- cosine:       dot(i, j) / (q_i * q_j)
- jaccard:      dot(i, j) / (m_i + m_j - dot(i, j))
- lift:         dot(i, j) * U / (m_i * m_j)
- bm25:         the sum over shared users of idf(u) d(u, i) d(u, j), with idf(u) =
                log(1 + tracks / |u|) so heavy users count less, times the BM25 length factor
                (k1 + 1) / (k1 * (1 - b + b * m / mean m) + 1) of both tracks, so very popular
                tracks count less
- rp3beta:      the sum over shared users of d(u, i) d(u, j) / |u|, divided by m_i and by
                m_j ** beta: beta = 0 is a plain item-based random walk, larger beta damps
                popular targets harder

Pairs sharing fewer than `min_co_count` users are dropped; each track keeps its top `k`. A user
contributes at most `max_user_tracks` interactions, their most recent.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

import numba
import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import schema as s
from recsys.config import SimilarityConfig
from recsys.ids import IdMap
from recsys.stages.feedback import LAST_TS, POSITIVE
from recsys.stages.similarity_kernel import column_sums, relabelled, top_k_neighbours

log = logging.getLogger(__name__)

NEIGHBOUR_ID = "neighbour_id"
SCORE = "score"
CO_COUNT = "co_count"
RANK = "rank"
MEASURES = ("cooccurrence", "cosine", "jaccard", "lift", "bm25", "rp3beta")
DAY_US = 86_400 * 1_000_000


def positive_matrix(
    feedback: pl.DataFrame, cfg: SimilarityConfig, *, moment: datetime | None = None
) -> tuple[sp.csr_matrix, IdMap, IdMap]:
    """The user x track matrix of positive pairs (weights 1, or decayed by age at `moment`),
    each user capped to their most recent pairs; with its user and track id maps."""
    pos = feedback.filter(pl.col(POSITIVE)).select(s.USER_ID, s.TRACK_ID, LAST_TS)
    if cfg.max_user_tracks is not None:
        pos = (
            pos.sort([s.USER_ID, LAST_TS, s.TRACK_ID], descending=[False, True, False])
            .group_by(s.USER_ID, maintain_order=True)
            .head(cfg.max_user_tracks)
        )
    weight = pl.lit(1.0)
    if cfg.half_life_days is not None and pos.height:
        moment = moment or pos[LAST_TS].max()
        age = (pl.lit(moment, dtype=s.UTC_DATETIME) - pl.col(LAST_TS)).dt.total_microseconds()
        weight = pl.lit(2.0).pow(-age.cast(pl.Float64) / DAY_US / cfg.half_life_days)
    pos = pos.with_columns(weight.alias("weight"))

    users, tracks = IdMap(pos[s.USER_ID]), IdMap(pos[s.TRACK_ID])
    pos = tracks.to_index(users.to_index(pos, s.USER_ID, alias="u"), s.TRACK_ID, alias="t")
    matrix = sp.csr_matrix(
        (pos["weight"].to_numpy(), (pos["u"].to_numpy(), pos["t"].to_numpy())),
        shape=(len(users), len(tracks)),
    )
    return matrix, users, tracks


def similar_tracks(
    feedback: pl.DataFrame, cfg: SimilarityConfig, *, moment: datetime | None = None
) -> pl.DataFrame:
    """Top-k neighbours per track: track_id, neighbour_id, score, co_count, rank (from 1)."""
    started = time.perf_counter()
    matrix, _, tracks = positive_matrix(feedback, cfg, moment=moment)
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
    user_items = sp.csr_matrix(matrix)
    user_items.sum_duplicates()
    user_weight, source, target, mass = _factors(user_items, cfg)
    weighted = bool((user_items.data != 1).any() or (user_weight != 1).any())

    # The kernel numbers the tracks in a fixed random order (see `top_k_neighbours`); its
    # output comes back in ours.
    label = np.random.default_rng(0).permutation(user_items.shape[1])
    label_of = np.empty_like(label)
    label_of[label] = np.arange(len(label))
    *csr, pos = relabelled(user_items.indptr.astype(np.int64),
                           user_items.indices.astype(np.int32),
                           user_items.data.astype(np.float32), label_of)
    dst, score, co = top_k_neighbours(
        *csr, pos, user_weight, source[label], target[label], mass[label],
        label.astype(np.int64), weighted, cfg.measure == "jaccard", int(cfg.min_co_count),
        int(cfg.k), numba.get_num_threads(),
    )
    found = dst >= 0
    src = np.broadcast_to(np.arange(user_items.shape[1])[:, None], dst.shape)[found]
    return src, dst[found], score[found], co[found]


def _factors(user_items: sp.csr_matrix, cfg: SimilarityConfig):
    """Per-user weights and per-track source and target factors of the chosen measure."""
    n_users, n_items = user_items.shape
    mass, squares = column_sums(user_items.indices, user_items.data, n_items)
    safe_mass = np.maximum(mass, 1e-12)
    history = np.maximum(np.diff(user_items.indptr), 1).astype(np.float64)
    ones_u, ones_i = np.ones(n_users), np.ones(n_items)
    if cfg.measure == "cosine":
        norm = np.sqrt(np.maximum(squares, 1e-24))
        return ones_u, 1 / norm, 1 / norm, mass
    if cfg.measure == "lift":
        return ones_u, n_users / safe_mass, 1 / safe_mass, mass
    if cfg.measure == "bm25":
        idf = np.log1p(n_items / history)
        length = cfg.bm25_k1 * (1 - cfg.bm25_b + cfg.bm25_b * mass / max(mass.mean(), 1e-12)) + 1
        factor = (cfg.bm25_k1 + 1) / length
        return idf, factor, factor, mass
    if cfg.measure == "rp3beta":
        return 1 / history, 1 / safe_mass, safe_mass ** -cfg.beta, mass
    return ones_u, ones_i, ones_i, mass
