"""Affinity and behaviour features per (user, candidate), from the feedback before one moment.

- `decayed_affinity`: the similarity sum of a candidate with each seed's contribution weighted
  by 0.5 ** (age / half-life), the age being the days since the user last heard the seed.
- `creator_affinity`, `genre_affinity`: the share of the user's positive strength, each pair
  decayed the same way, that went to the candidate's creator or genre. An unknown (null)
  creator or genre never earns affinity: its pairs count in the whole, in no creator or genre.
- `creator_recency_days`: days since the user last heard (positively) the candidate's creator.
- `track_skip_rate`, `user_skip_rate`: skips / (plays + skips) of the track over all users, and
  of the user over all tracks (null without either).
- `recent_listeners`: users whose first interaction with the track (of those positive on it)
  fell in the `trend_recent_days` before the moment; `popularity_trend`: their rate per day
  over the rate in the `trend_base_days` before that (the base counted as at least one
  listener, so a track new to everybody has a finite trend).
- `friends_plays`, `friends_listeners` (see `friends`): plays of the track by the accounts the
  user follows, and how many of them are positive on it.
- `user_idle_days`: days since the user's latest interaction of any kind.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from recsys import schema as s
from recsys.config import FeaturesConfig
from recsys.stages.candidates import CONTRIBUTION, SEED_TRACK_ID
from recsys.stages.feedback import FIRST_TS, LAST_TS, PLAYS, POSITIVE, SKIPS, STRENGTH

DECAYED_AFFINITY = "decayed_affinity"
CREATOR_AFFINITY = "creator_affinity"
GENRE_AFFINITY = "genre_affinity"
CREATOR_RECENCY_DAYS = "creator_recency_days"
TRACK_SKIP_RATE = "track_skip_rate"
USER_SKIP_RATE = "user_skip_rate"
RECENT_LISTENERS = "recent_listeners"
POPULARITY_TREND = "popularity_trend"
FRIENDS_PLAYS = "friends_plays"
FRIENDS_LISTENERS = "friends_listeners"
USER_IDLE_DAYS = "user_idle_days"
AFFINITY_FEATURES = (DECAYED_AFFINITY, CREATOR_AFFINITY, GENRE_AFFINITY, CREATOR_RECENCY_DAYS,
                     TRACK_SKIP_RATE, USER_SKIP_RATE, RECENT_LISTENERS, POPULARITY_TREND,
                     USER_IDLE_DAYS)
# Features where a missing value means none (0) rather than unknown (null).
ZERO_FILLED = (DECAYED_AFFINITY, CREATOR_AFFINITY, GENRE_AFFINITY, RECENT_LISTENERS,
               POPULARITY_TREND)

DAY_US = 86_400 * 1_000_000
WEIGHT = "_weight"


def days_before(moment: datetime, column: str) -> pl.Expr:
    """Days from `column` to `moment`."""
    return (pl.lit(moment, dtype=s.UTC_DATETIME) - pl.col(column)).dt.total_microseconds() / DAY_US


def decay(moment: datetime, column: str, half_life_days: float) -> pl.Expr:
    """0.5 ** (days from `column` to `moment` / half-life)."""
    return pl.lit(0.5) ** (days_before(moment, column) / half_life_days)


def affinity_features(
    candidates: pl.DataFrame,
    contributions: pl.DataFrame,
    feedback: pl.DataFrame,
    tracks: pl.DataFrame,
    *,
    moment: datetime,
    cfg: FeaturesConfig,
    by_track: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """user_id, track_id and the `AFFINITY_FEATURES` of every candidate.

    `by_track` holds the figures of each track over everyone (`track_figures`): with it,
    `feedback` may hold only the candidates' users' rows (a partition); None computes them from
    `feedback`."""
    if by_track is None:
        by_track = track_figures(feedback, moment, cfg)
    keys = [s.USER_ID, s.TRACK_ID]
    catalogue = tracks.select(s.TRACK_ID, s.CREATOR_ID, s.GENRE)
    frame = candidates.select(keys).join(catalogue, on=s.TRACK_ID, how="left")
    frame = (
        frame.join(decayed_affinity(contributions, feedback, moment, cfg), on=keys, how="left")
        .join(shares(feedback, catalogue, s.CREATOR_ID, moment, cfg, CREATOR_AFFINITY),
              on=[s.USER_ID, s.CREATOR_ID], how="left")
        .join(shares(feedback, catalogue, s.GENRE, moment, cfg, GENRE_AFFINITY),
              on=[s.USER_ID, s.GENRE], how="left")
        .join(creator_recency(feedback, catalogue, moment), on=[s.USER_ID, s.CREATOR_ID],
              how="left")
        .join(by_track, on=s.TRACK_ID, how="left")
        .join(skip_rate(feedback, s.USER_ID, USER_SKIP_RATE), on=s.USER_ID, how="left")
        .join(idle_days(feedback, moment), on=s.USER_ID, how="left")
    )
    return frame.select(
        *keys,
        *[pl.col(c).fill_null(0).cast(pl.Float64) if c in ZERO_FILLED
          else pl.col(c).cast(pl.Float64) for c in AFFINITY_FEATURES],
    )


def track_figures(feedback: pl.DataFrame, moment: datetime, cfg: FeaturesConfig) -> pl.DataFrame:
    """track_id, track_skip_rate, recent_listeners, popularity_trend: the figures of each track
    over all of `feedback`'s users (computed once per moment from everyone's feedback)."""
    return skip_rate(feedback, s.TRACK_ID, TRACK_SKIP_RATE).join(
        trend(feedback, moment, cfg), on=s.TRACK_ID, how="left"
    )


def decayed_affinity(contributions, feedback, moment, cfg) -> pl.DataFrame:
    """user_id, track_id, decayed_affinity: similarity contributions weighted by seed age."""
    seed_age = feedback.select(
        s.USER_ID, pl.col(s.TRACK_ID).alias(SEED_TRACK_ID),
        decay(moment, LAST_TS, cfg.half_life_days).alias(WEIGHT),
    )
    return (
        contributions.join(seed_age, on=[s.USER_ID, SEED_TRACK_ID], how="left")
        .group_by(s.USER_ID, s.TRACK_ID)
        .agg((pl.col(CONTRIBUTION) * pl.col(WEIGHT)).sum().alias(DECAYED_AFFINITY))
    )


def shares(feedback, catalogue, column: str, moment, cfg, name: str) -> pl.DataFrame:
    """user_id, `column`, `name`: each user's decayed positive strength per known value of
    `column` (creator_id or genre) over their whole decayed positive strength."""
    weighted = feedback.filter(pl.col(POSITIVE)).join(catalogue, on=s.TRACK_ID, how="left")
    weighted = weighted.with_columns(
        (pl.col(STRENGTH) * decay(moment, LAST_TS, cfg.half_life_days)).alias(WEIGHT)
    )
    total = weighted.group_by(s.USER_ID).agg(pl.col(WEIGHT).sum().alias("_total"))
    return (
        weighted.filter(pl.col(column).is_not_null())
        .group_by(s.USER_ID, column)
        .agg(pl.col(WEIGHT).sum())
        .join(total, on=s.USER_ID)
        .select(s.USER_ID, column, (pl.col(WEIGHT) / pl.col("_total")).alias(name))
    )


def creator_recency(feedback, catalogue, moment) -> pl.DataFrame:
    """user_id, creator_id, creator_recency_days: since the user last heard a known creator."""
    return (
        feedback.filter(pl.col(POSITIVE))
        .join(catalogue.filter(pl.col(s.CREATOR_ID).is_not_null()), on=s.TRACK_ID)
        .group_by(s.USER_ID, s.CREATOR_ID)
        .agg(pl.col(LAST_TS).max())
        .select(s.USER_ID, s.CREATOR_ID, days_before(moment, LAST_TS).alias(CREATOR_RECENCY_DAYS))
    )


def skip_rate(feedback: pl.DataFrame, key: str, name: str) -> pl.DataFrame:
    """`key`, `name`: skips over plays and skips, summed over the key's pairs."""
    sums = feedback.group_by(key).agg(pl.col(SKIPS).sum(), pl.col(PLAYS).sum())
    heard = pl.col(SKIPS) + pl.col(PLAYS)
    return sums.select(key, pl.when(heard > 0).then(pl.col(SKIPS) / heard).alias(name))


def trend(feedback: pl.DataFrame, moment: datetime, cfg: FeaturesConfig) -> pl.DataFrame:
    """track_id, recent_listeners, popularity_trend (see the module's docstring)."""
    recent_start = moment - timedelta(days=cfg.trend_recent_days)
    base_start = recent_start - timedelta(days=cfg.trend_base_days)
    first = pl.col(FIRST_TS)
    counts = feedback.filter(pl.col(POSITIVE)).group_by(s.TRACK_ID).agg(
        (first >= recent_start).sum().alias(RECENT_LISTENERS),
        ((first >= base_start) & (first < recent_start)).sum().alias("_base"),
    )
    recent_rate = pl.col(RECENT_LISTENERS) / cfg.trend_recent_days
    base_rate = pl.max_horizontal(pl.col("_base"), 1) / cfg.trend_base_days
    return counts.select(s.TRACK_ID, RECENT_LISTENERS,
                         (recent_rate / base_rate).alias(POPULARITY_TREND))


def friends(candidates, feedback, follows) -> pl.DataFrame:
    """user_id, track_id, friends_plays, friends_listeners: the plays of each candidate by the
    accounts the user follows, and how many of those accounts are positive on it."""
    followed = follows.select(pl.col(s.FOLLOWER_ID).alias(s.USER_ID), s.FOLLOWEE_ID).unique()
    theirs = feedback.select(pl.col(s.USER_ID).alias(s.FOLLOWEE_ID), s.TRACK_ID, PLAYS, POSITIVE)
    return (
        candidates.select(s.USER_ID, s.TRACK_ID)
        .join(followed, on=s.USER_ID)
        .join(theirs, on=[s.FOLLOWEE_ID, s.TRACK_ID])
        .group_by(s.USER_ID, s.TRACK_ID)
        .agg(pl.col(PLAYS).sum().alias(FRIENDS_PLAYS),
             pl.col(POSITIVE).sum().alias(FRIENDS_LISTENERS))
    )


def idle_days(feedback: pl.DataFrame, moment: datetime) -> pl.DataFrame:
    """user_id, user_idle_days: days since the user's latest interaction."""
    latest = feedback.group_by(s.USER_ID).agg(pl.col(LAST_TS).max())
    return latest.select(s.USER_ID, days_before(moment, LAST_TS).alias(USER_IDLE_DAYS))
