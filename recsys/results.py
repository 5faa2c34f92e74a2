"""Evaluation and sweep files: work that writes after a run, each into its own file.

    DIR/evaluations/<id>.duckdb   one file per `recsys evaluate`
    DIR/sweeps/<id>.duckdb        one file per `recsys sweep`

Each is written like a run file (under a temporary name, checkpointed, closed and renamed into
place when complete), but no pointer moves: the newest file of a folder is the one the pages
show. The readers below take a read-only connection to one such file and return polars frames.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import duckdb
import polars as pl

from recsys.store import TMP_SUFFIX, RunWriter

log = logging.getLogger(__name__)

EVALUATIONS, SWEEPS = "evaluations", "sweeps"


class ResultWriter(RunWriter):
    """Writes an evaluation's or a sweep's tables into `store/<folder>/<id>.duckdb`."""

    def __init__(self, store: str | Path, folder: str, result_id: str):
        self.store = Path(store)
        self.run_id = result_id
        self.final = self.store / folder / f"{result_id}.duckdb"
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.final.with_name(f".{result_id}{TMP_SUFFIX}")
        self.tmp_path.unlink(missing_ok=True)
        self.con = duckdb.connect(str(self.tmp_path))

    def publish(self) -> Path:
        """Checkpoint, close and rename into place."""
        self.con.execute("CHECKPOINT")
        self.con.close()
        os.replace(self.tmp_path, self.final)
        log.debug("published %s", self.final)
        return self.final

    def write_all(self, tables: dict[str, pl.DataFrame]) -> Path:
        """Write every table and publish; on any failure nothing is left behind."""
        try:
            for name, frame in tables.items():
                self.write(name, frame)
            return self.publish()
        except BaseException:
            self.abandon()
            raise


def result_files(store: str | Path, folder: str) -> list[Path]:
    """The published files of `folder` (evaluations or sweeps), newest first."""
    found = (Path(store) / folder).glob("*.duckdb")
    return sorted((p for p in found if not p.name.startswith(".")), reverse=True)


def latest(store: str | Path, folder: str) -> Path | None:
    files = result_files(store, folder)
    return files[0] if files else None


def read(con: duckdb.DuckDBPyConnection, sql: str, **params: object) -> pl.DataFrame:
    return con.sql(sql, params=params or None).pl()


def _utc(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(pl.Datetime("us", "*")).dt.convert_time_zone("UTC"))


# Evaluation files.


def evaluation_summary(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The evaluation's one row: id, created_at, input, kpi, window_days, as_of, cuts,
    users_scored, seconds, config."""
    return _utc(read(con, "SELECT * FROM evaluation"))


def cuts(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """One row per cut: cut, as_of, window_end, validation_start, users_scored, positives,
    users_without_positive, cold_users."""
    return _utc(read(con, "SELECT * FROM cuts ORDER BY cut"))


def metrics(con: duckdb.DuckDBPyConnection, slice_kind: str = "all") -> pl.DataFrame:
    """model, metric, k, value, users, slice: the rows of one slice kind."""
    sql = """
        SELECT model, metric, k, value, users, slice FROM metrics
        WHERE slice_kind = $slice_kind ORDER BY model, metric, k, slice
    """
    return read(con, sql, slice_kind=slice_kind)


def model_status(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """model, status: evaluated, or skipped and why."""
    return read(con, "SELECT model, status FROM model_status")


def tuning(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The settings each baseline tried per cut, with their validation NDCG@10."""
    return read(con, "SELECT * FROM tuning ORDER BY cut, model, params")


def faithfulness(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """One row per recommendation tested: user_id, track_id, seed_track_id, reason_kind,
    score_before, score_after, dropped, still_candidate."""
    return read(con, "SELECT * FROM faithfulness ORDER BY user_id, track_id")


# Sweep files.


def sweep_summary(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The sweep's one row: sweep_id, created_at, input, as_of (the latest cut), window_end,
    cuts, sample_users, users_scored, in_use, seed, seconds."""
    return _utc(read(con, "SELECT * FROM sweep"))


def sweep_points(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """One row per damping setting: setting, measure, beta, bm25_k1, bm25_b, ndcg, tail_share,
    gini, coverage, mean_popularity, users."""
    return read(con, "SELECT * FROM sweep_points ORDER BY measure, setting")
