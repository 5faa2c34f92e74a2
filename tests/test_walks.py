"""Walks: exact personalized PageRank as the reference, hand cases for boosting, hubs, paths,
follows and the budget, and reproducibility."""

from __future__ import annotations

import numba
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recsys.config import FeedbackConfig, WalksConfig
from recsys.stages.feedback import feedback
from recsys.stages.walks import (
    bipartite_graph,
    directed_graph,
    listener_graph,
    seed_walks,
    walk,
    walk_candidates,
    walk_paths,
    walk_reasons,
)
from helpers import events

# Boosting, hubs and the degree-normalized budget off: the visits are a plain PageRank.
PLAIN = dict(boost=False, hub_share=None, seed_degree_exponent=0.0, max_length=200)


def _scores(graph, seeds, cfg, nodes) -> np.ndarray:
    """The first user's walk score of every node (0 where not visited)."""
    visited = walk(graph, seeds, cfg).visited.filter(pl.col("user") == 0)
    out = np.zeros(nodes)
    out[visited["track"].to_numpy()] = visited["walk_score"].to_numpy()
    return out


def _exact_pagerank(transition: sp.csr_matrix, personalization: np.ndarray, restart: float):
    """Personalized PageRank by power iteration: restart to the personalization with chance
    `restart`, and always from a node without out-edges."""
    out = np.asarray(transition.sum(axis=1)).ravel()
    inverse = np.divide(1.0, out, out=np.zeros_like(out), where=out > 0)
    step = (sp.diags(inverse) @ transition).T.tocsr()
    dangling = out == 0
    v = personalization / personalization.sum()
    rank = v.copy()
    for _ in range(10_000):
        new = restart * v + (1 - restart) * (step @ rank + rank[dangling].sum() * v)
        if np.abs(new - rank).sum() < 1e-13:
            break
        rank = new
    return new


def _directed(edges: list[tuple[int, int, float]], nodes: int) -> sp.csr_matrix:
    src, dst, w = zip(*edges)
    return sp.csr_matrix((w, (src, dst)), shape=(nodes, nodes))


# Eight nodes: a cycle with chords, weights from 1 to 4, node 6 without out-edges and node 7
# unreachable from the personalization.
GRAPH = _directed(
    [(0, 1, 1.0), (0, 2, 3.0), (1, 2, 1.0), (1, 3, 2.0), (2, 0, 1.0), (2, 4, 1.0),
     (3, 4, 4.0), (3, 6, 1.0), (4, 5, 2.0), (4, 0, 1.0), (5, 1, 1.0), (5, 6, 3.0),
     (7, 0, 1.0)],
    8,
)


@pytest.mark.parametrize("weighted", [False, True])
def test_walks_converge_to_exact_personalized_pagerank(weighted):
    adjacency = GRAPH if weighted else (GRAPH > 0).astype(np.float64)
    personalization = np.array([0, 0, 0, 3.0, 0, 1.0, 0, 0])
    seeds = sp.csr_matrix(personalization[None, :])
    cfg = WalksConfig(**PLAIN, restart=0.25, walks_per_user=100_000, weighted=weighted,
                      max_tracks=8)

    scores = _scores(directed_graph(GRAPH), seeds, cfg, 8)

    exact = _exact_pagerank(adjacency, personalization, 0.25)
    assert np.abs(scores - exact).sum() < 0.02
    assert scores.sum() == pytest.approx(1.0)
    assert scores[7] == 0.0 and exact[7] == 0.0


def test_bipartite_walks_converge_to_the_pagerank_of_the_track_to_track_hops():
    # A hop is track -> listener -> track, each half uniform: the chain is T x U times U x T.
    rng = np.random.default_rng(3)
    user_tracks = sp.csr_matrix((rng.random((12, 9)) < 0.3).astype(np.float64))
    user_tracks[0, 0] = 1.0
    graph = bipartite_graph(user_tracks)
    row_normal = lambda m: sp.diags(1 / np.asarray(m.sum(axis=1)).ravel()) @ m  # noqa: E731
    hops = row_normal(graph.track_listeners) @ row_normal(graph.listener_tracks)
    personalization = np.zeros(9)
    personalization[0] = 1.0
    cfg = WalksConfig(**PLAIN, restart=0.3, walks_per_user=100_000, max_tracks=9)

    scores = _scores(graph, sp.csr_matrix(personalization[None, :]), cfg, 9)

    assert np.abs(scores - _exact_pagerank(sp.csr_matrix(hops), personalization, 0.3)).sum() < 0.02


def test_mass_at_a_dangling_node_returns_to_the_personalization():
    # The single edge 1 -> 2, all personalization on node 2, which has no out-edge.
    graph = directed_graph(_directed([(1, 2, 1.0)], 3))
    seeds = sp.csr_matrix(([1.0], ([0], [2])), shape=(1, 3))

    scores = _scores(graph, seeds, WalksConfig(**PLAIN, walks_per_user=1_000), 3)

    assert scores.tolist() == [0.0, 0.0, 1.0]


def test_boosting_ranks_a_track_from_two_seeds_above_one_from_a_single_seed():
    # One hop per walk: seed A (two walks) -> Y; seeds B and C (one walk each) -> X. X and Y
    # get two visits each; boosted, X scores (1 + 1) ** 2 = 4 and Y (sqrt 2) ** 2 = 2, out of
    # a total of 10 with the seeds' own visits (A: 2, B: 1, C: 1).
    a, b, c, x, y = range(5)
    graph = directed_graph(_directed([(a, y, 1.0), (b, x, 1.0), (c, x, 1.0)], 5))
    seeds = sp.csr_matrix(([2.0, 1.0, 1.0], ([0, 0, 0], [a, b, c])), shape=(1, 5))
    one_hop = dict(restart=1e-9, max_length=1, walks_per_user=4, seed_degree_exponent=0.0,
                   hub_share=None)

    boosted = walk(graph, seeds, WalksConfig(**one_hop)).visited
    plain = walk(graph, seeds, WalksConfig(**one_hop, boost=False)).visited

    rows = {r["track"]: r for r in boosted.iter_rows(named=True)}
    assert (rows[x]["walk_score"], rows[x]["walk_visits"], rows[x]["walk_seeds"]) == (
        pytest.approx(0.4), 2, 2)
    assert (rows[y]["walk_score"], rows[y]["walk_visits"], rows[y]["walk_seeds"]) == (
        pytest.approx(0.2), 2, 1)
    assert rows[x]["walk_rank"] < rows[y]["walk_rank"]
    plain_scores = dict(plain.select("track", "walk_score").iter_rows())
    assert plain_scores[x] == plain_scores[y] == pytest.approx(0.25)


def test_hub_cap_bounds_the_steps_through_a_hub():
    # Seed S -> hub H -> 50 leaves. With a cap of 2% of 1,000 walks, at most 20 walks go
    # on through H; without hubs nearly every walk does.
    s, h = 0, 1
    graph = directed_graph(_directed([(s, h, 1.0)] + [(h, 2 + i, 1.0) for i in range(50)], 52))
    seeds = sp.csr_matrix(([1.0], ([0], [s])), shape=(1, 52))
    base = dict(restart=0.01, walks_per_user=1_000, max_tracks=52, boost=False)

    capped = walk(graph, seeds, WalksConfig(**base, hub_share=0.02, hub_cap=0.02)).visited
    free = walk(graph, seeds, WalksConfig(**base, hub_share=None)).visited

    leaves = lambda frame: frame.filter(pl.col("track") >= 2)["walk_visits"].sum()  # noqa: E731
    assert leaves(capped) == 20
    assert leaves(free) > 950


def test_seed_budget_grows_sub_linearly_with_listeners():
    # Seed tracks with 1, 4 and 16 listeners: with exponent 0.5 their walks go 1 : 2 : 4.
    user_tracks = sp.csr_matrix(np.array([[1, 1, 1]] + [[0, 1, 1]] * 3 + [[0, 0, 1]] * 12,
                                         dtype=np.float64))
    graph = bipartite_graph(user_tracks)
    seeds = sp.csr_matrix(np.ones((2, 3)))
    seeds[1, 0] = 0.0
    seeds.eliminate_zeros()

    walks = seed_walks(graph, seeds, WalksConfig(walks_per_user=700, seed_degree_exponent=0.5))

    assert walks.tolist() == [100, 200, 400, 233, 467]
    flat = seed_walks(graph, seeds, WalksConfig(walks_per_user=700, seed_degree_exponent=0.0))
    assert flat.tolist() == [233, 234, 233, 350, 350]


def _random_graph(users=400, tracks=150, seed=0):
    rng = np.random.default_rng(seed)
    popularity = np.arange(1, tracks + 1) ** -0.8
    pairs = np.column_stack([rng.integers(0, users, 6_000),
                             rng.choice(tracks, 6_000, p=popularity / popularity.sum())])
    matrix = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), (users, tracks))
    matrix.data[:] = 1.0
    return matrix


def test_same_seed_same_result_for_any_thread_count_and_partition():
    user_tracks = _random_graph()
    graph = bipartite_graph(user_tracks)
    cfg = WalksConfig(walks_per_user=300, hub_share=0.05)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = walk(graph, user_tracks, cfg).visited
    finally:
        numba.set_num_threads(threads)
    many = walk(graph, user_tracks, cfg).visited
    alone = walk(graph, user_tracks[[7]], cfg, users=np.array([7])).visited
    other_seed = walk(graph, user_tracks, cfg.model_copy(update={"seed": 1})).visited

    assert one.equals(many)
    assert alone.equals(many.filter(pl.col("user") == 7))
    assert not other_seed.equals(many)


def test_paths_replay_the_walks_and_follow_real_edges():
    user_tracks = _random_graph()
    graph = bipartite_graph(user_tracks)
    seeds = user_tracks[:20]
    cfg = WalksConfig(walks_per_user=400, paths_per_track=10_000, max_tracks=10)
    visited = walk(graph, seeds, cfg, exclude=seeds).visited
    targets = sp.csr_matrix(
        (np.ones(visited.height), (visited["user"].to_numpy(), visited["track"].to_numpy())),
        shape=seeds.shape,
    )

    paths = walk_paths(graph, seeds, targets, cfg)

    # Every visit of a track outside the seeds arrived by a hop, and each hop is one path.
    per_track = paths.group_by("user", "track").agg(pl.col("path_visits").sum())
    joined = visited.join(per_track, on=["user", "track"])
    assert joined.height == visited.height
    assert (joined["walk_visits"] == joined["path_visits"]).all()
    # The listener played both the track the hop left and the one it reached.
    dense = user_tracks.toarray()
    for row in paths.iter_rows(named=True):
        assert dense[row["listener"], row["via_track"]] and dense[row["listener"], row["track"]]
        assert dense[row["user"], row["seed_track"]]
    assert paths["followed"].null_count() == paths.height


def test_follow_edges_reach_the_tracks_of_followed_accounts():
    # u0 played only A, u1 only B; u0 follows u1. From A, B is reachable only through follows.
    user_tracks = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0]]))
    follows = sp.csr_matrix(np.array([[0.0, 1.0], [0.0, 0.0]]))
    seeds = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 2))
    cfg = WalksConfig(walks_per_user=200, hub_share=None, follow_probability=0.5)

    with_follows = walk(bipartite_graph(user_tracks, follows=follows), seeds, cfg).visited
    without = walk(bipartite_graph(user_tracks), seeds, cfg).visited
    paths = walk_paths(bipartite_graph(user_tracks, follows=follows), seeds,
                       sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 2)), cfg)

    assert 1 in with_follows["track"].to_list()
    assert without["track"].to_list() == [0]
    # First hops into B go A -> u0 -> (follows) u1 -> B; later ones B -> u1 -> B.
    assert set(paths.select("seed_track", "via_track", "listener", "followed").rows()) == {
        (0, 0, 0, 1), (0, 1, 1, None)}


def test_candidates_and_reasons_by_ids_leave_out_heard_tracks_and_skips():
    # Everybody plays a; a skip of z is heard but never an edge, so z is never reached.
    fb = feedback(
        events(
            [("u1", "a", "play", 0), ("u1", "z", "skip", 0),
             ("u2", "a", "play", 0), ("u2", "b", "play", 0), ("u2", "z", "skip", 0),
             ("u3", "a", "play", 0), ("u3", "c", "play", 0), ("u3", "z", "play", 0),
             ("u3", "z", "skip", 1), ("u3", "z", "skip", 2)]
        ),
        FeedbackConfig(),
    )
    lg = listener_graph(fb)
    user_seeds = pl.DataFrame({"user_id": ["u1"], "track_id": ["a"]})
    cfg = WalksConfig(walks_per_user=500, hub_share=None)

    found = walk_candidates(lg, user_seeds, fb.select("user_id", "track_id"), cfg)
    reasons = walk_reasons(lg, user_seeds, found.select("user_id", "track_id"), cfg)

    assert found.columns == ["user_id", "track_id", "walk_score", "walk_visits", "walk_seeds",
                             "walk_rank"]
    assert sorted(found["track_id"].to_list()) == ["b", "c"]
    # Into b: the first hop from seed a through u2, and the hops that stay with u2 (b -> b).
    assert reasons.filter(pl.col("track_id") == "b").sort("via_track_id").select(
        "seed_track_id", "via_track_id", "listener_id", "followed_id").rows() == [
        ("a", "a", "u2", None), ("a", "b", "u2", None)]
