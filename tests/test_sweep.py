"""`recsys sweep`: the damping settings, their points against the raw events, the CLI."""

from __future__ import annotations

from datetime import timedelta, timezone

import duckdb
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys import baselines as bl
from recsys import schema as s
from recsys.cli import app
from recsys.config import config_from
from recsys.results import SWEEPS, latest, result_files
from recsys.stages.feedback import events_before, feedback
from recsys.sweep import settings, setting_label

from conftest import SMALL_CONFIG
from test_evaluation import _ndcg, _reference_positives


def test_the_settings_are_every_measure_then_each_beta_and_b_once():
    cfg = config_from({"sweep": {"betas": [0.0, 0.5, 1.0], "bm25_b": [0.75, 0.2]}})
    assert [setting_label(sim) for sim in settings(cfg)] == [
        "cooccurrence", "cosine", "jaccard", "lift", "bm25 k1=1.2 b=0.75", "rp3beta beta=0.5",
        "rp3beta beta=0", "rp3beta beta=1", "bm25 k1=1.2 b=0.2",
    ]


@pytest.fixture(scope="module")
def sweep_file(evaluated_store):
    with duckdb.connect(str(latest(evaluated_store, SWEEPS)), read_only=True) as con:
        yield (con.sql("SELECT * FROM sweep").pl().row(0, named=True),
               con.sql("SELECT * FROM sweep_points").pl())


def _gini(values: np.ndarray) -> float:
    """Gini as the mean absolute difference over twice the mean."""
    values = values.astype(float)
    return np.abs(values[:, None] - values[None, :]).mean() / (2 * values.mean())


def test_a_point_is_the_ndcg_and_gini_of_the_samples_lists(sweep_file, small_data):
    summary, points = sweep_file
    cfg = config_from(SMALL_CONFIG)
    start = summary["as_of"].astimezone(timezone.utc)
    events = pl.read_parquet(small_data / "events.parquet")
    fb = feedback(events_before(events, start), cfg.feedback)
    # The sample: sweep.users of the users with a positive before the cut, seeded.
    with_history = fb.filter(pl.col("positive"))[s.USER_ID].unique().sort()
    sample = with_history.sample(summary["sample_users"], seed=cfg.sweep.seed).sort()
    assert summary["sample_users"] == 150

    fresh, _ = _reference_positives(small_data, start, start + timedelta(days=28))
    scored = [u for u in sample if u in fresh]
    for label, measure, beta in (("rp3beta beta=0", "rp3beta", 0.0),
                                 ("cosine", "cosine", 0.5)):
        run_cfg = cfg.model_copy(update={"similarity": cfg.similarity.model_copy(
            update={"measure": measure, "beta": beta})})
        lists = bl.recommend(f"similarity:{measure}", bl.Train(start, fb), sample, 10,
                             {"k": cfg.similarity.k}, run_cfg)
        by_user = {u: g[s.TRACK_ID].to_list()
                   for (u,), g in lists.sort(s.USER_ID, "rank").group_by(s.USER_ID,
                                                                         maintain_order=True)}
        point = points.filter(pl.col("setting") == label).row(0, named=True)
        assert point["users"] == len(scored)
        assert point["ndcg"] == pytest.approx(np.mean([_ndcg(by_user.get(u, []), fresh[u], 10)
                                                       for u in scored]))
        catalogue = pl.read_parquet(small_data / "tracks.parquet")[s.TRACK_ID]
        slots = lists.group_by(s.TRACK_ID).len()
        exposure = catalogue.to_frame().join(slots, on=s.TRACK_ID, how="left")["len"].fill_null(0)
        assert point["gini"] == pytest.approx(_gini(exposure.to_numpy()))
        assert point["coverage"] == pytest.approx(slots.height / catalogue.len())


def test_damping_the_target_moves_the_lists_into_the_tail(sweep_file):
    _, points = sweep_file
    tail = dict(points.select("setting", "tail_share").rows())
    assert tail["rp3beta beta=1"] > tail["rp3beta beta=0"]


def test_the_cli_prints_the_points_and_marks_the_setting_in_use(small_data, tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text('[similarity]\nmeasure = "bm25"\n[sweep]\nusers = 60\nbetas = [0.5]\n'
                      "bm25_b = [0.75]\n")
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["sweep", str(small_data), "--store", str(tmp_path / "store"), "--config",
              str(config)])
    assert result.exit_code == 0, result.output
    [path] = result_files(tmp_path / "store", SWEEPS)
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.sql("SELECT setting, ndcg FROM sweep_points").fetchall()
        in_use = con.sql("SELECT in_use FROM sweep").fetchall()[0][0]
    assert in_use == "bm25 k1=1.2 b=0.75"
    lines = result.output.splitlines()
    for setting, ndcg in rows:
        [line] = [line for line in lines if f" {setting} " in line]
        assert f"{ndcg:.4f}" in line
        assert line.rstrip(" │").endswith("yes") == (setting == in_use)


def test_the_sweep_stacks_the_evaluations_cuts(tmp_path):
    from recsys.io.dataset import write_dataset
    from recsys.sweep import run_sweep

    from helpers import tracks
    from test_evaluation import rolling_log

    catalogue = tracks([(f"t{i}", "c", "g") for i in range(4)]
                       + [(f"n{w}", "c", "g") for w in range(1, 5)])
    write_dataset({"events": rolling_log(5), "tracks": catalogue}, tmp_path / "data")
    cfg = config_from({"labels": {"window_days": 10}, "evaluation": {"min_users": 3},
                                 "sweep": {"betas": [], "bm25_b": []}})
    result = run_sweep(tmp_path / "data", tmp_path / "store", cfg=cfg)
    # One user scored a window, three windows back from day 35 (the last event is on day 45).
    assert result.summary["cuts"] == 3
    assert result.summary["sample_users"] == 2 + 2 + 2
    assert result.points["users"].to_list() == [3] * 6
    assert result.points["setting"].to_list() == [
        "cooccurrence", "cosine", "jaccard", "lift", "bm25 k1=1.2 b=0.75", "rp3beta beta=0.5"]
