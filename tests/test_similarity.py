"""Similarity: hand-worked values, the super-node case, and implicit's cosine as a reference."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from implicit.nearest_neighbours import CosineRecommender

from recsys.config import FeedbackConfig, SimilarityConfig
from recsys.stages.feedback import feedback
from recsys.stages.similarity import _factors, neighbours, similar_tracks


def _plays(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    """Feedback from one play per (user, track) pair."""
    events = pl.DataFrame(
        {
            "user_id": [u for u, _ in pairs],
            "track_id": [t for _, t in pairs],
            "kind": ["play"] * len(pairs),
            "ts": [datetime(2024, 1, 1, tzinfo=timezone.utc)] * len(pairs),
            "ms_played": [None] * len(pairs),
            "count": [1] * len(pairs),
        },
        schema_overrides={"ms_played": pl.Int64},
    )
    return feedback(events, FeedbackConfig())


def _pairs(frame: pl.DataFrame) -> dict[tuple[str, str], tuple[float, int]]:
    return {
        (r["track_id"], r["neighbour_id"]): (r["score"], r["co_count"])
        for r in frame.iter_rows(named=True)
    }


def test_cosine_and_rp3beta_by_hand():
    # u1: a b c, u2: a b, u3: b c. n_a=2, n_b=3, n_c=2; co(a,b)=2, co(a,c)=1, co(b,c)=2.
    fb = _plays([("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"),
                 ("u3", "b"), ("u3", "c")])
    cosine = _pairs(similar_tracks(fb, SimilarityConfig(measure="cosine", min_co_count=1)))
    assert cosine[("a", "b")] == pytest.approx((2 / math.sqrt(6), 2))
    assert cosine[("a", "c")] == pytest.approx((1 / 2, 1))
    assert cosine[("c", "b")] == pytest.approx((2 / math.sqrt(6), 2))

    # rp3beta with beta 0.5: sum over shared users of 1/|u|, / n_i, / n_j ** 0.5.
    # a->b: users u1 (|u|=3) and u2 (|u|=2): (1/3 + 1/2) / 2 / sqrt(3).
    rp3 = _pairs(similar_tracks(fb, SimilarityConfig(measure="rp3beta", beta=0.5, min_co_count=1)))
    assert rp3[("a", "b")][0] == pytest.approx((1 / 3 + 1 / 2) / 2 / math.sqrt(3))
    # b->a: the same users, / n_b=3, / sqrt(n_a=2).
    assert rp3[("b", "a")][0] == pytest.approx((1 / 3 + 1 / 2) / 3 / math.sqrt(2))


def test_ranks_and_top_k():
    fb = _plays([("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"),
                 ("u3", "b"), ("u3", "c")])
    frame = similar_tracks(fb, SimilarityConfig(measure="cosine", k=1, min_co_count=1))
    # Each track keeps one neighbour: a->b (0.816 > 0.5), b->a or b->c tie (0.816): a by id.
    assert frame.select("track_id", "neighbour_id", "rank").rows() == [
        ("a", "b", 1), ("b", "a", 1), ("c", "b", 1)
    ]


def _super_node_case() -> pl.DataFrame:
    """100 users all play hit H; A and B are played by the same 3 users; C shares one with A."""
    pairs = [(f"u{i}", "H") for i in range(100)]
    pairs += [(f"u{i}", t) for i in range(3) for t in ("A", "B")]
    pairs += [("u0", "C"), ("x", "C"), ("x", "H")]
    return _plays(pairs)


def test_super_node_ranks_below_the_true_neighbour_when_damped():
    cfg = SimilarityConfig(measure="rp3beta", beta=0.5, min_co_count=1, k=10)
    frame = similar_tracks(_super_node_case(), cfg).filter(pl.col("track_id") == "A")
    order = frame.sort("rank")["neighbour_id"].to_list()
    assert order[0] == "B"
    assert order.index("H") > order.index("B")


def test_min_co_count_drops_the_single_shared_user_pair():
    fb = _super_node_case()
    loose = _pairs(similar_tracks(fb, SimilarityConfig(measure="cosine", min_co_count=1)))
    strict = _pairs(similar_tracks(fb, SimilarityConfig(measure="cosine", min_co_count=2)))
    assert loose[("A", "C")] == pytest.approx((1 / math.sqrt(3 * 2), 1))
    assert ("A", "C") not in strict and ("C", "A") not in strict
    assert strict[("A", "B")] == pytest.approx((1.0, 3))


def test_cosine_matches_implicit_cosine_recommender():
    rng = np.random.default_rng(7)
    users, items, k = 400, 120, 10
    dense = rng.random((users, items)) < rng.uniform(0.01, 0.15, size=items)
    matrix = sp.csr_matrix(dense.astype(np.float32))
    cfg = SimilarityConfig(measure="cosine", k=k, min_co_count=1)
    src, dst, score, _ = neighbours(matrix, cfg)

    reference = CosineRecommender(K=k + 1)
    reference.fit(matrix, show_progress=False)
    compared = 0
    for item in range(items):
        ids, values = reference.similar_items(item, N=k + 1)
        expected = {int(i): float(v) for i, v in zip(ids, values) if i != item and v > 0}
        ours = {int(j): float(v) for j, v in zip(dst[src == item], score[src == item])}
        # Ties at the k-th place may be broken differently: compare the scores both hold, and
        # the k-th best score itself.
        for j in set(expected) & set(ours):
            assert ours[j] == pytest.approx(expected[j], rel=1e-5)
        if len(expected) >= k and len(ours) >= k:
            kth = sorted(expected.values())[-k]
            assert sorted(ours.values())[-k] == pytest.approx(kth, rel=1e-5)
        compared += len(set(expected) & set(ours))
    assert compared > items * k * 0.9


@pytest.mark.parametrize("measure", ["bm25", "rp3beta", "cosine"])
def test_weighted_scores_match_scipys_sparse_product(measure):
    # Weighted measures (and any measure over valued interactions) accumulate the dot product
    # in single precision: each kept pair's score is scipy's double-precision product of the
    # same factors to 1e-5, and so is each track's k-th best score.
    rng = np.random.default_rng(5)
    users, items, k = 500, 150, 10
    dense = (rng.random((users, items)) < rng.uniform(0.02, 0.2, size=items)) * rng.uniform(
        0.2, 3.0, size=(users, items))
    matrix = sp.csr_matrix(dense)
    cfg = SimilarityConfig(measure=measure, k=k, min_co_count=2)
    src, dst, score, co = neighbours(matrix, cfg)

    user_weight, source, target, _ = _factors(matrix, cfg)
    values = sp.csr_matrix(dense.astype(np.float32).astype(np.float64))
    dot = (values.T @ sp.diags(user_weight) @ values).toarray()
    shared = ((dense > 0).T.astype(np.int64) @ (dense > 0).astype(np.int64))
    expected = dot * source[:, None] * target[None, :]
    expected[(shared < 2) | np.eye(items, dtype=bool)] = 0.0
    assert score == pytest.approx(expected[src, dst], rel=1e-5)
    assert np.array_equal(co, shared[src, dst])
    for item in range(items):
        best = np.sort(expected[item][expected[item] > 0])[::-1][:k]
        ours = np.sort(score[src == item])[::-1]
        assert len(ours) == len(best)
        if len(best):
            assert ours[-1] == pytest.approx(best[-1], rel=1e-5)
    assert len(src) > items * k * 0.9


@pytest.mark.parametrize("measure", ["cosine", "rp3beta"])
def test_a_catalogue_wider_than_16_bit_track_numbers_gives_the_same_neighbours(measure):
    # The kernel stores track numbers in 16 bits up to 65,536 tracks and in 32 above: the
    # same 120 tracks spread over 70,000 columns (the rest never played) must pair the same.
    rng = np.random.default_rng(11)
    users, items = 300, 120
    dense = (rng.random((users, items)) < 0.08) * rng.uniform(0.5, 3.0, size=(users, items))
    narrow = sp.csr_matrix(dense)
    columns = np.sort(rng.choice(70_000, size=items, replace=False))
    coo = narrow.tocoo()
    wide = sp.csr_matrix((coo.data, (coo.row, columns[coo.col])), shape=(users, 70_000))
    cfg = SimilarityConfig(measure=measure, k=10, min_co_count=1)

    src, dst, score, co = neighbours(narrow, cfg)
    wide_src, wide_dst, wide_score, wide_co = neighbours(wide, cfg)
    assert np.array_equal(columns[src], wide_src)
    assert np.array_equal(columns[dst], wide_dst)
    assert np.allclose(score, wide_score, rtol=1e-12)
    assert np.array_equal(co, wide_co)
    assert len(src) > items * 5


def _abc():
    return _plays([("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"),
                   ("u3", "b"), ("u3", "c")])


def _scores(measure: str, **knobs) -> dict[tuple[str, str], float]:
    cfg = SimilarityConfig(measure=measure, min_co_count=1, **knobs)
    return {pair: value[0] for pair, value in _pairs(similar_tracks(_abc(), cfg)).items()}


def test_cooccurrence_jaccard_and_lift_by_hand():
    # n_a = 2, n_b = 3, n_c = 2 over U = 3 users; co(a,b) = 2, co(a,c) = 1.
    assert _scores("cooccurrence")[("a", "b")] == pytest.approx(2)
    assert _scores("jaccard")[("a", "b")] == pytest.approx(2 / (2 + 3 - 2))
    assert _scores("jaccard")[("a", "c")] == pytest.approx(1 / (2 + 2 - 1))
    assert _scores("lift")[("a", "b")] == pytest.approx(2 * 3 / (2 * 3))
    assert _scores("lift")[("a", "c")] == pytest.approx(1 * 3 / (2 * 2))


def test_bm25_by_hand():
    k1, b = 1.2, 0.75
    idf = {"u1": math.log1p(3 / 3), "u2": math.log1p(3 / 2), "u3": math.log1p(3 / 2)}
    mean_mass = 7 / 3

    def factor(mass):
        return (k1 + 1) / (k1 * (1 - b + b * mass / mean_mass) + 1)

    expected = (idf["u1"] + idf["u2"]) * factor(2) * factor(3)
    assert _scores("bm25", bm25_k1=k1, bm25_b=b)[("a", "b")] == pytest.approx(expected)


def test_user_cap_keeps_each_users_most_recent_tracks():
    from helpers import events

    fb = feedback(events([("u1", "a", "play", 1), ("u1", "b", "play", 2), ("u1", "c", "play", 3),
                          ("u2", "a", "play", 1), ("u2", "b", "play", 2), ("u2", "c", "play", 3)]),
                  FeedbackConfig())
    capped = _pairs(similar_tracks(fb, SimilarityConfig(measure="cooccurrence", min_co_count=1,
                                                        max_user_tracks=2)))
    # Only b and c (the two most recent) count for each user.
    assert set(capped) == {("b", "c"), ("c", "b")}
    assert capped[("b", "c")] == (pytest.approx(2), 2)


def test_time_decay_halves_weight_per_half_life():
    from helpers import day, events

    fb = feedback(events([("u1", "a", "play", 0), ("u1", "b", "play", 2)]), FeedbackConfig())
    cfg = SimilarityConfig(measure="cooccurrence", min_co_count=1, half_life_days=1)
    decayed = _pairs(similar_tracks(fb, cfg, moment=day(2)))
    # a is two half-lives old (weight 1/4), b is fresh (weight 1): dot = 1/4; co_count stays 1.
    assert decayed[("a", "b")] == (pytest.approx(0.25), 1)
