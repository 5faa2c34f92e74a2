"""Factors: implicit's ALS on the weighted feedback, as the track candidate source `als`.

The matrix holds one value per (user, track) pair of the feedback: the confidence `alpha`
times the pair's strength (`log1p` of it with `factors.log_strength`), positive for a positive
pair and negative for a pair that skips pulled negative (implicit reads a negative value as a
dislike with that confidence). Every heard pair is in the matrix, so implicit's own
`filter_already_liked_items` removes everything a user heard, skips included.

Only users with a positive pair get candidates: the source is a history source like `similar`
and `walk`. The initial factors are drawn from `factors.seed` and the fit runs on
`factors.num_threads` threads (one by default), so a run is reproducible.

For "because you liked", `als_reasons` splits a recommendation's score between the user's
history tracks with implicit's `explain` (the item-item form of the ALS score in Hu, Koren and
Volinsky's paper, section 5).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.recommender_base import ModelFitError
from threadpoolctl import threadpool_limits

from recsys import schema as s
from recsys.config import FactorsConfig, RecommendConfig
from recsys.errors import RunError
from recsys.ids import IdMap
from recsys.stages.candidates import ALS, SEED_TRACK_ID, rank_column, score_column
from recsys.stages.feedback import POSITIVE, STRENGTH

log = logging.getLogger(__name__)

ALS_SCORE, ALS_RANK = score_column(ALS), rank_column(ALS)
SHARE = "share"
# A heard pair of zero strength stays in the matrix with this confidence, so that it is
# filtered like any heard track while it weighs (almost) nothing in the fit.
LEAST_CONFIDENCE = 1e-6
# implicit's top-k gives a filtered track this score when fewer than N tracks are left.
FILTERED = float(np.finfo(np.float32).min)
ADVICE = "raise factors.regularization or lower factors.alpha"


@dataclass(frozen=True)
class Factors:
    """A fitted ALS model with the id maps of its rows (users) and columns (tracks), and a
    confidence matrix (users x tracks): the one it was fitted on, or, when `recomputed`, other
    feedback from which the users' factors are recomputed (see `with_feedback`)."""

    model: AlternatingLeastSquares
    users: IdMap
    tracks: IdMap
    confidence: sp.csr_matrix
    recomputed: bool = False


def with_feedback(factors: Factors, feedback: pl.DataFrame, cfg: FactorsConfig) -> Factors:
    """The model with the users' factors recomputed from `feedback` (the track factors kept):
    for a what-if that changes a user's history. Tracks new to the model are left out."""
    matrix = confidence_matrix(feedback, factors.users, factors.tracks, cfg)
    return replace(factors, confidence=matrix, recomputed=True)


def confidence_values(strength: pl.Expr, cfg: FactorsConfig) -> pl.Expr:
    """The signed confidence of a pair from its strength."""
    size = strength.abs().log1p() if cfg.log_strength else strength.abs()
    size = pl.max_horizontal(cfg.alpha * size, pl.lit(LEAST_CONFIDENCE))
    return pl.when(pl.col(POSITIVE)).then(size).otherwise(-size)


def confidence_matrix(
    feedback: pl.DataFrame, users: IdMap, tracks: IdMap, cfg: FactorsConfig
) -> sp.csr_matrix:
    """users x tracks: the signed confidence of every (user, track) pair of `feedback`."""
    pairs = tracks.to_index(users.to_index(feedback, s.USER_ID, alias="u"), s.TRACK_ID,
                            alias="t").drop_nulls(["u", "t"])
    values = pairs.select(confidence_values(pl.col(STRENGTH), cfg))
    return sp.csr_matrix(
        (values.to_series().to_numpy().astype(np.float32),
         (pairs["u"].to_numpy(), pairs["t"].to_numpy())),
        shape=(len(users), len(tracks)),
    )


def fit_factors(feedback: pl.DataFrame, cfg: FactorsConfig) -> Factors | None:
    """ALS fitted on `feedback`; None when it has no positive pair (nothing to learn)."""
    if not feedback[POSITIVE].any():
        return None
    started = time.perf_counter()
    users, tracks = IdMap(feedback[s.USER_ID]), IdMap(feedback[s.TRACK_ID])
    matrix = confidence_matrix(feedback, users, tracks, cfg)
    # implicit's solver calls BLAS per user: a BLAS thread pool on top of ours only contends.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=cfg.factors, regularization=cfg.regularization, iterations=cfg.iterations,
            random_state=cfg.seed, num_threads=cfg.num_threads,
        )
        try:
            model.fit(matrix, show_progress=False)
        except ModelFitError as exc:
            raise RunError(f"factors: ALS failed ({exc}); {ADVICE}") from exc
    check_finite(model)
    log.info("factors: %s users x %s tracks, %s factors in %.1f s", f"{len(users):,}",
             f"{len(tracks):,}", cfg.factors, time.perf_counter() - started)
    return Factors(model, users, tracks, matrix)


def check_finite(model: AlternatingLeastSquares) -> None:
    """Raise when the fit left a NaN or infinite factor."""
    for name in ("user_factors", "item_factors"):
        values = getattr(model, name)
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).any(axis=1).sum())
            raise RunError(f"factors: ALS left non-finite values in {bad:,} rows of {name}; "
                           f"{ADVICE}")


def als_candidates(
    factors: Factors | None,
    users: pl.Series,
    cfg: FactorsConfig,
) -> pl.DataFrame:
    """user_id, track_id, als_score, als_rank: the `max_tracks` best unheard tracks of each of
    `users` that has a positive pair, by the dot product of its factors and theirs. What the
    users heard is read from `factors.confidence`."""
    if factors is None:
        return empty_candidates()
    matrix = factors.confidence
    rows = _history_rows(factors, users, matrix)
    if rows.size == 0:
        return empty_candidates()
    n = min(cfg.max_tracks, len(factors.tracks))
    with threadpool_limits(1, "blas"):
        ids, scores = factors.model.recommend(
            rows, matrix[rows], N=n, filter_already_liked_items=True,
            recalculate_user=factors.recomputed,
        )
    found = pl.DataFrame({
        "u": np.repeat(rows, ids.shape[1]), "t": ids.ravel(), ALS_SCORE: scores.ravel(),
    }).filter(pl.col(ALS_SCORE) > FILTERED)
    found = found.with_columns(pl.int_range(1, pl.len() + 1).over("u").alias(ALS_RANK))
    return found.select(
        factors.users.to_ids(found["u"].to_numpy()).alias(s.USER_ID),
        factors.tracks.to_ids(found["t"].to_numpy()).alias(s.TRACK_ID),
        pl.col(ALS_SCORE).cast(pl.Float64), pl.col(ALS_RANK).cast(pl.Int64),
    )


def _history_rows(factors: Factors, users: pl.Series, matrix: sp.csr_matrix) -> np.ndarray:
    """The model rows of `users` that hold a positive pair in `matrix`, sorted."""
    known = factors.users.to_index(users.unique().to_frame(s.USER_ID), s.USER_ID, alias="u")
    rows = np.sort(known["u"].drop_nulls().to_numpy().astype(np.int64))
    positives = np.asarray((matrix[rows] > 0).sum(axis=1)).ravel()
    return rows[positives > 0]


def empty_candidates() -> pl.DataFrame:
    return pl.DataFrame(schema={s.USER_ID: pl.String, s.TRACK_ID: pl.String,
                                ALS_SCORE: pl.Float64, ALS_RANK: pl.Int64})


def als_reasons(
    factors: Factors | None, targets: pl.DataFrame, cfg: RecommendConfig
) -> pl.DataFrame:
    """user_id, track_id, seed_track_id, share for each (user_id, track_id) of `targets`: the
    history tracks whose share of the ALS score (implicit's `explain`) is largest, among those
    that add to it, the first `seeds_per_reason` kept."""
    empty = pl.DataFrame(schema={s.USER_ID: pl.String, s.TRACK_ID: pl.String,
                                 SEED_TRACK_ID: pl.String, SHARE: pl.Float64})
    if factors is None or targets.height == 0:
        return empty
    pairs = factors.tracks.to_index(
        factors.users.to_index(targets, s.USER_ID, alias="u"), s.TRACK_ID, alias="t"
    ).drop_nulls(["u", "t"]).sort("u", "t")
    rows = []
    for (user,), mine in pairs.group_by("u", maintain_order=True):
        rows.extend(_explain_user(factors, int(user), mine["t"].to_numpy()))
    if not rows:
        return empty
    frame = (
        pl.DataFrame(rows, schema=["u", "t", "seed", SHARE], orient="row")
        .sort(["u", "t", SHARE, "seed"], descending=[False, False, True, False])
        .group_by("u", "t", maintain_order=True)
        .head(cfg.seeds_per_reason)
    )
    return frame.select(
        factors.users.to_ids(frame["u"].to_numpy()).alias(s.USER_ID),
        factors.tracks.to_ids(frame["t"].to_numpy()).alias(s.TRACK_ID),
        factors.tracks.to_ids(frame["seed"].to_numpy()).alias(SEED_TRACK_ID),
        pl.col(SHARE).cast(pl.Float64),
    )


def _explain_user(factors: Factors, user: int, tracks: np.ndarray) -> list[tuple]:
    """(user, track, seed, share) rows for one user's tracks."""
    history = factors.confidence.indptr[user + 1] - factors.confidence.indptr[user]
    weights, rows = None, []
    for track in tracks:
        _, parts, weights = factors.model.explain(
            user, factors.confidence, int(track), user_weights=weights, N=int(history)
        )
        adding = [(seed, part) for seed, part in parts if part > 0]
        total = sum(part for _, part in adding)
        rows.extend((user, int(track), int(seed), part / total) for seed, part in adding)
    return rows
