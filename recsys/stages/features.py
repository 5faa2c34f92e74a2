"""Features per (user, candidate), all computed from the events before one moment.

The feature columns, in the order the ranker sees them, are `FEATURES`. Nothing here reads an
event at or after `moment`: the caller passes feedback and follows-plays built from the events
before it.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from recsys import schema as s
from recsys.stages.affinity import (
    AFFINITY_FEATURES,
    FRIENDS_LISTENERS,
    FRIENDS_PLAYS,
    affinity_features,
    days_before,
    friends,
)
from recsys.stages.candidates import (
    ALS,
    CONTRIBUTION,
    GENRE_SHARE,
    POPULAR,
    POPULAR_IN_GENRE,
    POPULARITY,
    SEED_TRACK_ID,
    SIMILAR,
    WALK,
    genre_shares,
    popularity,
    rank_column,
    score_column,
    seeds,
)
from recsys.stages.feedback import LAST_TS, POSITIVE
from recsys.config import CandidatesConfig, FeaturesConfig

SIM_SUM = "sim_sum"
SIM_MAX = "sim_max"
N_SEEDS = "n_seeds"
SEED_RECENCY_DAYS = "seed_recency_days"
SEED_INTERACTIONS = "seed_interactions"
TRACK_AGE_DAYS = "track_age_days"
SAME_CREATOR = "same_creator"
HISTORY_SIZE = "history_size"

FEATURES = (
    SIM_SUM,
    SIM_MAX,
    N_SEEDS,
    SEED_RECENCY_DAYS,
    SEED_INTERACTIONS,
    TRACK_AGE_DAYS,
    POPULARITY,
    SAME_CREATOR,
    GENRE_SHARE,
    FRIENDS_PLAYS,
    FRIENDS_LISTENERS,
    HISTORY_SIZE,
    score_column(WALK),
    score_column(ALS),
    score_column(POPULAR_IN_GENRE),
    score_column(POPULAR),
    rank_column(SIMILAR),
    rank_column(WALK),
    rank_column(ALS),
    rank_column(POPULAR_IN_GENRE),
    rank_column(POPULAR),
    *AFFINITY_FEATURES,
)
RANKED_SOURCES = (SIMILAR, WALK, ALS, POPULAR_IN_GENRE, POPULAR)


def build_features(
    candidates: pl.DataFrame,
    contributions: pl.DataFrame,
    feedback: pl.DataFrame,
    tracks: pl.DataFrame,
    follows: pl.DataFrame,
    *,
    moment: datetime,
    cfg: CandidatesConfig,
    features: FeaturesConfig | None = None,
    track_popularity: pl.DataFrame | None = None,
    by_track: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Add the feature columns to `candidates` (one row per user and candidate track).

    `track_popularity` (track_id, popularity over everyone) and `by_track` (the per-track
    figures over everyone, `affinity.track_figures`) let `feedback` hold only the rows of the
    candidates' users and of the accounts they follow, as when users are served in partitions;
    None computes them from `feedback`.
    """
    pair = [s.USER_ID, s.TRACK_ID]
    frame = candidates.join(_seed_features(contributions, feedback, moment, cfg), on=pair,
                            how="left")
    if track_popularity is None:
        track_popularity = popularity(feedback)
    frame = frame.join(_track_features(track_popularity, tracks, moment), on=s.TRACK_ID,
                       how="left")
    frame = frame.join(_same_creator(candidates, feedback, tracks), on=pair, how="left")

    shares = genre_shares(feedback, tracks)
    genres = tracks.select(s.TRACK_ID, s.GENRE)
    frame = frame.join(genres, on=s.TRACK_ID, how="left")
    frame = frame.join(shares, on=[s.USER_ID, s.GENRE], how="left")

    frame = frame.join(friends(candidates, feedback, follows), on=pair, how="left")
    history = (feedback.filter(pl.col(POSITIVE)).group_by(s.USER_ID)
               .agg(pl.len().alias(HISTORY_SIZE)))
    frame = frame.join(history, on=s.USER_ID, how="left")
    frame = frame.join(
        affinity_features(candidates, contributions, feedback, tracks, moment=moment,
                          cfg=features or FeaturesConfig(), by_track=by_track),
        on=[s.USER_ID, s.TRACK_ID], how="left",
    )

    zero_filled = [SIM_SUM, SIM_MAX, N_SEEDS, SEED_INTERACTIONS, POPULARITY, SAME_CREATOR,
                   GENRE_SHARE, FRIENDS_PLAYS, FRIENDS_LISTENERS, HISTORY_SIZE,
                   score_column(WALK),
                   score_column(ALS), score_column(POPULAR_IN_GENRE), score_column(POPULAR)]
    return frame.with_columns(
        [pl.col(c).fill_null(0).cast(pl.Float64) for c in zero_filled]
        + [pl.col(c).cast(pl.Float64) for c in (SEED_RECENCY_DAYS, TRACK_AGE_DAYS)]
        + [pl.col(rank_column(src)).cast(pl.Float64) for src in RANKED_SOURCES]
    ).drop(s.GENRE)


def _seed_features(contributions, feedback, moment, cfg) -> pl.DataFrame:
    user_seeds = seeds(feedback, cfg).rename({s.TRACK_ID: SEED_TRACK_ID})
    steps = contributions.join(user_seeds, on=[s.USER_ID, SEED_TRACK_ID], how="left")
    return steps.group_by(s.USER_ID, s.TRACK_ID).agg(
        pl.col(CONTRIBUTION).sum().alias(SIM_SUM),
        pl.col(CONTRIBUTION).max().alias(SIM_MAX),
        pl.len().alias(N_SEEDS),
        days_before(moment, LAST_TS).min().alias(SEED_RECENCY_DAYS),
        pl.col("interactions").sum().alias(SEED_INTERACTIONS),
    )


def _track_features(track_popularity, tracks, moment) -> pl.DataFrame:
    ages = tracks.select(s.TRACK_ID, days_before(moment, s.CREATED_AT).alias(TRACK_AGE_DAYS))
    return ages.join(track_popularity, on=s.TRACK_ID, how="left")


def _same_creator(candidates, feedback, tracks) -> pl.DataFrame:
    """1 where the candidate's (known) creator made a track in the user's positive history."""
    creators = tracks.select(s.TRACK_ID, s.CREATOR_ID).filter(pl.col(s.CREATOR_ID).is_not_null())
    heard = (
        feedback.filter(pl.col(POSITIVE))
        .join(creators, on=s.TRACK_ID)
        .select(s.USER_ID, s.CREATOR_ID)
        .unique()
    )
    return (
        candidates.select(s.USER_ID, s.TRACK_ID)
        .join(creators, on=s.TRACK_ID)
        .join(heard, on=[s.USER_ID, s.CREATOR_ID], how="semi")
        .select(s.USER_ID, s.TRACK_ID, pl.lit(1).alias(SAME_CREATOR))
    )
