"""The input format: each rule gives one clear message, a non-zero exit code and no output."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys import schema as s
from recsys.cli import app
from recsys.errors import DataError
from recsys.io.dataset import read_dataset

TRACKS = ("track_id,title,creator_id,genre,created_at,duration_ms\n"
          "t1,One,c1,rock,2023-01-01,200000\nt2,Two,,,,\n")
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
         "events.csv: column 'user_id': must not be empty: 1 row breaks it (row 2: empty)"),
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
        ("u1,t1,play,2024-01-01,,1000000001\n",
         "events.csv: column 'count': must be at most 1,000,000,000: 1 row breaks it "
         "(row 1: '1000000001')"),
        ("u1,t1,play,2024-01-01,,1\nu1,t9,play,2024-01-01,,1\n",
         "events.csv: column 'track_id': track not in tracks: 1 row breaks it (row 2: 't9')"),
    ],
)
def test_each_rule_names_file_column_rule_and_rows(tmp_path, body, expected):
    assert expected in _error(tmp_path, HEADER + body)


def test_missing_column_and_negative_duration(tmp_path):
    message = _error(tmp_path, "user_id,track_id,ts\nu1,t1,2024-01-01\n")
    assert ("events.csv: column 'kind': missing column; the file has user_id, track_id, ts; "
            "add the column (see the README's input format)") in message
    tracks = "track_id,duration_ms\nt1,-3\n"
    message = _error(tmp_path, HEADER + "u1,t1,play,2024-01-01,,1\n", tracks)
    assert ("tracks.csv: column 'duration_ms': must be 0 or more: 1 row breaks it (row 1: '-3')"
            in message)


def test_duplicate_track_ids(tmp_path):
    message = _error(tmp_path, HEADER + "u1,t1,play,2024-01-01,,1\n", "track_id\nt1\nt1\n")
    assert "tracks.csv: column 'track_id': must be unique: 2 rows break it" in message


def test_duplicate_user_ids(tmp_path):
    folder = _folder(tmp_path, HEADER + "u1,t1,play,2024-01-01,,1\n")
    (folder / "users.csv").write_text("user_id,name\nu1,Ann\nu2,Bo\nu1,Another Ann\n")
    with pytest.raises(DataError) as info:
        read_dataset(folder)
    assert ("users.csv: column 'user_id': must be unique: 2 rows break it (row 1: 'u1', "
            "row 3: 'u1'); keep one row per user") in str(info.value)


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
    with pytest.raises(DataError, match="both tracks.parquet and tracks.csv exist; keep one"):
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


def test_a_header_only_events_file_is_a_data_error(tmp_path):
    assert _error(tmp_path, HEADER) == "events.csv: no events; a dataset needs at least one event"
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "data")])
    assert result.exit_code == 3
    assert "events.csv: no events; a dataset needs at least one event" in result.output


def test_every_broken_rule_is_reported_at_once(tmp_path):
    body = (
        "u1,t1,play,2024-01-01,,abc\n"   # a count that is not an integer
        ",t1,play,2024-01-02,,1\n"       # an empty user
        "u1,t1,dance,2024-01-03,,1\n"    # an unknown kind
        "u1,t9,play,yesterday,,1\n"      # a bad timestamp, on a track not in tracks
    )
    tracks = "track_id,duration_ms\nt1,-3\n"
    assert _error(tmp_path, HEADER + body, tracks).splitlines() == [
        "events.csv: column 'kind': must be one of play, like, repost, skip: 1 row breaks it "
        "(row 3: 'dance'); map other kinds to these or drop those rows",
        "events.csv: column 'ts': timestamp that cannot be parsed: 1 row breaks it "
        "(row 4: 'yesterday'); write ISO 8601 such as 2024-05-01T13:45:00Z (a time without "
        "offset is UTC)",
        "events.csv: column 'count': wrong type, expected an integer: 1 row breaks it "
        "(row 1: 'abc'); fix those values or leave them empty where the column allows it",
        "events.csv: column 'user_id': must not be empty: 1 row breaks it (row 2: empty); "
        "fill it in or drop those rows",
        "tracks.csv: column 'duration_ms': must be 0 or more: 1 row breaks it (row 1: '-3'); "
        "fix or drop those rows",
        "events.csv: column 'track_id': track not in tracks: 1 row breaks it (row 4: 't9'); "
        "add those tracks to the tracks table or drop their events",
    ]


def test_a_missing_column_leaves_the_other_rules_checked(tmp_path):
    message = _error(tmp_path, "user_id,track_id,ts\nu1,t9,2024-01-01\n,t1,2024-01-01\n")
    assert message.splitlines()[1:] == [
        "events.csv: column 'user_id': must not be empty: 1 row breaks it (row 2: empty); "
        "fill it in or drop those rows",
        "events.csv: column 'track_id': track not in tracks: 1 row breaks it (row 1: 't9'); "
        "add those tracks to the tracks table or drop their events",
    ]


def test_rows_with_too_few_or_too_many_fields_are_named_once(tmp_path):
    short = HEADER + "u1,t1,play,2024-01-01,,1\nu9,t1,play\n"
    assert _error(tmp_path, short) == (
        "events.csv: too few fields: 1 row breaks it (row 2: 3 of 6 fields); give every row "
        "one field per header column (an empty field where a value may be empty)"
    )
    long = HEADER + "u1,t1,play,2024-01-01,,1,7\nu2,t1,plya,2024-01-01,,1\n"
    assert _error(tmp_path, long).splitlines() == [
        "events.csv: too many fields: 1 row breaks it (row 1: 7 of 6 fields); give every row "
        "one field per header column (an empty field where a value may be empty)",
        "events.csv: column 'kind': must be one of play, like, repost, skip: 1 row breaks it "
        "(row 2: 'plya'); map other kinds to these or drop those rows",
    ]


def test_blank_lines_are_left_out(tmp_path):
    data = read_dataset(_folder(tmp_path, HEADER + "u1,t1,play,2024-01-01,,1\n\n"))
    assert data.events[s.USER_ID].to_list() == ["u1"]


def _write_bytes(tmp_path: Path, name: str, content: bytes) -> Path:
    folder = _folder(tmp_path, HEADER + "u1,t1,play,2024-01-01,,1\n")
    (folder / "events.csv").unlink()
    (folder / name).write_bytes(content)
    return folder


def test_a_file_that_is_not_csv_says_so_without_reader_internals(tmp_path):
    folder = _write_bytes(tmp_path, "events.csv", b"user_id,track_id\n\xe9\x07\x00,t1\n")
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 3
    assert result.output == (
        "error: events.csv: not a readable CSV file (invalid utf-8 sequence); save it as UTF-8 "
        "CSV with a header row\n"
    )
    (folder / "events.csv").write_bytes(b'user_id,track_id\n"u1\x07,t1\nu2,t2\n')
    message = _error_in(folder)
    assert message.startswith("events.csv: not a readable CSV file (invalid csv file Field ")
    assert message.endswith("is not properly escaped.); save it as UTF-8 CSV with a header row")
    assert "infer_schema_length" not in message and "\x07" not in message


def test_a_file_that_is_not_parquet_says_so(tmp_path):
    folder = _write_bytes(tmp_path, "events.parquet", b"not parquet at all")
    assert _error_in(folder) == (
        "events.parquet: not a readable Parquet file (parquet: File out of specification: The "
        "file must end with PAR1 or PARE); rewrite it with a Parquet writer or use CSV"
    )


def test_both_formats_of_a_table_exit_3(tmp_path):
    folder = _folder(tmp_path, HEADER + "u1,t1,play,2024-01-01,,1\n")
    pl.read_csv(folder / "events.csv").write_parquet(folder / "events.parquet")
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 3
    assert f"{folder}: both events.parquet and events.csv exist; keep one of them" in result.output


def _error_in(folder: Path) -> str:
    with pytest.raises(DataError) as info:
        read_dataset(folder)
    return str(info.value)
