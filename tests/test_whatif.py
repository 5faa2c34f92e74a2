"""What-if: hand-worked cases on a tiny catalogue, and the sample run checked against its store.

The tiny catalogue (every track played once per listed user, all in one window):

    u1: A B      u4: P Q      solo: A
    u2: A B      u5: P Q
    u3: A C      u6: P Q

Listeners: A 4, P 3, Q 3, B 2, C 1. Creators: A cA, B and C cX, P cP, Q cQ. Genres: A, B, C
"g1"; P, Q "g2". Co-counts with A: B 2, C 1. With N = 3, no model and no ALS (the candidate
order: the similarity sum, then the fallbacks' scores, then the track id), `solo` gets B (2),
C (1), then the most popular unheard track P (3, before Q by id).
"""

from __future__ import annotations

from dataclasses import replace

import duckdb
import numpy as np
import polars as pl
import pytest

from helpers import day, events, tracks
from recsys import schema as s
from recsys import whatif
from recsys.config import (
    CandidatesConfig,
    Config,
    FactorsConfig,
    RecommendConfig,
    SimilarityConfig,
)
from recsys.stages.feedback import feedback
from recsys.store import CURRENT

PLAYS = {"u1": "AB", "u2": "AB", "u3": "AC", "u4": "PQ", "u5": "PQ", "u6": "PQ", "solo": "A"}
CREATORS = {"A": "cA", "B": "cX", "C": "cX", "P": "cP", "Q": "cQ"}
GENRES = {"A": "g1", "B": "g1", "C": "g1", "P": "g2", "Q": "g2"}


@pytest.fixture
def tiny() -> whatif.StoredRun:
    cfg = Config(
        similarity=SimilarityConfig(measure="cooccurrence", k=10, min_co_count=1),
        candidates=CandidatesConfig(history_size=5, max_candidates=10, fallback_size=3),
        recommend=RecommendConfig(n=3),
        factors=FactorsConfig(enabled=False),
    )
    rows = [(user, track, "play", 1 + i) for user, played in PLAYS.items()
            for i, track in enumerate(played)]
    fb = feedback(events(rows), cfg.feedback)
    stored = whatif.StoredRun(
        as_of=day(10), cfg=cfg, feedback=fb,
        tracks=tracks([(t, CREATORS[t], GENRES[t], 0) for t in CREATORS]),
        follows=s.empty_frame(s.FOLLOWS), similar=pl.DataFrame(), recommendations=pl.DataFrame(),
    )
    similar = whatif.neighbours_under(stored, cfg)
    solo_list = pl.DataFrame({
        s.USER_ID: ["solo"] * 3, "rank": [1, 2, 3], s.TRACK_ID: ["B", "C", "P"],
        "score": [0.0, -1.0, -2.0], "reason_kind": ["similar", "similar", "popular"],
    })
    return replace(stored, similar=similar, recommendations=solo_list)


def tracks_of(lists: whatif.Lists, user: str = "solo") -> list[str]:
    frame = lists.recommendations.filter(pl.col(s.USER_ID) == user).sort("rank")
    return frame[s.TRACK_ID].to_list()


def test_the_runs_settings_give_the_hand_worked_list(tiny):
    lists = whatif.rank_lists(tiny, pl.Series(["solo"]), tiny.cfg, tiny.similar)
    assert tracks_of(lists) == ["B", "C", "P"]
    assert lists.recommendations["reason_kind"].to_list() == ["similar", "similar", "popular"]
    # B's similarity sum is A's co-count with it alone: A is B's only seed.
    reasons = lists.reasons.filter(pl.col(s.TRACK_ID) == "B")
    assert reasons["seed_track_id"].to_list() == ["A"] and reasons["share"].to_list() == [1.0]


def test_removing_the_only_seed_leaves_the_popular_fallback(tiny):
    before, after = whatif.user_what_if(tiny, "solo", forget_track="A")
    assert before[s.TRACK_ID].to_list() == ["B", "C", "P"]
    # No positive history: no seeds, no genre; A (still heard) is never served back. Popular
    # overall, A now having 3 listeners: P 3, Q 3, B 2.
    assert tracks_of(after) == ["P", "Q", "B"]
    assert set(after.recommendations["reason_kind"]) == {"popular"}
    assert after.reasons.is_empty()


def test_muting_a_creator_removes_their_tracks(tiny):
    _, after = whatif.user_what_if(tiny, "solo", mute_creator="cX")
    # B and C are cX's; the candidates left are the popular P and Q.
    assert tracks_of(after) == ["P", "Q"]


def test_a_creator_cap_replaces_the_second_track_and_moves_the_bias(tiny):
    cfg = whatif.with_settings(tiny.cfg, curation={"max_per_creator": 1})
    result = whatif.sample_what_if(tiny, cfg, pl.Series(["solo"]), use_model=False)
    assert tracks_of(result.after) == ["B", "P", "Q"]
    assert whatif.entering(result.changes)[s.TRACK_ID].to_list() == ["Q"]
    assert whatif.leaving(result.changes)[s.TRACK_ID].to_list() == ["C"]
    assert result.after.effects.filter(pl.col("rule") == "max_per_creator")[
        "recommendations_removed"].to_list() == [1]

    measures = {(r["entity"], r["metric"]): r for r in result.bias.iter_rows(named=True)}
    # Listeners per slot: B 2, C 1, P 3 before; B 2, P 3, Q 3 after.
    assert measures["track", "mean_popularity"]["before"] == pytest.approx(2.0)
    assert measures["track", "mean_popularity"]["after"] == pytest.approx(8 / 3)
    # Creators cA, cX, cP, cQ: cX and cP recommended before; cX, cP and cQ after.
    assert measures["creator", "coverage"]["before"] == pytest.approx(0.5)
    assert measures["creator", "coverage"]["after"] == pytest.approx(0.75)
    # Slots [0, 1, 1, 1, 0] over five tracks both times: Gini 6 / 15.
    assert measures["track", "gini"]["before"] == pytest.approx(0.4)
    assert measures["track", "gini"]["change"] == pytest.approx(0.0)


def test_list_changes_count_users_per_track():
    def lists(rows):
        return pl.DataFrame(rows, schema=[s.USER_ID, s.TRACK_ID], orient="row")

    before = lists([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c")])
    after = lists([("u1", "a"), ("u1", "d"), ("u2", "d"), ("u2", "c")])
    catalogue = tracks([(t, None, None) for t in "abcd"])
    changes = whatif.list_changes(before, after, catalogue)
    got = {r[s.TRACK_ID]: (r["users_before"], r["users_after"], r["entered"], r["left"])
           for r in changes.iter_rows(named=True)}
    assert got == {"a": (2, 1, 0, 1), "b": (1, 0, 0, 1), "c": (1, 1, 0, 0), "d": (0, 2, 2, 0)}


def test_a_missing_input_folder_is_said_and_leaves_no_follows(tmp_path):
    follows, notes = whatif.input_follows(tmp_path / "gone", day(0))
    assert follows.is_empty() and "friends_plays is 0" in notes[0]


# The sample run: the what-if against what the batch stored.


@pytest.fixture(scope="module")
def sample(sample_store) -> whatif.StoredRun:
    with duckdb.connect(str(sample_store / CURRENT), read_only=True) as con:
        return whatif.load_stored_run(con)


@pytest.fixture(scope="module")
def sample_db(sample_store):
    with duckdb.connect(str(sample_store / CURRENT), read_only=True) as con:
        yield con


def test_the_sample_is_seeded_and_drawn_from_users_with_lists(sample):
    first = whatif.sample_users(sample.recommendations, 200, seed=0)
    assert first.equals(whatif.sample_users(sample.recommendations, 200, seed=0))
    assert not first.equals(whatif.sample_users(sample.recommendations, 200, seed=1))
    assert first.len() == first.n_unique() == 200
    assert first.is_in(sample.recommendations[s.USER_ID].implode()).all()
    everyone = sample.recommendations[s.USER_ID].n_unique()
    assert whatif.sample_users(sample.recommendations, 10**6).len() == everyone


def test_the_runs_own_settings_reproduce_its_lists_and_reasons(sample, sample_db):
    users = whatif.sample_users(sample.recommendations, whatif.DEFAULT_SAMPLE, seed=0)
    result = whatif.sample_what_if(sample, sample.cfg, users)

    chosen = {"users": users.to_list()}
    stored = sample_db.sql("""
        SELECT user_id, rank, track_id, score, reason_kind FROM recommendations
        WHERE list_contains($users, user_id) ORDER BY user_id, rank""", params=chosen).pl()
    after = result.after.recommendations.sort(s.USER_ID, "rank")
    assert after.drop("score").equals(stored.drop("score"))
    assert np.allclose(after["score"], stored["score"], atol=1e-9)

    reasons = sample_db.sql("""
        SELECT user_id, track_id, seed_track_id, share FROM recommendation_reasons
        WHERE list_contains($users, user_id)
        ORDER BY user_id, track_id, seed_track_id""", params=chosen).pl()
    mine = result.after.reasons.select(reasons.columns).sort(s.USER_ID, s.TRACK_ID,
                                                             "seed_track_id")
    assert mine.drop("share").equals(reasons.drop("share"))
    assert np.allclose(mine["share"], reasons["share"])

    assert result.changes["entered"].sum() == result.changes["left"].sum() == 0
    assert result.bias["change"].abs().max() == pytest.approx(0.0)


def test_blocking_a_creator_in_the_what_if_removes_their_tracks(sample, sample_db):
    users = whatif.sample_users(sample.recommendations, whatif.DEFAULT_SAMPLE, seed=0)
    chosen = {"users": users.to_list()}
    creator, reached = sample_db.execute("""
        SELECT t.creator_id, count(DISTINCT r.user_id) FROM recommendations r
        JOIN tracks t USING (track_id)
        WHERE list_contains($users, r.user_id) AND t.creator_id IS NOT NULL
        GROUP BY ALL ORDER BY 2 DESC, 1 LIMIT 1""", chosen).fetchone()
    theirs = set(sample.tracks.filter(pl.col(s.CREATOR_ID) == creator)[s.TRACK_ID])

    cfg = whatif.with_settings(sample.cfg, curation={"block_creators": [creator]})
    result = whatif.sample_what_if(sample, cfg, users)
    assert not set(result.after.recommendations[s.TRACK_ID]) & theirs
    gone = whatif.leaving(result.changes).filter(pl.col(s.CREATOR_ID) == creator)
    assert (gone["left"] == gone["users_before"]).all()
    per_user = result.before.filter(pl.col(s.TRACK_ID).is_in(list(theirs)))
    assert per_user[s.USER_ID].n_unique() == reached
    assert gone["left"].sum() == per_user.height


def test_damping_the_target_turns_the_super_nodes_down(sample):
    # Under the candidate order (no model trained on other similarity scores in the way),
    # RP3beta's exponent is the dial the design promises: more damping, fewer slots to the
    # most listened tracks and less popular lists.
    users = whatif.sample_users(sample.recommendations, whatif.DEFAULT_SAMPLE, seed=0)

    def measures(beta: float) -> dict:
        cfg = whatif.with_settings(sample.cfg, similarity={"measure": "rp3beta", "beta": beta})
        bias = whatif.sample_what_if(sample, cfg, users, use_model=False).bias
        return {r["metric"]: r["after"] for r in bias.iter_rows(named=True)
                if r["entity"] == "track"}

    plain, damped = measures(0.0), measures(1.0)
    assert damped["top1_share"] < plain["top1_share"]
    assert damped["mean_popularity"] < plain["mean_popularity"]
    assert damped["tail_share"] > plain["tail_share"]


def test_forgetting_a_seed_takes_it_out_of_the_reasons(sample, sample_db):
    user, seed = sample_db.execute("""
        SELECT user_id, seed_track_id FROM recommendation_reasons
        ORDER BY share DESC, user_id, track_id LIMIT 1""").fetchone()
    before, unchanged = whatif.user_what_if(sample, user)
    assert unchanged.recommendations.drop("score").equals(before.drop("score"))

    _, after = whatif.user_what_if(sample, user, forget_track=seed)
    assert seed not in after.reasons["seed_track_id"].to_list()
    assert seed not in after.recommendations[s.TRACK_ID].to_list()
    assert not after.recommendations.drop("score").equals(before.drop("score"))
