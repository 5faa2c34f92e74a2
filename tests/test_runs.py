"""The run registry: `recsys runs`, the Runs page, and opening any kept run in the pages.

The store here holds two runs of one small generated dataset, a week apart, so that some
users' lists differ between them. Expected values are read from the run files with DuckDB.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from recsys import ui
from recsys.cli import app
from recsys.config import Config
from recsys.io.generate import generate
from recsys.pipeline import run_batch
from recsys.store import current_run_id, read_registry, record_run, run_path

from test_app import INSPECTOR, open_page, table_with, texts

RUNS_PAGE = "pages/runs.py"
DAYS = (datetime(2026, 6, 20, tzinfo=timezone.utc), datetime(2026, 6, 27, tzinfo=timezone.utc))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """(data, store, [older run id, newer run id]): runs as of DAYS over 400 generated users."""
    root = tmp_path_factory.mktemp("two_runs")
    data, store = root / "data", root / "store"
    generate(data, users=400, tracks=400, seed=1, config=Config().generator)
    ids = [run_batch(data, store, cfg=Config(), as_of=day).run_id for day in DAYS]
    return data, store, ids


def read(store: Path, run_id: str, sql: str, **params) -> list[tuple]:
    with duckdb.connect(str(run_path(store, run_id)), read_only=True) as con:
        return con.sql(sql, params=params or None).fetchall()


def input_fingerprint(folder: Path) -> str:
    """sha256 over the dataset's file names and bytes, in the order of their table names."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir(), key=lambda p: p.name.split(".")[0]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def a_user_whose_list_changed(store: Path, old: str, new: str) -> str:
    lists = {}
    for run_id in (old, new):
        rows = read(store, run_id, "SELECT user_id, list(track_id ORDER BY rank) "
                                   "FROM recommendations GROUP BY user_id")
        lists[run_id] = dict(rows)
    changed = sorted(u for u in lists[old] if lists[old][u] != lists[new].get(u))
    assert changed, "the two runs serve the same lists to everyone"
    return changed[0]


def test_runs_lists_every_run_with_its_input_code_and_counts(two_runs):
    data, store, (old, new) = two_runs
    # A run whose process died without finishing: listed as failed.
    dead = subprocess.Popen(["true"])
    dead.wait()
    record_run(store, {"id": "20000101T000000Z-dead00", "status": "running", "pid": dead.pid,
                       "as_of": "2026-06-01T00:00:00+00:00", "started_at": "2000-01-01T00:00:00"})

    result = CliRunner().invoke(app, ["runs", "--store", str(store)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["run", "as", "of", "(UTC)", "status", "fingerprint", "code",
                                "seconds", "recommendations"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == [new, old, "20000101T000000Z-dead00"]  # newest first
    fingerprint = input_fingerprint(data)[:12]
    for run_id, day in zip((old, new), DAYS):
        [(recs, seconds)] = read(store, run_id, "SELECT count(*), (SELECT seconds FROM runs) "
                                                "FROM recommendations")
        row = rows[run_id]
        assert row[1:4] == [f"{day:%Y-%m-%d}", "00:00", "published"]
        assert row[4] == fingerprint and row[5] == "0.1.0"
        assert abs(float(row[6]) - seconds) < 1.0  # the registry times the whole run
        assert row[7] == f"{recs:,}"
    assert rows[new][-1] == "current" and rows[old][-1] != "current"
    assert rows["20000101T000000Z-dead00"][3] == "failed"


def test_runs_on_a_folder_without_a_registry_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["runs", "--store", str(tmp_path)])
    assert result.exit_code == 2
    assert "no registry.json" in result.output


def test_runs_page_lists_the_kept_runs_and_a_run_in_progress(two_runs, monkeypatch):
    _, store, (old, new) = two_runs
    at = open_page(store, monkeypatch, RUNS_PAGE)
    kept = table_with(at, "fingerprint")
    assert list(kept["id"]) == [new, old]
    assert list(kept["current"]) == [True, False]
    assert list(kept["open"]) == [f"./?run={new}", f"./?run={old}"]
    assert not at.info

    # A newer run registered by a live process (this one): the page says it is being written.
    running = {"id": "99991231T000000Z-abcdef", "status": "running", "pid": os.getpid(),
               "as_of": "2026-06-28T00:00:00+00:00",
               "started_at": datetime.now(timezone.utc).isoformat()}
    record_run(store, running)
    try:
        at = open_page(store, monkeypatch, RUNS_PAGE)
        assert any(running["id"] in note.value and "being written" in note.value
                   for note in at.info)
        assert any(ui.IN_PROGRESS in c.value for c in at.caption)
    finally:
        registry = read_registry(store)
        registry["runs"] = [r for r in registry["runs"] if r["id"] != running["id"]]
        (store / "registry.json").write_text(json.dumps(registry))


def test_an_older_run_opens_in_the_inspector_as_it_was_served(two_runs, monkeypatch):
    _, store, (old, new) = two_runs
    assert current_run_id(store) == new
    user_id = a_user_whose_list_changed(store, old, new)
    served = read(store, old, """
        SELECT t.title, r.reason_kind FROM recommendations r JOIN tracks t USING (track_id)
        WHERE r.user_id = $u ORDER BY r.rank""", u=user_id)
    seeds = read(store, old, """
        SELECT t.title FROM recommendation_reasons x
        JOIN recommendations r USING (user_id, track_id)
        JOIN tracks t ON t.track_id = x.seed_track_id
        WHERE x.user_id = $u AND r.rank = 1""", u=user_id)

    at = open_page(store, monkeypatch, INSPECTOR, user=user_id, run=old)
    assert at.sidebar.selectbox(key=ui.RUN_KEY).value == old
    shown = table_with(at, "reason_kind")
    assert list(zip(shown["title"], shown["reason_kind"])) == served
    assert all(title in shown.loc[0, "reason"] for (title,) in seeds)
    assert any("earlier run" in c.value for c in at.sidebar.caption)

    # The choice holds on the overview, which names the older run and its as-of time.
    at.switch_page("pages/overview.py").run()
    assert any(t.startswith(f"Run {old}, as of 2026-06-20 00:00:00") for t in texts(at))


def test_the_run_chosen_in_the_sidebar_holds_across_pages(two_runs, monkeypatch):
    _, store, (old, new) = two_runs
    at = open_page(store, monkeypatch)
    assert any(t.startswith(f"Run {new},") for t in texts(at))
    at.sidebar.selectbox(key=ui.RUN_KEY).set_value(old).run()
    assert any(t.startswith(f"Run {old},") for t in texts(at))
    assert at.query_params[ui.RUN_KEY] == old  # the link of the page now names the run
    at.switch_page(RUNS_PAGE).run()
    assert at.sidebar.selectbox(key=ui.RUN_KEY).value == old


def test_a_link_to_a_run_that_is_not_kept_shows_the_current_run(two_runs, monkeypatch):
    _, store, (_, new) = two_runs
    at = open_page(store, monkeypatch, run="20000101T000000Z-000000")
    assert "not kept" in at.warning[0].value
    assert any(t.startswith(f"Run {new},") for t in texts(at))


def test_runs_page_compares_the_two_latest_runs(two_runs, monkeypatch):
    _, store, (old, new) = two_runs
    lists = {}
    for run_id in (old, new):
        rows = read(store, run_id, "SELECT user_id, list(track_id) FROM recommendations "
                                   "GROUP BY user_id")
        lists[run_id] = {user: set(tracks) for user, tracks in rows}
    both = sorted(set(lists[old]) & set(lists[new]))
    jaccard = [len(lists[old][u] & lists[new][u]) / len(lists[old][u] | lists[new][u])
               for u in both]
    shares = {}
    for run_id in (old, new):
        shares[run_id] = dict(read(store, run_id, "SELECT entity_id, recommendation_share "
                                                  "FROM exposure WHERE entity = 'track'"))
    change = {t: shares[new].get(t, 0) - shares[old].get(t, 0) for t in shares[new]}
    top_rise = min(change, key=lambda t: (-change[t], t))  # ties by id

    at = open_page(store, monkeypatch, RUNS_PAGE)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Users in both"] == f"{len(both):,}"
    assert metrics["Mean Jaccard"] == f"{sum(jaccard) / len(jaccard):.3f}"
    assert metrics["Unchanged lists"] == f"{sum(j == 1 for j in jaccard) / len(both):.1%}"
    assert metrics["Users only in A"] == metrics["Users only in B"] == "0"
    rises = [df.value for df in at.dataframe if "slots_a" in df.value.columns][0]
    assert rises.loc[0, "entity_id"] == top_rise
    assert rises.loc[0, "change"] == pytest.approx(change[top_rise])
    [chart] = at.get("plotly_chart")
    [bars] = json.loads(chart.proto.spec)["data"]
    assert sum(bars["y"]) == len(both)
    assert bars["y"][-1] == sum(j == 1 for j in jaccard)


def _tiny(folder: Path, kinds: dict[str, str]) -> Path:
    """A dataset of three tracks and one event per (user, day) row of `kinds`."""
    folder.mkdir(parents=True)
    (folder / "tracks.csv").write_text("track_id,title,creator_id,genre\n"
                                       "t1,One,c1,rock\nt2,Two,c1,rock\nt3,Three,c2,jazz\n")
    rows = [f"{user},t{1 + i % 3},{kind},2026-06-{1 + i:02d}T00:00:00Z"
            for i, (user, kind) in enumerate(kinds.items())]
    (folder / "events.csv").write_text("user_id,track_id,kind,ts\n" + "\n".join(rows) + "\n")
    return folder


def test_a_run_that_recommends_nothing_fails_and_leaves_the_current_run(tmp_path):
    store = tmp_path / "store"
    good = _tiny(tmp_path / "good", {f"u{i}": "play" for i in range(6)})
    first = run_batch(good, store, cfg=Config()).run_id
    skips = _tiny(tmp_path / "skips", {"u1": "skip"})
    result = CliRunner().invoke(app, ["run", str(skips), "--store", str(store)])
    assert result.exit_code == 4, result.output
    message = "".join(result.output.split())  # however the console wrapped it
    assert "failedafterstage'bias':nousergotarecommendation" in message, result.output
    assert "thecurrentrunisunchanged" in message, result.output
    assert current_run_id(store) == first
    [failed] = [r for r in read_registry(store)["runs"] if r["id"] != first]
    assert failed["status"] == "failed" and "no user got a recommendation" in failed["error"]


def test_a_backfill_older_than_the_current_run_says_so(tmp_path, caplog):
    store = tmp_path / "store"
    data = _tiny(tmp_path / "data", {f"u{i}": "play" for i in range(6)})
    newer = datetime(2026, 6, 10, tzinfo=timezone.utc)
    run_batch(data, store, cfg=Config(), as_of=newer)
    older = run_batch(data, store, cfg=Config(), as_of=datetime(2026, 6, 5, tzinfo=timezone.utc))
    assert current_run_id(store) == older.run_id
    assert (f"run {older.run_id} is as of 2026-06-05T00:00:00+00:00, before the run it replaced "
            "as current (as of 2026-06-10T00:00:00+00:00)") in caplog.text
