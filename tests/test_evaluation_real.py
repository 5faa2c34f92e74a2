"""The evaluation on MovieLens ml-latest-small: its users scored and a model's NDCG, checked
against plain Python over the imported ratings."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys import schema as s
from recsys.config import config_from
from recsys.io.dataset import read_dataset
from recsys.io.importers import import_dataset
from recsys.offline import first_cut, metrics_table, plan_cuts, run_models

from conftest import real_dataset
from test_evaluation import _ndcg, _reference_positives


def test_movielens_cuts_score_the_users_the_ratings_say(tmp_path):
    import_dataset("movielens", real_dataset("ml-latest-small"), tmp_path / "ml")
    data = read_dataset(tmp_path / "ml")
    # KPI plays: every positive has gain 1, as in the binary NDCG of `_ndcg`.
    cfg = config_from({"evaluation": {"max_cuts": 3, "min_users": 1000,
                                                "models": ["most_popular"]},
                                 "labels": {"kpi": "plays"}})
    cuts = plan_cuts(data, first_cut(data, None, cfg), cfg)
    # The last rating is on 2018-09-24 14:27:30: cuts 28 days apart from 2018-08-27 14:27:31.
    assert [f"{c.test.start:%Y-%m-%d %H:%M:%S}" for c in cuts] == [
        "2018-08-27 14:27:31", "2018-07-30 14:27:31", "2018-07-02 14:27:31"]
    assert [c.test.scored for c in cuts] == [12, 9, 10]

    result = run_models(data, cuts, cfg)
    metrics = metrics_table(result, data.tracks, cfg)
    lists = result.lists.sort("cut", s.USER_ID, "rank")
    values = []
    for cut in cuts:
        fresh, _ = _reference_positives(tmp_path / "ml", cut.test.start, cut.test.end)
        assert sorted(fresh) == sorted(cut.test.users[s.USER_ID])
        mine = lists.filter(pl.col("cut") == cut.index)
        for user, relevant in fresh.items():
            listed = mine.filter(pl.col(s.USER_ID) == user)[s.TRACK_ID].to_list()
            values.append(_ndcg(listed, relevant, 10))
    row = metrics.filter((pl.col("metric") == "ndcg@10") & (pl.col("slice_kind") == "all"))
    assert row["users"].to_list() == [31]
    assert row["value"][0] == pytest.approx(np.mean(values))
