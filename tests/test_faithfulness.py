"""Faithfulness of "because you liked": the named seed removed, the score recomputed.

The score before is the served one (the batch's), and the score after is the one the what-if
engine (`recsys.whatif`, another path through the stages) gives the same list change.
"""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from recsys import faithfulness, queries, whatif
from recsys import schema as s
from recsys.io.dataset import read_dataset
from recsys.stages.ranker import TrainedRanker
from recsys.store import CURRENT


@pytest.fixture(scope="module")
def tested(evaluated_store, small_data):
    with duckdb.connect(str((evaluated_store / CURRENT).resolve()), read_only=True) as con:
        stored = whatif.load_stored_run(con)
        tables = {
            "feedback": queries.feedback(con),
            "similar_tracks": queries.neighbour_pairs(con),
            "recommendations": queries.all_recommendations(con),
            "recommendation_reasons": queries.read(con, "SELECT * FROM recommendation_reasons"),
        }
    booster = stored.booster
    ranker = TrainedRanker(booster, tuple(booster.feature_name()), booster.num_trees(), 0, 0, 0)
    rows = faithfulness.seed_removal(read_dataset(small_data), stored.as_of, tables, ranker,
                                     stored.cfg, sample=12, seed=3)
    return rows, tables, stored


def test_the_score_before_is_the_served_score(tested):
    rows, tables, _ = tested
    assert rows.height == 12
    served = rows.join(tables["recommendations"], on=[s.USER_ID, s.TRACK_ID])
    assert served.height == 12
    assert served["score_before"].to_list() == pytest.approx(served["score"].to_list(), abs=1e-9)


def test_the_seed_is_the_largest_share_the_recommendation_names(tested):
    rows, tables, _ = tested
    reasons = tables["recommendation_reasons"]
    for row in rows.iter_rows(named=True):
        named = reasons.filter((pl.col(s.USER_ID) == row[s.USER_ID])
                               & (pl.col(s.TRACK_ID) == row[s.TRACK_ID]))
        assert row["share"] == named["share"].max()
        assert row["seed_track_id"] in named["seed_track_id"].to_list()


def test_the_score_after_is_what_the_what_if_engine_gives_without_the_seed(tested):
    rows, _, stored = tested
    compared = 0
    for row in rows.iter_rows(named=True):
        _, after = whatif.user_what_if(stored, row[s.USER_ID], forget_track=row["seed_track_id"])
        listed = after.recommendations.filter(pl.col(s.TRACK_ID) == row[s.TRACK_ID])
        if listed.height:
            assert listed["score"][0] == pytest.approx(row["score_after"], abs=1e-9)
            compared += 1
    assert compared >= 3
