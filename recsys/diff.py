"""Comparing two runs: how much each user's list changed, which tracks and creators gained or
lost exposure, and how the bias and evaluation figures moved.

- **Churn**: for each user with a list in both runs, the Jaccard index of the two top-N sets
  of tracks (|A and B| / |A or B|: 1 for the same tracks in any order, 0 for none in common),
  with N the shorter of the two runs' list lengths; its mean, median and distribution; and the
  users who have a list in one run only (new, or gone).
- **Exposure**: per track and per creator, the change in recommendation share (slots over all
  slots, from each run's `exposure` table), the largest rises and falls.
- **Bias** (`popularity_bias`) and **evaluation** (`ranker_evaluation`, the users-weighted mean
  over its windows): each figure in both runs and its change (B minus A).

Both run files are attached read-only to one in-memory DuckDB, so the per-user work runs in
DuckDB rather than in Python memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

BUCKETS = 10  # the distribution of Jaccard indices in tenths, 1.0 on its own
TOP = 10  # rises and falls listed per entity kind


@dataclass(frozen=True)
class RunDiff:
    """Run B against run A (see the module's docstring)."""

    run_a: dict  # run_id, as_of, recommendations of run A's summary row
    run_b: dict
    n: int  # the list length compared
    churn: pl.DataFrame  # user_id, in_a, in_b, common, jaccard: users with a list in both
    only_a: pl.DataFrame  # user_id, recommendations: users with a list in A only
    only_b: pl.DataFrame
    distribution: pl.DataFrame  # bucket, low, high, users, share
    exposure: pl.DataFrame  # entity, entity_id, name, slots_a, slots_b, share_a, share_b, change
    bias: pl.DataFrame  # entity, metric, value_a, value_b, change
    evaluation: pl.DataFrame  # order, metric, value_a, users_a, value_b, users_b, change

    @property
    def mean_jaccard(self) -> float | None:
        return self.churn["jaccard"].mean() if self.churn.height else None

    @property
    def median_jaccard(self) -> float | None:
        return self.churn["jaccard"].median() if self.churn.height else None

    @property
    def unchanged_share(self) -> float | None:
        """Share of the users in both runs whose set of tracks did not change."""
        if not self.churn.height:
            return None
        return float((self.churn["jaccard"] == 1.0).mean())

    def rises(self, entity: str, top: int = TOP) -> pl.DataFrame:
        """The `top` tracks or creators whose recommendation share grew most."""
        grew = self.exposure.filter((pl.col("entity") == entity) & (pl.col("change") > 0))
        return grew.sort(["change", "entity_id"], descending=[True, False]).head(top)

    def falls(self, entity: str, top: int = TOP) -> pl.DataFrame:
        """The `top` tracks or creators whose recommendation share shrank most."""
        shrank = self.exposure.filter((pl.col("entity") == entity) & (pl.col("change") < 0))
        return shrank.sort(["change", "entity_id"]).head(top)


def diff_runs(path_a: str | Path, path_b: str | Path) -> RunDiff:
    """Compare the run file at `path_b` with the one at `path_a`."""
    with _attached(path_a, path_b) as con:
        n = _list_length(con)
        churn = _read(con, CHURN, n=n)
        return RunDiff(
            run_a=_summary(con, "run_a"),
            run_b=_summary(con, "run_b"),
            n=n,
            churn=churn,
            only_a=_read(con, ONLY_IN.format(this="run_a", other="run_b"), n=n),
            only_b=_read(con, ONLY_IN.format(this="run_b", other="run_a"), n=n),
            distribution=_distribution(churn),
            exposure=_read(con, EXPOSURE),
            bias=_read(con, BIAS),
            evaluation=_read(con, EVALUATION),
        )


@contextlib.contextmanager
def _attached(path_a: str | Path, path_b: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    try:
        for name, path in (("run_a", path_a), ("run_b", path_b)):
            con.execute(f"ATTACH $path AS {name} (READ_ONLY)", {"path": str(path)})
        yield con
    finally:
        con.close()


def _read(con: duckdb.DuckDBPyConnection, sql: str, **params: object) -> pl.DataFrame:
    return con.sql(sql, params=params or None).pl()


def _list_length(con: duckdb.DuckDBPyConnection) -> int:
    """The shorter of the two runs' longest lists (their N)."""
    sql = """SELECT least((SELECT max(rank) FROM run_a.recommendations),
                          (SELECT max(rank) FROM run_b.recommendations))"""
    return int(con.sql(sql).fetchall()[0][0] or 0)


def _summary(con: duckdb.DuckDBPyConnection, run: str) -> dict:
    sql = f"SELECT run_id, as_of, recommendations FROM {run}.runs"
    return con.sql(sql).pl().row(0, named=True)


def _distribution(churn: pl.DataFrame) -> pl.DataFrame:
    """Users per tenth of the Jaccard index ([0, 0.1), ..., [0.9, 1)) and at exactly 1."""
    bucket = pl.min_horizontal((pl.col("jaccard") * BUCKETS).floor().cast(pl.Int64), BUCKETS)
    counts = churn.group_by(bucket.alias("bucket")).agg(pl.len().alias("users"))
    every = pl.DataFrame({"bucket": range(BUCKETS + 1)})
    total = max(churn.height, 1)
    return (
        every.join(counts, on="bucket", how="left")
        .with_columns(
            (pl.col("bucket") / BUCKETS).alias("low"),
            pl.min_horizontal((pl.col("bucket") + 1) / BUCKETS, 1.0).alias("high"),
            pl.col("users").fill_null(0).cast(pl.Int64),
        )
        .with_columns((pl.col("users") / total).alias("share"))
        .select("bucket", "low", "high", "users", "share")
    )


CHURN = """
    WITH a AS (SELECT DISTINCT user_id, track_id FROM run_a.recommendations WHERE rank <= $n),
         b AS (SELECT DISTINCT user_id, track_id FROM run_b.recommendations WHERE rank <= $n),
         na AS (SELECT user_id, count(*) AS in_a FROM a GROUP BY user_id),
         nb AS (SELECT user_id, count(*) AS in_b FROM b GROUP BY user_id),
         both_runs AS (SELECT user_id, count(*) AS common FROM a JOIN b USING (user_id, track_id)
                       GROUP BY user_id)
    SELECT user_id, in_a, in_b, coalesce(common, 0) AS common,
           coalesce(common, 0) / (in_a + in_b - coalesce(common, 0)) AS jaccard
    FROM na JOIN nb USING (user_id) LEFT JOIN both_runs USING (user_id)
    ORDER BY user_id
"""

ONLY_IN = """
    SELECT user_id, count(*) AS recommendations FROM {this}.recommendations
    WHERE rank <= $n AND user_id NOT IN (SELECT user_id FROM {other}.recommendations)
    GROUP BY user_id ORDER BY user_id
"""

EXPOSURE = """
    WITH a AS (SELECT entity, entity_id, slots, recommendation_share FROM run_a.exposure),
         b AS (SELECT entity, entity_id, slots, recommendation_share FROM run_b.exposure),
         joined AS (
            SELECT entity, entity_id, coalesce(a.slots, 0) AS slots_a,
                   coalesce(b.slots, 0) AS slots_b,
                   coalesce(a.recommendation_share, 0) AS share_a,
                   coalesce(b.recommendation_share, 0) AS share_b
            FROM a FULL JOIN b USING (entity, entity_id)),
         names AS (
            SELECT 'track' AS entity, track_id AS entity_id, title AS name FROM run_b.tracks
            UNION ALL
            SELECT 'creator', user_id, name FROM run_b.users)
    SELECT j.entity, j.entity_id, n.name, j.slots_a, j.slots_b, j.share_a, j.share_b,
           j.share_b - j.share_a AS change
    FROM joined j LEFT JOIN names n USING (entity, entity_id)
    WHERE j.slots_a > 0 OR j.slots_b > 0
    ORDER BY j.entity, j.entity_id
"""

BIAS = """
    SELECT entity, metric, a.value AS value_a, b.value AS value_b, b.value - a.value AS change
    FROM run_a.popularity_bias a FULL JOIN run_b.popularity_bias b USING (entity, metric)
    ORDER BY entity, metric
"""

EVALUATION = """
    WITH a AS (SELECT "order", metric, sum(value * users) / sum(users) AS value,
                      CAST(sum(users) AS BIGINT) AS users
               FROM run_a.ranker_evaluation GROUP BY ALL),
         b AS (SELECT "order", metric, sum(value * users) / sum(users) AS value,
                      CAST(sum(users) AS BIGINT) AS users
               FROM run_b.ranker_evaluation GROUP BY ALL)
    SELECT "order", metric, a.value AS value_a, a.users AS users_a, b.value AS value_b,
           b.users AS users_b, b.value - a.value AS change
    FROM a FULL JOIN b USING ("order", metric)
    ORDER BY "order", metric
"""
