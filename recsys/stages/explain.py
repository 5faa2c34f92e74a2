"""Explanations: the top-N lists, their reasons ("because you liked") and SHAP attributions."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from recsys import schema as s
from recsys.config import RecommendConfig
from recsys.stages.candidates import (
    ALS,
    CONTRIBUTION,
    POPULAR,
    POPULAR_IN_GENRE,
    SEED_TRACK_ID,
    SIMILAR,
    SOURCES_COLUMN,
    WALK,
)
from recsys.stages.ranker import SCORE, TrainedRanker

RANK = "rank"
REASON_KIND = "reason_kind"
# The ledger of a recommendation: the sources that proposed it and its rank in the plain
# candidate order, before the ranker (its rank after is `rank`).
RANK_BEFORE = "rank_before"
LEDGER_COLUMNS = (SOURCES_COLUMN, RANK_BEFORE)
SHARE = "share"
FEATURE = "feature"
VALUE = "value"
REMAINDER = "(other features)"
# A reason names the source that led to the track, preferring the ones tied to the history.
REASON_ORDER = (SIMILAR, WALK, ALS, POPULAR_IN_GENRE, POPULAR)
PATH_VISITS, PATH_RANK = "path_visits", "path_rank"
WALK_PATH_COLUMNS = (s.USER_ID, s.TRACK_ID, SEED_TRACK_ID, "via_track_id", "listener_id",
                     "followed_id", PATH_VISITS, PATH_RANK)


def top_n(scored: pl.DataFrame, n: int) -> pl.DataFrame:
    """Each user's n best candidates by score (ties by track id), ranked from 1."""
    return (
        scored.sort([s.USER_ID, SCORE, s.TRACK_ID], descending=[False, True, False])
        .group_by(s.USER_ID, maintain_order=True)
        .head(n)
        .with_columns(pl.int_range(1, pl.len() + 1).over(s.USER_ID).alias(RANK))
    )


def rank_before(order_score: str) -> pl.Expr:
    """Each candidate's rank among its user's candidates by `order_score` (the plain candidate
    order, a score unique within a user), from 1."""
    return (pl.col(order_score).rank("ordinal", descending=True).over(s.USER_ID)
            .cast(pl.Int64).alias(RANK_BEFORE))


def reason_kind() -> pl.Expr:
    """The first source in REASON_ORDER that proposed the candidate."""
    expr = pl.lit(None, dtype=pl.String)
    for source in reversed(REASON_ORDER):
        expr = pl.when(pl.col(SOURCES_COLUMN).list.contains(source)).then(pl.lit(source)).otherwise(expr)
    return expr.alias(REASON_KIND)


def seed_reasons(
    recommendations: pl.DataFrame, contributions: pl.DataFrame, cfg: RecommendConfig
) -> pl.DataFrame:
    """user_id, track_id, seed_track_id, share: the history tracks that led to each `similar`
    recommendation, their share of its similarity sum, the largest `seeds_per_reason` kept."""
    return _seed_shares(_of_kind(contributions, recommendations, SIMILAR), cfg)


def walk_seed_reasons(
    recommendations: pl.DataFrame, paths: pl.DataFrame, cfg: RecommendConfig
) -> pl.DataFrame:
    """user_id, track_id, seed_track_id, share for each `walk` recommendation: the history
    tracks whose walks reached it, with their share of the visits of its recorded paths
    (`paths`, as `walks.walk_reasons` gives them), the largest `seeds_per_reason` kept."""
    per_seed = _of_kind(paths, recommendations, WALK).group_by(
        s.USER_ID, s.TRACK_ID, SEED_TRACK_ID
    ).agg(pl.col(PATH_VISITS).sum().cast(pl.Float64).alias(CONTRIBUTION))
    return _seed_shares(per_seed, cfg)


def of_kind(recommendations: pl.DataFrame, kind: str) -> pl.DataFrame:
    """user_id, track_id of the recommendations whose reason is `kind`."""
    return recommendations.filter(pl.col(REASON_KIND) == kind).select(s.USER_ID, s.TRACK_ID)


def _of_kind(steps: pl.DataFrame, recommendations: pl.DataFrame, kind: str) -> pl.DataFrame:
    """The rows of `steps` that lead to a recommendation whose reason is `kind`."""
    return steps.join(of_kind(recommendations, kind), on=[s.USER_ID, s.TRACK_ID], how="semi")


def _seed_shares(steps: pl.DataFrame, cfg: RecommendConfig) -> pl.DataFrame:
    """Each seed's share of the contributions to a (user, track), the largest kept."""
    total = pl.col(CONTRIBUTION).sum().over(s.USER_ID, s.TRACK_ID)
    return (
        steps.with_columns((pl.col(CONTRIBUTION) / total).alias(SHARE))
        .sort([s.USER_ID, s.TRACK_ID, SHARE, SEED_TRACK_ID], descending=[False, False, True, False])
        .group_by(s.USER_ID, s.TRACK_ID, maintain_order=True)
        .head(cfg.seeds_per_reason)
        .select(s.USER_ID, s.TRACK_ID, SEED_TRACK_ID, SHARE)
    )


def top_paths(paths: pl.DataFrame, per_track: int) -> pl.DataFrame:
    """The `per_track` most travelled paths into each (user, track) of `paths`."""
    return paths.filter(pl.col(PATH_RANK) <= per_track).select(WALK_PATH_COLUMNS)


def shap_rows(
    recommendations: pl.DataFrame,
    contrib: np.ndarray,
    features: tuple[str, ...],
    cfg: RecommendConfig,
) -> pl.DataFrame:
    """The largest `shap_top` contributions per recommendation plus one remainder row, so that
    the expected value plus a recommendation's stored values is its raw score.

    `contrib` holds one row per recommendation: a value per feature, then the expected value.
    """
    values = contrib[:, :-1]
    n_rows, n_features = values.shape
    top = min(cfg.shap_top, n_features)
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :top]
    picked = np.take_along_axis(values, order, axis=1)
    remainder = values.sum(axis=1) - picked.sum(axis=1)

    names = np.array(features + (REMAINDER,), dtype=object)
    feature_index = np.concatenate([order, np.full((n_rows, 1), n_features)], axis=1)
    stacked = np.concatenate([picked, remainder[:, None]], axis=1)
    frame = pl.DataFrame(
        {
            s.USER_ID: np.repeat(recommendations[s.USER_ID].to_numpy(), top + 1),
            s.TRACK_ID: np.repeat(recommendations[s.TRACK_ID].to_numpy(), top + 1),
            FEATURE: names[feature_index.ravel()].astype(str),
            VALUE: stacked.ravel(),
        }
    )
    return frame


def shap_sample(recommendations: pl.DataFrame, share: float, seed: int) -> pl.DataFrame:
    """The recommendations of a seeded `share` of users: those whose blake2b hash of
    "<seed>:<user_id>", read as a number in [0, 1), is below `share`.

    A user's draw depends on nothing else, so the choice is the same whatever the other users
    and the row order, and a larger share keeps every user of a smaller one.
    """
    if share >= 1:
        return recommendations
    users = recommendations[s.USER_ID].unique()
    chosen = users.filter(users.map_elements(lambda u: _draw(seed, u) < share,
                                             return_dtype=pl.Boolean))
    return recommendations.join(chosen.to_frame(), on=s.USER_ID, how="semi")


def _draw(seed: int, user_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def global_importance(ranker: TrainedRanker, contrib: np.ndarray) -> pl.DataFrame:
    """feature, gain and splits (LightGBM's) and mean |SHAP| over the rows of `contrib` (the
    served recommendations whose SHAP the batch computed)."""
    booster = ranker.booster
    mean_abs = np.abs(contrib[:, :-1]).mean(axis=0) if len(contrib) else np.zeros(len(ranker.features))
    frame = pl.DataFrame(
        {
            FEATURE: list(ranker.features),
            "gain": booster.feature_importance(importance_type="gain").astype(float),
            "splits": booster.feature_importance(importance_type="split").astype(np.int64),
            "mean_abs_shap": mean_abs.astype(float),
        }
    )
    return frame.sort("mean_abs_shap", descending=True)


def empty_shap() -> pl.DataFrame:
    """The shap_values table of a run without a ranker."""
    return pl.DataFrame(schema={s.USER_ID: pl.String, s.TRACK_ID: pl.String, FEATURE: pl.String,
                                VALUE: pl.Float64})


def empty_importance() -> pl.DataFrame:
    """The feature_importance table of a run without a ranker."""
    return pl.DataFrame(schema={FEATURE: pl.String, "gain": pl.Float64, "splits": pl.Int64,
                                "mean_abs_shap": pl.Float64})
