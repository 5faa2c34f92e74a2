"""Each stage on tiny hand-made frames, with values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from recsys.config import CandidatesConfig, FeedbackConfig, RankerConfig, RecommendConfig, SimilarityConfig
from recsys.stages import candidates as cand
from recsys.stages import explain
from recsys.stages.features import build_features
from recsys.stages.feedback import feedback
from recsys.stages.labels import labels
from recsys.stages.ranker import informative_rows, ndcg_at, train_ranker
from recsys.stages.similarity import similar_tracks

from helpers import day, events, tracks

WEIGHTS = FeedbackConfig(play_weight=1, like_weight=4, repost_weight=6, skip_weight=-3,
                         minute_weight=0.5)


def test_feedback_counts_strength_and_class():
    ev = events([
        ("u", "a", "play", 0, 120_000, 1),
        ("u", "a", "play", 2, 60_000, 3),   # an aggregated row: 3 plays
        ("u", "a", "like", 1),
        ("u", "b", "play", 1, 10_000),
        ("u", "b", "skip", 1.1, 2_000),
    ])
    fb = feedback(ev, WEIGHTS).sort("track_id")
    a, b = fb.row(0, named=True), fb.row(1, named=True)
    assert (a["plays"], a["likes"], a["skips"], a["listen_ms"]) == (4, 1, 0, 180_000)
    # 4 plays + 4 for the like + 0.5 per minute over 3 minutes.
    assert a["strength"] == pytest.approx(4 + 4 + 1.5) and a["positive"]
    assert a["first_ts"] == day(0) and a["last_ts"] == day(2)
    # 1 play - 3 for the skip + 0.5 * 0.2 minutes: negative.
    assert b["strength"] == pytest.approx(1 - 3 + 0.5 * 12_000 / 60_000) and not b["positive"]


def _catalogue():
    return tracks([
        ("a", "c1", "rock"), ("b", "c1", "rock"), ("c", "c2", "rock"), ("d", "c3", "jazz"),
        ("e", None, None), ("f", "c2", "jazz"),
    ])


def _world():
    # u1 and u2 share taste (a, b, c); u3 likes d and f; u4 only skipped; u5 is new.
    ev = events([
        ("u1", "a", "play", 1), ("u1", "b", "play", 2), ("u1", "c", "play", 3),
        ("u2", "a", "play", 1), ("u2", "b", "play", 2),
        ("u3", "d", "play", 1), ("u3", "f", "play", 2), ("u3", "e", "play", 3),
        ("u6", "c", "play", 1), ("u6", "e", "play", 2), ("u6", "b", "play", 3),
        ("u4", "d", "skip", 4),
    ])
    return ev, feedback(ev, FeedbackConfig())


def test_candidates_expand_history_and_remove_heard():
    ev, fb = _world()
    similar = similar_tracks(fb, SimilarityConfig(measure="cosine", min_co_count=1))
    users = pl.Series(["u2", "u4", "u5"])
    found, steps = cand.generate_candidates(users, fb, similar, _catalogue(), CandidatesConfig())

    u2 = found.filter(pl.col("user_id") == "u2")
    # u2 heard a and b; their neighbours are c (via both) and e (via b, from u6).
    similar_u2 = u2.filter(pl.col("sources").list.contains("similar"))
    assert sorted(similar_u2["track_id"]) == ["c", "e"]
    assert not set(u2["track_id"]) & {"a", "b"}
    # c: cos(a,c) = 1/sqrt(2*2) = 0.5 and cos(b,c) = 2/sqrt(3*2); the sum is its score.
    c = similar_u2.filter(pl.col("track_id") == "c")
    assert c["similar_score"][0] == pytest.approx(0.5 + 2 / math.sqrt(6))
    seeds_c = steps.filter((pl.col("user_id") == "u2") & (pl.col("track_id") == "c"))
    assert sorted(seeds_c["seed_track_id"]) == ["a", "b"]


def test_fallbacks_for_users_without_history():
    ev, fb = _world()
    similar = similar_tracks(fb, SimilarityConfig(measure="cosine", min_co_count=1))
    found, _ = cand.generate_candidates(pl.Series(["u4", "u5"]), fb, similar, _catalogue(),
                                        CandidatesConfig())
    # u4 only skipped d: no known genre, no similar seed; u5 has no events at all.
    for user in ("u4", "u5"):
        mine = found.filter(pl.col("user_id") == user)
        assert mine["sources"].list.len().max() == 1
        assert set(mine["sources"].explode()) == {"popular"}
    # Positive users per track: b 3 (u1, u2, u6); a, c, e 2; d, f 1. Ties go by track id,
    # and u4 already heard d (a skip is still heard).
    def ranked(user):
        return found.filter(pl.col("user_id") == user).sort("popular_rank")["track_id"].to_list()

    assert ranked("u4") == ["b", "a", "c", "e", "f"]
    assert ranked("u5") == ["b", "a", "c", "e", "d", "f"]


def test_popular_in_genre_ignores_unknown_genre():
    ev, fb = _world()
    similar = similar_tracks(fb, SimilarityConfig(measure="cosine", min_co_count=1))
    found, _ = cand.generate_candidates(pl.Series(["u3"]), fb, similar, _catalogue(),
                                        CandidatesConfig())
    in_genre = found.filter(pl.col("sources").list.contains("popular_in_genre"))
    # u3 played d and f (jazz) and e (no genre): the only genre is jazz, whose tracks u3 heard;
    # the unknown genre never makes a "popular in your genre" list.
    assert in_genre.height == 0
    shares = cand.genre_shares(fb.filter(pl.col("user_id") == "u3"), _catalogue())
    assert shares.rows() == [("u3", "jazz", pytest.approx(2 / 3))]


def test_same_creator_ignores_unknown_creators_and_features_stay_before_the_moment():
    ev = events([
        ("u1", "a", "play", 1), ("u1", "e", "play", 2),
        ("u2", "a", "play", 1), ("u2", "b", "play", 2), ("u2", "g", "play", 2),
        ("u3", "e", "play", 1), ("u3", "g", "play", 2),
        # After the moment: must not change anything below.
        ("u9", "b", "play", 50), ("u9", "g", "play", 50),
    ])
    catalogue = tracks([("a", "c1", "rock"), ("b", "c1", "rock"), ("e", None, None),
                        ("g", None, None)])
    moment = day(10)
    fb = feedback(ev.filter(pl.col("ts") < moment), FeedbackConfig())
    similar = similar_tracks(fb, SimilarityConfig(measure="cosine", min_co_count=1))
    found, steps = cand.generate_candidates(pl.Series(["u1"]), fb, similar, catalogue,
                                            CandidatesConfig())
    empty_follows = pl.DataFrame(schema={"follower_id": pl.String, "followee_id": pl.String,
                                         "ts": pl.Datetime("us", "UTC")})
    feats = build_features(found, steps, fb, catalogue, empty_follows, moment=moment,
                           cfg=CandidatesConfig()).sort("track_id")
    by_track = {r["track_id"]: r for r in feats.iter_rows(named=True)}
    # b shares creator c1 with a (in u1's history); g's creator is unknown: never "same".
    assert by_track["b"]["same_creator"] == 1.0
    assert by_track["g"]["same_creator"] == 0.0
    # Popularity counts users before the moment only: b has u2 (u9 comes later).
    assert by_track["b"]["popularity"] == 1.0
    assert by_track["g"]["popularity"] == 2.0
    # The seed a was last played on day 1: nine days before the moment.
    assert by_track["b"]["seed_recency_days"] == pytest.approx(9.0)


def test_labels_by_kpi():
    ev = events([
        ("u", "a", "play", 10, 200_000), ("u", "b", "play", 11, 20_000),
        ("u", "b", "skip", 11.1, 1_000), ("u", "c", "like", 12),
        ("u", "d", "play", 12, None, 40),  # aggregated: never a label
        ("u", "e", "play", 5, 100_000),    # before the window
    ])
    def graded(kpi):
        frame = labels(ev, start=day(10), end=day(20), kpi=kpi, weights=FeedbackConfig())
        return dict(frame.select("track_id", "label").iter_rows())

    assert graded("plays") == {"a": 1, "b": 0, "c": 1}
    assert graded("listening_time") == {"a": 3, "b": 1, "c": 0}
    assert graded("likes") == {"a": 0, "b": 0, "c": 1}


def test_ndcg_hand_value():
    # Binary relevance, three relevant tracks among six, a hit only at rank 1:
    # DCG@3 = 1, IDCG@3 = 1 + 1/log2(3) + 1/2, NDCG@3 = 0.469.
    rows = pl.DataFrame({
        "user_id": ["u"] * 6,
        "track_id": list("abcdef"),
        "label": [1, 0, 0, 1, 1, 0],
        "score": [6.0, 5, 4, 3, 2, 1],
    })
    value, users = ndcg_at(rows, "score", k=3)
    assert users == 1
    assert value == pytest.approx(1 / (1 + 1 / math.log2(3) + 0.5))
    assert round(value, 3) == 0.469


def test_users_without_mixed_labels_are_left_out_of_training():
    rows = pl.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2", "u3"],
        "track_id": ["a", "b", "a", "b", "a"],
        "label": [1, 0, 0, 0, 1],
    })
    kept, dropped = informative_rows(rows)
    assert kept["user_id"].unique().to_list() == ["u1"] and dropped == 2


def _ranking_rows(seed: int, users: int = 60, per_user: int = 12) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = users * per_user
    x1, x2 = rng.random(n), rng.random(n)
    label = (x1 + 0.3 * rng.random(n) > 0.9).astype(np.int32)
    return pl.DataFrame({
        "user_id": np.repeat([f"u{i:03d}" for i in range(users)], per_user),
        "track_id": np.tile([f"t{j:02d}" for j in range(per_user)], users),
        "x1": x1, "x2": x2, "label": label,
    })


def test_ranker_learns_and_ignores_row_order():
    rows = _ranking_rows(0)
    cfg = RankerConfig(num_trees=30, min_data_in_leaf=5, early_stopping_rounds=5)
    first = train_ranker(rows, ("x1", "x2"), cfg)
    shuffled = train_ranker(rows.sample(fraction=1.0, shuffle=True, seed=3), ("x1", "x2"), cfg)
    probe = _ranking_rows(1)
    assert np.allclose(first.raw_scores(probe), shuffled.raw_scores(probe))
    # The label follows x1: the model's order beats a random one on fresh users.
    scored = probe.with_columns(pl.Series("score", first.raw_scores(probe)),
                                pl.Series("noise", np.random.default_rng(2).random(probe.height)))
    assert ndcg_at(scored, "score")[0] > ndcg_at(scored, "noise")[0] + 0.2


def test_shap_rows_add_up_to_the_raw_score():
    rows = _ranking_rows(0)
    ranker = train_ranker(rows, ("x1", "x2"), RankerConfig(num_trees=20, min_data_in_leaf=5))
    recs = rows.head(30)
    contrib = ranker.contributions(recs)
    stored = explain.shap_rows(recs, contrib, ranker.features, RecommendConfig(shap_top=1))
    # One feature kept plus the remainder: two rows per recommendation.
    assert stored.height == 60
    totals = stored.group_by("user_id", "track_id", maintain_order=True).agg(pl.col("value").sum())
    expected = contrib[0, -1]
    raw = ranker.raw_scores(recs)
    joined = recs.with_columns(pl.Series("raw", raw)).join(totals, on=["user_id", "track_id"])
    assert np.allclose(expected + joined["value"].to_numpy(), joined["raw"].to_numpy(), atol=1e-6)


def test_seed_shares_sum_to_one_per_recommendation():
    recs = pl.DataFrame({"user_id": ["u", "u"], "track_id": ["x", "y"],
                         "reason_kind": ["similar", "popular"]})
    steps = pl.DataFrame({"user_id": ["u"] * 3, "track_id": ["x", "x", "y"],
                          "seed_track_id": ["a", "b", "a"], "contribution": [0.3, 0.1, 0.5]})
    reasons = explain.seed_reasons(recs, steps, RecommendConfig(seeds_per_reason=3))
    assert reasons.rows() == [("u", "x", "a", pytest.approx(0.75)), ("u", "x", "b", pytest.approx(0.25))]


def test_negative_sampling_keeps_positives_and_ignores_row_order():
    from recsys.stages.ranker import sample_negatives

    rows = _ranking_rows(0, users=20, per_user=30)
    kept = sample_negatives(rows, 5, seed=0)
    per_user = kept.group_by("user_id").agg(
        (pl.col("label") == 0).sum().alias("negatives"), pl.col("label").sum().alias("positives")
    )
    assert (per_user["negatives"] == 5).all()
    assert per_user["positives"].sum() == rows["label"].sum()
    shuffled = sample_negatives(rows.sample(fraction=1.0, shuffle=True, seed=1), 5, seed=0)
    keys = ["user_id", "track_id"]
    assert kept.sort(keys).equals(shuffled.sort(keys))


def test_walk_reasons_share_the_visits_of_the_recorded_paths_between_seeds():
    recs = pl.DataFrame({"user_id": ["u", "u"], "track_id": ["x", "y"],
                         "reason_kind": ["walk", "similar"]})
    paths = pl.DataFrame({
        "user_id": ["u"] * 4, "track_id": ["x", "x", "x", "y"],
        "seed_track_id": ["a", "b", "a", "a"],
        "path_visits": [3, 2, 3, 9],
    })
    shares = explain.walk_seed_reasons(recs, paths, RecommendConfig(seeds_per_reason=3))
    # x: seed a has 3 + 3 of the 8 visits, b has 2; y is a similar recommendation.
    assert shares.rows() == [("u", "x", "a", 0.75), ("u", "x", "b", 0.25)]


def test_candidate_recall_counts_unheard_positives_of_seeded_users_per_source():
    from recsys.evaluate import candidate_recall

    candidates = pl.DataFrame({
        "user_id": ["u", "u", "u", "u", "v"],
        "track_id": ["a", "b", "c", "d", "a"],
        "sources": [["similar"], ["walk"], ["similar", "walk"], ["als"], ["popular"]],
    })
    graded = pl.DataFrame({
        "user_id": ["u", "u", "u", "u", "u", "v", "w"],
        "track_id": ["a", "b", "c", "d", "h", "a", "a"],
        "label": [1, 1, 0, 2, 1, 1, 1],
    })
    heard = pl.DataFrame({"user_id": ["u"], "track_id": ["h"]})
    seeds = pl.DataFrame({"user_id": ["u", "v"], "track_id": ["h", "z"]})
    recall = {row["sources"]: row for row in
              candidate_recall(candidates, graded, heard, seeds).iter_rows(named=True)}
    # Positives: u's a, b, d (c is graded 0, h was heard); v's a; w has no seeds.
    assert {k: (r["found"], r["positives"], r["users"]) for k, r in recall.items()} == {
        "similar": (1, 4, 2), "walk": (1, 4, 2), "similar+walk": (2, 4, 2), "als": (1, 4, 2),
        "all": (4, 4, 2),
    }
    assert recall["similar+walk"]["recall"] == pytest.approx(0.5)
