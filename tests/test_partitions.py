"""User partitions: the per-user stages run over slices of the users and give the same run.

The main promise: the batch over partitions of 700 users (five partitions, for training as for
serving) writes exactly the tables of the batch in one pass on the sample data.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from recsys import partitions
from recsys.config import Config, config_from
from recsys.io.dataset import read_dataset
from recsys.io.generate import generate
from recsys.pipeline import labelled_rows, run_batch
from recsys.stages.labels import LABEL, labels
from recsys.store import CURRENT

from conftest import SAMPLE_DATA

SEED = 0


def draw(user: str, seed: int = SEED) -> float:
    """The blake2b draw of a user, computed here independently of the engine."""
    digest = hashlib.blake2b(f"{seed}:{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("partitions") / "data"
    generate(data, users=400, tracks=400, seed=2, config=Config().generator)
    return data


def differences(path_a: Path, path_b: Path, table: str) -> tuple[int, int, int]:
    """Rows of `table` in A, rows only in A, rows only in B (as multisets)."""
    with duckdb.connect() as con:
        con.execute("ATTACH ? AS a (READ_ONLY)", [str(path_a)])
        con.execute("ATTACH ? AS b (READ_ONLY)", [str(path_b)])
        only = [con.sql(f'SELECT count(*) FROM (SELECT * FROM {x}."{table}" EXCEPT ALL '
                        f'SELECT * FROM {y}."{table}")').fetchall()[0][0]
                for x, y in (("a", "b"), ("b", "a"))]
        rows = con.sql(f'SELECT count(*) FROM a."{table}"').fetchall()[0][0]
    return rows, *only


@pytest.mark.slow
def test_a_run_over_partitions_writes_the_same_tables_as_one_pass(sample_store, tmp_path):
    users = read_dataset(SAMPLE_DATA).users.height
    assert Config().batch.partition_users >= users  # the sample store is one partition
    cfg = config_from({"batch": {"partition_users": 700}})
    result = run_batch(SAMPLE_DATA, tmp_path / "store", cfg=cfg)

    one_pass = (sample_store / CURRENT).resolve()
    with duckdb.connect(str(result.path), read_only=True) as con:
        tables = [row[0] for row in con.sql("SHOW TABLES").fetchall()]
        [(model,)] = con.sql("SELECT content FROM models").fetchall()
    with duckdb.connect(str(one_pass), read_only=True) as con:
        [(one_pass_model,)] = con.sql("SELECT content FROM models").fetchall()
    assert model == one_pass_model  # the same training rows give the same trees
    compared = [t for t in tables if t not in ("runs", "stages", "models")]
    assert {"recommendations", "recommendation_reasons", "shap_values", "candidates",
            "walk_paths", "exposure", "candidate_recall", "curator_effects"} <= set(compared)
    for table in compared:
        rows, only_here, only_there = differences(result.path, one_pass, table)
        assert (only_here, only_there) == (0, 0), table
        assert rows > 0 or table == "curator_effects", table

    # One line per stage, the per-user stages summed over the five partitions.
    stages = {row["stage"]: row for row in result.stages}
    assert list(stages) == ["validate", "training rows", "ranker", "global", "candidates",
                            "features", "scoring", "explanations", "bias", "follow", "store"]
    assert stages["candidates"]["rows"] == users + rows_of(result.path, "candidates")
    assert all(row["peak_memory_mb"] > 0 for row in result.stages)


def rows_of(path: Path, table: str) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]


def test_partitions_are_consecutive_slices_of_the_sorted_users():
    users = pl.Series(["c", "a", "e", "b", "a", "d"])
    assert [p.to_list() for p in partitions.partitions(users, 2)] == [
        ["a", "b"], ["c", "d"], ["e"]]
    assert partitions.count(users, 2) == 3
    assert [p.to_list() for p in partitions.partitions(users, None)] == [
        ["a", "b", "c", "d", "e"]]
    assert partitions.count(users, None) == 1
    # No users: one empty partition, so that the stages still give their (empty) tables.
    assert [p.to_list() for p in partitions.partitions(pl.Series([], dtype=pl.String), 2)] == [[]]


def test_users_are_chosen_by_a_hash_of_their_id_whatever_the_partitions():
    users = pl.Series([f"u{i}" for i in range(1000)])
    chosen = partitions.share_of(users, 0.1, SEED).to_list()
    assert chosen == [u for u in users if draw(u) < 0.1]
    assert 60 < len(chosen) < 140
    by_parts = [u for part in partitions.partitions(users, 7)
                for u in partitions.share_of(part, 0.1, SEED)]
    assert sorted(by_parts) == sorted(chosen)
    assert partitions.sample(users, 5, SEED).to_list() == sorted(sorted(users, key=draw)[:5])
    assert partitions.share_of(users, 1.0, SEED).to_list() == users.to_list()


def test_recall_and_curator_effects_add_up_over_partitions():
    one = pl.DataFrame({"sources": ["similar", "all"], "positives": [10, 10], "found": [4, 6],
                        "recall": [0.4, 0.6], "users": [3, 3]})
    two = pl.DataFrame({"sources": ["similar", "all"], "positives": [30, 30], "found": [6, 24],
                        "recall": [0.2, 0.8], "users": [5, 5]})
    total = partitions.combine_recall([one, two])
    assert total.rows() == [("similar", 40, 10, 0.25, 8), ("all", 40, 30, 0.75, 8)]
    effects = partitions.combine_effects([
        pl.DataFrame({"rule": ["block_list"], "recommendations_removed": [2],
                      "users_affected": [1]}),
        pl.DataFrame({"rule": ["block_list"], "recommendations_removed": [5],
                      "users_affected": [3]}),
    ])
    assert effects.rows() == [("block_list", 7, 4)]


def test_shap_values_for_a_share_of_users(small_data, tmp_path):
    cfg = config_from({"recommend": {"shap_share": 0.25},
                                 "batch": {"partition_users": 150}})
    result = run_batch(small_data, tmp_path / "store", cfg=cfg)
    with duckdb.connect(str(result.path), read_only=True) as con:
        listed = [u for (u,) in con.sql("SELECT DISTINCT user_id FROM recommendations")
                  .fetchall()]
        explained = {u for (u,) in con.sql("SELECT DISTINCT user_id FROM shap_values")
                     .fetchall()}
        gaps = con.sql("""
            SELECT max(abs(r.score - (SELECT expected_value FROM runs) - s.total))
            FROM recommendations r JOIN (SELECT user_id, track_id, sum(value) AS total
                                         FROM shap_values GROUP BY ALL) s
            USING (user_id, track_id)""").fetchall()[0][0]
        half_listed = con.sql("""SELECT count(*) FROM recommendations r
            WHERE r.user_id IN (SELECT user_id FROM shap_values) AND NOT EXISTS (
              SELECT 1 FROM shap_values s WHERE s.user_id = r.user_id
              AND s.track_id = r.track_id)""").fetchall()[0][0]
    assert explained == {u for u in listed if draw(u, cfg.ranker.seed) < 0.25}
    assert 0.1 * len(listed) < len(explained) < 0.4 * len(listed)
    assert gaps < 1e-6  # the expected value plus the stored values is the score
    assert half_listed == 0  # a chosen user's whole list is explained


def test_training_rows_of_a_sample_of_the_labelled_users(small_data):
    data = read_dataset(small_data)
    end = data.events["ts"].max()
    cut = end - timedelta(days=28)
    cfg = config_from({"ranker": {"training_users": 40},
                                 "batch": {"partition_users": 15}})
    rows, recall = labelled_rows(data, cut, end, cfg)

    # The 40 users with the smallest draws among those with history before the cut and a
    # positive label after it.
    graded = labels(data.events, start=cut, end=end, kpi="plays", weights=cfg.feedback)
    before = set(data.events.filter(pl.col("ts") < cut)["user_id"])
    labelled = set(graded.filter(pl.col(LABEL) > 0)["user_id"]) & before
    assert len(labelled) > 100
    chosen = set(sorted(labelled, key=lambda u: (draw(u), u))[:40])
    assert set(rows["user_id"]) == chosen
    assert recall["users"].max() <= 40


def test_the_inspector_computes_shap_for_a_user_outside_the_batchs_share(
    small_data, tmp_path, monkeypatch
):
    from test_app import open_page

    cfg = config_from({"recommend": {"shap_share": 0.25}})
    result = run_batch(small_data, tmp_path / "store", cfg=cfg)
    with duckdb.connect(str(result.path), read_only=True) as con:
        [(user_id,)] = con.sql("""SELECT min(user_id) FROM recommendations
                                  WHERE user_id NOT IN (SELECT user_id FROM shap_values)""") \
            .fetchall()
    assert draw(user_id) >= 0.25  # left out by its seeded draw, not by chance
    at = open_page(tmp_path / "store", monkeypatch, "pages/inspector.py", user=user_id)
    assert not any("No SHAP values" in note.value for note in at.info)
    assert any("Computed now" in caption.value for caption in at.caption)
    traces = [trace["type"] for chart in at.get("plotly_chart")
              for trace in json.loads(chart.proto.spec)["data"]]
    assert "waterfall" in traces
