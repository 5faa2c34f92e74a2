"""Measuring who-to-follow lists, and the seeded hold-out of undated edges.

A list is scored against the accounts a user went on to follow (the targets): recall@k is the
share of the user's targets in their top k, NDCG@k the discounted gain of those hits
(1 / log2(rank + 1)) over that of the ideal list, which puts min(k, targets) hits first. Both
are averaged over the users with at least one target, whether or not the list holds any.

Where follows carry no date (HetRec's friend graph), the targets are a seeded random share of
the edges instead: a stable hash of the seed and the edge puts each edge in a bucket in [0, 1),
so the split does not depend on the order of the rows, and both directions of a friendship
fall in the same bucket (keeping one would give the other away).
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from recsys import schema as s

RANK = "rank"
BUCKET = "bucket"
RECALL, NDCG, USERS = "recall", "ndcg", "users"


def ranking_metrics(ranked: pl.DataFrame, targets: pl.DataFrame, *, k: int = 10) -> dict:
    """recall, ndcg (means over the users of `targets`) and users, for the lists `ranked`
    (user_id, followee_id, rank from 1) against `targets` (user_id, followee_id)."""
    keys = [s.USER_ID, s.FOLLOWEE_ID]
    targets = targets.select(keys).unique()
    if targets.height == 0:
        return {RECALL: None, NDCG: None, USERS: 0}
    hits = (
        ranked.filter(pl.col(RANK) <= k)
        .join(targets, on=keys, how="semi")
        .group_by(s.USER_ID)
        .agg(pl.len().alias("hits"), (1 / (pl.col(RANK) + 1).cast(pl.Float64).log(2)).sum()
             .alias("dcg"))
    )
    per_user = (
        targets.group_by(s.USER_ID).agg(pl.len().alias("wanted"))
        .join(hits, on=s.USER_ID, how="left")
        .with_columns(pl.col("hits", "dcg").fill_null(0))
        .sort(s.USER_ID)  # a fixed order of the sums: the same figures on every run
    )
    wanted = per_user["wanted"].to_numpy()
    # The ideal list's DCG: hits at ranks 1..min(k, targets).
    ideal = np.cumsum(1 / np.log2(np.arange(2, k + 2)))[np.minimum(wanted, k) - 1]
    return {
        RECALL: float(np.mean(per_user["hits"].to_numpy() / wanted)),
        NDCG: float(np.mean(per_user["dcg"].to_numpy() / ideal)),
        USERS: per_user.height,
    }


def stable_bucket(keys: pl.Series, seed: int) -> pl.Series:
    """A number in [0, 1) per key, from a hash of the seed and the key."""
    def bucket(key: str) -> float:
        digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    return keys.map_elements(bucket, return_dtype=pl.Float64)


def edge_buckets(follows: pl.DataFrame, seed: int) -> pl.DataFrame:
    """`follows` with a `bucket` column: the same for both directions of a pair."""
    low = pl.min_horizontal(s.FOLLOWER_ID, s.FOLLOWEE_ID)
    high = pl.max_horizontal(s.FOLLOWER_ID, s.FOLLOWEE_ID)
    pair = follows.select((low + "\t" + high).alias("pair"))["pair"]
    return follows.with_columns(stable_bucket(pair, seed).alias(BUCKET))


def holdout_edges(
    follows: pl.DataFrame, share: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, held): the edges whose bucket is at least `share`, and the others."""
    bucketed = edge_buckets(follows, seed)
    held = pl.col(BUCKET) < share
    return bucketed.filter(~held).drop(BUCKET), bucketed.filter(held).drop(BUCKET)


def pair_buckets(pairs: pl.DataFrame, left: str, right: str, seed: int) -> pl.Series:
    """A stable bucket per (left, right) pair, in order (for hold-outs that are not edges)."""
    return stable_bucket(pairs.select(pl.col(left) + "\t" + pl.col(right))[left], seed)
