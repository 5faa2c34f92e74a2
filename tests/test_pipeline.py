"""End to end: the batch on the shipped sample data and on the HetRec import."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import Config, config_from
from recsys.io.importers import import_dataset
from recsys.pipeline import run_batch
from recsys.store import CURRENT

from conftest import real_dataset


def _read(store, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(store / CURRENT), read_only=True) as con:
        return con.sql(sql).pl()


def check_run(store, n: int) -> None:
    """The product's promises about a published run."""
    # Every user with positive history gets n, or every candidate they have when fewer.
    counts = _read(store, """
        SELECT u.user_id, u.positive_tracks,
               (SELECT count(*) FROM recommendations r WHERE r.user_id = u.user_id) AS recs,
               (SELECT count(*) FROM candidates c WHERE c.user_id = u.user_id) AS cands
        FROM users u""")
    with_history = counts.filter(pl.col("positive_tracks") > 0)
    assert with_history.height > 0
    expected = with_history["cands"].clip(upper_bound=n)
    assert (with_history["recs"] == expected).all()
    assert (with_history["recs"] > 0).all()

    # Nothing already heard, nothing unknown.
    heard = _read(store, """
        SELECT count(*) AS n FROM recommendations r
        JOIN feedback f USING (user_id, track_id)""")
    assert heard["n"][0] == 0
    unknown = _read(store, """
        SELECT count(*) AS n FROM recommendations r
        WHERE r.track_id NOT IN (SELECT track_id FROM tracks)
           OR r.user_id NOT IN (SELECT user_id FROM users)""")
    assert unknown["n"][0] == 0

    # Every recommendation has a reason; a similar, walk or ALS one names seeds from the
    # user's history.
    recs = _read(store, "SELECT * FROM recommendations")
    kinds = {"similar", "walk", "als", "popular_in_genre", "popular"}
    assert set(recs["reason_kind"].unique()) <= kinds
    orphan = _read(store, """
        SELECT count(*) AS n FROM recommendations r
        WHERE r.reason_kind IN ('similar', 'walk', 'als') AND NOT EXISTS (
            SELECT 1 FROM recommendation_reasons x
            JOIN feedback f ON f.user_id = x.user_id AND f.track_id = x.seed_track_id
            WHERE x.user_id = r.user_id AND x.track_id = r.track_id AND f.positive)""")
    assert orphan["n"][0] == 0

    # A walk path follows real edges: the user liked its seed, and its listener played both
    # the track the hop left and the recommendation. Every walk recommendation has paths.
    broken = _read(store, """
        SELECT count(*) AS n FROM walk_paths p
        WHERE NOT EXISTS (SELECT 1 FROM feedback f WHERE f.positive
                          AND f.user_id = p.user_id AND f.track_id = p.seed_track_id)
           OR NOT EXISTS (SELECT 1 FROM feedback f WHERE f.positive
                          AND f.user_id = p.listener_id AND f.track_id = p.via_track_id)
           OR NOT EXISTS (SELECT 1 FROM feedback f WHERE f.positive
                          AND f.user_id = p.listener_id AND f.track_id = p.track_id)""")
    assert broken["n"][0] == 0
    pathless = _read(store, """
        SELECT count(*) AS n FROM recommendations r
        WHERE r.reason_kind = 'walk' AND NOT EXISTS (
            SELECT 1 FROM walk_paths p WHERE p.user_id = r.user_id AND p.track_id = r.track_id)""")
    assert pathless["n"][0] == 0

    # The ledger: each recommendation's sources are its candidate's, its reason is one of them,
    # and its rank before the ranker is a distinct place among the user's candidates.
    ledger = _read(store, """
        SELECT r.user_id, r.rank_before, r.sources = c.sources AS same_sources,
               list_contains(r.sources, r.reason_kind) AS reason_proposed,
               count(*) OVER (PARTITION BY r.user_id, r.rank_before) AS sharing,
               (SELECT count(*) FROM candidates x WHERE x.user_id = r.user_id) AS candidates
        FROM recommendations r JOIN candidates c USING (user_id, track_id)""")
    assert ledger.height == recs.height
    assert ledger["same_sources"].all() and ledger["reason_proposed"].all()
    assert (ledger["sharing"] == 1).all()
    assert ((ledger["rank_before"] >= 1) & (ledger["rank_before"] <= ledger["candidates"])).all()

    # SHAP: the expected value plus the stored values is the raw score, for every row.
    additivity = _read(store, """
        SELECT r.score, (SELECT expected_value FROM runs) + sum(s.value) AS rebuilt, count(*) AS k
        FROM recommendations r JOIN shap_values s USING (user_id, track_id)
        GROUP BY r.user_id, r.track_id, r.score""")
    assert additivity.height == recs.height
    assert (additivity["score"] - additivity["rebuilt"]).abs().max() < 1e-6


def test_sample_run_keeps_every_promise(sample_store):
    check_run(sample_store, Config().recommend.n)
    run = _read(sample_store, "SELECT * FROM runs")
    assert run["ranker_status"][0] == "fitted"
    assert run["ndcg_users"][0] > 0


@pytest.mark.slow
def test_hetrec_import_end_to_end(tmp_path):
    data = tmp_path / "hetrec"
    import_dataset("lastfm-hetrec", real_dataset("hetrec2011-lastfm-2k"), data)
    store = tmp_path / "store"
    run_batch(data, store, cfg=config_from({"labels": {"kpi": "likes"}}))
    check_run(store, 10)

    # recommend on a real user: user 2's first recommendation, as the store has it.
    first = _read(store, """
        SELECT t.title FROM recommendations r JOIN tracks t USING (track_id)
        WHERE r.user_id = '2' AND r.rank = 1""")["title"][0]
    runner = CliRunner(env={"COLUMNS": "250"})
    result = runner.invoke(app, ["recommend", "2", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert first in result.output


def test_a_run_without_training_labels_serves_the_candidate_order(tmp_path):
    from helpers import events, tracks

    from recsys.io.dataset import write_dataset
    from recsys import schema as s

    # All events on one day: no label window holds anything, so no ranker can be fitted.
    ev = events([("u1", "a", "play", 100), ("u1", "b", "play", 100), ("u2", "a", "play", 100),
                 ("u2", "b", "play", 100), ("u2", "c", "play", 100), ("u3", "c", "play", 100)])
    catalogue = tracks([("a", "x", "rock"), ("b", "x", "rock"), ("c", "y", "jazz")])
    write_dataset({"events": ev, "tracks": catalogue,
                   "users": s.empty_frame(s.USERS), "follows": s.empty_frame(s.FOLLOWS)},
                  tmp_path / "data")
    store = tmp_path / "store"
    cfg = config_from({"similarity": {"min_co_count": 1}})
    run_batch(tmp_path / "data", store, cfg=cfg)
    run = _read(store, "SELECT ranker_status, expected_value FROM runs").row(0, named=True)
    assert run["ranker_status"].startswith("skipped")
    assert _read(store, "SELECT count(*) AS n FROM shap_values")["n"][0] == 0
    # u1 heard a and b; c is their neighbour through u2 (co-count 1 with a and with b).
    recs = _read(store, "SELECT user_id, track_id, reason_kind FROM recommendations "
                        "ORDER BY user_id, rank")
    assert recs.filter(pl.col("user_id") == "u1").rows() == [("u1", "c", "similar")]
    # u3 heard c; a and b are its neighbours through u2.
    assert sorted(recs.filter(pl.col("user_id") == "u3")["track_id"]) == ["a", "b"]
