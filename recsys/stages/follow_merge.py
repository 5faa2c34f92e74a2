"""Who to follow: the sources merged into one list per user, with a reason for every suggestion.

The candidates of a user are the union of the sources' accounts (`follow.py`, `follow_als.py`),
each with every source's score (null where the source did not propose it) and these features:

- `mutual_follows`: how many of the accounts the user follows follow the candidate;
- `follows_you`: 1 when the candidate follows the user;
- `shared_tracks`: tracks that both the user and the candidate (as a listener) played;
- `follower_count`: the candidate's followers;
- `n_sources`: how many sources proposed it.

The merge is LightGBM lambdarank on those columns (`ranker.*` settings), trained on the follows
of a window after an earlier cut (see `recsys.follow_batch`); where it cannot be trained (no
user with both a new follow among their candidates and other candidates), the sources are
fused by reciprocal rank: the sum over sources of 1 / (60 + rank).

The reason of a suggestion is the first that applies of: "followed by N people you follow
(A, B, C)", "you played N tracks by them", "people who follow A and B also follow them",
"listeners of A and B also play them", "listeners like you play them" (ALS), "close to you in
the follow graph" (the circle of trust), "followed by N people".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import schema as s
from recsys.config import RankerConfig
from recsys.ids import IdMap
from recsys.stages.feedback import POSITIVE
from recsys.stages.follow import (
    ALS, CO_FOLLOWED, CO_LISTENED, CONTRIBUTION, FOLLOWERS, MOST_FOLLOWED, PLAYED,
    PLAYED_TRACKS, RANK, SCORE, TRUST, VIA_ID, Expansion,
)
from recsys.stages.labels import LABEL
from recsys.stages.ranker import TrainedRanker, train_ranker

log = logging.getLogger(__name__)

SOURCES = (CO_FOLLOWED, PLAYED, CO_LISTENED, ALS, TRUST, MOST_FOLLOWED)
SOURCES_COLUMN = "sources"
MUTUAL_FOLLOWS, FOLLOWS_YOU, SHARED_TRACKS = "mutual_follows", "follows_you", "shared_tracks"
FOLLOWER_COUNT, N_SOURCES = "follower_count", "n_sources"
REASON = "reason"
RRF_K = 60
NAMED = 3  # accounts named in a reason


def score_column(source: str) -> str:
    return f"{source}_score"


def rank_column(source: str) -> str:
    return f"{source}_rank"


FEATURES = (*(score_column(src) for src in SOURCES), MUTUAL_FOLLOWS, FOLLOWS_YOU, SHARED_TRACKS,
            FOLLOWER_COUNT, N_SOURCES)


@dataclass
class Evidence:
    """What the features and the reasons of one snapshot rest on."""

    follows: pl.DataFrame  # follower_id, followee_id: the edges the snapshot sees
    by_creator: pl.DataFrame  # user_id, creator_id, strength, played_tracks
    expansions: dict[str, Expansion]  # co_followed and co_listened: seeds and neighbours
    followers: pl.DataFrame  # followee_id, followers
    names: pl.DataFrame  # account_id, name: how an account is shown (its name, else its id)


def union(by_source: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per (user_id, followee_id) with `sources` and each source's score and rank."""
    keys = [s.USER_ID, s.FOLLOWEE_ID]
    long = pl.concat([
        frame.select(*keys, pl.lit(source).alias("source"), SCORE, RANK)
        for source, frame in by_source.items()
    ])
    wide = long.pivot(on="source", on_columns=list(by_source), index=keys,
                      values=[SCORE, RANK])
    present = [pl.when(pl.col(score_column(src)).is_not_null()).then(pl.lit(src))
               for src in SOURCES]
    return wide.select(
        *keys,
        *(pl.col(f"{SCORE}_{src}").cast(pl.Float64).alias(score_column(src))
          if src in by_source else pl.lit(None, pl.Float64).alias(score_column(src))
          for src in SOURCES),
        *(pl.col(f"{RANK}_{src}").cast(pl.Int64).alias(rank_column(src))
          if src in by_source else pl.lit(None, pl.Int64).alias(rank_column(src))
          for src in SOURCES),
    ).with_columns(pl.concat_list(present).list.drop_nulls().alias(SOURCES_COLUMN)).sort(keys)


def two_hop(follows: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """user_id, followee_id, via_id: for each pair, the accounts the user follows that follow
    the candidate."""
    first = follows.select(pl.col(s.FOLLOWER_ID).alias(s.USER_ID), pl.col(s.FOLLOWEE_ID)
                           .alias(VIA_ID)).join(pairs.select(s.USER_ID).unique(), on=s.USER_ID)
    second = follows.select(pl.col(s.FOLLOWER_ID).alias(VIA_ID), s.FOLLOWEE_ID)
    return first.join(second, on=VIA_ID).join(
        pairs.select(s.USER_ID, s.FOLLOWEE_ID), on=[s.USER_ID, s.FOLLOWEE_ID], how="semi"
    ).select(s.USER_ID, s.FOLLOWEE_ID, VIA_ID)


def shared_tracks(feedback: pl.DataFrame, pairs: pl.DataFrame) -> pl.Series:
    """Per row of `pairs`, the tracks both the user and the candidate played positively."""
    positive = feedback.filter(pl.col(POSITIVE)).select(s.USER_ID, s.TRACK_ID)
    listeners, tracks = IdMap(positive[s.USER_ID]), IdMap(positive[s.TRACK_ID])
    indexed = tracks.to_index(listeners.to_index(positive, s.USER_ID, alias="u"), s.TRACK_ID,
                              alias="t")
    matrix = sp.csr_matrix(
        (np.ones(indexed.height), (indexed["u"].to_numpy(), indexed["t"].to_numpy())),
        shape=(len(listeners) + 1, len(tracks)),  # the last row: a candidate with no listening
    )
    none = len(listeners)
    user = listeners.to_index(pairs, s.USER_ID, alias="u")["u"].fill_null(none).to_numpy()
    other = listeners.to_index(pairs, s.FOLLOWEE_ID, alias="c")["c"].fill_null(none).to_numpy()
    both = np.asarray(matrix[user.astype(np.int64)].multiply(matrix[other.astype(np.int64)])
                      .sum(axis=1)).ravel()
    return pl.Series(SHARED_TRACKS, both, dtype=pl.Int64)


def add_features(
    candidates: pl.DataFrame, evidence: Evidence, feedback: pl.DataFrame
) -> pl.DataFrame:
    """The candidates with the features of the module's docstring."""
    keys = [s.USER_ID, s.FOLLOWEE_ID]
    mutual = two_hop(evidence.follows, candidates).group_by(keys).agg(
        pl.len().cast(pl.Int64).alias(MUTUAL_FOLLOWS)
    )
    back = evidence.follows.select(pl.col(s.FOLLOWEE_ID).alias(s.USER_ID),
                                   pl.col(s.FOLLOWER_ID).alias(s.FOLLOWEE_ID),
                                   pl.lit(1, pl.Int64).alias(FOLLOWS_YOU)).unique(keys)
    return (
        candidates.join(mutual, on=keys, how="left")
        .join(back, on=keys, how="left")
        .join(evidence.followers.rename({FOLLOWERS: FOLLOWER_COUNT}), on=s.FOLLOWEE_ID,
              how="left")
        .with_columns(
            pl.col(MUTUAL_FOLLOWS, FOLLOWS_YOU, FOLLOWER_COUNT).fill_null(0),
            shared_tracks(feedback, candidates),
            pl.col(SOURCES_COLUMN).list.len().cast(pl.Int64).alias(N_SOURCES),
        )
    )


def train_merge(
    rows: pl.DataFrame, cfg: RankerConfig, *, num_trees: int | None = None
) -> TrainedRanker | None:
    """LightGBM lambdarank on labelled candidates (`label` 1 for an account followed later)."""
    # The ranker keys a candidate by track_id; here the candidate is an account.
    return train_ranker(rows.rename({s.FOLLOWEE_ID: s.TRACK_ID}), FEATURES, cfg,
                        num_trees=num_trees)


def merged_scores(rows: pl.DataFrame, model: TrainedRanker | None) -> pl.Series:
    """The merge's raw score per row, or the reciprocal-rank fusion without a model."""
    if model is not None and rows.height:
        return pl.Series(SCORE, model.raw_scores(rows), dtype=pl.Float64)
    fused = pl.sum_horizontal(
        [(1 / (RRF_K + pl.col(rank_column(src)))).fill_null(0.0) for src in SOURCES]
    )
    return rows.select(fused.cast(pl.Float64).alias(SCORE))[SCORE]


def suggestions(rows: pl.DataFrame, n: int) -> pl.DataFrame:
    """user_id, rank, followee_id, score, sources: each user's `n` best rows by `score`."""
    return (
        rows.sort([s.USER_ID, SCORE, s.FOLLOWEE_ID], descending=[False, True, False])
        .group_by(s.USER_ID, maintain_order=True)
        .head(n)
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(s.USER_ID).alias(RANK))
        .select(s.USER_ID, RANK, s.FOLLOWEE_ID, SCORE, SOURCES_COLUMN)
    )


def with_reasons(recs: pl.DataFrame, evidence: Evidence) -> pl.DataFrame:
    """`recs` (user_id, followee_id, sources, ...) with a `reason` for every row."""
    keys = [s.USER_ID, s.FOLLOWEE_ID]
    in_sources = lambda src: pl.col(SOURCES_COLUMN).list.contains(src)  # noqa: E731
    played_tracks = evidence.by_creator.select(
        s.USER_ID, pl.col(s.CREATOR_ID).alias(s.FOLLOWEE_ID), PLAYED_TRACKS
    )
    frame = (
        recs.join(_mutual_text(recs, evidence), on=keys, how="left")
        .join(played_tracks, on=keys, how="left")
        .join(_via_text(recs, evidence, CO_FOLLOWED, "co_followed_via"), on=keys, how="left")
        .join(_via_text(recs, evidence, CO_LISTENED, "co_listened_via"), on=keys, how="left")
        .join(evidence.followers, on=s.FOLLOWEE_ID, how="left")
    )
    reason = pl.coalesce(
        pl.col("mutual_text"),
        pl.format("you played {} {} by them", pl.col(PLAYED_TRACKS),
                  _plural(PLAYED_TRACKS, "track", "tracks")),
        pl.format("people who follow {} also follow them", pl.col("co_followed_via")),
        pl.format("listeners of {} also play them", pl.col("co_listened_via")),
        pl.when(in_sources(ALS)).then(pl.lit("listeners like you play them")),
        pl.when(in_sources(TRUST)).then(pl.lit("close to you in the follow graph")),
        pl.format("followed by {} {}", pl.col(FOLLOWERS).fill_null(0),
                  _plural(FOLLOWERS, "person", "people")),
    )
    return frame.with_columns(reason.alias(REASON)).select(*recs.columns, REASON)


def _plural(count: str, one: str, many: str) -> pl.Expr:
    return pl.when(pl.col(count) == 1).then(pl.lit(one)).otherwise(pl.lit(many))


def _named(frame: pl.DataFrame, evidence: Evidence) -> pl.DataFrame:
    """`frame` with `via_name`: the name of `via_id`, else the id."""
    names = evidence.names.select(pl.col("account_id").alias(VIA_ID), pl.col(s.NAME))
    return frame.join(names, on=VIA_ID, how="left").with_columns(
        pl.coalesce(s.NAME, VIA_ID).alias("via_name")
    )


def _mutual_text(recs: pl.DataFrame, evidence: Evidence) -> pl.DataFrame:
    """user_id, followee_id, mutual_text: "followed by N people you follow (A, B, C)", the
    most followed of them named first."""
    paths = _named(two_hop(evidence.follows, recs), evidence).join(
        evidence.followers.rename({s.FOLLOWEE_ID: VIA_ID}), on=VIA_ID, how="left"
    )
    grouped = (
        paths.sort([FOLLOWERS, VIA_ID], descending=[True, False], nulls_last=True)
        .group_by(s.USER_ID, s.FOLLOWEE_ID, maintain_order=True)
        .agg(pl.len().alias("n"), pl.col("via_name").head(NAMED).str.join(", ").alias("names"))
    )
    text = pl.format("followed by {} {} you follow ({})", pl.col("n"),
                     _plural("n", "person", "people"), pl.col("names"))
    return grouped.select(s.USER_ID, s.FOLLOWEE_ID, text.alias("mutual_text"))


def _via_text(recs: pl.DataFrame, evidence: Evidence, source: str, alias: str) -> pl.DataFrame:
    """user_id, followee_id and `alias`: "A and B", the two accounts that contributed most to
    the candidate in an expansion source."""
    steps = evidence.expansions[source].contributions(recs)
    grouped = (
        _named(steps, evidence)
        .sort([CONTRIBUTION, VIA_ID], descending=[True, False])
        .group_by(s.USER_ID, s.FOLLOWEE_ID, maintain_order=True)
        .agg(pl.col("via_name").head(2).str.join(" and ").alias(alias))
    )
    return grouped


def label_rows(rows: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """`rows` with `label`: 1 where the user followed the candidate in the targets."""
    marked = targets.select(s.USER_ID, s.FOLLOWEE_ID).unique().with_columns(
        pl.lit(1, pl.Int64).alias(LABEL)
    )
    return rows.join(marked, on=[s.USER_ID, s.FOLLOWEE_ID], how="left").with_columns(
        pl.col(LABEL).fill_null(0)
    )
