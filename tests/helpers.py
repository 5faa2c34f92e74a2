"""Small builders for hand-made frames in the normalized input format."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl

from recsys import schema as s

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def day(n: float) -> datetime:
    """T0 plus n days."""
    return T0 + timedelta(days=n)


def events(rows: list[tuple]) -> pl.DataFrame:
    """Events from (user, track, kind, day[, ms_played[, count]]) tuples."""
    full = [r + (None, 1)[len(r) - 4 :] if len(r) < 6 else r for r in rows]
    return pl.DataFrame(
        {
            s.USER_ID: [r[0] for r in full],
            s.TRACK_ID: [r[1] for r in full],
            s.KIND: [r[2] for r in full],
            s.TS: [day(r[3]) for r in full],
            s.MS_PLAYED: [r[4] for r in full],
            s.COUNT: [r[5] for r in full],
        },
        schema=s.TABLE_COLUMNS[s.EVENTS],
    )


def tracks(rows: list[tuple]) -> pl.DataFrame:
    """Tracks from (track, creator, genre[, created day]) tuples."""
    return pl.DataFrame(
        {
            s.TRACK_ID: [r[0] for r in rows],
            s.TITLE: [f"title {r[0]}" for r in rows],
            s.CREATOR_ID: [r[1] for r in rows],
            s.GENRE: [r[2] for r in rows],
            s.CREATED_AT: [day(r[3]) if len(r) > 3 and r[3] is not None else None for r in rows],
            s.DURATION_MS: [200_000] * len(rows),
        },
        schema=s.TABLE_COLUMNS[s.TRACKS],
    )
