"""What an operator sees: one log line per stage, --quiet and --verbose, and exit codes that
tell a usage error (2) from a data error (3) from a run that could not complete (4)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import Config
from recsys.io.generate import generate
from recsys.store import list_runs

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("validate", "training rows", "ranker", "global", "candidates", "features", "scoring",
          "explanations", "bias", "store")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    """400 generated users and a config serving them in partitions of 150."""
    root = tmp_path_factory.mktemp("operators")
    generate(root / "data", users=400, tracks=400, seed=3, config=Config().generator)
    (root / "partitions.toml").write_text("[batch]\npartition_users = 150\n")
    return root / "data", root / "partitions.toml"


def recsys(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "recsys", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT)


@pytest.mark.slow
def test_a_run_logs_one_line_per_stage_and_partitions_at_debug(small, tmp_path):
    data, config = small
    done = recsys("run", str(data), "--store", str(tmp_path / "a"), "--config", str(config))
    assert done.returncode == 0, done.stderr
    for name in STAGES:
        lines = [line for line in done.stderr.splitlines()
                 if re.match(rf"INFO\s+{name}: .* in \d+\.\d s, peak \d+ MB", line)]
        assert len(lines) == 1, (name, done.stderr)
    assert "partition" not in done.stderr
    assert "run " in done.stdout and "published" in done.stdout

    quiet = recsys("--quiet", "run", str(data), "--store", str(tmp_path / "q"),
                   "--config", str(config))
    assert quiet.returncode == 0 and "INFO" not in quiet.stderr
    assert "published" in quiet.stdout

    verbose = recsys("--verbose", "run", str(data), "--store", str(tmp_path / "v"),
                     "--config", str(config))
    assert verbose.returncode == 0
    for name in ("candidates", "features", "scoring", "explanations"):
        for part in (1, 2, 3):
            assert re.search(rf"DEBUG\s+{name}, partition {part} of 3: ", verbose.stderr), name


def test_a_run_that_cannot_complete_exits_with_4_and_is_marked_failed(small, tmp_path):
    data, _ = small
    store = tmp_path / "store"
    store.mkdir()
    (store / "runs").write_text("not a folder")  # the run files cannot be written
    result = CliRunner().invoke(app, ["run", str(data), "--store", str(store)])
    assert result.exit_code == 4
    assert "failed after stage 'validate'" in result.output
    assert "the current run is unchanged" in result.output
    [run] = list_runs(store)
    assert run["status"] == "failed" and "runs" in run["error"]


def test_usage_and_data_errors_have_their_own_exit_codes(small, tmp_path):
    data, _ = small
    bad_time = CliRunner().invoke(app, ["run", str(data), "--store", str(tmp_path), "--as-of",
                                        "yesterday"])
    assert bad_time.exit_code == 2 and "--as-of" in bad_time.output
    unknown_key = tmp_path / "bad.toml"
    unknown_key.write_text("[batch]\npartition_size = 10\n")
    bad_config = CliRunner().invoke(app, ["run", str(data), "--store", str(tmp_path),
                                          "--config", str(unknown_key)])
    assert bad_config.exit_code == 2 and "partition_size" in bad_config.output
    missing = CliRunner().invoke(app, ["run", str(tmp_path / "nothing"), "--store",
                                       str(tmp_path)])
    assert missing.exit_code == 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tracks.csv").write_text("track_id,title\nt1,One\n")
    (broken / "events.csv").write_text("user_id,track_id,kind,ts\nu1,t1,clap,2024-01-01\n")
    bad_data = CliRunner().invoke(app, ["run", str(broken), "--store", str(tmp_path)])
    assert bad_data.exit_code == 3 and "kind" in bad_data.output
    assert not (tmp_path / "runs").exists()  # nothing was written
