"""The CLI's errors: text with brackets shown, never parsed; each with its exit code and what
to do, found before any work where it can be."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from recsys.cli import app

from conftest import ROOT


def _dataset(folder, kind: str):
    folder.mkdir()
    (folder / "tracks.csv").write_text("track_id,title,creator_id,genre,created_at,duration_ms\n"
                                       "t1,One,c1,rock,,\n")
    (folder / "events.csv").write_text("user_id,track_id,kind,ts,ms_played,count\n"
                                       f"u1,t1,{kind},2024-01-01T00:00:00Z,,1\n")
    return folder


def test_a_kind_holding_markup_is_quoted_as_it_is(tmp_path):
    for kind in ("[/x]", "[red]play[/red]"):
        data = _dataset(tmp_path / f"d{len(kind)}", kind)
        result = CliRunner().invoke(app, ["validate", str(data)])
        assert result.exit_code == 3
        assert f"'{kind}'" in result.output


def test_an_unknown_config_key_is_named(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[labels]\nkpii = "likes"\n')
    result = CliRunner().invoke(app, ["run", "sample_data", "--store", str(tmp_path / "store"),
                                      "--config", str(config)])
    assert result.exit_code == 2
    assert "kpii" in result.output
    assert not (tmp_path / "store").exists()


def test_recommend_names_an_unknown_run_and_where_the_runs_are_listed(sample_store):
    result = CliRunner().invoke(app, ["recommend", "u1", "--store", str(sample_store),
                                      "--run", "no-such-run"])
    assert result.exit_code == 2
    assert f"{sample_store}: no run no-such-run; `recsys runs --store {sample_store}` lists" \
        in " ".join(result.output.split())


def test_recommend_refuses_a_negative_shap_count(sample_store):
    result = CliRunner().invoke(app, ["recommend", "u1", "--store", str(sample_store),
                                      "--shap", "-1"])
    assert result.exit_code == 2
    assert "--shap" in result.output


# A store path that names a file is refused before any work, by every command that takes one.
STORE_COMMANDS = [
    ["run", "sample_data"], ["evaluate", "sample_data"], ["sweep", "sample_data"], ["runs"],
    ["recommend", "u0000"], ["follow", "u0000"], ["diff", "a", "b"], ["supernodes"],
]


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=lambda c: c[0])
def test_a_store_that_is_a_file_is_a_usage_error(tmp_path, command):
    store = tmp_path / "store"
    store.write_text("not a store")
    result = CliRunner().invoke(app, [*command, "--store", str(store)])
    assert result.exit_code == 2
    assert f"{store} is a file, not a store folder" in _flat(result.output)
    assert store.read_text() == "not a store"


def test_a_dataset_that_is_a_file_is_named_as_a_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("user_id\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path} is a file, not a dataset folder" in _flat(result.output)


@pytest.mark.parametrize("content", ['{"runs": [', "[]"])
def test_a_registry_that_cannot_be_read_is_named_with_what_to_do(sample_store, tmp_path,
                                                                  content):
    store = tmp_path / "store"
    shutil.copytree(sample_store, store, symlinks=True)
    (store / "registry.json").write_text(content)
    for command in (["runs"], ["run", "sample_data"]):
        result = CliRunner().invoke(app, [*command, "--store", str(store)])
        assert result.exit_code == 2, result.output
        output = _flat(result.output)
        assert f"{store / 'registry.json'}: " in output
        assert "restore it from a backup, or move the store folder aside" in output
    assert not list((store / "runs").glob(".*.tmp"))


@pytest.mark.parametrize("command", ["evaluate", "sweep"])
def test_an_as_of_before_every_event_is_refused_up_front(small_data, tmp_path, command):
    store = tmp_path / "store"
    result = CliRunner().invoke(app, [command, str(small_data), "--store", str(store),
                                      "--as-of", "2000-01-01"])
    assert result.exit_code == 2
    assert ("--as-of 2000-01-01T00:00:00+00:00 is not after any event (the first is "
            in _flat(result.output))
    assert "choose a later time" in _flat(result.output)
    assert not store.exists()


def test_importing_from_a_missing_folder_is_a_usage_error(tmp_path):
    src, dest = tmp_path / "nope", tmp_path / "dest"
    result = CliRunner().invoke(app, ["import", "lastfm-hetrec", str(src), str(dest)])
    assert result.exit_code == 2
    assert f"{src}: no such folder; the lastfm-hetrec importer reads artists.dat" \
        in _flat(result.output)
    assert not dest.exists()


def test_one_stray_file_in_a_destination_is_named_in_the_singular(tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "NOTES.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["generate", str(dest), "--users", "5", "--tracks", "5"])
    assert result.exit_code == 2
    assert (f"{dest}: holds NOTES.txt, which is not a dataset table; choose a new or empty "
            "folder, or move it out") in _flat(result.output)
    assert (dest / "NOTES.txt").read_text() == "keep me"


def test_generate_says_which_dataset_files_it_replaced(tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "events.csv").write_text("user_id,track_id,kind,ts\n")
    result = CliRunner().invoke(app, ["generate", str(dest), "--users", "5", "--tracks", "5"])
    assert result.exit_code == 0, result.output
    assert "replaced the dataset files it held (events.csv)" in _flat(result.output)
    assert not (dest / "events.csv").exists() and (dest / "events.parquet").exists()


MARKUP_ID = "[bold red]rich[/]"


@pytest.fixture(scope="module")
def markup_store(sample_store, tmp_path_factory) -> Path:
    """A copy of the sample store in which user u0000 is called MARKUP_ID."""
    store = tmp_path_factory.mktemp("markup") / "store"
    shutil.copytree(sample_store, store, symlinks=True)
    with duckdb.connect(str(store / "current.duckdb")) as con:
        columns = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                              "WHERE column_name IN ('user_id', 'follower_id')").fetchall()
        for table, column in columns:
            con.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE "{column}" = ?',
                        [MARKUP_ID, "u0000"])
    return store


@pytest.mark.parametrize("command, title", [("recommend", "recommendations for"),
                                            ("follow", "who")])
def test_a_user_id_holding_markup_is_printed_as_it_is(markup_store, command, title):
    result = CliRunner().invoke(app, [command, MARKUP_ID, "--store", str(markup_store)])
    assert result.exit_code == 0, result.output
    assert f"{title} {MARKUP_ID}" in result.output


def test_the_store_defaults_to_recsys_store_then_to_store(sample_store, tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["runs"], env={"RECSYS_STORE": str(sample_store)})
    assert result.exit_code == 0, result.output
    assert "current" in result.output

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["runs"], env={"RECSYS_STORE": None})
    assert result.exit_code == 2
    assert "store: no registry.json" in _flat(result.output)


@pytest.mark.parametrize("command", [[], ["runs"], ["diff"], ["run"], ["recommend"]])
def test_help_is_rewrapped_and_shows_flags_without_a_type(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    if command == ["runs"]:
        assert ("input fingerprint, code version, seconds, recommendations, and which one is "
                "current.") in result.output


def test_a_reader_that_stops_reading_ends_the_command_quietly(sample_store):
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys", "runs", "--store", str(sample_store)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    process.stdout.close()  # before the command writes, as `| head -0` would
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0, stderr
    assert stderr == ""


def _flat(output: str) -> str:
    """The output with its line breaks (rich wraps at 80 columns) as single spaces."""
    return " ".join(output.split())
