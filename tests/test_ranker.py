"""Labels by KPI and the ranker's two objectives, on hand-made frames."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys import schema as s
from recsys.config import FeedbackConfig, LabelsConfig, RankerConfig
from recsys.stages.labels import labels
from recsys.stages.ranker import group_sizes, prepare_rows, train_ranker

from helpers import day, events, tracks

# The window is [10, 20). Tracks last 200 s, except g, whose duration is unknown.
WINDOW_EVENTS = [
    ("u", "a", "play", 10, 150_000),          # 3/4 of the track: listened
    ("u", "b", "play", 11, 20_000),           # a play that a skip outweighs: 1 - 3 < 0
    ("u", "b", "skip", 11.1, 1_000),
    ("u", "c", "like", 12),                   # liked
    ("u", "d", "play", 12, None, 40),         # aggregated: never a label
    ("u", "e", "play", 5, 100_000),           # before the window
    ("u", "f", "play", 13, 50_000),           # a quarter: played
    ("u", "g", "play", 14, 70_000),           # unknown duration: 70 s against 60 s
    ("u", "h", "play", 15, 30_000),           # played and reposted
    ("u", "h", "repost", 15.5),
    ("v", "a", "skip", 16, 3_000),            # skipped only
    ("v", "f", "play", 25, 200_000),          # after the window
]


def _catalogue() -> pl.DataFrame:
    frame = tracks([(t, None, None) for t in "abcdefgh"])
    return frame.with_columns(
        pl.when(pl.col(s.TRACK_ID) == "g").then(None).otherwise(pl.col(s.DURATION_MS))
        .alias(s.DURATION_MS)
    )


def _graded(kpi: str, **thresholds) -> dict[tuple[str, str], tuple[int, bool]]:
    frame = labels(events(WINDOW_EVENTS), start=day(10), end=day(20), kpi=kpi,
                   weights=FeedbackConfig(), tracks=_catalogue(),
                   thresholds=LabelsConfig(**thresholds))
    return {(r["user_id"], r["track_id"]): (r["label"], r["label_positive"])
            for r in frame.iter_rows(named=True)}


def test_engagement_grades_by_hand():
    graded = _graded("engagement")
    assert {key: grade for key, (grade, _) in graded.items()} == {
        ("u", "a"): 2, ("u", "b"): 0, ("u", "c"): 3, ("u", "f"): 1, ("u", "g"): 2,
        ("u", "h"): 3, ("v", "a"): 0,
    }
    # The binary class is the sign of the summed signals: plays and likes count for, skips
    # against (b: 1 play - 3 for the skip; v's a: a skip alone).
    assert {key for key, (_, positive) in graded.items() if positive} == {
        ("u", "a"), ("u", "c"), ("u", "f"), ("u", "g"), ("u", "h"),
    }


def test_the_listened_threshold_is_a_share_or_seconds():
    # Seconds only: 60 s. a (150 s), f (50 s), g (70 s), h (30 s, but reposted).
    by_seconds = _graded("engagement", listened_share=None)
    assert {k[1]: g for k, (g, _) in by_seconds.items() if k[0] == "u"} == {
        "a": 2, "b": 0, "c": 3, "f": 1, "g": 2, "h": 3,
    }
    # A share of 0.2 of 200 s is 40 s: f's 50 s now count as listened; g (unknown duration)
    # falls back to the 80 s given, which its 70 s miss.
    lower = _graded("engagement", listened_share=0.2, listened_seconds=80)
    assert lower["u", "f"][0] == 2 and lower["u", "g"][0] == 1


def test_like_repost_and_listening_time_kpis():
    def grades(kpi):
        return {k: g for k, (g, _) in _graded(kpi).items()}

    assert grades("likes_or_reposts") == {
        ("u", "a"): 0, ("u", "b"): 0, ("u", "c"): 1, ("u", "f"): 0, ("u", "g"): 0,
        ("u", "h"): 1, ("v", "a"): 0,
    }
    assert grades("reposts")["u", "h"] == 1 and grades("reposts")["u", "c"] == 0
    # Listening time in the window: a 150 s, b 21 s, f 50 s, g 70 s, h 30 s, v's a 3 s.
    assert grades("listening_time") == {
        ("u", "a"): 2, ("u", "b"): 1, ("u", "c"): 0, ("u", "f"): 2, ("u", "g"): 2,
        ("u", "h"): 2, ("v", "a"): 1,
    }


def test_group_sizes_follow_sorted_groups_and_refuse_split_ones():
    rows = pl.DataFrame({"cut": [1, 1, 1, 2, 2], "user_id": ["a", "a", "b", "a", "a"],
                         "track_id": list("xyzxy")})
    assert group_sizes(rows).tolist() == [2, 1, 2]
    with pytest.raises(ValueError, match="not contiguous"):
        group_sizes(rows.sort("track_id"))


def _stacked() -> pl.DataFrame:
    # Cut 1: u1 mixed, u2 all 0, u3 all 2 but with mixed classes. Cut 2: u1 all 1, u2 mixed.
    return pl.DataFrame({
        "cut": [1, 1, 1, 1, 1, 1, 2, 2, 2, 2],
        "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u1", "u1", "u2", "u2"],
        "track_id": ["b", "a", "a", "b", "a", "b", "a", "b", "b", "a"],
        "label": [0, 2, 0, 0, 2, 2, 1, 1, 3, 0],
        "label_positive": [False, True, False, False, True, False, True, True, True, False],
        "x": np.arange(10, dtype=float),
    })


def test_groups_with_one_label_are_left_out_and_counted_per_objective():
    rows = _stacked().sample(fraction=1.0, shuffle=True, seed=5)
    cfg = RankerConfig(negatives_per_user=None)
    ranked, dropped = prepare_rows(rows, cfg)
    # lambdarank: (1, u2) all 0, (1, u3) all 2 and (2, u1) all 1 go; (1, u1), (2, u2) stay.
    assert dropped == 3
    assert ranked.select("cut", "user_id", "track_id").rows() == [
        (1, "u1", "a"), (1, "u1", "b"), (2, "u2", "a"), (2, "u2", "b"),
    ]
    assert group_sizes(ranked).tolist() == [2, 2]

    binary, dropped = prepare_rows(rows, cfg.model_copy(update={"objective": "binary"}))
    # binary: u3's classes differ in cut 1, so it stays; (2, u1) is all positive.
    assert dropped == 2
    assert binary.select("cut", "user_id").unique(maintain_order=True).rows() == [
        (1, "u1"), (1, "u3"), (2, "u2"),
    ]
    assert binary["target"].to_list() == [1, 0, 1, 0, 0, 1]


def test_a_label_outside_the_gain_table_is_refused():
    rows = _stacked().with_columns(pl.col("label") * 2)
    with pytest.raises(ValueError, match="grades 0 to 3"):
        prepare_rows(rows, RankerConfig())


def _two_signal_rows(seed: int, users: int = 80, per_user: int = 12) -> pl.DataFrame:
    """Graded labels that follow x1, a positive class that follows x2."""
    rng = np.random.default_rng(seed)
    n = users * per_user
    x1, x2 = rng.random(n), rng.random(n)
    label = np.digitize(x1 + 0.2 * rng.random(n), [0.8, 1.0, 1.1])
    return pl.DataFrame({
        "user_id": np.repeat([f"u{i:03d}" for i in range(users)], per_user),
        "track_id": np.tile([f"t{j:02d}" for j in range(per_user)], users),
        "x1": x1, "x2": x2, "label": label.astype(np.int32),
        "label_positive": x2 + 0.2 * rng.random(n) > 0.8,
    })


@pytest.mark.parametrize("objective", ["lambdarank", "binary"])
def test_shuffled_rows_give_the_same_model(objective):
    rows = _two_signal_rows(0)
    cfg = RankerConfig(objective=objective, num_trees=40, min_data_in_leaf=5,
                       early_stopping_rounds=5, negatives_per_user=6)
    stop = _two_signal_rows(1)
    first = train_ranker(rows, ("x1", "x2"), cfg, stop_rows=stop)
    shuffled = train_ranker(rows.sample(fraction=1.0, shuffle=True, seed=3), ("x1", "x2"), cfg,
                            stop_rows=stop.sample(fraction=1.0, shuffle=True, seed=4))
    probe = _two_signal_rows(2)
    assert first.best_iteration == shuffled.best_iteration
    assert np.array_equal(first.raw_scores(probe), shuffled.raw_scores(probe))


@pytest.mark.parametrize(("objective", "signal"), [("lambdarank", "x1"), ("binary", "x2")])
def test_each_objective_learns_its_own_target(objective, signal):
    cfg = RankerConfig(objective=objective, num_trees=40, min_data_in_leaf=5,
                       early_stopping_rounds=5)
    ranker = train_ranker(_two_signal_rows(0), ("x1", "x2"), cfg, stop_rows=_two_signal_rows(1))
    gain = dict(zip(("x1", "x2"), ranker.booster.feature_importance(importance_type="gain")))
    assert gain[signal] > 5 * gain[{"x1": "x2", "x2": "x1"}[signal]]
    assert ranker.booster.params["objective"] == objective


def test_early_stopping_watches_the_stopping_rows():
    cfg = RankerConfig(num_trees=100, min_data_in_leaf=5, early_stopping_rounds=5)
    rows = _two_signal_rows(0)
    learnable = train_ranker(rows, ("x1", "x2"), cfg, stop_rows=_two_signal_rows(1))
    # Stopping rows whose labels are noise: nothing learnt helps there, so it stops early.
    noise = _two_signal_rows(1).with_columns(
        pl.Series("label", np.random.default_rng(9).integers(0, 4, rows.height), pl.Int32)
    )
    stopped = train_ranker(rows, ("x1", "x2"), cfg, stop_rows=noise)
    assert stopped.best_iteration < learnable.best_iteration
    assert stopped.booster.current_iteration() == stopped.best_iteration
