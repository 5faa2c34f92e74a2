"""Walks: personalized PageRank over the listener graph, by random walks with restart.

The graph has the users and the tracks as nodes and an edge for each positive (user, track)
pair (skips never make one), weighted by strength when `walks.weighted` is on; follow edges
between users may be added. A hop goes from a track to one of its listeners (and, with
`walks.follow_probability`, on to an account that listener follows) and then to one of that
listener's tracks. Before each hop a walk ends with probability `walks.restart`, and the next
starts again from one of the user's seed tracks; the share of all visits that a track gets is
then its personalized PageRank on the track-to-track chain of hops, which is what the tests
check against an exact power iteration.

What makes it a recommender rather than a plain PageRank:

- each seed gets a share of the user's `walks.walks_per_user` walks in proportion to its
  weight times its listeners to the power `walks.seed_degree_exponent` (more for a popular
  seed, but sub-linearly);
- multi-hit boosting (`walks.boost`): the score of a track is (sum over seeds of
  sqrt(visits from that seed)) ** 2, normalized to sum 1, so that agreement between seeds
  beats many visits from a single one;
- hubs: the `walks.hub_share` of tracks and of listeners with the most edges carry at most
  `walks.hub_cap` times the user's walks each; a walk arriving at a used-up hub ends there.

The walks are seeded per user (by `walks.seed` and the user's index), so a user's result does
not depend on the number of threads or on the other users of the partition. For explanations,
`walk_paths` replays the same walks and counts the hops that land on chosen tracks: from which
seed, from which track, through which listener.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numba
import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import schema as s
from recsys.config import WalksConfig
from recsys.ids import IdMap
from recsys.stages.feedback import POSITIVE, STRENGTH
from recsys.stages.walks_kernel import KernelGraph, KernelParams, alias_tables
from recsys.stages import walks_kernel

log = logging.getLogger(__name__)

USER, TRACK = "user", "track"
SEED_TRACK, VIA_TRACK, LISTENER, FOLLOWED = "seed_track", "via_track", "listener", "followed"
WALK_SCORE, WALK_VISITS = "walk_score", "walk_visits"
WALK_SEEDS, WALK_RANK = "walk_seeds", "walk_rank"
PATH_VISITS, PATH_RANK = "path_visits", "path_rank"
# Walks of one seed advanced together by a thread. Part of the result (it orders the draws),
# so it is fixed here rather than configured.
LANES = 16
NO_HUBS = 2**62


@dataclass(frozen=True)
class WalkGraph:
    """The graph the walks move on, in internal indices.

    `track_listeners` (tracks x users) and `listener_tracks` (users x tracks) hold the same
    edges in both directions, with their weights as values; `follows` (users x users) the
    accounts each user follows, or None.
    """

    track_listeners: sp.csr_matrix
    listener_tracks: sp.csr_matrix
    follows: sp.csr_matrix | None = None

    @property
    def tracks(self) -> int:
        return self.track_listeners.shape[0]


@dataclass(frozen=True)
class Walks:
    """What the walks of a set of users found.

    `visited` has one row per (user, track) kept: user, track, walk_score (the share of the
    user's boosted visits, or of the plain visits with boosting off), walk_visits, walk_seeds
    (how many seeds' walks reached it) and walk_rank from 1. `steps` counts the steps walked
    per row of the seeds.
    """

    visited: pl.DataFrame
    steps: np.ndarray


def bipartite_graph(
    user_tracks: sp.csr_matrix, *, follows: sp.csr_matrix | None = None
) -> WalkGraph:
    """The listener graph of a users x tracks matrix of positive pairs (values: strengths),
    with an optional users x users matrix of follows."""
    user_tracks = sp.csr_matrix(user_tracks, dtype=np.float64)
    user_tracks.sum_duplicates()
    if follows is not None:
        follows = sp.csr_matrix(follows, dtype=np.float64)
        follows.sum_duplicates()
    return WalkGraph(user_tracks.T.tocsr(), user_tracks, follows)


def directed_graph(adjacency: sp.csr_matrix) -> WalkGraph:
    """Any directed graph (nodes x nodes, edge weights as values) as a walk graph: each hop
    follows one edge, through an identity middle side, so the visits are the graph's own
    personalized PageRank (with restart, and mass at a node without out-edges going back to
    the seeds)."""
    adjacency = sp.csr_matrix(adjacency, dtype=np.float64)
    adjacency.sum_duplicates()
    identity = sp.identity(adjacency.shape[0], dtype=np.float64, format="csr")
    return WalkGraph(adjacency, identity)


def seed_walks(graph: WalkGraph, seeds: sp.csr_matrix, cfg: WalksConfig) -> np.ndarray:
    """Walks per stored seed entry: each row's `walks_per_user` shared in proportion to the
    seed's weight times its listeners ** `seed_degree_exponent`, rounded so a row sums to
    exactly `walks_per_user` (or 0 for a row without weight)."""
    listeners = np.maximum(np.diff(graph.track_listeners.indptr)[seeds.indices], 1)
    weight = seeds.data * listeners.astype(np.float64) ** cfg.seed_degree_exponent
    row = np.repeat(np.arange(seeds.shape[0]), np.diff(seeds.indptr))
    totals = np.bincount(row, weights=weight, minlength=seeds.shape[0])
    share = np.divide(weight, totals[row], out=np.zeros_like(weight), where=totals[row] > 0)

    # Cumulative rounding inside each row: the walks add up to the budget exactly.
    running = np.cumsum(share)
    before = np.concatenate([[0.0], running])[seeds.indptr[:-1]][row]
    upper = np.rint((running - before) * cfg.walks_per_user)
    lower = np.rint((running - before - share) * cfg.walks_per_user)
    return (upper - lower).astype(np.int64)


def walk(
    graph: WalkGraph,
    seeds: sp.csr_matrix,
    cfg: WalksConfig,
    *,
    users: np.ndarray | None = None,
    exclude: sp.csr_matrix | None = None,
) -> Walks:
    """Walk from every row of `seeds` (rows: users of a partition; columns: tracks; values:
    seed weights) and keep each row's `max_tracks` best visited tracks.

    `users` gives each row's user index (it keys the random numbers; default: the row
    number); `exclude` (same rows, tracks as columns) lists tracks never returned, such as
    those already heard; they still count in the scores' total.
    """
    started = time.perf_counter()
    seeds = _rows_csr(seeds, graph.tracks)
    exclude = _rows_csr(exclude, graph.tracks, rows=seeds.shape[0])
    users = _users(users, seeds.shape[0])
    track, score, visits, reach, steps = walks_kernel.walk_scores(
        _kernel_graph(graph, cfg), _kernel_params(cfg), users,
        seeds.indptr.astype(np.int64), seeds.indices.astype(np.int32),
        seed_walks(graph, seeds, cfg), exclude.indptr.astype(np.int64),
        exclude.indices.astype(np.int32), graph.tracks, cfg.max_tracks, _chunks(),
    )
    found = track >= 0
    visited = pl.DataFrame(
        {
            USER: np.broadcast_to(users[:, None], track.shape)[found],
            TRACK: track[found].astype(np.int64),
            WALK_SCORE: score[found],
            WALK_VISITS: visits[found].astype(np.int64),
            WALK_SEEDS: reach[found].astype(np.int64),
            WALK_RANK: np.broadcast_to(np.arange(1, track.shape[1] + 1), track.shape)[found],
        }
    )
    log.debug(
        "walks: %s users, %s steps, %s visited tracks kept in %.1f s",
        f"{seeds.shape[0]:,}", f"{int(steps.sum()):,}", f"{visited.height:,}",
        time.perf_counter() - started,
    )
    return Walks(visited, steps)


def walk_paths(
    graph: WalkGraph,
    seeds: sp.csr_matrix,
    targets: sp.csr_matrix,
    cfg: WalksConfig,
    *,
    users: np.ndarray | None = None,
) -> pl.DataFrame:
    """The most travelled last hops into each row's `targets` (same rows as `seeds`, tracks as
    columns), replaying exactly the walks of `walk` with the same arguments.

    One row per (user, track, path) with the `paths_per_track` best paths: seed_track (whose
    walk it was), via_track (the track the hop left; the seed itself for a first hop),
    listener (who played both), followed (the account the listener follows through which
    the hop went, or null), path_visits and path_rank from 1.
    """
    seeds = _rows_csr(seeds, graph.tracks)
    targets = _rows_csr(targets, graph.tracks, rows=seeds.shape[0])
    users = _users(users, seeds.shape[0])
    walks = seed_walks(graph, seeds, cfg)
    totals = np.add.reduceat(walks, seeds.indptr[:-1]) if len(walks) else np.zeros(1)
    capacity = int(totals.max(initial=0)) * cfg.max_length + 1
    path, visits = walks_kernel.walk_paths(
        _kernel_graph(graph, cfg), _kernel_params(cfg), users,
        seeds.indptr.astype(np.int64), seeds.indices.astype(np.int32), walks,
        targets.indptr.astype(np.int64), targets.indices.astype(np.int32), graph.tracks,
        cfg.paths_per_track, capacity, _chunks(),
    )
    found = visits > 0
    row = np.repeat(np.arange(seeds.shape[0]), np.diff(targets.indptr))
    followed = path[..., 3][found]
    return pl.DataFrame(
        {
            USER: np.broadcast_to(users[row][:, None], visits.shape)[found],
            TRACK: np.broadcast_to(targets.indices[:, None], visits.shape)[found].astype(np.int64),
            SEED_TRACK: path[..., 0][found],
            VIA_TRACK: path[..., 1][found],
            LISTENER: path[..., 2][found],
            FOLLOWED: pl.Series(followed).set(pl.Series(followed < 0), None),
            PATH_VISITS: visits[found],
            PATH_RANK: np.broadcast_to(np.arange(1, visits.shape[1] + 1), visits.shape)[found],
        }
    )


def _rows_csr(matrix: sp.csr_matrix | None, tracks: int, *, rows: int | None = None):
    """A canonical CSR (sorted, no duplicates) with `tracks` columns; empty when None."""
    if matrix is None:
        return sp.csr_matrix((rows, tracks), dtype=np.float64)
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    matrix.sum_duplicates()
    if matrix.shape[1] != tracks or (rows is not None and matrix.shape[0] != rows):
        expected = f"({rows if rows is not None else 'users'}, {tracks})"
        raise ValueError(f"walks: a matrix of shape {matrix.shape} where {expected} is needed")
    return matrix


def _users(users: np.ndarray | None, rows: int) -> np.ndarray:
    if users is None:
        return np.arange(rows, dtype=np.int64)
    users = np.asarray(users, dtype=np.int64)
    if users.shape != (rows,):
        raise ValueError(f"walks: {len(users)} user indices for {rows} rows of seeds")
    return users


def _chunks() -> int:
    return numba.get_num_threads() * 4


def _kernel_params(cfg: WalksConfig) -> KernelParams:
    return KernelParams(
        restart=_threshold(cfg.restart),
        follow=_threshold(cfg.follow_probability),
        max_length=cfg.max_length,
        hub_cap=max(1, math.ceil(cfg.hub_cap * cfg.walks_per_user)),
        boost=cfg.boost,
        weighted=cfg.weighted,
        seed=np.uint64(cfg.seed),
        lanes=LANES,
    )


def _threshold(chance: float) -> np.uint64:
    """A chance as a threshold on 32 random bits."""
    return np.uint64(round(chance * 2**32))


def _kernel_graph(graph: WalkGraph, cfg: WalksConfig) -> KernelGraph:
    forward, back = graph.track_listeners, graph.listener_tracks
    follows = graph.follows
    if follows is None or cfg.follow_probability == 0:
        follows = sp.csr_matrix((back.shape[0], back.shape[0]))
    item_hub, item_hub_degree = _hubs(np.diff(forward.indptr), cfg.hub_share)
    middle_hub, middle_hub_degree = _hubs(np.diff(back.indptr), cfg.hub_share)
    item_hubs = int((item_hub >= 0).sum())
    middle_hubs = int((middle_hub >= 0).sum())
    middle_hub[middle_hub >= 0] += item_hubs  # one numbering of the hubs of both sides
    return KernelGraph(
        forward.indptr.astype(np.int64), forward.indices.astype(np.int32),
        *_alias(forward, cfg.weighted),
        back.indptr.astype(np.int64), back.indices.astype(np.int32),
        *_alias(back, cfg.weighted),
        follows.indptr.astype(np.int64), follows.indices.astype(np.int32),
        item_hub, item_hub_degree, middle_hub, middle_hub_degree, item_hubs + middle_hubs,
    )


def _alias(matrix: sp.csr_matrix, weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    if not weighted:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return alias_tables(matrix.indptr.astype(np.int64), matrix.data.astype(np.float64))


def _hubs(degree: np.ndarray, share: float | None) -> tuple[np.ndarray, int]:
    """Each node's hub slot (-1 for the others) and the degree from which a node is a hub:
    the `share` of nodes with the most edges, and never a node with fewer than 2."""
    slot = np.full(len(degree), -1, dtype=np.int32)
    if share is None or len(degree) == 0:
        return slot, NO_HUBS
    count = math.ceil(share * len(degree))
    threshold = max(2, int(np.partition(degree, len(degree) - count)[len(degree) - count]))
    hub = degree >= threshold
    slot[hub] = np.arange(int(hub.sum()), dtype=np.int32)
    return slot, threshold


@dataclass(frozen=True)
class ListenerGraph:
    """The walk graph of a feedback frame, with the id maps of its users and tracks."""

    graph: WalkGraph
    users: IdMap
    tracks: IdMap


def listener_graph(
    feedback: pl.DataFrame, *, follows: pl.DataFrame | None = None
) -> ListenerGraph:
    """The walk graph of the positive pairs of `feedback` (strength as weight), with the follow
    edges between its users (follower_id, followee_id) when given."""
    pos = feedback.filter(pl.col(POSITIVE)).select(s.USER_ID, s.TRACK_ID, STRENGTH)
    users, tracks = IdMap(pos[s.USER_ID]), IdMap(pos[s.TRACK_ID])
    pos = tracks.to_index(users.to_index(pos, s.USER_ID, alias="u"), s.TRACK_ID, alias="t")
    matrix = sp.csr_matrix(
        (pos[STRENGTH].to_numpy(), (pos["u"].to_numpy(), pos["t"].to_numpy())),
        shape=(len(users), len(tracks)),
    )
    follow_matrix = None
    if follows is not None:
        edges = users.to_index(follows, s.FOLLOWER_ID, alias="a")
        edges = users.to_index(edges, s.FOLLOWEE_ID, alias="b").drop_nulls(["a", "b"])
        follow_matrix = sp.csr_matrix(
            (np.ones(edges.height), (edges["a"].to_numpy(), edges["b"].to_numpy())),
            shape=(len(users), len(users)),
        )
    return ListenerGraph(bipartite_graph(matrix, follows=follow_matrix), users, tracks)


def _pairs_matrix(lg: ListenerGraph, pairs: pl.DataFrame, users: np.ndarray) -> sp.csr_matrix:
    """(user_id, track_id) pairs as a CSR with one row per entry of `users` (graph indices),
    pairs of other users or of tracks unknown to the graph left out."""
    rows = pl.DataFrame({"u": users.astype(np.uint32)}).with_row_index("row")
    pairs = lg.tracks.to_index(lg.users.to_index(pairs, s.USER_ID, alias="u"), s.TRACK_ID,
                               alias="t").join(rows, on="u").drop_nulls("t")
    return sp.csr_matrix(
        (np.ones(pairs.height), (pairs["row"].to_numpy(), pairs["t"].to_numpy())),
        shape=(len(users), len(lg.tracks)),
    )


def _seed_users(lg: ListenerGraph, user_seeds: pl.DataFrame) -> np.ndarray:
    known = lg.users.to_index(user_seeds.select(s.USER_ID).unique(), s.USER_ID, alias="u")
    return np.sort(known["u"].drop_nulls().to_numpy())


def walk_candidates(
    lg: ListenerGraph, user_seeds: pl.DataFrame, heard: pl.DataFrame, cfg: WalksConfig
) -> pl.DataFrame:
    """user_id, track_id, walk_score, walk_visits, walk_seeds, walk_rank: the best tracks that
    the walks from each user's seeds (user_id, track_id) visited, without the (user_id,
    track_id) pairs of `heard`."""
    users = _seed_users(lg, user_seeds)
    seeds = _pairs_matrix(lg, user_seeds, users)
    exclude = _pairs_matrix(lg, heard, users)
    visited = walk(lg.graph, seeds, cfg, users=users, exclude=exclude).visited
    return visited.select(
        lg.users.to_ids(visited[USER].to_numpy()).alias(s.USER_ID),
        lg.tracks.to_ids(visited[TRACK].to_numpy()).alias(s.TRACK_ID),
        WALK_SCORE, WALK_VISITS, WALK_SEEDS, WALK_RANK,
    )


def walk_reasons(
    lg: ListenerGraph, user_seeds: pl.DataFrame, targets: pl.DataFrame, cfg: WalksConfig
) -> pl.DataFrame:
    """user_id, track_id, seed_track_id, via_track_id, listener_id, followed_id, path_visits,
    path_rank: the top paths of `walk_paths` into the (user_id, track_id) pairs of `targets`,
    from the same walks as `walk_candidates` with the same seeds."""
    users = _seed_users(lg, user_seeds)
    paths = walk_paths(lg.graph, _pairs_matrix(lg, user_seeds, users),
                       _pairs_matrix(lg, targets, users), cfg, users=users)
    to_user = lambda col: lg.users.to_ids(paths[col].fill_null(0).to_numpy())  # noqa: E731
    to_track = lambda col: lg.tracks.to_ids(paths[col].to_numpy())  # noqa: E731
    return pl.DataFrame(
        {
            s.USER_ID: to_user(USER),
            s.TRACK_ID: to_track(TRACK),
            "seed_track_id": to_track(SEED_TRACK),
            "via_track_id": to_track(VIA_TRACK),
            "listener_id": to_user(LISTENER),
            "followed_id": to_user(FOLLOWED).set(paths[FOLLOWED].is_null(), None),
            PATH_VISITS: paths[PATH_VISITS],
            PATH_RANK: paths[PATH_RANK],
        }
    )
