"""The CLI prints errors as text: brackets in data or config keys are shown, never parsed."""

from __future__ import annotations

from typer.testing import CliRunner

from recsys.cli import app


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
