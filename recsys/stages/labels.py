"""Labels: what each user did with each track in the window after a cut, graded by a KPI.

KPIs (config `labels.kpi`), each an integer grade:

- `engagement` (the default): 0 none, or skips outweigh the plays; 1 played; 2 listened: a
  play lasted `labels.listened_share` of the track's duration (`labels.listened_seconds` for a
  track of unknown duration, or always when the share is None); 3 liked or reposted.
- `plays`: 1 when the user's window feedback on the track is positive (any play, like or repost
  that skips do not outweigh), else 0.
- `listening_time`: 0 none, 1 under 30 s, 2 under 3 min, 3 three minutes or more in the window.
- `likes`, `reposts`, `likes_or_reposts`: 1 when the user liked (reposted, either) the track.

Every grade is at most 3, within the gains the ranker passes to lambdarank (2**g - 1).
Beside the grade, `label_positive` is the sign of the window's summed signals (the feedback
strength, skips counting against): the class of the binary ranker, whatever the KPI.

Aggregated rows (`count` above 1, a snapshot with no time per play) never label a window: their
plays happened at unknown earlier times.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from recsys import schema as s
from recsys.config import FeedbackConfig, Kpi, LabelsConfig
from recsys.stages.feedback import LIKES, LISTEN_MS, POSITIVE, REPOSTS, feedback

LABEL = "label"
LABEL_POSITIVE = "label_positive"
MAX_GRADE = 3
LISTENED = "listened"


def window_events(events: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """The timed events in [start, end)."""
    return events.filter(
        (pl.col(s.TS) >= start) & (pl.col(s.TS) < end) & (pl.col(s.COUNT) <= 1)
    )


def labels(
    events: pl.DataFrame,
    *,
    start: datetime,
    end: datetime,
    kpi: Kpi,
    weights: FeedbackConfig,
    tracks: pl.DataFrame | None = None,
    thresholds: LabelsConfig | None = None,
) -> pl.DataFrame:
    """user_id, track_id, label (an integer grade) and label_positive for every pair with
    events in the window. `tracks` (track_id, duration_ms) and `thresholds` say what counts
    as listened for `engagement`."""
    timed = window_events(events, start, end)
    window = feedback(timed, weights)
    if kpi == "engagement":
        window = window.join(listened_plays(timed, tracks, thresholds or LabelsConfig()),
                             on=[s.USER_ID, s.TRACK_ID], how="left")
    return window.select(s.USER_ID, s.TRACK_ID, grade(kpi).cast(pl.Int32).alias(LABEL),
                         pl.col(POSITIVE).alias(LABEL_POSITIVE))


def grade(kpi: Kpi) -> pl.Expr:
    """The grade of one (user, track) window feedback row under `kpi`."""
    liked, reposted = pl.col(LIKES) > 0, pl.col(REPOSTS) > 0
    if kpi == "engagement":
        return (
            pl.when(liked | reposted).then(3)
            .when(~pl.col(POSITIVE)).then(0)
            .when(pl.col(LISTENED).fill_null(0) > 0).then(2)
            .otherwise(1)
        )
    if kpi == "plays":
        return pl.col(POSITIVE).cast(pl.Int32)
    if kpi == "listening_time":
        ms = pl.col(LISTEN_MS)
        return (
            pl.when(ms >= 180_000).then(3).when(ms >= 30_000).then(2).when(ms > 0).then(1)
            .otherwise(0)
        )
    flags = {"likes": liked, "reposts": reposted, "likes_or_reposts": liked | reposted}
    return flags[kpi].cast(pl.Int32)


def listened_plays(
    timed: pl.DataFrame, tracks: pl.DataFrame | None, cfg: LabelsConfig
) -> pl.DataFrame:
    """user_id, track_id, listened: the plays in `timed` that lasted past the threshold."""
    durations = (tracks.select(s.TRACK_ID, s.DURATION_MS) if tracks is not None else
                 pl.DataFrame(schema={s.TRACK_ID: pl.String, s.DURATION_MS: pl.Int64}))
    seconds = pl.lit(cfg.listened_seconds * 1000.0)
    if cfg.listened_share is None:
        threshold = seconds
    else:
        share = cfg.listened_share * pl.col(s.DURATION_MS)
        threshold = pl.when(pl.col(s.DURATION_MS) > 0).then(share).otherwise(seconds)
    plays = timed.filter(pl.col(s.KIND) == s.PLAY).join(durations, on=s.TRACK_ID, how="left")
    return (
        plays.filter(pl.col(s.MS_PLAYED).is_not_null() & (pl.col(s.MS_PLAYED) >= threshold))
        .group_by(s.USER_ID, s.TRACK_ID)
        .agg(pl.col(s.COUNT).sum().alias(LISTENED))
    )
