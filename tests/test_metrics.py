"""Ranking and beyond-accuracy metrics on small lists worked out by hand."""

from __future__ import annotations

import math

import polars as pl
import pytest

from recsys import evaluate as ev
from recsys import schema as s

LOG3 = math.log2(3)


def lists(rows: dict[str, list[str]]) -> pl.DataFrame:
    """user -> tracks in rank order, as a list frame."""
    return pl.DataFrame(
        [(user, track, rank) for user, tracks in rows.items()
         for rank, track in enumerate(tracks, start=1)],
        schema={s.USER_ID: pl.String, s.TRACK_ID: pl.String, ev.RANK: pl.Int64}, orient="row",
    )


def positives(rows: dict[str, dict[str, int]]) -> pl.DataFrame:
    """user -> {track: label}."""
    return pl.DataFrame(
        [(user, track, label) for user, graded in rows.items() for track, label in graded.items()],
        schema={s.USER_ID: pl.String, s.TRACK_ID: pl.String, "label": pl.Int32}, orient="row",
    )


def scores(frame: pl.DataFrame, user: str, k: int) -> dict[str, float]:
    row = frame.filter((pl.col(s.USER_ID) == user) & (pl.col(ev.K) == k))
    assert row.height == 1
    return row.drop(s.USER_ID, ev.K).row(0, named=True)


def test_a_hit_only_at_rank_one_of_three_relevant_gives_ndcg_0_469():
    # Binary relevance, three relevant tracks, a top-3 list with a hit only at rank 1:
    # DCG = 1, ideal DCG = 1 + 1/log2(3) + 1/2.
    got = scores(ev.accuracy(lists({"u": ["a", "x", "y"]}),
                             positives({"u": {"a": 1, "b": 1, "c": 1}}), ks=(3,)), "u", 3)
    assert got[ev.NDCG] == pytest.approx(0.469, abs=5e-4)
    assert got[ev.NDCG] == pytest.approx(1 / (1 + 1 / LOG3 + 0.5))
    assert got[ev.PRECISION] == pytest.approx(1 / 3)
    assert got[ev.RECALL] == pytest.approx(1 / 3)
    # Average precision: precision 1 at the one hit, over min(k, 3 relevant) = 3.
    assert got[ev.MAP] == pytest.approx(1 / 3)
    assert got[ev.HIT_RATE] == 1.0


def test_two_hits_at_ranks_two_and_four_at_k_3_and_5():
    frame = ev.accuracy(lists({"u": ["x", "a", "y", "b", "z"]}),
                        positives({"u": {"a": 1, "b": 1}}), ks=(3, 5))
    at5 = scores(frame, "u", 5)
    # precision 2/5; recall 2/2; AP = (1/2 + 2/4) / min(5, 2); DCG = 1/log2(3) + 1/log2(5)
    # against the ideal 1 + 1/log2(3).
    assert at5[ev.PRECISION] == pytest.approx(0.4)
    assert at5[ev.RECALL] == pytest.approx(1.0)
    assert at5[ev.MAP] == pytest.approx(0.5)
    assert at5[ev.NDCG] == pytest.approx((1 / LOG3 + 1 / math.log2(5)) / (1 + 1 / LOG3))
    at3 = scores(frame, "u", 3)
    # Only the hit at rank 2 is in the top 3: AP = (1/2) / min(3, 2).
    assert at3[ev.PRECISION] == pytest.approx(1 / 3)
    assert at3[ev.RECALL] == pytest.approx(0.5)
    assert at3[ev.MAP] == pytest.approx(0.25)
    assert at3[ev.NDCG] == pytest.approx((1 / LOG3) / (1 + 1 / LOG3))
    assert at3[ev.NDCG] == pytest.approx(0.38685, abs=1e-5)


def test_graded_labels_weigh_the_gain_and_the_ideal_order():
    # Labels a = 3 (gain 7) and b = 1 (gain 1); the list puts b first.
    got = scores(ev.accuracy(lists({"u": ["b", "a"]}), positives({"u": {"a": 3, "b": 1}}),
                             ks=(2,)), "u", 2)
    assert got[ev.NDCG] == pytest.approx((1 + 7 / LOG3) / (7 + 1 / LOG3))
    assert got[ev.NDCG] == pytest.approx(0.70981, abs=1e-5)
    # The other metrics see relevance as binary: both are hits.
    assert got[ev.PRECISION] == got[ev.RECALL] == got[ev.MAP] == got[ev.HIT_RATE] == 1.0


def test_users_without_positives_are_left_out_and_users_without_lists_score_zero():
    frame = ev.accuracy(
        lists({"hit": ["a"], "miss": ["x", "y"], "nothing_later": ["a", "b"]}),
        positives({"hit": {"a": 1}, "miss": {"a": 1}, "no_list": {"a": 1},
                   "nothing_later": {"a": 0}}),
        ks=(2,),
    )
    assert sorted(frame[s.USER_ID]) == ["hit", "miss", "no_list"]
    # A list shorter than k still counts k slots in precision.
    assert scores(frame, "hit", 2) == {ev.PRECISION: 0.5, ev.RECALL: 1.0, ev.NDCG: 1.0,
                                       ev.MAP: 1.0, ev.HIT_RATE: 1.0}
    for user in ("miss", "no_list"):
        assert set(scores(frame, user, 2).values()) == {0.0}


def test_means_are_taken_over_the_scored_users_only():
    frame = ev.accuracy(lists({"a_user": ["a"], "b_user": ["x"]}),
                        positives({"a_user": {"a": 1}, "b_user": {"b": 1}, "c_user": {"z": 0}}),
                        ks=(1,))
    rows = ev.mean_rows(frame, ev.ACCURACY)
    ndcg = rows.filter(pl.col(ev.METRIC) == "ndcg@1").row(0, named=True)
    assert ndcg == {ev.METRIC: "ndcg@1", ev.K: 1, ev.VALUE: 0.5, ev.USERS: 2,
                    ev.SLICE_KIND: ev.ALL, ev.SLICE: ev.ALL}


def test_stacked_cuts_are_separate_queries():
    keys = ("cut", s.USER_ID)
    listed = pl.concat([lists({"u": ["a"]}).with_columns(cut=0),
                        lists({"u": ["b"]}).with_columns(cut=1)])
    graded = pl.concat([positives({"u": {"a": 1}}).with_columns(cut=0),
                        positives({"u": {"a": 1}}).with_columns(cut=1)])
    frame = ev.accuracy(listed, graded, ks=(1,), keys=keys).sort("cut")
    assert frame[ev.HIT_RATE].to_list() == [1.0, 0.0]


def test_new_positives_leave_out_tracks_heard_before_the_cut():
    graded = positives({"u": {"a": 1, "b": 1, "c": 0}, "v": {"a": 1}})
    heard = pl.DataFrame({s.USER_ID: ["u"], s.TRACK_ID: ["a"]})
    fresh = ev.new_positives(graded, heard).sort(s.USER_ID, s.TRACK_ID)
    assert fresh.select(s.USER_ID, s.TRACK_ID).rows() == [("u", "b"), ("v", "a")]


def test_novelty_is_the_mean_self_information_of_the_listed_tracks():
    # 8 users with history; a has 4 listeners (p = 1/2, 1 bit), b has 1 (3 bits), c none
    # (counted as one listener: 3 bits).
    popularity = pl.DataFrame({s.TRACK_ID: ["a", "b"], "popularity": [4, 1]})
    frame = ev.novelty(lists({"u": ["a", "b", "c"]}), popularity, users=8, ks=(1, 3))
    assert frame.sort(ev.K)[ev.NOVELTY].to_list() == pytest.approx([1.0, 7 / 3])


def test_activity_deciles_split_twenty_users_two_by_two():
    history = pl.DataFrame({s.USER_ID: [f"u{i:02d}" for i in range(20)],
                            ev.HISTORY_SIZE: [20 - i for i in range(20)]})
    deciles = ev.activity_deciles(history).sort(s.USER_ID)
    # u19 has the smallest history: first decile with u18; u00 and u01 the last.
    assert deciles[ev.ACTIVITY_DECILE].to_list() == [10 - i // 2 for i in range(20)]


def test_activity_deciles_are_taken_within_each_cut():
    history = pl.DataFrame({"cut": [0, 0, 1, 1], s.USER_ID: ["a", "b", "a", "b"],
                            ev.HISTORY_SIZE: [1, 5, 9, 2]})
    deciles = ev.activity_deciles(history, keys=("cut", s.USER_ID)).sort("cut", s.USER_ID)
    # Two users per cut: the smaller history gets decile 5, the larger decile 10.
    assert deciles[ev.ACTIVITY_DECILE].to_list() == [5, 10, 10, 5]


def test_popularity_buckets_by_share_of_listening():
    # 10 positive pairs: t1 starts at share 0 (head), t2 at 0.5 (mid), t3 at 0.8 and t4 at 0.9
    # (tail); t5 has no listener.
    popularity = pl.DataFrame({s.TRACK_ID: ["t1", "t2", "t3", "t4"], "popularity": [5, 3, 1, 1]})
    catalogue = pl.DataFrame({s.TRACK_ID: ["t1", "t2", "t3", "t4", "t5"]})
    buckets = dict(ev.popularity_buckets(popularity, catalogue).rows())
    assert buckets == {"t1": ev.HEAD, "t2": ev.MID, "t3": ev.TAIL, "t4": ev.TAIL,
                       "t5": ev.UNHEARD}


def test_bias_rows_reuse_the_super_node_measures():
    # Two lists of two tracks; t1 (5 listeners) is the head that makes 80% of listening.
    tracks = pl.DataFrame({s.TRACK_ID: ["t1", "t2", "t3", "t4"],
                           s.CREATOR_ID: ["c1", "c1", "c2", "c2"]})
    popularity = pl.DataFrame({s.TRACK_ID: ["t1", "t2", "t3"], "popularity": [8, 1, 1]})
    listed = lists({"u": ["t1", "t2"], "v": ["t1", "t3"]})
    rows = {r[ev.METRIC]: r for r in ev.bias_rows(listed, popularity, tracks, ks=(1, 2))
            .iter_rows(named=True)}
    # At k = 1 both slots go to t1: the whole exposure on one of four tracks.
    assert rows["tail_share@1"][ev.VALUE] == 0.0
    assert rows["coverage@1"][ev.VALUE] == 0.25
    assert rows["gini@1"][ev.VALUE] == pytest.approx(0.75)
    # At k = 2: slots 2, 1, 1, 0 over t1..t4; half the slots are outside the head.
    assert rows["tail_share@2"][ev.VALUE] == 0.5
    assert rows["coverage@2"][ev.VALUE] == 0.75
    assert rows["mean_popularity@2"][ev.VALUE] == pytest.approx((2 * 8 + 1 + 1) / 4)
    assert rows["creator_coverage@2"][ev.VALUE] == 1.0
    assert rows["gini@2"][ev.USERS] == 2


def test_pool_recall_is_the_share_of_positives_among_the_candidates():
    pool = pl.DataFrame({s.USER_ID: ["u", "u", "u", "v"], s.TRACK_ID: ["a", "x", "a", "z"]})
    graded = positives({"u": {"a": 1, "b": 2, "c": 1, "d": 0}, "v": {"y": 1}})
    got = dict(ev.pool_recall(pool, graded).rows())
    assert got == {"u": pytest.approx(1 / 3), "v": 0.0}
