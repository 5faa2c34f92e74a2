"""Daily runs: `recsys run --as-of` on consecutive days over the sample data, as a daily
schedule would run it; the store keeps the last `store.keep_runs` runs and each opens."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.store import current_run_id, list_runs, open_run, read_registry, run_path

from conftest import SAMPLE_DATA
from test_app import open_page, texts

# Small budgets: the test is about the schedule and the store, not the lists.
LIGHT = """
[candidates]
max_candidates = 60
fallback_size = 20

[walks]
walks_per_user = 200
max_tracks = 60

[ranker]
training_cuts = 1
num_trees = 30

[store]
keep_runs = 2
"""
DAYS = [datetime(2026, 6, 27, tzinfo=timezone.utc) + timedelta(days=i) for i in range(3)]


@pytest.fixture(scope="module")
def daily_store(tmp_path_factory) -> tuple[Path, list[str]]:
    """A store after one run per day over DAYS, through the CLI; and the run ids in order."""
    root = tmp_path_factory.mktemp("daily")
    config = root / "light.toml"
    config.write_text(LIGHT)
    store = root / "store"
    ids = []
    for day in DAYS:
        result = CliRunner().invoke(app, ["--quiet", "run", str(SAMPLE_DATA), "--store",
                                          str(store), "--as-of", f"{day:%Y-%m-%d}",
                                          "--config", str(config)])
        assert result.exit_code == 0, result.output
        ids.append(current_run_id(store))
    return store, ids


@pytest.mark.slow
def test_the_last_runs_are_kept_and_older_ones_pruned(daily_store):
    store, ids = daily_store
    assert len(set(ids)) == 3 and ids == sorted(ids)
    assert sorted(p.stem for p in (store / "runs").glob("*.duckdb")) == ids[1:]
    assert not list((store / "runs").glob(".*"))  # no temporary file left behind
    status = {entry["id"]: entry["status"] for entry in read_registry(store)["runs"]}
    assert status == {ids[0]: "pruned", ids[1]: "published", ids[2]: "published"}
    assert current_run_id(store) == ids[2]
    assert [(r["id"], r["kept"], r["current"]) for r in list_runs(store)] == [
        (ids[2], True, True), (ids[1], True, False), (ids[0], False, False)]


@pytest.mark.slow
def test_each_kept_run_opens_as_of_its_day(daily_store):
    store, ids = daily_store
    for run_id, day in zip(ids[1:], DAYS[1:]):
        with open_run(store, run_id) as con:
            [(as_of, latest, recs)] = con.sql(
                "SELECT as_of, (SELECT max(last_ts) FROM feedback), recommendations FROM runs"
            ).fetchall()
        assert as_of == day
        assert latest < day  # the run saw only the events before its day
        assert latest >= day - timedelta(days=1)  # ... and the sample data has a day before
        assert recs > 0
    with pytest.raises(Exception, match="no run"):
        open_run(store, ids[0])


@pytest.mark.slow
def test_the_cli_and_the_app_open_a_kept_run_that_is_not_current(daily_store, monkeypatch):
    store, ids = daily_store
    with duckdb.connect(str(run_path(store, ids[1])), read_only=True) as con:
        [(user_id, title)] = con.sql("""SELECT r.user_id, t.title FROM recommendations r
                                        JOIN tracks t USING (track_id) WHERE r.rank = 1
                                        ORDER BY r.user_id LIMIT 1""").fetchall()
    result = CliRunner().invoke(app, ["recommend", user_id, "--store", str(store), "--run",
                                      ids[1]])
    assert result.exit_code == 0, result.output
    assert title in result.output
    result = CliRunner().invoke(app, ["recommend", user_id, "--store", str(store), "--run",
                                      ids[0]])
    assert result.exit_code == 2 and "no run" in result.output

    at = open_page(store, monkeypatch, run=ids[1])
    assert any(t.startswith(f"Run {ids[1]}, as of {DAYS[1]:%Y-%m-%d} 00:00:00") for t in texts(at))
