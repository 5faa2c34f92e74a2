"""Candidates: each user's recent positive history expanded with its tracks' neighbours, plus
the labelled popularity fallbacks, with tracks the user already heard removed.

Sources, in the order a reason prefers them:

- `similar`: neighbours of the user's recent positive tracks (the seeds); the score is the sum
  of the seeds' similarities, and each seed's contribution is kept for "because you liked".
- `walk`: the tracks that random walks from the same seeds visited most (see `walks.py`),
  scored by their walk score; computed by the caller and passed in.
- `als`: the tracks whose ALS factors match the user's best (see `factors.py`), scored by the
  dot product of the factors; computed by the caller and passed in.
- `popular_in_genre`: the most popular tracks of the user's top genres (known genres only),
  scored by the user's share in that genre times the track's popularity.
- `popular`: the most popular tracks overall, for users with nothing else to go on.
"""

from __future__ import annotations

import logging

import polars as pl

from recsys import schema as s
from recsys.config import CandidatesConfig
from recsys.stages.feedback import LAST_TS, LIKES, PLAYS, POSITIVE, REPOSTS
from recsys.stages.similarity import NEIGHBOUR_ID, SCORE

log = logging.getLogger(__name__)

SIMILAR = "similar"
WALK = "walk"
ALS = "als"
POPULAR_IN_GENRE = "popular_in_genre"
POPULAR = "popular"
SOURCES = (SIMILAR, WALK, ALS, POPULAR_IN_GENRE, POPULAR)
HISTORY_SOURCES = (SIMILAR, WALK, ALS)
SEED_TRACK_ID = "seed_track_id"
CONTRIBUTION = "contribution"
POPULARITY = "popularity"
GENRE_SHARE = "genre_share"
SOURCES_COLUMN = "sources"
TOP_GENRES = 3


def score_column(source: str) -> str:
    return f"{source}_score"


def rank_column(source: str) -> str:
    return f"{source}_rank"


def popularity(feedback: pl.DataFrame) -> pl.DataFrame:
    """track_id, popularity: how many users have a positive interaction with each track."""
    return (
        feedback.filter(pl.col(POSITIVE))
        .group_by(s.TRACK_ID)
        .agg(pl.len().cast(pl.Int64).alias(POPULARITY))
    )


def seeds(feedback: pl.DataFrame, cfg: CandidatesConfig) -> pl.DataFrame:
    """Each user's most recent positive tracks: user_id, track_id, last_ts, interactions."""
    return (
        feedback.filter(pl.col(POSITIVE))
        .with_columns((pl.col(PLAYS) + pl.col(LIKES) + pl.col(REPOSTS)).alias("interactions"))
        .sort([s.USER_ID, LAST_TS, s.TRACK_ID], descending=[False, True, False])
        .group_by(s.USER_ID, maintain_order=True)
        .head(cfg.history_size)
        .select(s.USER_ID, s.TRACK_ID, LAST_TS, "interactions")
    )


def genre_shares(feedback: pl.DataFrame, tracks: pl.DataFrame) -> pl.DataFrame:
    """user_id, genre, genre_share: the share of a user's plays in each known genre.

    A play of a track with no genre counts in the whole but in no genre.
    """
    weighted = feedback.filter(pl.col(POSITIVE)).join(
        tracks.select(s.TRACK_ID, s.GENRE), on=s.TRACK_ID, how="left"
    ).with_columns(pl.max_horizontal(pl.col(PLAYS), 1).alias("w"))
    totals = weighted.group_by(s.USER_ID).agg(pl.col("w").sum().alias("total"))
    return (
        weighted.filter(pl.col(s.GENRE).is_not_null())
        .group_by(s.USER_ID, s.GENRE)
        .agg(pl.col("w").sum())
        .join(totals, on=s.USER_ID)
        .select(s.USER_ID, s.GENRE, (pl.col("w") / pl.col("total")).alias(GENRE_SHARE))
    )


def similar_candidates(
    user_seeds: pl.DataFrame, similar: pl.DataFrame, heard: pl.DataFrame
) -> pl.DataFrame:
    """user_id, track_id, seed_track_id, contribution for every seed-to-neighbour step."""
    steps = user_seeds.select(s.USER_ID, pl.col(s.TRACK_ID).alias(SEED_TRACK_ID)).join(
        similar.select(
            pl.col(s.TRACK_ID).alias(SEED_TRACK_ID),
            pl.col(NEIGHBOUR_ID).alias(s.TRACK_ID),
            pl.col(SCORE).alias(CONTRIBUTION),
        ),
        on=SEED_TRACK_ID,
    )
    return steps.join(heard, on=[s.USER_ID, s.TRACK_ID], how="anti")


def generate_candidates(
    users: pl.Series,
    feedback: pl.DataFrame,
    similar: pl.DataFrame,
    tracks: pl.DataFrame,
    cfg: CandidatesConfig,
    *,
    walked: pl.DataFrame | None = None,
    factored: pl.DataFrame | None = None,
    track_popularity: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The candidates of `users` and the seed contributions of the similar ones.

    `walked` holds the walk source's tracks (user_id, track_id, walk_score, walk_rank) and
    `factored` the ALS source's (user_id, track_id, als_score, als_rank), already without the
    tracks each user heard; None leaves a source out. `track_popularity` (track_id,
    popularity over everyone) lets `feedback` hold only these users' rows, as when users are
    served in partitions; None computes it from `feedback`.

    Returns (candidates, contributions). Candidates hold one row per (user, track) with
    `sources` and, per source, `<source>_score` and `<source>_rank` (null where the source did
    not propose the track). Contributions hold user_id, track_id, seed_track_id, contribution.
    """
    users_frame = pl.DataFrame({s.USER_ID: users.unique().sort()})
    heard = feedback.select(s.USER_ID, s.TRACK_ID)
    user_seeds = seeds(feedback, cfg).join(users_frame, on=s.USER_ID, how="semi")

    steps = similar_candidates(user_seeds, similar, heard)
    similar_scored = _top_per_user(
        steps.group_by(s.USER_ID, s.TRACK_ID).agg(pl.col(CONTRIBUTION).sum().alias("score")),
        cfg.max_candidates,
    )
    contributions = steps.join(similar_scored.select(s.USER_ID, s.TRACK_ID),
                               on=[s.USER_ID, s.TRACK_ID], how="semi")

    if track_popularity is None:
        track_popularity = popularity(feedback)
    pop = track_popularity.join(tracks.select(s.TRACK_ID, s.GENRE), on=s.TRACK_ID, how="left")
    in_genre = _popular_in_genre(users_frame, feedback, tracks, pop, heard, cfg)
    overall = _popular(users_frame, pop, heard, cfg)

    candidates = _union({
        SIMILAR: similar_scored,
        WALK: _given(walked, WALK, users_frame),
        ALS: _given(factored, ALS, users_frame),
        POPULAR_IN_GENRE: in_genre,
        POPULAR: overall,
    })
    log.debug("candidates: %s rows for %s users", candidates.height, users_frame.height)
    return candidates, contributions


def _given(found: pl.DataFrame | None, source: str, users_frame: pl.DataFrame) -> pl.DataFrame:
    """A source computed by the caller, for `users_frame`'s users, as score and rank."""
    if found is None:
        return pl.DataFrame(schema={s.USER_ID: pl.String, s.TRACK_ID: pl.String,
                                    "score": pl.Float64, "rank": pl.Int64})
    return found.join(users_frame, on=s.USER_ID, how="semi").select(
        s.USER_ID, s.TRACK_ID, pl.col(score_column(source)).alias("score"),
        pl.col(rank_column(source)).alias("rank"),
    )


def _top_per_user(scored: pl.DataFrame, n: int) -> pl.DataFrame:
    """Keep each user's n best rows by score (ties by track id) and number them from 1."""
    return (
        scored.sort([s.USER_ID, "score", s.TRACK_ID], descending=[False, True, False])
        .group_by(s.USER_ID, maintain_order=True)
        .head(n)
        .with_columns(pl.int_range(1, pl.len() + 1).over(s.USER_ID).alias("rank"))
    )


def _popular_in_genre(users_frame, feedback, tracks, pop, heard, cfg) -> pl.DataFrame:
    shares = genre_shares(feedback, tracks).join(users_frame, on=s.USER_ID, how="semi")
    top_genres = (
        shares.sort([s.USER_ID, GENRE_SHARE, s.GENRE], descending=[False, True, False])
        .group_by(s.USER_ID, maintain_order=True)
        .head(TOP_GENRES)
    )
    per_genre = (
        pop.filter(pl.col(s.GENRE).is_not_null())
        .sort([s.GENRE, POPULARITY, s.TRACK_ID], descending=[False, True, False])
        .group_by(s.GENRE, maintain_order=True)
        .head(cfg.fallback_size + cfg.history_size)
    )
    scored = (
        top_genres.join(per_genre, on=s.GENRE)
        .with_columns((pl.col(GENRE_SHARE) * pl.col(POPULARITY)).alias("score"))
        .join(heard, on=[s.USER_ID, s.TRACK_ID], how="anti")
        .select(s.USER_ID, s.TRACK_ID, "score")
    )
    return _top_per_user(scored, cfg.fallback_size)


def _popular(users_frame, pop, heard, cfg) -> pl.DataFrame:
    head = pop.sort([POPULARITY, s.TRACK_ID], descending=[True, False]).head(
        cfg.fallback_size + cfg.history_size
    )
    scored = (
        users_frame.join(
            head.select(s.TRACK_ID, pl.col(POPULARITY).cast(pl.Float64).alias("score")),
            how="cross",
        )
        .join(heard, on=[s.USER_ID, s.TRACK_ID], how="anti")
    )
    return _top_per_user(scored, cfg.fallback_size)


def _union(by_source: dict[str, pl.DataFrame]) -> pl.DataFrame:
    keys = pl.concat([f.select(s.USER_ID, s.TRACK_ID) for f in by_source.values()]).unique()
    frame = keys
    for source, scored in by_source.items():
        frame = frame.join(
            scored.select(
                s.USER_ID,
                s.TRACK_ID,
                pl.col("score").cast(pl.Float64).alias(score_column(source)),
                pl.col("rank").cast(pl.Int64).alias(rank_column(source)),
            ),
            on=[s.USER_ID, s.TRACK_ID],
            how="left",
        )
    present = [pl.when(pl.col(score_column(src)).is_not_null()).then(pl.lit(src))
               for src in by_source]
    frame = frame.with_columns(pl.concat_list(present).list.drop_nulls().alias(SOURCES_COLUMN))
    return frame.sort(s.USER_ID, s.TRACK_ID)
