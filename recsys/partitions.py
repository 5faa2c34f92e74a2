"""User partitions: the per-user stages run over slices of the users, and what each slice
produces is put together here.

A partition is a run of consecutive user ids (sorted as strings), so that the tables written
partition after partition come out in the same order as in one pass. Nothing a per-user stage
computes for one user depends on the others of its partition: the global figures (feedback of
everyone, neighbours, popularity, the listener graph) are computed once and shared.

The users chosen by a seeded hash of their id (for SHAP values, or for training rows) are the
same however the users are partitioned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import polars as pl

from recsys import schema as s
from recsys.evaluate import FOUND, POSITIVES, RECALL, SOURCE_SET, USERS
from recsys.stages.curation import REMOVED, RULE, USERS_AFFECTED


def partitions(users: pl.Series, size: int | None) -> Iterator[pl.Series]:
    """The distinct `users`, sorted, in consecutive slices of at most `size` (one slice for
    None). No users make one empty slice, so that the stages still give their empty tables."""
    users = users.unique().sort()
    size = size or max(len(users), 1)
    for start in range(0, max(len(users), 1), size):
        yield users.slice(start, size)


def count(users: pl.Series, size: int | None) -> int:
    """How many partitions `partitions(users, size)` yields."""
    n = users.n_unique()
    return max(-(-n // size) if size else 1, 1)


def draw(users: pl.Series, seed: int) -> pl.Series:
    """A pseudo-random number in [0, 1) per user, from a hash of the seed and the id: stable
    across runs, machines and library versions."""
    def number(user: str) -> float:
        digest = hashlib.blake2b(f"{seed}:{user}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    return users.map_elements(number, return_dtype=pl.Float64)


def share_of(users: pl.Series, share: float, seed: int) -> pl.Series:
    """The users whose draw falls below `share`: about that share of them, any partition."""
    if share >= 1:
        return users
    return users.filter(draw(users, seed) < share)


def sample(users: pl.Series, k: int | None, seed: int) -> pl.Series:
    """The `k` distinct users with the smallest draws (all of them when `k` is None)."""
    users = users.unique()
    if k is None or len(users) <= k:
        return users.sort()
    order = pl.DataFrame({s.USER_ID: users, "draw": draw(users, seed)})
    return order.sort("draw", s.USER_ID).head(k)[s.USER_ID].sort()


def combine_recall(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Candidate recall over all partitions: positives, found and users add up (a user is in
    one partition), and recall is found over positives again."""
    total = pl.concat(parts).group_by(SOURCE_SET, maintain_order=True).agg(
        pl.col(POSITIVES).sum(), pl.col(FOUND).sum(), pl.col(USERS).sum()
    )
    recall = pl.when(pl.col(POSITIVES) > 0).then(pl.col(FOUND) / pl.col(POSITIVES))
    return total.with_columns(recall.alias(RECALL)).select(parts[0].columns)


def combine_effects(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """The curator rules' effects over all partitions (users are counted in one partition)."""
    return pl.concat(parts).group_by(RULE, maintain_order=True).agg(
        pl.col(REMOVED).sum(), pl.col(USERS_AFFECTED).sum()
    )
