"""Time rules: nothing at or after a cut feeds a feature; late users are not training rows."""

from __future__ import annotations

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from recsys import schema as s
from recsys.config import Config, config_from
from recsys.io.dataset import Dataset
from recsys.pipeline import StageLog, fit_ranker, labelled_rows, take_snapshot
from recsys.stages.features import FEATURES
from recsys.stages.labels import LABEL, labels

from helpers import day, events, tracks


def _dataset(ev: pl.DataFrame) -> Dataset:
    catalogue = tracks([(f"t{i}", f"c{i % 4}", ["rock", "jazz", None][i % 3], i % 5)
                        for i in range(12)])
    follows = pl.DataFrame({s.FOLLOWER_ID: ["u0", "u1"], s.FOLLOWEE_ID: ["u2", "u3"],
                            s.TS: [day(1), day(100)]}, schema=s.TABLE_COLUMNS[s.FOLLOWS])
    return Dataset(events=ev, tracks=catalogue, users=s.empty_frame(s.USERS), follows=follows)


def _history(seed: int, start: float, end: float, users: int = 8) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{rng.integers(users)}", f"t{rng.integers(12)}",
         str(rng.choice(["play", "like", "skip"])),
         float(rng.uniform(start, end)), int(rng.integers(1_000, 200_000)))
        for _ in range(150)
    ]
    return events(rows)


def test_features_see_nothing_at_or_after_the_cut():
    cut, end = day(40), day(70)
    before = _history(0, 0, 40)
    after_a = _history(1, 40, 70)
    # Another future: different events after the cut, and the late user's events.
    after_b = pl.concat([_history(2, 40, 70), events([("late", "t1", "play", 50)])])
    cfg = Config()
    rows_a, _ = labelled_rows(_dataset(pl.concat([before, after_a])), cut, end, cfg)
    rows_b, _ = labelled_rows(_dataset(pl.concat([before, after_b])), cut, end, cfg)

    keys = [s.USER_ID, s.TRACK_ID]
    features_a = rows_a.select(*keys, *FEATURES).sort(keys)
    features_b = rows_b.select(*keys, *FEATURES).sort(keys)
    assert features_a.height > 20 and features_a["sim_sum"].sum() > 0
    assert_frame_equal(features_a, features_b)
    # The labels do differ: the futures are different.
    assert not rows_a.sort(keys)[LABEL].equals(rows_b.sort(keys)[LABEL])


def test_a_user_whose_events_are_all_after_the_cut_is_not_a_training_row():
    ev = pl.concat([_history(0, 0, 40), events([("late", "t1", "play", 50),
                                                 ("late", "t2", "like", 51)])])
    rows, _ = labelled_rows(_dataset(ev), day(40), day(70), Config())
    assert "late" not in rows[s.USER_ID].to_list()
    assert rows[s.USER_ID].n_unique() > 3


def test_a_track_that_rises_after_the_cut_is_no_candidate_and_feeds_no_feature():
    cut, end = day(40), day(70)
    before = _history(0, 0, 40)
    # "hit" is created on day 45 and every user plays it, again and again, until day 70.
    hit_plays = events([(f"u{u}", "hit", "play", 45 + u + k / 4, 180_000)
                        for u in range(8) for k in range(6)])
    with_hit = pl.concat([before, hit_plays])

    def dataset(ev: pl.DataFrame) -> Dataset:
        data = _dataset(ev)
        hit = tracks([("hit", "c1", "rock", 45)])
        return Dataset(events=ev, tracks=pl.concat([data.tracks, hit]), users=data.users,
                       follows=data.follows)

    cfg = Config()
    rows_hit, _ = labelled_rows(dataset(with_hit), cut, end, cfg)
    rows_none, _ = labelled_rows(dataset(before), cut, end, cfg)

    # In the label window it is every user's favourite, yet no user is offered it...
    graded = labels(with_hit, start=cut, end=end, kpi="engagement", weights=cfg.feedback,
                    tracks=dataset(with_hit).tracks)
    assert graded.filter((pl.col(s.TRACK_ID) == "hit") & (pl.col(LABEL) > 0)).height == 8
    assert "hit" not in rows_hit[s.TRACK_ID].to_list()

    # ...and no feature of any candidate saw its plays: popularity, trend, similarity, walks,
    # ALS and the affinities are what they are in a world where it was never played.
    keys = [s.USER_ID, s.TRACK_ID]
    assert_frame_equal(rows_hit.select(*keys, *FEATURES).sort(keys),
                       rows_none.select(*keys, *FEATURES).sort(keys))
    assert rows_hit["als_score"].sum() != 0 and rows_hit["walk_score"].sum() > 0

    # The engine's knowledge at the cut does not hold it anywhere.
    snap = take_snapshot(dataset(with_hit), cut, rows_hit[s.USER_ID].unique(), cfg)
    assert "hit" not in snap.feedback[s.TRACK_ID].to_list()
    assert "hit" not in snap.similar[s.TRACK_ID].to_list() + snap.similar["neighbour_id"].to_list()
    assert "hit" not in snap.graph.tracks.ids.to_list()
    assert "hit" not in snap.factors.tracks.ids.to_list()


def _listening(seed: int, start: float, end: float, n: int) -> pl.DataFrame:
    """n events of 30 users on 60 tracks in three taste groups, between two days."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        user = int(rng.integers(30))
        group = user % 3 if rng.random() < 0.8 else int(rng.integers(3))
        track = 3 * int(rng.integers(20)) + group
        kind = str(rng.choice(["play", "like", "skip"], p=[0.8, 0.1, 0.1]))
        rows.append((f"u{user}", f"t{track}", kind, float(rng.uniform(start, end)), 60_000))
    return events(rows)


def test_the_ranker_scored_on_the_validation_window_never_saw_it():
    # Windows of 20 days before as_of = day 100: validation [80, 100), training cuts at 60 and
    # 40 (early stopping on [60, 80)). Two datasets differ only from day 80 on.
    as_of = day(100)
    past = _listening(0, 0, 80, 2_000)
    catalogue = tracks([(f"t{i}", f"c{i % 7}", ["rock", "jazz", "folk"][i % 3])
                        for i in range(60)])
    data = [Dataset(events=pl.concat([past, _listening(seed, 80, 100, 500)]), tracks=catalogue,
                    users=s.empty_frame(s.USERS), follows=s.empty_frame(s.FOLLOWS))
            for seed in (1, 2)]
    cfg = config_from({
        "labels": {"window_days": 20},
        "ranker": {"training_cuts": 2, "min_data_in_leaf": 5, "num_trees": 30},
    })
    outcomes = [fit_ranker(d, as_of, cfg, StageLog(None, total=8)) for d in data]
    judged = [outcome.judged for outcome in outcomes]
    assert judged[0] is not None and outcomes[0].evaluation.height == 2

    # The same model, tree for tree: nothing from day 80 on reached it...
    assert judged[0].booster.model_to_string() == judged[1].booster.model_to_string()
    # ...while the window it is scored on, and the serving models, do differ.
    values = [dict(zip(o.evaluation["order"], o.evaluation["value"])) for o in outcomes]
    assert values[0]["ranker"] != values[1]["ranker"]
    assert (outcomes[0].ranker.booster.model_to_string()
            != outcomes[1].ranker.booster.model_to_string())
