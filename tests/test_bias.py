"""Popularity-bias measures and curator rules, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys import bias
from recsys.config import CurationConfig
from recsys.stages.curation import apply_rules

from helpers import tracks


def test_gini_by_hand_and_against_mean_absolute_difference():
    assert bias.gini(np.array([1, 1, 1, 1])) == pytest.approx(0.0)
    # One of four gets everything: (2*4 - 4 - 1) * 1 / (4 * 1) = 0.75.
    assert bias.gini(np.array([0, 0, 0, 5])) == pytest.approx(0.75)
    values = np.random.default_rng(0).pareto(1.5, size=300)
    pairwise = np.abs(values[:, None] - values[None, :]).sum()
    assert bias.gini(values) == pytest.approx(pairwise / (2 * len(values) ** 2 * values.mean()))


def test_lorenz_curve_of_one_winner():
    x, y = bias.lorenz(np.array([0, 0, 0, 4]), points=5)
    assert x.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert y.tolist() == [0, 0, 0, 0, 1.0]


def _world():
    catalogue = tracks([("hit", "star", "pop"), ("b", "indie", "pop"), ("c", "indie", "rock"),
                        ("d", None, "rock")])
    popularity = pl.DataFrame({"track_id": ["hit", "b", "c", "d"], "popularity": [8, 1, 1, 0]})
    recs = pl.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2", "u3", "u3"],
        "track_id": ["hit", "b", "hit", "c", "hit", "b"],
    })
    similar = pl.DataFrame({"track_id": ["b", "c", "b"], "neighbour_id": ["hit", "hit", "c"]})
    return recs, popularity, catalogue, similar


def test_exposure_and_summary_by_hand():
    exposed = bias.exposure(*_world())
    tracks = exposed.filter(pl.col("entity") == "track")
    hit = tracks.filter(pl.col("entity_id") == "hit").row(0, named=True)
    # hit: 3 of 6 slots, 3 users, 8 of 10 listeners, amplification 0.5 / 0.8, in-degree 2.
    assert (hit["slots"], hit["users_reached"], hit["in_degree"]) == (3, 3, 2)
    assert hit["recommendation_share"] == pytest.approx(0.5)
    assert hit["amplification"] == pytest.approx(0.5 / 0.8)
    indie = exposed.filter(pl.col("entity_id") == "indie").row(0, named=True)
    assert (indie["slots"], indie["users_reached"], indie["listeners"]) == (3, 3, 2)
    d = exposed.filter(pl.col("entity_id") == "d").row(0, named=True)
    assert d["amplification"] is None  # nobody listened: no ratio

    metrics = {(r["entity"], r["metric"]): r["value"]
               for r in bias.bias_metrics(exposed).iter_rows(named=True)}
    # Tracks by listeners: hit 8, b 1, c 1, d 0; the top 1% is one track: hit, with 3 of 6.
    assert metrics[("track", "top1_share")] == pytest.approx(0.5)
    # The head making 80% of listening is hit alone (8 of 10): the tail gets b and c, 3 of 6.
    assert metrics[("track", "tail_share")] == pytest.approx(0.5)
    assert metrics[("track", "coverage")] == pytest.approx(3 / 4)
    # Mean listeners per slot: (3*8 + 2*1 + 1*1) / 6.
    assert metrics[("track", "mean_popularity")] == pytest.approx(27 / 6)
    # Creators: star (3 slots) and indie (3 slots); d has no creator and is not one.
    assert metrics[("creator", "gini")] == pytest.approx(0.0)
    assert metrics[("creator", "coverage")] == pytest.approx(1.0)


def test_curator_rules_block_and_cap_creators():
    catalogue = tracks([("a1", "A", "x"), ("a2", "A", "x"), ("a3", "A", "x"), ("b1", "B", "x"),
                        ("n1", None, "x"), ("n2", None, "x")])
    scored = pl.DataFrame({
        "user_id": ["u"] * 6,
        "track_id": ["a1", "a2", "a3", "n1", "n2", "b1"],
        "score": [6.0, 5, 4, 3, 2, 1],
    })
    cfg = CurationConfig(max_per_creator=1, block_tracks=("n1",))
    kept, effects = apply_rules(scored, catalogue, cfg, n=3)
    # n1 is blocked; A keeps only its best track; unknown creators are never capped.
    assert kept.sort("score", descending=True)["track_id"].to_list() == ["a1", "n2", "b1"]
    # Top 3 before blocking: a1 a2 a3 (n1 was 4th): the block list took nothing out of it.
    # Top 3 before the cap: a1 a2 a3; after: a1 n2 b1: two removed.
    assert effects.rows() == [("block_list", 0, 0), ("max_per_creator", 2, 1)]
