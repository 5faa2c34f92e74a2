"""Publishing: a killed or failed run leaves the current run untouched; the next one succeeds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.store import CURRENT, current_run_id, list_runs, read_registry

from conftest import ROOT, SAMPLE_DATA


def _run_ids(store: Path) -> list[str]:
    with duckdb.connect(str(store / CURRENT), read_only=True) as con:
        return [con.execute("SELECT run_id FROM runs").fetchone()[0],
                con.execute("SELECT count(*) FROM recommendations").fetchone()[0]]


@pytest.fixture
def store(sample_store, tmp_path) -> Path:
    """A private copy of the sample store, so a test may run and kill batches in it."""
    copy = tmp_path / "store"
    shutil.copytree(sample_store, copy, symlinks=True)
    return copy


def test_a_killed_run_leaves_the_current_run_untouched(store):
    before = _run_ids(store)
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys", "run", str(SAMPLE_DATA), "--store", str(store)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _wait_for_temporary_file(store, process)
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    assert _run_ids(store) == before
    killed = [r for r in read_registry(store)["runs"] if r["status"] == "running"]
    assert len(killed) == 1 and killed[0]["pid"] == process.pid

    result = CliRunner().invoke(app, ["run", str(SAMPLE_DATA), "--store", str(store)])
    assert result.exit_code == 0, result.output
    after = _run_ids(store)
    assert after[0] != before[0] and after[0] == current_run_id(store)


def _wait_for_temporary_file(store: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not list((store / "runs").glob(".*.duckdb.tmp")):
        assert process.poll() is None, "the run ended before its temporary file was seen"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_terminated_run_is_marked_failed_and_cleaned_up_at_once(store):
    before = _run_ids(store)
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys", "run", str(SAMPLE_DATA), "--store", str(store)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
    )
    _wait_for_temporary_file(store, process)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1].decode()

    assert process.returncode == 143, stderr
    assert "terminated (SIGTERM)" in stderr
    [entry] = [r for r in read_registry(store)["runs"] if r.get("pid") == process.pid]
    assert entry["status"] == "failed" and entry["error"] == "terminated (SIGTERM)"
    assert _temporary_bytes(store) == 0 and not list((store / "runs").glob(".*.tmp*"))
    assert _run_ids(store) == before


def test_bad_input_fails_and_writes_nothing(store, tmp_path):
    before = _run_ids(store)
    files_before = sorted(p.name for p in (store / "runs").iterdir())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tracks.csv").write_text("track_id,title\nt1,One\n")
    (bad / "events.csv").write_text(
        "user_id,track_id,kind,ts\nu1,t1,play,2024-01-01\nu1,t2,play,2024-01-02\n"
    )
    result = CliRunner().invoke(app, ["run", str(bad), "--store", str(store)])
    assert result.exit_code == 3
    assert "events.csv" in result.output and "track_id" in result.output
    assert "row 2" in result.output
    assert _run_ids(store) == before
    assert sorted(p.name for p in (store / "runs").iterdir()) == files_before


def test_an_as_of_before_every_event_is_refused_and_the_current_run_kept(sample_store):
    from datetime import datetime, timezone

    from recsys.config import Config
    from recsys.errors import UsageError
    from recsys.pipeline import run_batch

    before = (sample_store / CURRENT).resolve()
    with pytest.raises(UsageError, match="not after any event"):
        run_batch(SAMPLE_DATA, sample_store, cfg=Config(),
                  as_of=datetime(1990, 1, 1, tzinfo=timezone.utc))
    assert (sample_store / CURRENT).resolve() == before


# Serving the sample data in six partitions, with small budgets so that the test stays short.
PARTITIONED = """
[batch]
partition_users = 500

[walks]
walks_per_user = 200

[ranker]
training_cuts = 1
num_trees = 30
"""


def _current_tables(store: Path) -> dict[str, int]:
    with duckdb.connect(str(store / CURRENT), read_only=True) as con:
        return {table: con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                for table in ("runs", "recommendations", "recommendation_reasons",
                              "shap_values", "candidates")}


def _temporary_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "runs").glob(".*.duckdb.tmp*"))


@pytest.mark.slow
def test_a_run_killed_midway_through_its_partitions_leaves_the_current_run(store, tmp_path):
    config = tmp_path / "partitioned.toml"
    config.write_text(PARTITIONED)
    before, old = _current_tables(store), current_run_id(store)
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "recsys", "--verbose", "run", str(SAMPLE_DATA), "--store",
               str(store), "--config", str(config)]
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "COLUMNS": "200"})

    # Wait until two of the six partitions have been appended to the temporary run file.
    deadline = time.monotonic() + 600
    while "explanations, partition 2 of 6" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    written = _temporary_bytes(store)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    assert written > 1_000_000  # the partitions' rows were in the temporary file
    assert "explanations, partition 3 of 6" not in log.read_text()
    assert current_run_id(store) == old
    assert _current_tables(store) == before  # unchanged and readable
    [killed] = [r for r in list_runs(store) if r["id"] != old]
    assert killed["status"] == "failed" and not killed["kept"]

    result = CliRunner().invoke(app, ["run", str(SAMPLE_DATA), "--store", str(store),
                                      "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert current_run_id(store) not in (old, killed["id"])
    assert _current_tables(store)["recommendations"] == before["recommendations"]
    assert _temporary_bytes(store) == 0  # the killed run's files were removed
    status = {entry["id"]: entry["status"] for entry in read_registry(store)["runs"]}
    assert status[killed["id"]] == "failed" and status[current_run_id(store)] == "published"
