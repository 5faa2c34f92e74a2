"""The ALS candidate source against implicit's own recommend, on a tiny matrix."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from recsys.config import FactorsConfig, FeedbackConfig, RecommendConfig
from recsys.errors import RunError
from recsys.stages.factors import (
    als_candidates,
    als_reasons,
    check_finite,
    fit_factors,
    with_feedback,
)
from recsys.stages.feedback import feedback

from helpers import events

USERS = [f"u{i}" for i in range(8)]
TRACKS = [f"t{j}" for j in range(9)]
CFG = FactorsConfig(factors=3, regularization=0.1, alpha=2.0, iterations=10, max_tracks=4)


def _plays() -> np.ndarray:
    """plays[u, t]: two taste groups (tracks 0-4, 4-8) sharing track 4, a few crossings."""
    rng = np.random.default_rng(3)
    plays = np.zeros((len(USERS), len(TRACKS)), dtype=int)
    for u in range(len(USERS)):
        group = range(0, 5) if u < 4 else range(4, 9)
        for t in rng.choice(list(group), 3, replace=False):
            plays[u, t] = rng.integers(1, 6)
    plays[0, 7] = plays[5, 1] = 1
    return plays


def _feedback(plays: np.ndarray) -> pl.DataFrame:
    rows = [(USERS[u], TRACKS[t], "play", 1 + k)
            for u, t in zip(*np.nonzero(plays)) for k in range(plays[u, t])]
    return feedback(events(rows), FeedbackConfig())


def test_the_source_returns_implicits_own_recommendations():
    plays = _plays()
    found = als_candidates(fit_factors(_feedback(plays), CFG), pl.Series(USERS), CFG)

    # The reference: implicit fitted on the confidences worked out here, alpha * log(1 + plays)
    # (a play weighs 1 and nothing else happened), rows and columns in id order.
    matrix = sp.csr_matrix((CFG.alpha * np.log1p(plays)).astype(np.float32))
    model = AlternatingLeastSquares(factors=3, regularization=0.1, iterations=10,
                                    random_state=0, num_threads=1)
    model.fit(matrix, show_progress=False)
    for u, user in enumerate(USERS):
        ids, scores = model.recommend(u, matrix[u], N=4, filter_already_liked_items=True)
        mine = found.filter(pl.col("user_id") == user).sort("als_rank")
        assert mine["track_id"].to_list() == [TRACKS[i] for i in ids]
        assert np.allclose(mine["als_score"].to_numpy(), scores, atol=1e-6)
        assert mine["als_rank"].to_list() == [1, 2, 3, 4]
        assert not set(mine["track_id"]) & {TRACKS[t] for t in np.flatnonzero(plays[u])}


def test_skipped_tracks_are_heard_and_users_without_positives_get_nothing():
    plays = _plays()
    extra = [("u1", "t8", "skip", 20), ("skipper", "t1", "skip", 20)]
    fb = feedback(pl.concat([events([(USERS[u], TRACKS[t], "play", 1)
                                     for u, t in zip(*np.nonzero(plays))]), events(extra)]),
                  FeedbackConfig())
    cfg = CFG.model_copy(update={"max_tracks": 9})
    found = als_candidates(fit_factors(fb, cfg), pl.Series(["u1", "skipper", "stranger"]), cfg)
    assert set(found["user_id"]) == {"u1"}
    heard = set(fb.filter(pl.col("user_id") == "u1")["track_id"])
    assert "t8" in heard and not heard & set(found["track_id"])
    assert found.height == len(TRACKS) - len(heard)


def test_the_fit_is_seeded_and_finite():
    fb = _feedback(_plays())
    first, second = fit_factors(fb, CFG), fit_factors(fb, CFG)
    assert np.array_equal(first.model.user_factors, second.model.user_factors)
    assert np.array_equal(first.model.item_factors, second.model.item_factors)
    other = fit_factors(fb, CFG.model_copy(update={"seed": 1}))
    assert not np.array_equal(first.model.item_factors, other.model.item_factors)

    broken = AlternatingLeastSquares(factors=2)
    broken.user_factors = np.array([[0.1, math.nan]], dtype=np.float32)
    broken.item_factors = np.ones((1, 2), dtype=np.float32)
    with pytest.raises(RunError, match="1 rows of user_factors.*factors.regularization"):
        check_finite(broken)


def test_a_single_history_track_is_the_whole_reason():
    plays = _plays()
    plays[2] = 0
    plays[2, 3] = 2
    factors = fit_factors(_feedback(plays), CFG)
    found = als_candidates(factors, pl.Series(["u2", "u0"]), CFG)
    reasons = als_reasons(factors, found.select("user_id", "track_id"),
                          RecommendConfig(seeds_per_reason=2))
    mine = reasons.filter(pl.col("user_id") == "u2")
    # Every ALS score of u2 comes from t3 alone: where it adds, it is all of the reason.
    assert mine.height > 0
    assert set(mine["seed_track_id"]) == {"t3"} and (mine["share"] == 1.0).all()
    theirs = reasons.filter(pl.col("user_id") == "u0")
    assert theirs["track_id"].n_unique() > 1
    assert theirs.group_by("track_id").agg(pl.len())["len"].max() <= 2
    history = set(TRACKS[t] for t in np.flatnonzero(plays[0]))
    assert set(theirs["seed_track_id"]) <= history
    assert ((theirs["share"] > 0) & (theirs["share"] <= 1)).all()


def test_a_changed_history_recomputes_only_the_users_factors():
    fb = _feedback(_plays())
    factors = fit_factors(fb, CFG)
    # u0 forgets everything but t0: implicit's recalculate_user on that row is the reference.
    changed = fb.with_columns(
        pl.when((pl.col("user_id") == "u0") & (pl.col("track_id") != "t0"))
        .then(False).otherwise(pl.col("positive")).alias("positive")
    )
    recomputed = with_feedback(factors, changed, CFG)
    found = als_candidates(recomputed, pl.Series(["u0"]), CFG)
    user = factors.model.recalculate_user(0, recomputed.confidence[0])
    scores = factors.model.item_factors @ user
    expected = np.argsort(-np.where(recomputed.confidence[0].toarray()[0] != 0, -np.inf, scores))
    assert found.sort("als_rank")["track_id"].to_list() == [TRACKS[i] for i in expected[:4]]
    assert np.array_equal(recomputed.model.item_factors, factors.model.item_factors)
