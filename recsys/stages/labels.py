"""Labels: what each user did with each track in the window after a cut, graded by a KPI.

KPIs (config `labels.kpi`):

- `plays`: 1 when the user's window feedback on the track is positive (any play, like or repost
  that skips do not outweigh), else 0.
- `listening_time`: 0 none, 1 under 30 s, 2 under 3 min, 3 three minutes or more in the window.
- `likes`: 1 when the user liked the track in the window.
- `reposts`: 1 when the user reposted the track in the window.

Aggregated rows (`count` above 1, a snapshot with no time per play) never label a window: their
plays happened at unknown earlier times.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from recsys import schema as s
from recsys.config import FeedbackConfig, Kpi
from recsys.stages.feedback import LIKES, LISTEN_MS, POSITIVE, REPOSTS, feedback

LABEL = "label"


def window_events(events: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """The timed events in [start, end)."""
    return events.filter(
        (pl.col(s.TS) >= start) & (pl.col(s.TS) < end) & (pl.col(s.COUNT) <= 1)
    )


def labels(
    events: pl.DataFrame, *, start: datetime, end: datetime, kpi: Kpi, weights: FeedbackConfig
) -> pl.DataFrame:
    """user_id, track_id, label (an integer grade) for every pair with events in the window."""
    window = feedback(window_events(events, start, end), weights)
    if kpi == "plays":
        grade = pl.col(POSITIVE).cast(pl.Int32)
    elif kpi == "listening_time":
        ms = pl.col(LISTEN_MS)
        grade = (
            pl.when(ms >= 180_000).then(3).when(ms >= 30_000).then(2).when(ms > 0).then(1)
            .otherwise(0)
        )
    elif kpi == "likes":
        grade = (pl.col(LIKES) > 0).cast(pl.Int32)
    else:
        grade = (pl.col(REPOSTS) > 0).cast(pl.Int32)
    return window.select(s.USER_ID, s.TRACK_ID, grade.cast(pl.Int32).alias(LABEL))
