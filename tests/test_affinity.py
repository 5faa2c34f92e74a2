"""Affinity and behaviour features, worked out by hand on a tiny world.

The moment is day 40; interactions halve every 10 days. User u's positive history:

    a  play on day 30   creator c1, rock       strength 1, decay 0.5   -> 0.5
    b  like on day 20   creator c2, rock       strength 4, decay 0.25  -> 1.0
    e  play on day 30   creator and genre unknown                       -> 0.5
    x  skip on day 35   creator c1 (negative: no affinity, but u's latest event)

so u's decayed positive strength is 2.0. Candidates: c (c1, rock), d (c2, jazz), g and f
(unknown creator or genre). Other listeners (first interaction): c by w1 day 36, w2 day 38
(the last 7 days), w3 day 20 (the 28 days before), w4 day 1 (earlier); d by w1 on day 10;
w5 skipped c on day 30. u follows w1, w2 and w5.
"""

from __future__ import annotations

import polars as pl
import pytest

from recsys import schema as s
from recsys.config import CandidatesConfig, FeaturesConfig, FeedbackConfig
from recsys.stages.affinity import AFFINITY_FEATURES, affinity_features, friends
from recsys.stages.features import FEATURES, build_features
from recsys.stages.feedback import feedback

from helpers import day, events, tracks

CFG = FeaturesConfig(half_life_days=10, trend_recent_days=7, trend_base_days=28)
MOMENT = day(40)


def _world():
    ev = events([
        ("u", "a", "play", 30), ("u", "b", "like", 20), ("u", "e", "play", 30),
        ("u", "x", "skip", 35),
        ("w1", "c", "play", 36), ("w2", "c", "play", 38), ("w3", "c", "play", 20),
        ("w4", "c", "play", 1), ("w1", "d", "play", 10), ("w5", "c", "skip", 30),
    ])
    catalogue = tracks([("a", "c1", "rock"), ("b", "c2", "rock"), ("e", None, None),
                        ("x", "c1", "rock"), ("c", "c1", "rock"), ("d", "c2", "jazz"),
                        ("g", None, None), ("f", "c3", None)])
    follows = pl.DataFrame({s.FOLLOWER_ID: ["u"] * 3, s.FOLLOWEE_ID: ["w1", "w2", "w5"],
                            s.TS: [None] * 3}, schema=s.TABLE_COLUMNS[s.FOLLOWS])
    candidates = pl.DataFrame({s.USER_ID: ["u"] * 4, s.TRACK_ID: ["c", "d", "g", "f"]})
    contributions = pl.DataFrame({s.USER_ID: ["u"] * 3, s.TRACK_ID: ["c", "c", "d"],
                                  "seed_track_id": ["a", "b", "b"],
                                  "contribution": [0.6, 0.4, 1.0]})
    fb = feedback(ev, FeedbackConfig(minute_weight=0))
    return candidates, contributions, fb, catalogue, follows


def _features() -> dict[str, dict]:
    candidates, contributions, fb, catalogue, follows = _world()
    frame = affinity_features(candidates, contributions, fb, catalogue, moment=MOMENT, cfg=CFG)
    frame = frame.join(friends(candidates, fb, follows), on=["user_id", "track_id"], how="left")
    return {row["track_id"]: row for row in frame.iter_rows(named=True)}


def test_decayed_creator_and_genre_affinity():
    got = _features()
    # c: a's 0.6 at decay 0.5 and b's 0.4 at 0.25; d: b's 1.0 at 0.25.
    assert got["c"]["decayed_affinity"] == pytest.approx(0.4)
    assert got["d"]["decayed_affinity"] == pytest.approx(0.25)
    # c1 holds a (0.5 of 2.0); c2 holds b (1.0). Rock holds a and b (1.5); nothing is jazz.
    assert got["c"]["creator_affinity"] == pytest.approx(0.25)
    assert got["d"]["creator_affinity"] == pytest.approx(0.5)
    assert got["c"]["genre_affinity"] == pytest.approx(0.75)
    assert got["d"]["genre_affinity"] == 0.0
    # u heard e, of unknown creator and genre: g, also unknown, earns nothing from it.
    assert got["g"]["creator_affinity"] == got["g"]["genre_affinity"] == 0.0
    assert got["f"]["genre_affinity"] == 0.0 and got["f"]["creator_affinity"] == 0.0


def test_interaction_age_and_skip_rates():
    got = _features()
    # u last heard c1 positively on day 30 (x's skip on day 35 is no positive), c2 on day 20.
    assert got["c"]["creator_recency_days"] == pytest.approx(10.0)
    assert got["d"]["creator_recency_days"] == pytest.approx(20.0)
    assert got["g"]["creator_recency_days"] is None and got["f"]["creator_recency_days"] is None
    # u's latest event is the skip on day 35; u played twice and skipped once.
    assert [got[t]["user_idle_days"] for t in "cdgf"] == [pytest.approx(5.0)] * 4
    assert got["c"]["user_skip_rate"] == pytest.approx(1 / 3)
    # c: 4 plays and 1 skip; d: 1 play; g: never played or skipped.
    assert got["c"]["track_skip_rate"] == pytest.approx(0.2)
    assert got["d"]["track_skip_rate"] == 0.0
    assert got["g"]["track_skip_rate"] is None


def test_popularity_trend_and_friends():
    got = _features()
    # c: 2 new listeners in the last 7 days, 1 in the 28 before: (2 / 7) / (1 / 28) = 8.
    assert got["c"]["recent_listeners"] == 2.0
    assert got["c"]["popularity_trend"] == pytest.approx(8.0)
    # d: its one listener came on day 10, in the base window: no recent rate.
    assert got["d"]["recent_listeners"] == 0.0 and got["d"]["popularity_trend"] == 0.0
    # Followed accounts positive on c: w1 and w2 (w5 only skipped it); on d: w1. Their plays:
    # one each.
    assert got["c"]["friends_listeners"] == 2 and got["d"]["friends_listeners"] == 1
    assert got["c"]["friends_plays"] == 2 and got["d"]["friends_plays"] == 1
    assert got["g"]["friends_listeners"] is None


def test_the_ranker_sees_every_feature_with_als_and_affinities():
    candidates, contributions, fb, catalogue, follows = _world()
    sources = ["similar", "walk", "als", "popular_in_genre", "popular"]
    for source in sources:
        candidates = candidates.with_columns(pl.lit(None, pl.Float64).alias(f"{source}_score"),
                                             pl.lit(None, pl.Int64).alias(f"{source}_rank"))
    candidates = candidates.with_columns(
        pl.Series("als_score", [0.7, None, None, None]),
        pl.Series("als_rank", [1, None, None, None]),
    )
    frame = build_features(candidates, contributions, fb, catalogue, follows, moment=MOMENT,
                           cfg=CandidatesConfig(), features=CFG)
    assert len(FEATURES) == len(set(FEATURES)) == 30
    assert set(AFFINITY_FEATURES) | {"als_score", "als_rank", "friends_listeners"} <= set(FEATURES)
    c = frame.filter(pl.col("track_id") == "c").row(0, named=True)
    assert (c["als_score"], c["als_rank"], c["genre_affinity"]) == (0.7, 1.0, 0.75)
    assert (c["friends_plays"], c["friends_listeners"]) == (2.0, 2.0)
    d = frame.filter(pl.col("track_id") == "d").row(0, named=True)
    assert d["als_score"] == 0.0 and d["als_rank"] is None
    g = frame.filter(pl.col("track_id") == "g").row(0, named=True)
    assert g["friends_listeners"] == 0.0 and g["genre_affinity"] == 0.0
