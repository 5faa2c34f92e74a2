"""The input format: each rule gives one clear message, a non-zero exit code and no output."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.errors import DataError, UsageError
from recsys.io.dataset import read_dataset

TRACKS = "track_id,title,creator_id,genre,created_at,duration_ms\nt1,One,c1,rock,2023-01-01,200000\nt2,Two,,,,\n"
HEADER = "user_id,track_id,kind,ts,ms_played,count\n"


def _folder(tmp_path: Path, events: str, tracks: str = TRACKS) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    (folder / "events.csv").write_text(events)
    (folder / "tracks.csv").write_text(tracks)
    return folder


def _error(tmp_path: Path, events: str, tracks: str = TRACKS) -> str:
    with pytest.raises(DataError) as info:
        read_dataset(_folder(tmp_path, events, tracks))
    return str(info.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("u1,t1,play,2024-01-01,,1\n,t1,play,2024-01-02,,1\n",
         "events.csv: column 'user_id': must not be empty: 1 row breaks it (row 2: None)"),
        ("u1,t1,plya,2024-01-01,,1\nu1,t1,clap,2024-01-01,,1\n",
         "events.csv: column 'kind': must be one of play, like, repost, skip: 2 rows break it "
         "(row 1: 'plya', row 2: 'clap')"),
        ("u1,t1,play,yesterday,,1\n",
         "events.csv: column 'ts': timestamp that cannot be parsed: 1 row breaks it "
         "(row 1: 'yesterday')"),
        ("u1,t1,play,2024-01-01,-5,1\n",
         "events.csv: column 'ms_played': must be 0 or more: 1 row breaks it (row 1: '-5')"),
        ("u1,t1,play,2024-01-01,,-1\n",
         "events.csv: column 'count': must be 0 or more: 1 row breaks it (row 1: '-1')"),
        ("u1,t1,play,2024-01-01,ten,1\n",
         "events.csv: column 'ms_played': wrong type, expected an integer: 1 row breaks it "
         "(row 1: 'ten')"),
        ("u1,t1,play,2024-01-01,,1\nu1,t9,play,2024-01-01,,1\n",
         "events.csv: column 'track_id': track not in tracks: 1 row breaks it (row 2: 't9')"),
    ],
)
def test_each_rule_names_file_column_rule_and_rows(tmp_path, body, expected):
    assert expected in _error(tmp_path, HEADER + body)


def test_missing_column_and_negative_duration(tmp_path):
    message = _error(tmp_path, "user_id,track_id,ts\nu1,t1,2024-01-01\n")
    assert "events.csv: column 'kind': missing column" in message
    tracks = "track_id,duration_ms\nt1,-3\n"
    message = _error(tmp_path, HEADER + "u1,t1,play,2024-01-01,,1\n", tracks)
    assert "tracks.csv: column 'duration_ms': must be 0 or more: 1 row breaks it (row 1: '-3')" in message


def test_duplicate_track_ids(tmp_path):
    message = _error(tmp_path, HEADER + "u1,t1,play,2024-01-01,,1\n", "track_id\nt1\nt1\n")
    assert "tracks.csv: column 'track_id': must be unique: 2 rows break it" in message


def test_timestamps_become_utc_and_duplicates_are_dropped(tmp_path):
    body = (
        "u1,t1,play,2024-01-01 10:00:00,1000,\n"        # naive: read as UTC; count defaults to 1
        "u1,t1,play,2024-01-01T12:00:00+02:00,1000,1\n"  # the same instant as the first row
        "u1,t2,like,2024-01-02T00:00:00Z,,1\n"
        "u1,t2,like,2024-01-02T00:00:00Z,,1\n"           # an exact duplicate
    )
    data = read_dataset(_folder(tmp_path, HEADER + body))
    assert data.duplicates_dropped == 2
    assert data.events.height == 2
    first = data.events.row(0, named=True)
    assert first["ts"] == datetime(2024, 1, 1, 10, tzinfo=timezone.utc)
    assert first["count"] == 1
    # Empty genre and creator are explicit unknowns (null), not empty strings.
    t2 = data.tracks.filter(pl.col("track_id") == "t2").row(0, named=True)
    assert t2["genre"] is None and t2["creator_id"] is None


def test_parquet_input_and_ambiguous_files(tmp_path):
    folder = _folder(tmp_path, HEADER + "u1,t1,play,2024-01-01,,1\n")
    pl.read_csv(folder / "tracks.csv").write_parquet(folder / "tracks.parquet")
    with pytest.raises(UsageError, match="both tracks.parquet and tracks.csv"):
        read_dataset(folder)
    (folder / "tracks.csv").unlink()
    data = read_dataset(folder)
    assert data.tracks["track_id"].to_list() == ["t1", "t2"]


def test_validate_cli_prints_summary_or_errors(tmp_path):
    good = _folder(tmp_path, HEADER + "u1,t1,play,2024-01-01,,1\nu2,t1,skip,2024-01-03,,1\n")
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "play 1, skip 1" in result.output
    (good / "events.csv").write_text(HEADER + "u1,t1,play,soon,,1\n")
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["validate", str(good)])
    assert result.exit_code == 3
    assert "column 'ts'" in result.output and "'soon'" in result.output
