"""Feedback: events folded into one row per (user, track) with a strength and a class."""

from __future__ import annotations

import logging
from datetime import datetime

import polars as pl

from recsys import schema as s
from recsys.config import FeedbackConfig

log = logging.getLogger(__name__)

PLAYS, LIKES, REPOSTS, SKIPS = "plays", "likes", "reposts", "skips"
KIND_COUNTS = {s.PLAY: PLAYS, s.LIKE: LIKES, s.REPOST: REPOSTS, s.SKIP: SKIPS}
LISTEN_MS = "listen_ms"
FIRST_TS, LAST_TS = "first_ts", "last_ts"
STRENGTH = "strength"
POSITIVE = "positive"


def events_before(events: pl.DataFrame, moment: datetime) -> pl.DataFrame:
    """The events a run at `moment` may see: strictly before it."""
    return events.filter(pl.col(s.TS) < moment)


def feedback(events: pl.DataFrame, cfg: FeedbackConfig) -> pl.DataFrame:
    """One row per (user, track): counts per kind, listening time, first and last time,
    the weighted strength and whether the pair is positive (a skip pulls it negative)."""
    counts = [
        pl.col(s.COUNT).filter(pl.col(s.KIND) == kind).sum().alias(name)
        for kind, name in KIND_COUNTS.items()
    ]
    folded = events.group_by(s.USER_ID, s.TRACK_ID).agg(
        *counts,
        pl.col(s.MS_PLAYED).fill_null(0).sum().alias(LISTEN_MS),
        pl.col(s.TS).min().alias(FIRST_TS),
        pl.col(s.TS).max().alias(LAST_TS),
    )
    strength = (
        cfg.play_weight * pl.col(PLAYS)
        + cfg.like_weight * pl.col(LIKES)
        + cfg.repost_weight * pl.col(REPOSTS)
        + cfg.skip_weight * pl.col(SKIPS)
        + cfg.minute_weight * pl.col(LISTEN_MS) / 60_000
    )
    folded = folded.with_columns(strength.alias(STRENGTH)).with_columns(
        (pl.col(STRENGTH) > 0).alias(POSITIVE)
    )
    log.debug("feedback: %s (user, track) pairs from %s events", folded.height, events.height)
    return folded.sort(s.USER_ID, s.TRACK_ID)
