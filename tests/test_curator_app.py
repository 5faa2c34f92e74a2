"""The curator's pages (Super nodes, Track explorer) run by AppTest on the sample store.

Every expected value is read from the run file with DuckDB or numpy here, not through
`recsys.queries` or `recsys.whatif`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import ui
from recsys.config import Config
from recsys.pipeline import run_batch
from test_app import (
    ODD_FRAGMENTS, PLAIN_TEXT_ELEMENTS, _strings, open_page, run_file, texts, write_odd_dataset,
)

SUPERNODES = "pages/supernodes.py"
TRACKS = "pages/tracks.py"


def tables_with(at, column: str) -> list:
    """Every table on the page that has `column`, as pandas frames, in page order."""
    return [df.value for df in at.dataframe if column in df.value.columns]


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def run_what_if(at, **widgets):
    """Set the what-if widgets (by key) and press the button."""
    for key, value in widgets.items():
        [widget] = [w for kind in ("selectbox", "number_input", "slider", "radio")
                    for w in at.get(kind) if w.key == key]
        widget.set_value(value)
    at.button(key=ui.RUN_WHATIF_KEY).click().run()
    assert not at.exception, [e.value for e in at.exception]
    [bias] = tables_with(at, "before")
    entering, leaving = tables_with(at, "entered")
    return bias, entering, leaving


def test_leaderboards_lorenz_and_gini_match_the_store(sample_store, monkeypatch):
    with run_file(sample_store) as con:
        # The most recommended track and its amplification, from the lists and the feedback.
        track, slots, users = con.execute("""
            SELECT track_id, count(*), count(DISTINCT user_id) FROM recommendations
            GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""").fetchone()
        listeners, positive = con.execute("""
            SELECT count(*) FILTER (WHERE track_id = $1), count(*) FROM feedback
            WHERE positive""", [track]).fetchone()
        all_slots = con.execute("SELECT count(*) FROM recommendations").fetchone()[0]
        creator = con.execute("""SELECT entity_id, amplification FROM exposure
                             WHERE entity = 'creator' ORDER BY slots DESC, entity_id
                             LIMIT 1""").fetchone()
        gini = dict(con.execute("SELECT entity, value FROM popularity_bias WHERE metric = 'gini'")
                    .fetchall())
        curve = np.array(con.execute("""SELECT population_share, exposure_share FROM lorenz
                                    WHERE entity = 'track' ORDER BY 1""").fetchall())

    at = open_page(sample_store, monkeypatch, SUPERNODES)
    assert at.title[0].value == "Super nodes"
    board = tables_with(at, "amplification")[0]
    assert board.loc[0, "entity_id"] == track
    assert board.loc[0, "slots"] == slots and board.loc[0, "users_reached"] == users
    assert board.loc[0, "amplification"] == pytest.approx((slots / all_slots)
                                                          / (listeners / positive))
    assert metrics(at)["Gini index of exposure"] == f"{gini['track']:.3f}"
    [chart] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert np.allclose(chart["data"][0]["x"], curve[:, 0])
    assert np.allclose(chart["data"][0]["y"], curve[:, 1])

    at.radio(key=ui.ENTITY_KEY).set_value("creator").run()
    board = tables_with(at, "amplification")[0]
    assert (board.loc[0, "entity_id"], board.loc[0, "amplification"]) == pytest.approx(creator)
    assert metrics(at)["Gini index of exposure"] == f"{gini['creator']:.3f}"


def test_routes_name_the_history_tracks_that_lead_to_the_top_track(sample_store, monkeypatch):
    with run_file(sample_store) as con:
        [track] = con.execute("""SELECT track_id FROM recommendations
                             GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""").fetchone()
        seed, users = con.execute("""
            SELECT seed_track_id, count(DISTINCT user_id) FROM recommendation_reasons
            WHERE track_id = $1 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""", [track]).fetchone()
        similar = con.execute("""SELECT count(*) FROM recommendations
                                 WHERE track_id = $1 AND reason_kind = 'similar'""",
                              [track]).fetchone()[0]

    at = open_page(sample_store, monkeypatch, SUPERNODES)
    [node] = [box for box in at.selectbox if box.label == "Super node"]
    assert node.value == track
    [routes] = tables_with(at, "seed_track_id")
    assert (routes.loc[0, "seed_track_id"], routes.loc[0, "users"]) == (seed, users)
    [kinds] = tables_with(at, "reason_kind")
    assert dict(zip(kinds["reason_kind"], kinds["users"]))["similar"] == similar


def test_a_what_if_with_the_runs_settings_changes_nothing(sample_store, monkeypatch):
    at = open_page(sample_store, monkeypatch, SUPERNODES)
    assert not tables_with(at, "entered"), "no what-if before the button"
    bias, entering, leaving = run_what_if(at)
    assert any(t.startswith("200 users, recomputed in") for t in texts(at))
    assert entering.empty and leaving.empty
    assert np.allclose(bias["before"], bias["after"])


def test_a_what_if_on_every_user_starts_from_the_runs_measures(sample_store, monkeypatch):
    with run_file(sample_store) as con:
        stored = {(e, m): v for e, m, v in con.execute(
            "SELECT entity, metric, value FROM popularity_bias").fetchall()}
        everyone = con.execute("SELECT count(DISTINCT user_id) FROM recommendations").fetchone()[0]

    at = open_page(sample_store, monkeypatch, SUPERNODES)
    bias, entering, leaving = run_what_if(
        at, **{ui.MEASURE_KEY: "cosine", ui.SAMPLE_KEY: everyone})
    assert any(t.startswith(f"{everyone:,} users") for t in texts(at))
    before = {(e, m): v for e, m, v in zip(bias["entity"], bias["metric"], bias["before"])}
    assert before == pytest.approx(stored)
    assert not np.allclose(bias["before"], bias["after"]), "cosine changes the lists"
    # Every list stays full (N tracks), so each track in is another one out.
    assert entering["entered"].sum() == leaving["left"].sum() > 0


def test_muting_a_creator_takes_their_tracks_out_of_one_users_list(sample_store, monkeypatch):
    with run_file(sample_store) as con:
        user, creator = con.execute("""
            SELECT r.user_id, t.creator_id FROM recommendations r JOIN tracks t USING (track_id)
            WHERE r.rank = 1 AND t.creator_id IS NOT NULL ORDER BY r.user_id LIMIT 1
        """).fetchone()
        titles = [row[0] for row in con.execute("""
            SELECT t.title FROM recommendations r JOIN tracks t USING (track_id)
            WHERE r.user_id = $1 ORDER BY r.rank""", [user]).fetchall()]

    at = open_page(sample_store, monkeypatch, SUPERNODES)
    at.text_input(key=ui.ONE_USER_SEARCH_KEY).set_value(user).run()
    at.selectbox(key=ui.ONE_USER_KEY).set_value(user).run()
    at.radio(key=ui.CHANGE_KEY).set_value(ui.MUTE).run()
    [box] = [box for box in at.selectbox if box.label == "Creator"]
    assert box.value == creator, "the creator of the first recommendation is offered first"
    assert not at.exception, [e.value for e in at.exception]
    before, after = tables_with(at, "reason")
    assert list(before["title"]) == titles
    assert creator not in set(after["creator_id"]) and len(after) == len(titles)


def test_removing_a_users_only_seed_leaves_a_popular_list(sample_store, monkeypatch):
    with run_file(sample_store) as con:
        found = con.execute("""
            SELECT u.user_id FROM users u JOIN recommendations r USING (user_id)
            WHERE u.positive_tracks = 1 AND r.reason_kind = 'similar'
            ORDER BY u.user_id LIMIT 1""").fetchone()
    if found is None:
        pytest.skip("no user of the sample store has one positive track and a similar one")

    at = open_page(sample_store, monkeypatch, SUPERNODES)
    at.text_input(key=ui.ONE_USER_SEARCH_KEY).set_value(found[0]).run()
    at.selectbox(key=ui.ONE_USER_KEY).set_value(found[0]).run()
    assert not at.exception, [e.value for e in at.exception]
    before, after = tables_with(at, "reason")
    assert (before["reason"] != ui.REASON_WORDS["popular"]).any()
    assert set(after["reason"]) == {ui.REASON_WORDS["popular"]}


def cosine_scores(con, track: str, min_co_count: int) -> dict[str, float]:
    """Cosine of `track` with every track sharing at least `min_co_count` positive users."""
    pairs = con.execute("SELECT user_id, track_id FROM feedback WHERE positive").fetchall()
    users = {u: i for i, u in enumerate(sorted({u for u, _ in pairs}))}
    ids = sorted({t for _, t in pairs})
    index = {t: i for i, t in enumerate(ids)}
    rows = [users[u] for u, _ in pairs]
    cols = [index[t] for _, t in pairs]
    matrix = sp.csc_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(users), len(ids)))
    co = (matrix.T @ matrix[:, index[track]]).toarray().ravel()
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel())
    scores = co / (norms * norms[index[track]])
    keep = (co >= min_co_count) & (np.arange(len(ids)) != index[track])
    return {ids[i]: float(scores[i]) for i in np.flatnonzero(keep)}


def test_the_track_explorer_shows_a_tracks_figures_and_neighbours(sample_store, monkeypatch):
    with run_file(sample_store) as con:
        track, users = con.execute("""SELECT track_id, count(DISTINCT user_id) FROM recommendations
                                  GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""").fetchone()
        listeners = con.execute("SELECT count(*) FROM feedback WHERE positive AND track_id = $1",
                                [track]).fetchone()[0]
        amplification = con.execute("""SELECT amplification FROM exposure
                                       WHERE entity = 'track' AND entity_id = $1""",
                                    [track]).fetchone()[0]
        stored = [row[0] for row in con.execute("""
            SELECT t.title || ' · ' || s.neighbour_id FROM similar_tracks s
            JOIN tracks t ON t.track_id = s.neighbour_id
            WHERE s.track_id = $1 AND s.rank <= 10 ORDER BY s.rank""", [track]).fetchall()]
        cfg = Config.model_validate_json(con.execute("SELECT config FROM runs").fetchone()[0])
        cosine = cosine_scores(con, track, cfg.similarity.min_co_count)

    at = open_page(sample_store, monkeypatch, TRACKS, track=track)
    assert at.selectbox(key=ui.TRACK_KEY).value == track
    shown = metrics(at)
    assert shown["Listeners"] == f"{listeners:,}"
    assert shown["Recommended to"] == f"{users:,} users"
    assert shown["Amplification"] == f"{amplification:.2f}×"

    [side] = tables_with(at, "cosine")
    assert list(side[cfg.similarity.measure].dropna()) == stored
    got = [cosine[label.rsplit(" · ", 1)[1]] for label in side["cosine"].dropna()]
    assert got == pytest.approx(sorted(cosine.values(), reverse=True)[:10], abs=1e-5)
    assert tables_with(at, "seed_track_id"), "the routes to the track"


def test_curator_pages_show_titles_and_names_as_text(tmp_path, monkeypatch):
    write_odd_dataset(tmp_path / "data")
    run_batch(tmp_path / "data", tmp_path / "store", cfg=Config())
    at = open_page(tmp_path / "store", monkeypatch, SUPERNODES)
    run_what_if(at, **{ui.MEASURE_KEY: "cosine"})
    pages = [at, open_page(tmp_path / "store", monkeypatch, TRACKS)]
    assert any("<" in t for t in texts(pages[1])), "a title with markup is shown as text"
    for page in pages:
        assert len(page.get("html")) == 0
        for node in page.main:
            if node.type in PLAIN_TEXT_ELEMENTS or node.proto is None:
                continue
            assert not getattr(node.proto, "allow_html", False), node.type
            shown = "\n".join(_strings(node.proto))
            assert not [f for f in ODD_FRAGMENTS if f in shown], (node.type, shown[:300])


@pytest.mark.parametrize("page", [SUPERNODES, TRACKS])
def test_a_curator_page_without_a_run_says_so(tmp_path, monkeypatch, page):
    at = open_page(tmp_path / "empty", monkeypatch, page)
    assert "no run in this store" in at.info[0].value
