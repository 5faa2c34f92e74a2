"""Who to follow in the product: the tables a run writes on sample_data, HetRec and MovieLens,
the evaluation recomputed independently, `recsys follow`, and the Who to follow page."""

from __future__ import annotations

import math
from datetime import timedelta, timezone

import duckdb
import polars as pl
import pytest
from test_app import (
    ODD_FRAGMENTS, ODD_USER, PLAIN_TEXT_ELEMENTS, _strings, open_page, run_file, table_with,
    texts, write_odd_dataset,
)
from typer.testing import CliRunner

from conftest import SAMPLE_DATA, real_dataset
from recsys import schema as s
from recsys import ui
from recsys.cli import app
from recsys.config import Config
from recsys.follow_batch import follow_tables
from recsys.io.dataset import read_dataset, write_dataset
from recsys.io.importers import import_dataset
from recsys.pipeline import default_as_of, run_batch
from recsys.stages.feedback import events_before, feedback
from recsys.stages.follow_eval import BUCKET, edge_buckets

FOLLOW = "pages/follow.py"
SOURCES = {"co_followed", "played", "co_listened", "als", "trust", "most_followed"}


def read(store, sql: str, **params) -> pl.DataFrame:
    with run_file(store) as con:
        return con.sql(sql, params=params or None).pl()


def check_follow_lists(recs: pl.DataFrame, edges: pl.DataFrame, n: int) -> None:
    """Ranks 1..k (k <= n) per user, never the user or an account they follow, and every
    suggestion with sources and a reason."""
    assert recs.height > 0
    ranks = recs.group_by(s.USER_ID).agg(pl.col("rank").sort())
    assert all(r == list(range(1, len(r) + 1)) and len(r) <= n for r in ranks["rank"].to_list())
    assert recs.filter(pl.col(s.USER_ID) == pl.col(s.FOLLOWEE_ID)).height == 0
    followed = edges.select(pl.col(s.FOLLOWER_ID).alias(s.USER_ID), s.FOLLOWEE_ID)
    assert recs.join(followed, on=[s.USER_ID, s.FOLLOWEE_ID], how="semi").height == 0
    assert (recs["reason"].str.len_chars() > 10).all()
    assert all(sources and set(sources) <= SOURCES for sources in recs["sources"].to_list())


def most_followed_figures(seen: pl.DataFrame, targets: pl.DataFrame) -> tuple[float, float, int]:
    """recall@10, NDCG@10 and users of the most-followed list, in plain Python."""
    counts: dict[str, int] = {}
    for followee in seen[s.FOLLOWEE_ID]:
        counts[followee] = counts.get(followee, 0) + 1
    popular = sorted(counts, key=lambda a: (-counts[a], a))
    following: dict[str, set] = {}
    for follower, followee in seen.select(s.FOLLOWER_ID, s.FOLLOWEE_ID).iter_rows():
        following.setdefault(follower, set()).add(followee)
    wanted: dict[str, set] = {}
    for user, followee in targets.iter_rows():
        wanted.setdefault(user, set()).add(followee)
    recalls, ndcgs = [], []
    for user, goal in wanted.items():
        banned = following.get(user, set()) | {user}
        top = [a for a in popular if a not in banned][:10]
        gains = [1 / math.log2(i + 2) for i, a in enumerate(top) if a in goal]
        recalls.append(len(gains) / len(goal))
        ndcgs.append(sum(gains) / sum(1 / math.log2(i + 2) for i in range(min(10, len(goal)))))
    return sum(recalls) / len(recalls), sum(ndcgs) / len(ndcgs), len(wanted)


def evaluation_of(frame: pl.DataFrame, name: str) -> dict:
    rows = frame.filter(pl.col("list") == name)
    return {r["metric"]: r["value"] for r in rows.iter_rows(named=True)} | {
        "users": rows["users"][0]}


def active_targets(seen: pl.DataFrame, later: pl.DataFrame, fb: pl.DataFrame) -> pl.DataFrame:
    """user_id, followee_id: the later edges of users who followed someone or had a positive
    track before, on accounts they did not follow yet."""
    active = set(seen[s.FOLLOWER_ID]) | set(fb.filter(pl.col("positive"))[s.USER_ID])
    known = set(seen.select(s.FOLLOWER_ID, s.FOLLOWEE_ID).iter_rows())
    rows = {(a, b) for a, b in later.select(s.FOLLOWER_ID, s.FOLLOWEE_ID).iter_rows()
            if a in active and a != b and (a, b) not in known}
    return pl.DataFrame(sorted(rows), schema=[s.USER_ID, s.FOLLOWEE_ID], orient="row")


def test_the_sample_run_writes_follow_suggestions_with_reasons(sample_store):
    recs = read(sample_store, "SELECT * FROM follow_recommendations")
    edges = read(sample_store, "SELECT * FROM follows")
    check_follow_lists(recs, edges, Config().follow.n)
    # Every user of the run who follows someone gets a full list.
    followers = set(edges[s.FOLLOWER_ID])
    full = recs.group_by(s.USER_ID).len().filter(pl.col("len") == 10)
    assert followers <= set(full[s.USER_ID])
    # The sources table holds each suggestion's sources, no more, no less.
    by_source = read(sample_store, """
        SELECT user_id, followee_id, list(source ORDER BY source) AS listed
        FROM follow_sources GROUP BY ALL""")
    joined = recs.join(by_source, on=[s.USER_ID, s.FOLLOWEE_ID])
    assert joined.height == recs.height
    listed = zip(joined["sources"].to_list(), joined["listed"].to_list(), strict=True)
    assert all(sorted(a) == b for a, b in listed)
    # The reasons name real evidence, e.g. "you played N tracks by them" counts real tracks.
    played = recs.filter(pl.col("reason").str.starts_with("you played"))
    assert played.height > 0


def test_the_sample_evaluation_matches_an_independent_baseline(sample_store):
    evaluation = read(sample_store, "SELECT * FROM follow_evaluation")
    as_of = read(sample_store, "SELECT as_of FROM runs")["as_of"][0].astimezone(timezone.utc)
    cut = as_of - timedelta(days=Config().follow.window_days)
    assert set(evaluation["protocol"]) == {"window"}
    assert set(evaluation["window_start"]) == {cut}
    assert set(evaluation["list"]) == SOURCES | {"merged"}
    assert set(evaluation["metric"]) == {"recall@10", "ndcg@10"}

    data = read_dataset(SAMPLE_DATA)
    edges = data.follows.filter(pl.col(s.FOLLOWER_ID) != pl.col(s.FOLLOWEE_ID))
    seen = edges.filter(pl.col(s.TS) < cut).unique([s.FOLLOWER_ID, s.FOLLOWEE_ID])
    later = edges.filter((pl.col(s.TS) >= cut) & (pl.col(s.TS) < as_of))
    fb = feedback(events_before(data.events, cut), Config().feedback)
    recall, ndcg, users = most_followed_figures(seen, active_targets(seen, later, fb))

    baseline = evaluation_of(evaluation, "most_followed")
    assert baseline == {"recall@10": pytest.approx(recall, abs=1e-9),
                        "ndcg@10": pytest.approx(ndcg, abs=1e-9), "users": users}
    assert users > 1000
    assert (evaluation["users"] == users).all()


def test_recsys_follow_prints_the_suggestions(sample_store):
    recs = read(sample_store, """
        SELECT r.user_id, r.followee_id, u.name, r.reason FROM follow_recommendations r
        LEFT JOIN users u ON u.user_id = r.followee_id
        WHERE r.user_id = (SELECT min(user_id) FROM follow_recommendations) ORDER BY r.rank""")
    user_id = recs[s.USER_ID][0]
    runner = CliRunner(env={"COLUMNS": "250"})
    result = runner.invoke(app, ["follow", user_id, "--store", str(sample_store)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for row in recs.iter_rows(named=True):
        [line] = [x for x in lines if f"({row['followee_id']})" in x]
        assert row["reason"] in line and (row["name"] or "") in line

    unknown = runner.invoke(app, ["follow", "nobody", "--store", str(sample_store)])
    assert unknown.exit_code == 2 and "nobody" in unknown.output


def test_the_follow_page_shows_follows_suggestions_and_sources(sample_store, monkeypatch):
    user_id = read(sample_store, "SELECT min(follower_id) AS u FROM follows")["u"][0]
    follows = read(sample_store, """SELECT followee_id FROM follows WHERE follower_id = $u
                                    ORDER BY ts DESC, followee_id""", u=user_id)
    recs = read(sample_store, """SELECT followee_id, reason FROM follow_recommendations
                                 WHERE user_id = $u ORDER BY rank""", u=user_id)
    second = recs.row(1, named=True)
    sources = read(sample_store, """
        SELECT source, rank FROM follow_sources WHERE user_id = $u AND followee_id = $f
        ORDER BY rank, source""", u=user_id, f=second["followee_id"])

    at = open_page(sample_store, monkeypatch, FOLLOW, user=user_id)
    assert at.title[0].value == "Who to follow"
    assert at.selectbox(key=ui.USER_KEY).value == user_id
    assert list(table_with(at, "ts")["followee_id"]) == follows["followee_id"].to_list()
    shown = table_with(at, "reason")
    assert list(shown["followee_id"]) == recs["followee_id"].to_list()
    assert list(shown["reason"]) == recs["reason"].to_list()

    [picked] = [box for box in at.selectbox if box.label == "Suggestion"]
    picked.set_value(second["followee_id"]).run()
    assert not at.exception
    assert second["reason"] in texts(at)
    table = table_with(at, "meaning")
    assert list(table["source"]) == sources["source"].to_list()
    assert list(table["rank"]) == sources["rank"].to_list()
    assert set(table_with(at, "recall@10")["list"]) == SOURCES | {"merged"}


def _odd_store_with_follows(root) -> tuple:
    """The odd dataset of test_app (markup in every name) with follows between its users."""
    write_odd_dataset(root / "odd")
    data = read_dataset(root / "odd")
    people = data.users[s.USER_ID].to_list()
    pairs = [(a, b) for i, a in enumerate(people) for b in people[i + 1:i + 6]]
    pairs += [(b, ODD_USER) for b in people[1:8]]
    edges = pl.DataFrame(pairs, schema=[s.FOLLOWER_ID, s.FOLLOWEE_ID], orient="row")
    edges = edges.with_columns(pl.lit(None, s.UTC_DATETIME).alias(s.TS))
    write_dataset({"events": data.events, "tracks": data.tracks, "users": data.users,
                   "follows": edges}, root / "data")
    run_batch(root / "data", root / "store", cfg=Config())
    return root / "store", root / "odd"


def test_names_with_markup_are_shown_as_text_and_no_follows_means_no_suggestions(
    tmp_path, monkeypatch
):
    store, without_follows = _odd_store_with_follows(tmp_path)
    at = open_page(store, monkeypatch, FOLLOW, user=ODD_USER)
    assert at.selectbox(key=ui.USER_KEY).value == ODD_USER
    reasons = read(store, "SELECT reason FROM follow_recommendations WHERE user_id = $u "
                          "ORDER BY rank", u=ODD_USER)["reason"]
    assert reasons.len() > 0 and reasons[0] in texts(at)
    assert len(at.get("html")) == 0
    for node in at.main:
        if node.type in PLAIN_TEXT_ELEMENTS or node.proto is None:
            continue
        assert not getattr(node.proto, "allow_html", False), node.type
        shown = "\n".join(_strings(node.proto))
        assert not [f for f in ODD_FRAGMENTS if f in shown], (node.type, shown[:300])

    # The same data without follows: the batch writes empty follow tables, and says so.
    run_batch(without_follows, tmp_path / "plain", cfg=Config())
    for table in ("follow_recommendations", "follow_sources", "follow_evaluation", "follows"):
        assert read(tmp_path / "plain", f"SELECT count(*) AS n FROM {table}")["n"][0] == 0
    at = open_page(tmp_path / "plain", monkeypatch, FOLLOW)
    assert "no follow suggestions" in at.info[0].value
    result = CliRunner().invoke(app, ["follow", ODD_USER, "--store", str(tmp_path / "plain")])
    assert result.exit_code == 0 and "no accounts to suggest" in result.output


def test_movielens_has_no_follows_and_gets_empty_tables(tmp_path):
    import_dataset("movielens", real_dataset("ml-latest-small"), tmp_path / "ml")
    data = read_dataset(tmp_path / "ml")
    tables = follow_tables(data, default_as_of(data.events), Config())
    assert data.follows.height == 0
    assert all(frame.height == 0 for frame in tables.values())


@pytest.mark.slow
def test_hetrec_friend_graph_is_scored_on_a_seeded_hold_out(tmp_path):
    import_dataset("lastfm-hetrec", real_dataset("hetrec2011-lastfm-2k"), tmp_path / "hetrec")
    data = read_dataset(tmp_path / "hetrec")
    cfg = Config()
    as_of = default_as_of(data.events)
    tables = follow_tables(data, as_of, cfg)

    check_follow_lists(tables["follow_recommendations"], data.follows, cfg.follow.n)
    evaluation = tables["follow_evaluation"]
    assert set(evaluation["protocol"]) == {"holdout"}
    assert evaluation["window_start"].null_count() == evaluation.height

    # The baseline again, on the held-out share of the friendships.
    share = cfg.follow.holdout_share
    bucketed = edge_buckets(data.follows, cfg.follow.seed)
    seen = bucketed.filter(pl.col(BUCKET) >= share)
    later = bucketed.filter(pl.col(BUCKET) < share)
    fb = feedback(events_before(data.events, as_of), cfg.feedback)
    recall, ndcg, users = most_followed_figures(seen, active_targets(seen, later, fb))
    baseline = evaluation_of(evaluation, "most_followed")
    assert baseline == {"recall@10": pytest.approx(recall, abs=1e-9),
                        "ndcg@10": pytest.approx(ndcg, abs=1e-9), "users": users}
    merged = evaluation_of(evaluation, "merged")
    assert merged["users"] == users > 1000
    assert set(tables["follow_als_validation"]["protocol"]) == {"holdout"}
