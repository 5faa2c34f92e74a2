"""SHAP for a seeded share of users in the batch, and on demand for everyone else: in the
store, the CLI and the user inspector."""

from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys import shap_on_demand
from recsys.cli import app
from recsys.config import Config, GeneratorConfig, config_from
from recsys.io.generate import generate
from recsys.pipeline import run_batch
from recsys.stages import explain

from test_app import INSPECTOR, open_page, run_file, waterfall_end

SHARE, SEED = 0.3, 5


def _draw(seed: int, user_id: str) -> float:
    """The documented rule: blake2b of "<seed>:<user_id>" (8 bytes, big-endian) over 2**64."""
    digest = hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@pytest.fixture(scope="module")
def share_store(tmp_path_factory):
    """A run on 600 generated users whose SHAP the batch stores for a share of 0.3."""
    folder = tmp_path_factory.mktemp("shap_share")
    generate(folder / "data", users=600, tracks=500, seed=1, config=GeneratorConfig())
    cfg = config_from({"recommend": {"shap_share": SHARE, "shap_seed": SEED}})
    run_batch(folder / "data", folder / "store", cfg=cfg)
    return folder / "store"


def _lists(users: int = 2000) -> pl.DataFrame:
    return pl.DataFrame({"user_id": np.repeat([f"user {k}" for k in range(users)], 3),
                         "track_id": np.tile(["a", "b", "c"], users)})


def test_the_share_is_chosen_by_the_seeded_hash_of_each_user():
    recs = _lists()
    chosen = explain.shap_sample(recs, 0.25, seed=SEED)
    expected = {u for u in recs["user_id"].unique() if _draw(SEED, u) < 0.25}
    assert set(chosen["user_id"]) == expected
    assert 400 < len(expected) < 600  # a quarter of 2,000, give or take the hash
    assert chosen.height == 3 * len(expected)  # a chosen user's whole list

    # The rows' order and the other users do not matter; a larger share keeps a smaller one.
    shuffled = explain.shap_sample(recs.sample(fraction=1.0, shuffle=True, seed=1), 0.25, SEED)
    assert set(shuffled["user_id"]) == expected
    alone = explain.shap_sample(recs.filter(pl.col("user_id").is_in(["user 7", "user 8"])),
                                0.25, SEED)
    assert set(alone["user_id"]) == expected & {"user 7", "user 8"}
    assert expected <= set(explain.shap_sample(recs, 0.5, SEED)["user_id"])
    assert set(explain.shap_sample(recs, 0.25, SEED + 1)["user_id"]) != expected
    assert explain.shap_sample(recs, 0.0, SEED).is_empty()
    assert explain.shap_sample(recs, 1.0, SEED).height == recs.height


def test_the_batch_stores_shap_for_the_share_and_features_for_every_recommendation(share_store):
    with run_file(share_store) as con:
        listed = {r[0] for r in con.sql("SELECT DISTINCT user_id FROM recommendations").fetchall()}
        stored = {r[0] for r in con.sql("SELECT DISTINCT user_id FROM shap_values").fetchall()}
        [(recs, featured)] = con.sql("""
            SELECT count(*), count(f.track_id) FROM recommendations r
            LEFT JOIN recommendation_features f USING (user_id, track_id)""").fetchall()
        [(explained, in_lists)] = con.sql("""
            SELECT count(DISTINCT (s.user_id, s.track_id)), count(DISTINCT (r.user_id, r.track_id))
            FROM recommendations r LEFT JOIN shap_values s USING (user_id, track_id)
            WHERE r.user_id IN (SELECT user_id FROM shap_values)""").fetchall()
    assert stored == {u for u in listed if _draw(SEED, u) < SHARE}
    assert 0 < len(stored) < len(listed)
    assert featured == recs  # every served recommendation keeps its features
    assert explained == in_lists  # a chosen user's whole list is explained


def _skipped_user(con) -> str:
    return con.sql("""
        SELECT min(user_id) FROM recommendations
        WHERE user_id NOT IN (SELECT user_id FROM shap_values)""").fetchall()[0][0]


def test_shap_on_demand_adds_up_to_the_score_of_a_user_the_batch_skipped(share_store):
    with run_file(share_store) as con:
        user_id = _skipped_user(con)
        computed = shap_on_demand.user_shap(con, user_id, shap_on_demand.load_explainer(con))
        expected = con.sql("SELECT expected_value FROM runs").fetchall()[0][0]
        scores = dict(con.sql("SELECT track_id, score FROM recommendations WHERE user_id = $u",
                              params={"u": user_id}).fetchall())
        inputs = con.sql("SELECT * FROM recommendation_features WHERE user_id = $u",
                         params={"u": user_id}).pl()
    top = Config().recommend.shap_top
    assert computed.height == len(scores) * (top + 1)
    totals = computed.group_by("track_id").agg(pl.col("value").sum())
    for track_id, total in totals.iter_rows():
        assert expected + total == pytest.approx(scores[track_id], abs=1e-6)
    # Each named feature comes with the input the ranker saw; the remainder comes last.
    first = computed.filter(pl.col("track_id") == inputs["track_id"][0])
    assert first["feature"][-1] == explain.REMAINDER
    for feature, value in first.head(top).select("feature", "feature_value").iter_rows():
        assert value == pytest.approx(float(inputs[feature][0]))
    magnitudes = first.head(top)["value"].abs().to_list()
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_shap_on_demand_equals_what_the_batch_stored(sample_store):
    with run_file(sample_store) as con:
        users = [r[0] for r in con.sql(
            "SELECT DISTINCT user_id FROM shap_values ORDER BY user_id LIMIT 5").fetchall()]
        explainer = shap_on_demand.load_explainer(con)
        for user_id in users:
            stored = con.sql("SELECT track_id, feature, value FROM shap_values WHERE user_id = $u",
                             params={"u": user_id}).pl()
            computed = shap_on_demand.user_shap(con, user_id, explainer)
            joined = stored.join(computed, on=["track_id", "feature"], how="full")
            assert joined.height == stored.height == computed.height
            assert (joined["value"] - joined["value_right"]).abs().max() < 1e-9


def test_recommend_prints_shap_computed_on_demand(share_store):
    with run_file(share_store) as con:
        user_id = _skipped_user(con)
        computed = shap_on_demand.user_shap(con, user_id, shap_on_demand.load_explainer(con))
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["recommend", user_id, "--store", str(share_store), "--shap", "1"])
    assert result.exit_code == 0, result.output
    top = computed.row(0, named=True)
    assert f"{top['feature']} {top['value']:+.3f}" in result.output


def test_inspector_shows_shap_for_a_user_whose_shap_the_batch_did_not_store(
    share_store, monkeypatch
):
    with run_file(share_store) as con:
        user_id = _skipped_user(con)
        [(score,)] = con.sql("SELECT score FROM recommendations WHERE user_id = $u AND rank = 1",
                             params={"u": user_id}).fetchall()
        assert con.sql("SELECT count(*) FROM shap_values WHERE user_id = $u",
                       params={"u": user_id}).fetchall()[0][0] == 0
    at = open_page(share_store, monkeypatch, INSPECTOR, user=user_id)
    assert waterfall_end(at) == pytest.approx(score, abs=1e-6)
    assert any("Computed now" in caption.value for caption in at.caption)


def test_a_run_with_no_shap_share_stores_the_expected_value_and_no_shap(tmp_path):
    # A share of 0: no SHAP row in the batch, yet the expected value (the model's) is stored.
    generate(tmp_path / "data", users=300, tracks=300, seed=2, config=GeneratorConfig())
    cfg = config_from({"recommend": {"shap_share": 0.0}})
    run_batch(tmp_path / "data", tmp_path / "store", cfg=cfg)
    with duckdb.connect(str(tmp_path / "store" / "current.duckdb"), read_only=True) as con:
        [(status, expected)] = con.sql("SELECT ranker_status, expected_value FROM runs").fetchall()
        assert con.sql("SELECT count(*) FROM shap_values").fetchall()[0][0] == 0
        explainer = shap_on_demand.load_explainer(con)
    assert status == "fitted"
    assert expected == pytest.approx(explainer.expected_value)
