"""The evaluation's baselines: one contract for all, and each against a hand-worked answer or an
independent computation (per-column ridge regressions for EASE, implicit's own factors for ALS,
the walk stage for walks)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from threadpoolctl import threadpool_limits

from recsys import baselines as bl
from recsys import schema as s
from recsys.config import Config, config_from
from recsys.stages import candidates as cand
from recsys.stages import walks
from recsys.stages.feedback import feedback

from helpers import day, events

# u4 skipped b: heard, and not a positive.
TINY = [
    ("u1", "a", "play", 1), ("u1", "b", "play", 2), ("u1", "c", "play", 3),
    ("u2", "a", "play", 1), ("u2", "b", "like", 2),
    ("u3", "b", "play", 1), ("u3", "c", "play", 2), ("u3", "d", "play", 3),
    ("u4", "a", "play", 1), ("u4", "b", "skip", 2),
]


def train_of(rows, cfg: Config | None = None) -> bl.Train:
    return bl.Train(day(10), feedback(events(rows), (cfg or Config()).feedback))


def as_lists(frame: pl.DataFrame) -> dict[str, list[str]]:
    ordered = frame.sort(s.USER_ID, bl.RANK)
    return {user: group[s.TRACK_ID].to_list()
            for (user,), group in ordered.group_by(s.USER_ID, maintain_order=True)}


def config(**evaluation) -> Config:
    return config_from({"evaluation": evaluation,
                                  "similarity": {"min_co_count": 1}})


def test_most_popular_lists_the_most_listened_unheard_tracks():
    # Positive listeners: a 3, b 3 (u4's skip is not one), c 2, d 1.
    users = pl.Series(["u2", "u3", "u4", "nobody"])
    got = as_lists(bl.recommend(bl.MOST_POPULAR, train_of(TINY), users, 3, {}, Config()))
    assert got == {"u2": ["c", "d"], "u3": ["a"], "u4": ["c", "d"]}


def test_similarity_expansion_sums_the_seeds_co_counts():
    # Co-counts: a-b 2, a-c 1, b-c 2, b-d 1, c-d 1. u2's seeds a and b give c 1 + 2 and d 1;
    # u4's seed a gives b (heard: skipped) and c.
    users = pl.Series(["u2", "u4"])
    lists = bl.recommend("similarity:cooccurrence", train_of(TINY), users, 5, {"k": 10},
                         config())
    assert as_lists(lists) == {"u2": ["c", "d"], "u4": ["c"]}
    # With one neighbour per track: a's is b, b's is a (ties by id), c's is b: nothing unheard.
    one = bl.recommend("similarity:cooccurrence", train_of(TINY), users, 5, {"k": 1}, config())
    assert one.is_empty()


def ease_reference(x: np.ndarray, lam: float) -> np.ndarray:
    """EASE's weights column by column: a ridge regression of each track's column on the
    others (the constraint diag B = 0 leaves each column its own problem)."""
    n = x.shape[1]
    weights = np.zeros((n, n))
    for j in range(n):
        others = [i for i in range(n) if i != j]
        xo = x[:, others]
        weights[others, j] = np.linalg.solve(xo.T @ xo + lam * np.eye(n - 1), xo.T @ x[:, j])
    return weights


def test_ease_ranks_by_the_closed_form_that_per_column_ridge_regressions_give():
    rows = TINY + [("u5", "a", "play", 4), ("u5", "d", "play", 5), ("u6", "c", "like", 4),
                   ("u6", "e", "play", 5), ("u6", "a", "play", 6)]
    train = train_of(rows)
    tracks = ["a", "b", "c", "d", "e"]  # every track has a positive listener
    users = ["u1", "u2", "u3", "u4", "u5", "u6"]
    positive = train.positive()
    x = np.zeros((len(users), len(tracks)))
    for user, track in positive.select(s.USER_ID, s.TRACK_ID).iter_rows():
        x[users.index(user), tracks.index(track)] = 1
    scores = x @ ease_reference(x, lam=0.7)

    heard = set(train.heard().iter_rows())
    expected = {}
    for u, user in enumerate(users):
        unheard = [(-scores[u, t], track) for t, track in enumerate(tracks)
                   if (user, track) not in heard]
        expected[user] = [track for _, track in sorted(unheard)[:2]]
    cfg = config(ease_min_listeners=1)
    got = bl.recommend(bl.EASE, train, pl.Series(users), 2, {"lambda": 0.7}, cfg)
    assert as_lists(got) == {u: t for u, t in expected.items() if t}


def test_ease_leaves_out_tracks_with_few_listeners_and_skips_a_catalogue_too_large():
    train = train_of(TINY)
    got = bl.recommend(bl.EASE, train, pl.Series(["u2", "u3", "u4"]), 5, {"lambda": 1.0},
                       config(ease_min_listeners=2))
    assert "d" not in got[s.TRACK_ID].to_list()  # one listener
    with pytest.raises(bl.ModelSkipped, match=r"evaluation\.ease_max_tracks = 2"):
        bl.recommend(bl.EASE, train_of(TINY), pl.Series(["u2"]), 5, {"lambda": 1.0},
                     config(ease_min_listeners=1, ease_max_tracks=2))


def test_als_lists_are_implicits_top_scores_without_heard_tracks():
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(3)
    rows = [(f"u{u}", f"t{t:02d}", "play", float(rng.uniform(0, 9)))
            for u in range(30) for t in rng.choice(40, size=8, replace=False)]
    rows += [("u0", "t39", "skip", 9.5)]
    cfg = config(als_iterations=5, seed=4)
    train = train_of(rows, cfg)
    got = bl.recommend(bl.ALS, train, pl.Series(["u0", "u7"]), 5,
                       {"factors": 4, "regularization": 0.1}, cfg)

    # The same model fitted directly; its scores ranked by hand.
    pos = train.positive().sort(s.USER_ID, s.TRACK_ID)
    users, tracks = sorted(pos[s.USER_ID].unique()), sorted(pos[s.TRACK_ID].unique())
    import scipy.sparse as sp
    matrix = sp.csr_matrix((pos["strength"].to_numpy(),
                            ([users.index(u) for u in pos[s.USER_ID]],
                             [tracks.index(t) for t in pos[s.TRACK_ID]])),
                           shape=(len(users), len(tracks))).astype(np.float32)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=4, regularization=0.1, alpha=1.0, iterations=5,
                                        random_state=4, num_threads=1)
        model.fit(matrix, show_progress=False)
    heard = set(train.heard().iter_rows())
    for user in ("u0", "u7"):
        scores = model.user_factors[users.index(user)] @ model.item_factors.T
        ranked = sorted((-scores[i], track) for i, track in enumerate(tracks)
                        if (user, track) not in heard)
        assert as_lists(got)[user] == [track for _, track in ranked[:5]]
    assert "t39" not in as_lists(got)["u0"]  # skipped: heard


def test_walks_baseline_is_the_walk_source_alone():
    rows = [(f"u{u}", f"t{(u + i) % 12}", "play", float(i)) for u in range(12) for i in range(4)]
    cfg = Config()
    train = train_of(rows)
    users = pl.Series(["u1", "u5"])
    got = bl.recommend(bl.WALKS, train, users, 4, {"restart": 0.3}, cfg)

    seeds = cand.seeds(train.feedback, cfg.candidates).join(users.to_frame(s.USER_ID),
                                                            on=s.USER_ID, how="semi")
    walk_cfg = cfg.walks.model_copy(update={"max_tracks": 4})
    walked = walks.walk_candidates(walks.listener_graph(train.feedback), seeds,
                                   train.heard(), walk_cfg)
    expected = walked.select(s.USER_ID, s.TRACK_ID, pl.col("walk_rank").alias(bl.RANK))
    assert as_lists(got) == as_lists(expected)
    assert all(len(tracks) == 4 for tracks in as_lists(got).values())


@pytest.mark.parametrize("model", [bl.MOST_POPULAR, bl.EASE, bl.ALS, bl.WALKS,
                                   *[bl.similarity_model(m) for m in
                                     ("cooccurrence", "cosine", "jaccard", "lift", "bm25",
                                      "rp3beta")]])
def test_every_baseline_keeps_the_contract(model):
    """Ranks 1..n without gaps, at most k, only the users asked for, never a heard track,
    the same lists twice."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"t{int(t)}", str(rng.choice(["play", "like", "skip"], p=[.7, .2, .1])),
             float(rng.uniform(0, 9))) for u in range(40)
            for t in rng.choice(30, size=int(rng.integers(3, 12)), replace=False)]
    cfg = config(ease_min_listeners=1, als_iterations=3)
    asked = pl.Series([f"u{u}" for u in range(0, 40, 3)] + ["stranger"])
    params = bl.grid(model, cfg)[0]
    train = train_of(rows, cfg)
    got = bl.recommend(model, train, asked, 6, params, cfg)

    assert not got.is_empty()
    assert set(got[s.USER_ID]) <= set(asked) - {"stranger"}
    counts = got.group_by(s.USER_ID).agg(pl.col(bl.RANK).sort(), pl.len())
    for ranks, n in counts.select(bl.RANK, "len").iter_rows():
        assert ranks == list(range(1, n + 1)) and n <= 6
    assert got.join(train.heard(), on=[s.USER_ID, s.TRACK_ID], how="semi").is_empty()
    assert got.equals(bl.recommend(model, train_of(rows, cfg), asked, 6, params, cfg))


def test_grids_come_from_the_config():
    cfg = config(ease_lambdas=(1.0, 2.0), als_factors=(3,), als_regularization=(0.1, 0.2),
                 similarity_k=(7,), walks_restart=(0.4,))
    assert bl.grid(bl.EASE, cfg) == [{"lambda": 1.0}, {"lambda": 2.0}]
    assert bl.grid(bl.ALS, cfg) == [{"factors": 3, "regularization": 0.1},
                                    {"factors": 3, "regularization": 0.2}]
    assert bl.grid("similarity:bm25", cfg) == [{"k": 7}]
    assert bl.grid(bl.WALKS, cfg) == [{"restart": 0.4}]
    assert bl.grid(bl.MOST_POPULAR, cfg) == [{}]
