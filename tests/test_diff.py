"""Run-to-run diffs on two run files built by hand, with every figure worked out by hand.

Run A (lists of 3):  u1 t1 t2 t3 | u2 t1 t4 t5 | u3 t2 t3 t6 | u4 t1 t2 t3
Run B:               u1 t3 t1 t2 | u2 t1 t6 t7 | u3 t4 t5 t7 | u5 t1 t2

Jaccard: u1 3/3 = 1 (same tracks, another order); u2 {t1} 1/5 = 0.2; u3 none, 0/6 = 0.
Mean (1 + 0.2 + 0) / 3 = 0.4, median 0.2, one user in three unchanged. u4 is in A only, u5
in B only. Creators: c1 makes t1 t2, c2 t3 t4, c3 t5 t6 t7.

Slots, A (12 in all): t1 3, t2 3, t3 3, t4 1, t5 1, t6 1; c1 6, c2 4, c3 2.
Slots, B (11 in all): t1 3, t2 2, t3 1, t4 1, t5 1, t6 1, t7 2; c1 5, c2 2, c3 4.
Share changes: t7 2/11 - 0 = +0.181818, t1 3/11 - 3/12 = +0.022727, t4 t5 t6 1/11 - 1/12 =
+0.007576 each, t2 2/11 - 3/12 = -0.068182, t3 1/11 - 3/12 = -0.159091; c3 4/11 - 2/12 =
+0.196970, c1 5/11 - 6/12 = -0.045455, c2 2/11 - 4/12 = -0.151515.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.diff import diff_runs

CREATOR = {"t1": "c1", "t2": "c1", "t3": "c2", "t4": "c2", "t5": "c3", "t6": "c3", "t7": "c3"}
LISTS_A = {"u1": ["t1", "t2", "t3"], "u2": ["t1", "t4", "t5"], "u3": ["t2", "t3", "t6"],
           "u4": ["t1", "t2", "t3"]}
LISTS_B = {"u1": ["t3", "t1", "t2"], "u2": ["t1", "t6", "t7"], "u3": ["t4", "t5", "t7"],
           "u5": ["t1", "t2"]}
BIAS_A = {("track", "gini"): 0.5, ("track", "top1_share"): 0.3}
BIAS_B = {("track", "gini"): 0.6, ("track", "top1_share"): 0.25}
EVAL_A = [("ranker", 0.30, 100), ("candidate_order", 0.25, 100)]
# Two windows in B: the users-weighted mean of the ranker's is (0.4 * 100 + 0.3 * 300) / 400.
EVAL_B = [("ranker", 0.40, 100), ("ranker", 0.30, 300), ("candidate_order", 0.24, 400)]


def write_run(path: Path, run_id: str, day: int, lists: dict, bias: dict, evaluation: list):
    recs = pl.DataFrame(
        [(u, r, t) for u, tracks in lists.items() for r, t in enumerate(tracks, 1)],
        schema=["user_id", "rank", "track_id"], orient="row",
    )
    slots = recs.group_by("track_id").len("slots")
    total = recs.height
    tracks = pl.DataFrame({"track_id": list(CREATOR), "creator_id": list(CREATOR.values())})
    exposure = pl.concat([
        slots.select(pl.lit("track").alias("entity"), pl.col("track_id").alias("entity_id"),
                     "slots"),
        slots.join(tracks, on="track_id").group_by("creator_id").agg(pl.col("slots").sum())
        .select(pl.lit("creator").alias("entity"), pl.col("creator_id").alias("entity_id"),
                "slots"),
    ]).with_columns((pl.col("slots") / total).alias("recommendation_share"))
    frames = {
        "runs": pl.DataFrame({"run_id": [run_id], "recommendations": [total],
                              "as_of": [datetime(2026, 6, day, tzinfo=timezone.utc)]}),
        "recommendations": recs,
        "tracks": tracks.with_columns(("title " + pl.col("track_id")).alias("title")),
        "users": pl.DataFrame({"user_id": ["c1", "c2", "c3"], "name": ["One", "Two", None]}),
        "exposure": exposure,
        "popularity_bias": pl.DataFrame(
            [(e, m, v) for (e, m), v in bias.items()], schema=["entity", "metric", "value"],
            orient="row"),
        "ranker_evaluation": pl.DataFrame(
            [(o, "ndcg@10", v, n) for o, v, n in evaluation],
            schema=["order", "metric", "value", "users"], orient="row"),
    }
    with duckdb.connect(str(path)) as con:
        for name, frame in frames.items():
            con.register("frame", frame.to_arrow())
            con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')
            con.unregister("frame")
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    (tmp_path / "runs").mkdir()
    write_run(tmp_path / "runs" / "A.duckdb", "A", 1, LISTS_A, BIAS_A, EVAL_A)
    write_run(tmp_path / "runs" / "B.duckdb", "B", 2, LISTS_B, BIAS_B, EVAL_B)
    return tmp_path


def test_churn_is_the_jaccard_of_each_users_two_lists(store):
    d = diff_runs(store / "runs" / "A.duckdb", store / "runs" / "B.duckdb")
    assert d.n == 3
    assert d.churn.select("user_id", "in_a", "in_b", "common").rows() == [
        ("u1", 3, 3, 3), ("u2", 3, 3, 1), ("u3", 3, 3, 0)]
    assert d.churn["jaccard"].to_list() == pytest.approx([1.0, 0.2, 0.0])
    assert d.mean_jaccard == pytest.approx(0.4)
    assert d.median_jaccard == pytest.approx(0.2)
    assert d.unchanged_share == pytest.approx(1 / 3)
    assert d.only_a.rows() == [("u4", 3)]
    assert d.only_b.rows() == [("u5", 2)]
    users = dict(zip(d.distribution["bucket"], d.distribution["users"]))
    assert users == {0: 1, 1: 0, 2: 1, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0, 8: 0, 9: 0, 10: 1}
    assert d.distribution["share"].sum() == pytest.approx(1.0)


def test_exposure_rises_and_falls_by_share_of_the_slots(store):
    d = diff_runs(store / "runs" / "A.duckdb", store / "runs" / "B.duckdb")
    rises = d.rises("track", 2)
    assert rises.select("entity_id", "slots_a", "slots_b").rows() == [("t7", 0, 2), ("t1", 3, 3)]
    assert rises["change"].to_list() == pytest.approx([2 / 11, 3 / 11 - 3 / 12])
    assert rises["name"].to_list() == ["title t7", "title t1"]
    falls = d.falls("track", 10)
    assert falls["entity_id"].to_list() == ["t3", "t2"]
    assert falls["change"].to_list() == pytest.approx([1 / 11 - 3 / 12, 2 / 11 - 3 / 12])
    # Ties break by id: t4, t5 and t6 each rose by 1/11 - 1/12.
    assert d.rises("track")["entity_id"].to_list() == ["t7", "t1", "t4", "t5", "t6"]
    creators = d.rises("creator").rows(named=True)
    assert [(c["entity_id"], c["name"]) for c in creators] == [("c3", None)]
    assert creators[0]["change"] == pytest.approx(4 / 11 - 2 / 12)
    falls = d.falls("creator")
    assert falls.select("entity_id", "name").rows() == [("c2", "Two"), ("c1", "One")]
    assert falls["change"].to_list() == pytest.approx([2 / 11 - 4 / 12, 5 / 11 - 6 / 12])


def test_bias_and_evaluation_changes(store):
    d = diff_runs(store / "runs" / "A.duckdb", store / "runs" / "B.duckdb")
    assert d.bias.select("entity", "metric").rows() == [("track", "gini"),
                                                        ("track", "top1_share")]
    assert d.bias["change"].to_list() == pytest.approx([0.1, -0.05])
    evaluation = {row["order"]: row for row in d.evaluation.iter_rows(named=True)}
    assert evaluation["ranker"]["value_b"] == pytest.approx(0.325)
    assert evaluation["ranker"]["users_b"] == 400
    assert evaluation["ranker"]["change"] == pytest.approx(0.025)
    assert evaluation["candidate_order"]["change"] == pytest.approx(-0.01)


def test_recsys_diff_prints_the_figures(store):
    result = CliRunner().invoke(app, ["diff", "A", "B", "--store", str(store), "--top", "2"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert ("top 3 lists of 3 users in both runs: mean Jaccard 0.400, median 0.200, "
            "unchanged 33.3%") in out
    assert "users with a list in A only: 1; in B only: 1" in out
    assert "[0.0, 0.1) 1, [0.1, 0.2) 0, [0.2, 0.3) 1," in out and out.count(", 1.0 1") == 1
    assert "+18.182%" in out and "-15.909%" in out  # t7 rose, t3 fell
    assert "+0.0250" in out and "-0.0500" in out  # ranker NDCG, track top1 share


def test_recsys_diff_of_a_run_that_is_not_kept_is_a_usage_error(store):
    result = CliRunner().invoke(app, ["diff", "A", "C", "--store", str(store)])
    assert result.exit_code == 2
    assert "run C is not kept" in result.output
