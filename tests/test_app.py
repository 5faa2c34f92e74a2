"""The pages, run by Streamlit's AppTest against real stores, checked against the store itself.

Every expected value is read from the run file with DuckDB here, not through `recsys.queries`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from google.protobuf.message import Message
from streamlit.testing.v1 import AppTest

from recsys import ui
from recsys.config import Config
from recsys.io.dataset import write_dataset
from recsys.pipeline import run_batch
from recsys.store import current_run_id

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
SAMPLE_DATA = ROOT / "sample_data"
OVERVIEW = "pages/overview.py"
INSPECTOR = "pages/inspector.py"

# Titles, names and ids that mean something to HTML, Markdown or a quoting routine.
ODD_TITLES = (
    "<script>alert(1)</script>",
    "<b>bold</b>",
    "O'Brien \"x\"",
    "**stars** [link](https://example.com) :red[red] $x$",
)
ODD_USER = "u'1<i>"
ODD_NAME = "O'Brien \"x\" <b>bold</b>"
ODD_FRAGMENTS = ("<script", "<b>", "<i>", "O'Brien", "**stars**", ":red[", ODD_USER)
# Elements that show a string as it is; everything else must not carry a string from the data.
PLAIN_TEXT_ELEMENTS = {"text", "code", "dataframe", "selectbox", "text_input"}


def write_odd_dataset(dest: Path, *, seed: int = 7) -> Path:
    """40 users and 60 tracks over 90 days, every title, creator, genre and the first user's id
    and name full of markup; users keep to one of four genres so that similarity has pairs."""
    rng = np.random.default_rng(seed)
    n_users, n_tracks, n_genres, days = 40, 60, 4, 90
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    track_ids = [f"t<{i}>" for i in range(n_tracks)]
    genre_of = np.arange(n_tracks) % n_genres
    tracks = pl.DataFrame({
        "track_id": track_ids,
        "title": [f"{ODD_TITLES[i % len(ODD_TITLES)]} #{i}" for i in range(n_tracks)],
        "creator_id": [f"c'{i % 12}\"" for i in range(n_tracks)],
        "genre": [f"<i>genre {g}</i>" for g in genre_of],
        "created_at": [start - timedelta(days=30)] * n_tracks,
        "duration_ms": rng.integers(120_000, 300_000, n_tracks),
    })
    user_ids = [ODD_USER] + [f"u{i}" for i in range(1, n_users)]
    users = pl.DataFrame({"user_id": user_ids,
                          "name": [ODD_NAME] + [f"user {i}" for i in range(1, n_users)]})

    rows = []
    for u, user_id in enumerate(user_ids):
        for _ in range(rng.integers(30, 60)):
            genre = u % n_genres if rng.random() < 0.8 else rng.integers(n_genres)
            pool = np.flatnonzero(genre_of == genre)
            weights = 1 / np.arange(1, pool.size + 1)
            track = track_ids[pool[rng.choice(pool.size, p=weights / weights.sum())]]
            kind = str(rng.choice(["play", "like", "skip"], p=[0.8, 0.1, 0.1]))
            ts = start + timedelta(seconds=float(rng.uniform(0, days * 86_400)))
            rows.append((user_id, track, kind, ts, 60_000 if kind == "play" else None, 1))
    events = pl.DataFrame(rows, schema=["user_id", "track_id", "kind", "ts", "ms_played", "count"],
                          orient="row")
    return write_dataset({"events": events, "tracks": tracks, "users": users}, dest)


def open_page(store: Path, monkeypatch, page: str | None = None, **query: str) -> AppTest:
    """The app on `store`, switched to `page` and run, with `query` as its query parameters."""
    monkeypatch.setenv("RECSYS_STORE", str(store))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def run_file(store: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str((store / "current.duckdb").resolve()), read_only=True)


def waterfall_end(at: AppTest) -> float:
    """Where the (one) plotly waterfall on the page ends, computed from its bars."""
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    [trace] = [t for chart in charts for t in chart["data"] if t["type"] == "waterfall"]
    values = trace["x"] if trace.get("orientation") == "h" else trace["y"]
    level = 0.0
    for measure, value in zip(trace["measure"], values):
        if measure == "absolute":
            level = value
        elif measure == "relative":
            level += value
        else:
            return level
    return level


def table_with(at: AppTest, column: str):
    """The one table on the page that has `column`, as a pandas frame."""
    [table] = [df.value for df in at.dataframe if column in df.value.columns]
    return table


def texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


def test_overview_shows_the_runs_counts(sample_store, monkeypatch):
    at = open_page(sample_store, monkeypatch)
    with run_file(sample_store) as con:
        [(run_id, events, scored)] = con.sql(
            "SELECT run_id, events, ndcg_users FROM runs").fetchall()
        counts = {table: con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                  for table in ("users", "tracks", "recommendations")}
        ndcg = con.sql("""SELECT "order", sum(value * users) / sum(users), max(users)
                          FROM ranker_evaluation GROUP BY ALL""").fetchall()
        stages = [row[0] for row in con.sql("SELECT stage FROM stages").fetchall()]
        ranked = con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'shap_values'")
        has_ranker = ranked.fetchall()[0][0] == 1

    assert at.title[0].value == "Overview"
    assert any(text.startswith(f"Run {run_id},") for text in texts(at))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Users"] == f"{counts['users']:,}"
    assert metrics["Tracks"] == f"{counts['tracks']:,}"
    assert metrics["Recommendations"] == f"{counts['recommendations']:,}"
    assert metrics["Events"] == f"{events:,}"
    assert list(at.dataframe[0].value["stage"]) == stages
    if scored:
        # One validation window per order in today's engine: its values are the headline.
        assert metrics["Users scored"] == f"{scored:,}"
        for order, value, _ in ndcg:
            label = {"ranker": "NDCG@10, ranker", "candidate_order": "NDCG@10, candidate order"}
            assert metrics[label[order]] == f"{value:.4f}"
    assert bool(at.get("plotly_chart")) == has_ranker, "the feature importance chart"


def test_inspector_shows_a_users_first_recommendation_and_its_shap(sample_store, monkeypatch):
    with run_file(sample_store) as con:
        user_id, title, kind, score = con.sql("""
            SELECT r.user_id, t.title, r.reason_kind, r.score
            FROM recommendations r JOIN tracks t USING (track_id)
            WHERE r.rank = 1 AND r.reason_kind = 'similar'
            ORDER BY r.user_id LIMIT 1
        """).fetchall()[0]
        seeds = [row[0] for row in con.sql("""
            SELECT t.title FROM recommendation_reasons r
            JOIN recommendations USING (user_id, track_id)
            JOIN tracks t ON t.track_id = r.seed_track_id
            WHERE r.user_id = $user AND rank = 1""", params={"user": user_id}).fetchall()]

    # Find the user as a person would: type the id, pick the match.
    at = open_page(sample_store, monkeypatch, INSPECTOR)
    at.text_input(key=ui.SEARCH_KEY).set_value(user_id).run()
    at.selectbox(key=ui.USER_KEY).set_value(user_id).run()
    assert not at.exception

    recommendations = table_with(at, "reason_kind")
    assert recommendations.loc[0, "title"] == title
    assert recommendations.loc[0, "reason_kind"] == kind
    assert all(seed in recommendations.loc[0, "reason"] for seed in seeds)
    assert title in texts(at)
    assert waterfall_end(at) == pytest.approx(score, abs=1e-6)


def test_inspector_shows_the_sources_and_walk_paths_of_a_walk_recommendation(
    sample_store, monkeypatch
):
    with run_file(sample_store) as con:
        user_id, track_id, walk_rank, proposed = con.sql("""
            SELECT r.user_id, r.track_id, c.walk_rank, c.sources FROM recommendations r
            JOIN candidates c USING (user_id, track_id)
            WHERE r.reason_kind = 'walk' ORDER BY r.user_id, r.rank LIMIT 1
        """).fetchall()[0]
        paths = con.sql("""
            SELECT t.title, p.path_visits FROM walk_paths p
            JOIN tracks t ON t.track_id = p.seed_track_id
            WHERE p.user_id = $u AND p.track_id = $t ORDER BY p.path_rank
        """, params={"u": user_id, "t": track_id}).fetchall()

    at = open_page(sample_store, monkeypatch, INSPECTOR, user=user_id)
    [chosen] = [box for box in at.selectbox if box.label == "Recommendation"]
    chosen.set_value(track_id).run()
    assert not at.exception

    sources = table_with(at, "source")
    assert sorted(sources["source"]) == sorted(proposed)
    assert "similar" not in proposed  # a walk reason: similarity did not propose it
    assert sources.set_index("source").loc["walk", "rank"] == walk_rank
    shown = table_with(at, "listener")
    assert [v for v in shown["visits"]] == [visits for _, visits in paths]
    assert [cell.split(". ", 1)[1] for cell in shown["your track"]] == [t for t, _ in paths]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    [sankey] = [t for chart in charts for t in chart["data"] if t["type"] == "sankey"]
    # Each path flows into the recommendation once, with its visits.
    end = sankey["node"]["label"].index("this recommendation")
    into_end = [v for v, b in zip(sankey["link"]["value"], sankey["link"]["target"]) if b == end]
    assert sorted(into_end) == sorted(visits for _, visits in paths)


def test_inspector_opens_the_user_of_a_link_and_words_a_fallback(sample_store, monkeypatch):
    with run_file(sample_store) as con:
        fallback = con.sql("""
            SELECT user_id, track_id, reason_kind FROM recommendations
            WHERE reason_kind IN ('popular_in_genre', 'popular') ORDER BY user_id, rank LIMIT 1
        """).fetchall()[0]
        any_user = con.sql("SELECT min(user_id) FROM recommendations").fetchall()[0][0]
    user_id = fallback[0] if fallback else any_user

    at = open_page(sample_store, monkeypatch, INSPECTOR, user=user_id)
    assert at.selectbox(key=ui.USER_KEY).value == user_id
    if fallback is None:
        pytest.skip("every recommendation of the sample store is a similar track")
    [chosen] = [box for box in at.selectbox if box.label == "Recommendation"]
    chosen.set_value(fallback[1]).run()
    assert ui.REASON_WORDS[fallback[2]] in texts(at)


def test_titles_and_names_with_markup_are_shown_as_text(tmp_path, monkeypatch):
    write_odd_dataset(tmp_path / "data")
    run_batch(tmp_path / "data", tmp_path / "store", cfg=Config())
    with run_file(tmp_path / "store") as con:
        title, score = con.sql("""
            SELECT t.title, r.score FROM recommendations r JOIN tracks t USING (track_id)
            WHERE r.user_id = $user AND r.rank = 1""", params={"user": ODD_USER}).fetchall()[0]

    at = open_page(tmp_path / "store", monkeypatch, INSPECTOR, user=ODD_USER)
    picked = at.selectbox(key=ui.USER_KEY)
    assert picked.value == ODD_USER
    assert picked.options[picked.index].startswith(f"{ODD_USER} · {ODD_NAME} · ")
    assert title in texts(at)
    assert table_with(at, "reason_kind").loc[0, "title"] == title
    assert waterfall_end(at) == pytest.approx(score, abs=1e-6)

    # No element that renders Markdown or HTML (or a plotly label) carries a string from the data.
    assert len(at.get("html")) == 0
    for node in at.main:
        if node.type in PLAIN_TEXT_ELEMENTS or node.proto is None:
            continue
        assert not getattr(node.proto, "allow_html", False), node.type
        shown = "\n".join(_strings(node.proto))
        assert not [f for f in ODD_FRAGMENTS if f in shown], (node.type, shown[:300])


def _strings(message: Message) -> list[str]:
    """Every string field of a protobuf message, recursively."""
    found = []
    for _, value in message.ListFields():
        repeated = not isinstance(value, (str, bytes, Message)) and hasattr(value, "__iter__")
        items = value if repeated else [value]
        for item in items:
            if isinstance(item, Message):
                found.extend(_strings(item))
            elif isinstance(item, str):
                found.append(item)
    return found


def test_a_page_without_a_run_says_so(tmp_path, monkeypatch):
    at = open_page(tmp_path / "empty", monkeypatch)
    assert "no run in this store" in at.info[0].value
    assert not at.metric


# A run that serves the sample data in six partitions, with small budgets.
PARTITIONED_RUN = """
[batch]
partition_users = 500

[walks]
walks_per_user = 200

[ranker]
training_cuts = 1
num_trees = 30
"""


@pytest.mark.slow
def test_pages_show_the_current_run_while_another_process_writes_one(
    sample_store, tmp_path, monkeypatch
):
    store = tmp_path / "store"
    shutil.copytree(sample_store, store, symlinks=True)
    old = current_run_id(store)
    with run_file(store) as con:
        user_id = con.sql("SELECT min(user_id) FROM recommendations").fetchall()[0][0]
    config = tmp_path / "partitioned.toml"
    config.write_text(PARTITIONED_RUN)

    log = tmp_path / "run.log"
    with open(log, "w") as output:
        writer = subprocess.Popen(
            [sys.executable, "-m", "recsys", "run", str(SAMPLE_DATA), "--store", str(store),
             "--config", str(config)],
            stdout=output, stderr=subprocess.STDOUT,
        )
    shown, notes, runs_notes, reads = [], 0, 0, 0
    try:
        while writer.poll() is None:
            before = current_run_id(store)
            overview = open_page(store, monkeypatch)
            open_page(store, monkeypatch, INSPECTOR, user=user_id)
            # The Runs page and the old run opened by its link, read while the new one writes.
            runs_page = open_page(store, monkeypatch, "pages/runs.py")
            older = open_page(store, monkeypatch, INSPECTOR, user=user_id, run=old)
            assert older.sidebar.selectbox(key=ui.RUN_KEY).value == old
            shown.append(_shown_run(overview))
            assert shown[-1] in {before, current_run_id(store)}
            notes += any(ui.IN_PROGRESS in c.value for c in overview.caption)
            runs_notes += any("being written" in note.value for note in runs_page.info)
            reads += 1
            time.sleep(0.2)
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    assert writer.returncode == 0, log.read_text()

    new = current_run_id(store)
    assert new != old
    # The old run until the new one is published, then the new one: never a mix, never back.
    assert shown.count(old) >= 1 and notes >= 1 and runs_notes >= 1
    assert shown == [old] * shown.count(old) + [new] * shown.count(new)
    assert reads >= 3
    assert _shown_run(open_page(store, monkeypatch)) == new


def _shown_run(at: AppTest) -> str:
    [line] = [t for t in texts(at) if t.startswith("Run ")]
    return line.removeprefix("Run ").split(",")[0]


def test_inspector_shows_what_the_ranker_changed_as_the_store_has_it(sample_store, monkeypatch):
    with run_file(sample_store) as con:
        # A user whose list the ranker reordered and that holds an ALS proposal.
        [(user_id,)] = con.sql("""
            SELECT user_id FROM recommendations GROUP BY user_id
            HAVING bool_or(rank <> rank_before) AND bool_or(list_contains(sources, 'als'))
            ORDER BY user_id LIMIT 1""").fetchall()
        stored = con.sql("""
            SELECT rank, rank_before, sources FROM recommendations
            WHERE user_id = $u ORDER BY rank""", params={"u": user_id}).fetchall()
        shap = con.sql("""
            SELECT r.rank, s.feature, s.value FROM shap_values s
            JOIN recommendations r USING (user_id, track_id)
            WHERE s.user_id = $u AND s.feature <> '(other features)'""",
                       params={"u": user_id}).fetchall()
        # The plain candidate order, rebuilt from the candidates table.
        order = con.sql("""
            SELECT track_id FROM candidates WHERE user_id = $u
            ORDER BY coalesce(similar_score, 0) DESC, walk_score DESC NULLS LAST,
                     als_score DESC NULLS LAST, popular_in_genre_score DESC NULLS LAST,
                     popular_score DESC NULLS LAST, track_id""",
                        params={"u": user_id}).fetchall()
        listed = [row[0] for row in con.sql(
            "SELECT track_id FROM recommendations WHERE user_id = $u ORDER BY rank",
            params={"u": user_id}).fetchall()]

    at = open_page(sample_store, monkeypatch, INSPECTOR, user=user_id)
    table = table_with(at, "rank_before")
    assert list(table["rank"]) == [rank for rank, _, _ in stored]
    assert list(table["rank_before"]) == [before for _, before, _ in stored]
    assert list(table["moved"]) == [before - rank for rank, before, _ in stored]
    assert list(table["sources"]) == [", ".join(sources) for _, _, sources in stored]
    assert "als" in ", ".join(table["sources"])
    # rank_before is the place in the candidate order.
    position = {track: i + 1 for i, (track,) in enumerate(order)}
    assert [position[t] for t in listed] == [before for _, before, _ in stored]

    # The three largest SHAP contributions of each recommendation, largest first.
    for rank, shown in zip(table["rank"], table["top_shap"]):
        mine = sorted([(f, v) for r, f, v in shap if r == rank], key=lambda x: (-abs(x[1]), x[0]))
        assert shown == ", ".join(f"{f} {v:+.3f}" for f, v in mine[:3])
