"""Who to follow: the candidate sources over the follow graph and the listening.

Every source proposes, for each user in scope, at most `follow.per_source` accounts with a
score and a rank (user_id, followee_id, score, rank), never the user themselves nor an account
they already follow:

- `co_followed`: item-based CF on the follow graph. Two accounts are similar when the same
  people follow them, under the damping options of track similarity (`follow.similarity`,
  the followers playing the part of the listeners); an account scores the sum of its
  similarities to the accounts the user follows.
- `played`: the creators of the tracks the user played, scored by the strength of that
  feedback (the sum over the user's positive tracks by them).
- `co_listened`: creators similar to those by co-listening (a listener of a creator is a user
  with a positive track by them), weighted by the user's share in each played creator; the
  played creators themselves are left to `played`.
- `trust`: the circle of trust, the user's personalized PageRank on the follow graph (see
  `personalized_pagerank`).
- `most_followed`: the accounts with the most followers, the same for everyone; also the
  evaluation's baseline.

`co_followed` and `co_listened` keep their seeds and neighbours, so that the reasons can name
the followed or played accounts a suggestion came through. ALS on user-to-creator affinity
lives in `follow_als.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import schema as s
from recsys.config import FollowConfig, WalksConfig
from recsys.ids import IdMap
from recsys.stages import walks
from recsys.stages.feedback import LAST_TS, POSITIVE, STRENGTH
from recsys.stages.similarity import neighbours, positive_matrix

log = logging.getLogger(__name__)

CO_FOLLOWED, PLAYED, CO_LISTENED, ALS, TRUST, MOST_FOLLOWED = (
    "co_followed", "played", "co_listened", "als", "trust", "most_followed"
)
SCORE, RANK, VIA_ID, CONTRIBUTION = "score", "rank", "via_id", "contribution"
PLAYED_TRACKS = "played_tracks"
FOLLOWERS = "followers"
# The personalized PageRank vectors are computed to within this (L1) of the exact ones, in
# single precision (twice as fast as double, and ample for ranking).
TOLERANCE = 1e-6
# Users whose PageRank vectors are computed together (a dense accounts x BLOCK array).
BLOCK = 512
# Hops after which a walk of the circle of trust ends in any case: with a restart chance of 0.3
# a walk outlives 40 hops once in 1.6 million.
TRUST_MAX_HOPS = 40

SCORED = {s.USER_ID: pl.String, s.FOLLOWEE_ID: pl.String, SCORE: pl.Float64, RANK: pl.Int64}


def empty_scored() -> pl.DataFrame:
    return pl.DataFrame(schema=SCORED)


def follow_edges(follows: pl.DataFrame) -> pl.DataFrame:
    """follower_id, followee_id, ts: each edge once (its first date), self-follows dropped."""
    return (
        follows.filter(pl.col(s.FOLLOWER_ID) != pl.col(s.FOLLOWEE_ID))
        .sort(s.FOLLOWER_ID, s.FOLLOWEE_ID, s.TS, nulls_last=False)
        .unique([s.FOLLOWER_ID, s.FOLLOWEE_ID], keep="first", maintain_order=True)
        .select(s.FOLLOWER_ID, s.FOLLOWEE_ID, s.TS)
    )


def excluded(users: pl.Series, follows: pl.DataFrame) -> pl.DataFrame:
    """user_id, followee_id pairs that are never suggested: the user and whom they follow."""
    scope = users.unique().to_frame(s.USER_ID)
    followed = follows.select(pl.col(s.FOLLOWER_ID).alias(s.USER_ID), s.FOLLOWEE_ID).join(
        scope, on=s.USER_ID, how="semi"
    )
    itself = scope.with_columns(pl.col(s.USER_ID).alias(s.FOLLOWEE_ID))
    return pl.concat([followed, itself]).unique()


def top_per_user(scored: pl.DataFrame, n: int, banned: pl.DataFrame) -> pl.DataFrame:
    """Each user's `n` best accounts by score (ties by id) that are not `banned`, ranked from 1."""
    return (
        scored.join(banned, on=[s.USER_ID, s.FOLLOWEE_ID], how="anti")
        .filter(pl.col(SCORE) > 0)
        .sort([s.USER_ID, SCORE, s.FOLLOWEE_ID], descending=[False, True, False])
        .group_by(s.USER_ID, maintain_order=True)
        .head(n)
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(s.USER_ID).alias(RANK))
        .select(s.USER_ID, s.FOLLOWEE_ID, pl.col(SCORE).cast(pl.Float64), RANK)
    )


@dataclass(frozen=True)
class Expansion:
    """What a neighbour expansion started from: the seeds (user_id, via_id, weight) and the
    neighbours (via_id, followee_id, score); kept to name the accounts behind a suggestion."""

    seeds: pl.DataFrame
    similar: pl.DataFrame

    def contributions(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """user_id, followee_id, via_id, contribution: the steps into the (user_id,
        followee_id) `pairs`, each the seed's weight times the similarity."""
        steps = pairs.select(s.USER_ID, s.FOLLOWEE_ID).unique().join(self.seeds, on=s.USER_ID)
        return steps.join(self.similar, on=[VIA_ID, s.FOLLOWEE_ID]).select(
            s.USER_ID, s.FOLLOWEE_ID, VIA_ID,
            (pl.col("weight") * pl.col(SCORE)).cast(pl.Float64).alias(CONTRIBUTION),
        ).filter(pl.col(CONTRIBUTION) > 0)


def expand(
    seeds: pl.DataFrame, similar: pl.DataFrame, banned: pl.DataFrame, n: int
) -> tuple[pl.DataFrame, Expansion]:
    """Neighbour expansion: each account scores the sum over the user's seeds (user_id, via_id,
    weight) of the weight times its similarity to the seed (similar: via_id, followee_id,
    score), computed as a sparse product. Returns each user's `n` best accounts that are not
    `banned`, and the expansion for the reasons."""
    people = IdMap(seeds[s.USER_ID])
    accounts = IdMap(pl.concat([seeds[VIA_ID], similar[VIA_ID], similar[s.FOLLOWEE_ID]]))
    weights = _sparse(seeds, people, s.USER_ID, accounts, VIA_ID, "weight")
    neighbours = _sparse(similar, accounts, VIA_ID, accounts, s.FOLLOWEE_ID, SCORE)
    scores = weights @ neighbours
    blocked = _sparse(banned.with_columns(pl.lit(1.0).alias("weight")), people, s.USER_ID,
                      accounts, s.FOLLOWEE_ID, "weight")
    scores = (scores - scores.multiply(blocked)).tocoo()
    row, col, value = _top_entries(scores.row, scores.col, scores.data, n)
    top = pl.DataFrame({
        s.USER_ID: people.to_ids(row), s.FOLLOWEE_ID: accounts.to_ids(col),
        SCORE: value.astype(np.float64), RANK: _ranks(row),
    })
    return top, Expansion(seeds.select(s.USER_ID, VIA_ID, "weight"), similar)


def _sparse(frame: pl.DataFrame, rows: IdMap, row: str, columns: IdMap, column: str,
            value: str) -> sp.csr_matrix:
    """`frame` as a rows x columns matrix of `value`; ids missing from a map are left out."""
    indexed = columns.to_index(rows.to_index(frame, row, alias="_r"), column, alias="_c")
    indexed = indexed.drop_nulls(["_r", "_c"])
    return sp.csr_matrix(
        (indexed[value].to_numpy().astype(np.float64),
         (indexed["_r"].to_numpy(), indexed["_c"].to_numpy())),
        shape=(len(rows), len(columns)),
    )


def _top_entries(
    row: np.ndarray, col: np.ndarray, value: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `n` largest positive entries of each row, ordered by row, value descending and
    column (ids are numbered in sorted order, so ties go to the smaller id)."""
    best = (
        pl.DataFrame({"r": row, "c": col, "v": value})
        .filter(pl.col("v") > 0)
        .sort(["r", "v", "c"], descending=[False, True, False])
        .group_by("r", maintain_order=True)
        .head(n)
    )
    return best["r"].to_numpy(), best["c"].to_numpy(), best["v"].to_numpy()


def _ranks(row: np.ndarray) -> np.ndarray:
    """1, 2, ... within each run of equal values of a sorted `row`."""
    if row.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    return np.arange(row.size) - np.repeat(starts, np.diff(np.r_[starts, row.size])) + 1


def similar_accounts(
    pairs: pl.DataFrame, cfg: FollowConfig, *, moment: datetime | None = None
) -> pl.DataFrame:
    """via_id, followee_id, score: the neighbours of each account of `pairs` (user_id: the
    follower or listener, track_id: the account, last_ts) under `follow.similarity`."""
    frame = pairs.with_columns(pl.lit(True).alias(POSITIVE))
    matrix, _, accounts = positive_matrix(frame, cfg.similarity, moment=moment)
    if matrix.nnz == 0:
        return pl.DataFrame(schema={VIA_ID: pl.String, s.FOLLOWEE_ID: pl.String,
                                    SCORE: pl.Float64})
    src, dst, score, _ = neighbours(matrix, cfg.similarity)
    return pl.DataFrame({
        VIA_ID: accounts.to_ids(src),
        s.FOLLOWEE_ID: accounts.to_ids(dst),
        SCORE: score.astype(np.float64),
    })


def co_followed(
    follows: pl.DataFrame, users: pl.Series, cfg: FollowConfig, *, moment: datetime
) -> tuple[pl.DataFrame, Expansion]:
    """Accounts followed by the people who follow what the user follows (item-based CF)."""
    pairs = follows.select(
        pl.col(s.FOLLOWER_ID).alias(s.USER_ID),
        pl.col(s.FOLLOWEE_ID).alias(s.TRACK_ID),
        pl.col(s.TS).fill_null(moment).alias(LAST_TS),
    )
    similar = similar_accounts(pairs, cfg, moment=moment)
    seeds = follows.select(
        pl.col(s.FOLLOWER_ID).alias(s.USER_ID), pl.col(s.FOLLOWEE_ID).alias(VIA_ID),
        pl.lit(1.0).alias("weight"),
    ).join(users.unique().to_frame(s.USER_ID), on=s.USER_ID, how="semi")
    return expand(seeds, similar, excluded(users, follows), cfg.per_source)


def creator_feedback(feedback: pl.DataFrame, tracks: pl.DataFrame) -> pl.DataFrame:
    """user_id, creator_id, strength, played_tracks, last_ts: the user's positive feedback summed
    per creator (tracks of an unknown creator left out)."""
    return (
        feedback.filter(pl.col(POSITIVE))
        .join(tracks.select(s.TRACK_ID, s.CREATOR_ID), on=s.TRACK_ID)
        .filter(pl.col(s.CREATOR_ID).is_not_null())
        .group_by(s.USER_ID, s.CREATOR_ID)
        .agg(pl.col(STRENGTH).sum(), pl.len().cast(pl.Int64).alias(PLAYED_TRACKS),
             pl.col(LAST_TS).max())
    )


def played(
    by_creator: pl.DataFrame, users: pl.Series, follows: pl.DataFrame, cfg: FollowConfig
) -> pl.DataFrame:
    """Creators whose tracks the user played, by the strength of that feedback."""
    scored = by_creator.select(
        s.USER_ID, pl.col(s.CREATOR_ID).alias(s.FOLLOWEE_ID), pl.col(STRENGTH).alias(SCORE)
    ).join(users.unique().to_frame(s.USER_ID), on=s.USER_ID, how="semi")
    return top_per_user(scored, cfg.per_source, excluded(users, follows))


def co_listened(
    by_creator: pl.DataFrame, users: pl.Series, follows: pl.DataFrame, cfg: FollowConfig,
    *, moment: datetime,
) -> tuple[pl.DataFrame, Expansion]:
    """Creators that the listeners of the user's creators also play, weighted by the user's
    share of strength in each creator; creators the user played are left out."""
    # In a fixed order, so that each user's shares sum alike whatever order the feedback
    # came in (one pass, or partitions).
    by_creator = by_creator.sort(s.USER_ID, s.CREATOR_ID)
    pairs = by_creator.select(
        s.USER_ID, pl.col(s.CREATOR_ID).alias(s.TRACK_ID), LAST_TS
    )
    similar = similar_accounts(pairs, cfg, moment=moment)
    seeds = by_creator.join(users.unique().to_frame(s.USER_ID), on=s.USER_ID, how="semi").select(
        s.USER_ID, pl.col(s.CREATOR_ID).alias(VIA_ID),
        (pl.col(STRENGTH) / pl.col(STRENGTH).sum().over(s.USER_ID)).alias("weight"),
    )
    heard = by_creator.select(s.USER_ID, pl.col(s.CREATOR_ID).alias(s.FOLLOWEE_ID))
    banned = pl.concat([excluded(users, follows), heard]).unique()
    return expand(seeds, similar, banned, cfg.per_source)


def follower_counts(follows: pl.DataFrame) -> pl.DataFrame:
    """followee_id, followers."""
    return follows.group_by(s.FOLLOWEE_ID).agg(pl.len().cast(pl.Int64).alias(FOLLOWERS))


def most_followed(follows: pl.DataFrame, users: pl.Series, cfg: FollowConfig) -> pl.DataFrame:
    """The most followed accounts, scored by their followers, the same list for everyone."""
    banned = excluded(users, follows)
    # Enough accounts that each user keeps `per_source` after their exclusions.
    most_banned = banned.group_by(s.USER_ID).len()["len"].max() if banned.height else 0
    head = (
        follower_counts(follows)
        .sort([FOLLOWERS, s.FOLLOWEE_ID], descending=[True, False])
        .head(cfg.per_source + int(most_banned or 0))
    )
    scored = users.unique().to_frame(s.USER_ID).join(
        head.select(s.FOLLOWEE_ID, pl.col(FOLLOWERS).cast(pl.Float64).alias(SCORE)), how="cross"
    )
    return top_per_user(scored, cfg.per_source, banned)


def follow_matrix(follows: pl.DataFrame) -> tuple[sp.csr_matrix, IdMap]:
    """The accounts x accounts adjacency of the follow graph (row follows column)."""
    accounts = IdMap(pl.concat([follows[s.FOLLOWER_ID], follows[s.FOLLOWEE_ID]]))
    edges = accounts.to_index(follows, s.FOLLOWER_ID, alias="a")
    edges = accounts.to_index(edges, s.FOLLOWEE_ID, alias="b")
    matrix = sp.csr_matrix(
        (np.ones(edges.height), (edges["a"].to_numpy(), edges["b"].to_numpy())),
        shape=(len(accounts), len(accounts)),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix, accounts


def personalized_pagerank(
    adjacency: sp.csr_matrix, sources: np.ndarray, restart: float
) -> np.ndarray:
    """The personalized PageRank of each node of `sources` (a column per source): the share of
    time a walker spends at each node when, at every step, it jumps back to the source with
    probability `restart` and otherwise follows one out-edge at random; a node without
    out-edges sends the walker back to the source.

    Power iteration: the distance to the answer shrinks by (1 - restart) per step, so after
    log(TOLERANCE) / log(1 - restart) steps each column is within TOLERANCE of it (L1).
    """
    out_degree = np.asarray(adjacency.sum(axis=1)).ravel()
    step = (sp.diags(1 / np.maximum(out_degree, 1)) @ adjacency).T.tocsr().astype(np.float32)
    columns = np.arange(sources.size)
    rank = np.zeros((adjacency.shape[0], sources.size), dtype=np.float32)
    rank[sources, columns] = 1.0
    for _ in range(int(np.ceil(np.log(TOLERANCE / 2) / np.log(1 - restart)))):
        rank = np.float32(1 - restart) * (step @ rank)
        # Whatever did not move on (the restart and the dead ends) goes back to the source.
        rank[sources, columns] += 1 - rank.sum(axis=0)
    return rank


def trust(follows: pl.DataFrame, users: pl.Series, cfg: FollowConfig) -> pl.DataFrame:
    """The circle of trust: each user's top accounts by personalized PageRank from them."""
    if follows.height == 0:
        return empty_scored()
    adjacency, accounts = follow_matrix(follows)
    known = accounts.to_index(users.unique().sort().to_frame(s.USER_ID), s.USER_ID, alias="i")
    nodes = known["i"].drop_nulls().to_numpy().astype(np.int64)
    if nodes.size == 0:
        return empty_scored()
    if adjacency.shape[0] <= cfg.trust_exact_accounts:
        parts = [_trust_block(adjacency, nodes[i:i + BLOCK], cfg)
                 for i in range(0, nodes.size, BLOCK)]
        user, account, score = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    else:
        user, account, score = _trust_walks(adjacency, nodes, cfg)
    frame = pl.DataFrame({
        s.USER_ID: accounts.to_ids(user), s.FOLLOWEE_ID: accounts.to_ids(account), SCORE: score,
    })
    return top_per_user(frame, cfg.per_source, excluded(users, follows))


def _trust_block(
    adjacency: sp.csr_matrix, nodes: np.ndarray, cfg: FollowConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, account, score) arrays of the best accounts of a block of users, the users
    themselves and the accounts they follow left out."""
    rank = personalized_pagerank(adjacency, nodes, cfg.trust_restart).T
    banned = adjacency[nodes] + sp.csr_matrix(
        (np.ones(nodes.size), (np.arange(nodes.size), nodes)), shape=rank.shape
    )
    row, account, score = best_per_row(rank, banned, cfg.per_source)
    return nodes[row], account, score


def _trust_walks(
    adjacency: sp.csr_matrix, nodes: np.ndarray, cfg: FollowConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, account, score) arrays as `_trust_block` gives them, the PageRank estimated by
    `trust_walks` random walks with restart from each user (`walks.directed_graph`): plain
    visit shares, no boosting and no hub caps, keyed by the user so that a user's walks do
    not depend on who else is served."""
    rows = np.arange(nodes.size)
    start = sp.csr_matrix((np.ones(nodes.size), (rows, nodes)), shape=(nodes.size,
                                                                       adjacency.shape[0]))
    banned = adjacency[nodes] + start
    settings = WalksConfig(walks_per_user=cfg.trust_walks, restart=cfg.trust_restart,
                           max_length=TRUST_MAX_HOPS, boost=False, hub_share=None,
                           max_tracks=cfg.per_source)
    found = walks.walk(walks.directed_graph(adjacency), start, settings, users=nodes,
                       exclude=banned).visited
    return (found[walks.USER].to_numpy(), found[walks.TRACK].to_numpy(),
            found[walks.WALK_SCORE].to_numpy())


def best_per_row(
    score: np.ndarray, banned: sp.csr_matrix, keep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, value) of the `keep` largest positive entries of each row of `score`,
    the entries stored in `banned` (same shape) left out; `score` is overwritten."""
    banned = banned.tocoo()
    score[banned.row, banned.col] = -np.inf
    keep = min(keep, score.shape[1])
    if keep == 0 or score.shape[0] == 0:
        return (np.zeros(0, dtype=np.int64),) * 2 + (np.zeros(0),)
    best = np.argpartition(score, score.shape[1] - keep, axis=1)[:, -keep:]
    value = np.take_along_axis(score, best, axis=1)
    found = value > 0
    rows = np.broadcast_to(np.arange(score.shape[0])[:, None], best.shape)
    return rows[found], best[found], value[found].astype(np.float64)
