"""The vocabulary: input tables, their columns and types, event kinds.

Every module names columns through these constants so that the input format, the stages,
the store and the pages speak one language.
"""

from __future__ import annotations

import polars as pl

# Columns of the input tables.
USER_ID = "user_id"
TRACK_ID = "track_id"
KIND = "kind"
TS = "ts"
MS_PLAYED = "ms_played"
COUNT = "count"
TITLE = "title"
CREATOR_ID = "creator_id"
GENRE = "genre"
CREATED_AT = "created_at"
DURATION_MS = "duration_ms"
NAME = "name"
FOLLOWER_ID = "follower_id"
FOLLOWEE_ID = "followee_id"

# Event kinds. A skip is negative feedback; the others are positive.
PLAY = "play"
LIKE = "like"
REPOST = "repost"
SKIP = "skip"
EVENT_KINDS = (PLAY, LIKE, REPOST, SKIP)
POSITIVE_KINDS = (PLAY, LIKE, REPOST)

UTC_DATETIME = pl.Datetime("us", "UTC")
EVENT_KIND = pl.Enum(EVENT_KINDS)

# The input tables of a dataset folder, in their normalized form. Ids are strings as in the
# data; a null genre or creator is an explicit unknown.
EVENTS = "events"
TRACKS = "tracks"
USERS = "users"
FOLLOWS = "follows"
REQUIRED_TABLES = (EVENTS, TRACKS)
OPTIONAL_TABLES = (USERS, FOLLOWS)
TABLE_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    EVENTS: {
        USER_ID: pl.String(),
        TRACK_ID: pl.String(),
        KIND: EVENT_KIND,
        TS: UTC_DATETIME,
        MS_PLAYED: pl.Int64(),
        COUNT: pl.Int64(),
    },
    TRACKS: {
        TRACK_ID: pl.String(),
        TITLE: pl.String(),
        CREATOR_ID: pl.String(),
        GENRE: pl.String(),
        CREATED_AT: UTC_DATETIME,
        DURATION_MS: pl.Int64(),
    },
    USERS: {USER_ID: pl.String(), NAME: pl.String()},
    FOLLOWS: {FOLLOWER_ID: pl.String(), FOLLOWEE_ID: pl.String(), TS: UTC_DATETIME},
}

# Columns a file may leave out; they are filled with their default (count) or null.
OPTIONAL_COLUMNS: dict[str, dict[str, object]] = {
    EVENTS: {MS_PLAYED: None, COUNT: 1},
    TRACKS: {TITLE: None, CREATOR_ID: None, GENRE: None, CREATED_AT: None, DURATION_MS: None},
    USERS: {NAME: None},
    FOLLOWS: {TS: None},
}


def empty_frame(table: str) -> pl.DataFrame:
    """An empty frame with the normalized columns of `table`."""
    return pl.DataFrame(schema=TABLE_COLUMNS[table])
