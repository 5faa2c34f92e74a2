"""The compiled core of the random walks: Monte Carlo walks with restart, all users at once.

A walk moves between two sides of a graph: from an item (a track) to one of its middle nodes
(a listener), and from there to one of that listener's items. A move from item to item is a
hop; each of its two halves is a step. Before every hop the walk ends with the restart
probability (the teleport back to the seeds, which starts the next walk), and it also ends at a
node with no edges, after `max_length` hops, and at a hub that has already carried its cap of
the user's walks. A general directed graph is the case where the middle side is the identity:
then a hop is one edge of the graph and the visits are its personalized PageRank.

Speed comes from three choices. The random numbers are SplitMix64, inline, one 64-bit state per
user (so a user's walks do not depend on the thread that runs them). The neighbour of a node
of degree d is picked from 32 random bits by one multiply, `(r * d) >> 32`, or through an alias
table when edges are weighted. And each thread advances several walks of the same seed in
lock step (the lanes): their memory reads are independent, so the processor overlaps their
cache misses instead of waiting for each in turn.

Visits go to dense per-thread arrays with a list of the touched tracks, so resetting them
costs only what a user touched. The walks of one seed run together, so the per-seed visit
count behind multi-hit boosting is kept in the same arrays: a track's running count is folded
into its boosted score when a visit from the next seed arrives.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)
LOW_32 = np.uint64(0xFFFFFFFF)
S27, S30, S31, S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)
# Columns of the per-thread visit counts, one row (a cache line's quarter) per track: the
# position of the latest seed to visit it, its visits from that seed, all its visits, and how
# many seeds visited it.
LAST, CURRENT, VISITS, REACH = 0, 1, 2, 3
# The stages of a lane (see _walk_user).
START, VISIT, LISTENER, MIDDLE, ARRIVE, DONE = 0, 1, 2, 3, 4, 5


class KernelGraph(NamedTuple):
    """A walk graph as plain arrays.

    `item_*` is the item -> middle CSR (a track's listeners) and `middle_*` the middle -> item
    CSR (a listener's tracks); `*_prob` and `*_alias` are their alias tables (empty when the
    walks ignore weights); `follow_*` is the middle -> middle CSR of follows. A node whose
    degree is at least `*_hub_degree` is a hub, with its slot in `*_hub` (one numbering
    for both sides, `hubs` slots).
    """

    item_ptr: np.ndarray
    item_idx: np.ndarray
    item_prob: np.ndarray
    item_alias: np.ndarray
    middle_ptr: np.ndarray
    middle_idx: np.ndarray
    middle_prob: np.ndarray
    middle_alias: np.ndarray
    follow_ptr: np.ndarray
    follow_idx: np.ndarray
    item_hub: np.ndarray
    item_hub_degree: int
    middle_hub: np.ndarray
    middle_hub_degree: int
    hubs: int


class KernelParams(NamedTuple):
    """The walk settings in the kernel's units: chances as thresholds on 32 random bits."""

    restart: np.uint64
    follow: np.uint64
    max_length: int
    hub_cap: int
    boost: bool
    weighted: bool
    seed: np.uint64
    lanes: int


@numba.njit(inline="always")
def _mix(z):
    """SplitMix64's output function: 64 well-mixed bits from a counter."""
    z = (z ^ (z >> S30)) * MIX_1
    z = (z ^ (z >> S27)) * MIX_2
    return z ^ (z >> S31)


@numba.njit(inline="always")
def _below(bits, degree):
    """A uniform integer in [0, degree) from 32 random bits, by one multiply."""
    return np.int64(((bits & LOW_32) * np.uint64(degree)) >> S32)


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the processor to bring array[index] into the cache, without waiting for it."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        data = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, data, [args[1]],
                                           wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            "llvm.prefetch.p0i8",
        )
        # A read, kept in every cache level, of data.
        builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), ir.Constant(i32, 0),
                                ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@numba.njit(nogil=True)
def _walk_user(g, p, owner, key, seeds, walks, visit_buf, hub_buf, lanes_buf, targets, record):
    """All the walks of one user: `walks[i]` walks from track `seeds[i]`, with random numbers
    keyed by `key` and hub passes counted under `owner`. Visits go to `visit_buf`; when
    `targets` marks tracks (slot >= 0), the hops landing on them are written to `record`
    (slot, seed position, from-track, listener, followed account). Returns (tracks touched,
    steps, hops recorded).

    Each lane is a small state machine that does one memory access per turn and prefetches
    the next one (VISIT: count the visit of its track, then restart or pick a listener;
    LISTENER: read it, maybe move to an account it follows; MIDDLE: pick one of its tracks;
    ARRIVE: read that track), so the lanes' cache misses overlap. It is one long function on
    purpose: a helper taking an array costs an atomic reference count per call, which would
    stall those overlapping reads.
    """
    item_ptr, item_idx, item_prob, item_alias = g.item_ptr, g.item_idx, g.item_prob, g.item_alias
    middle_ptr, middle_idx = g.middle_ptr, g.middle_idx
    middle_prob, middle_alias = g.middle_prob, g.middle_alias
    follow_ptr, follow_idx = g.follow_ptr, g.follow_idx
    item_hub, middle_hub = g.item_hub, g.middle_hub
    item_hub_degree, middle_hub_degree = g.item_hub_degree, g.middle_hub_degree
    restart, follow, max_length, weighted = p.restart, p.follow, p.max_length, p.weighted
    hub_cap = p.hub_cap
    hub_passes, hub_owner = hub_buf
    counts, boosted, touched = visit_buf
    stage, node, hops, pos, listener, friend = lanes_buf
    has_targets = len(targets) > 0

    state = _mix(p.seed * GOLDEN + np.uint64(key) + np.uint64(1))
    n_touched, steps, n_record = 0, 0, 0
    for sp in range(len(seeds)):
        q, n_walks = seeds[sp], walks[sp]
        lanes = min(p.lanes, n_walks)
        stage[:lanes] = START
        started, alive = 0, lanes
        while alive > 0:
            for lane in range(lanes):
                now = stage[lane]
                if now == DONE:
                    continue
                if now == LISTENER:
                    j = pos[lane]
                    if weighted:
                        state += GOLDEN
                        if np.int64(_mix(state) >> S32) >= item_prob[j]:
                            j = item_alias[j]
                    m = item_idx[j]
                    via = m
                    friend[lane] = -1
                    if follow > 0:
                        state += GOLDEN
                        r = _mix(state)
                        f_start, f_degree = follow_ptr[m], follow_ptr[m + 1] - follow_ptr[m]
                        if (r >> S32) < follow and f_degree > 0:
                            via = follow_idx[f_start + _below(r, f_degree)]
                            friend[lane] = via
                            steps += 1
                    steps += 1
                    listener[lane] = m
                    pos[lane] = via
                    _prefetch(middle_ptr, via)
                    stage[lane] = MIDDLE
                    continue
                if now == MIDDLE:
                    via = pos[lane]
                    start, degree = middle_ptr[via], middle_ptr[via + 1] - middle_ptr[via]
                    if degree >= middle_hub_degree:
                        slot = middle_hub[via]
                        if hub_owner[slot] != owner:
                            hub_owner[slot], hub_passes[slot] = owner, 0
                        if hub_passes[slot] < hub_cap:
                            hub_passes[slot] += 1
                        else:
                            degree = 0  # the hub's cap is used up: the walk ends here
                    if degree > 0:
                        state += GOLDEN
                        j = start + _below(_mix(state), degree)
                        if weighted:
                            _prefetch(middle_prob, j)
                            _prefetch(middle_alias, j)
                        _prefetch(middle_idx, j)
                        pos[lane] = j
                        stage[lane] = ARRIVE
                    else:
                        stage[lane] = START
                    continue
                if now == ARRIVE:
                    j = pos[lane]
                    if weighted:
                        state += GOLDEN
                        if np.int64(_mix(state) >> S32) >= middle_prob[j]:
                            j = middle_alias[j]
                    y = middle_idx[j]
                    steps += 1
                    if has_targets and targets[y] >= 0:
                        record[n_record, 0] = targets[y]
                        record[n_record, 1] = sp
                        record[n_record, 2] = node[lane]
                        record[n_record, 3] = listener[lane]
                        record[n_record, 4] = friend[lane]
                        n_record += 1
                    node[lane] = y
                    hops[lane] += 1
                    _prefetch(counts, y * 4)
                    _prefetch(item_ptr, y)
                    stage[lane] = VISIT
                    continue

                # START or VISIT: a new walk from the seed, if any is left, or a track reached.
                if now == START:
                    if started == n_walks:
                        stage[lane] = DONE
                        alive -= 1
                        continue
                    started += 1
                    node[lane] = q
                    hops[lane] = 0
                x = node[lane]

                # Count the visit; a visit from a new seed folds the last seed's count into
                # the boosted score.
                if counts[x, LAST] != sp:
                    if counts[x, LAST] < 0:
                        touched[n_touched] = x
                        n_touched += 1
                    else:
                        boosted[x] += np.sqrt(np.float64(counts[x, CURRENT]))
                    counts[x, REACH] += 1
                    counts[x, CURRENT] = 0
                    counts[x, LAST] = sp
                counts[x, CURRENT] += 1
                counts[x, VISITS] += 1

                # Restart, or pick one of the track's listeners.
                state += GOLDEN
                r = _mix(state)
                start, degree = item_ptr[x], item_ptr[x + 1] - item_ptr[x]
                if (r >> S32) < restart or hops[lane] >= max_length:
                    degree = 0
                elif degree >= item_hub_degree:
                    slot = item_hub[x]
                    if hub_owner[slot] != owner:
                        hub_owner[slot], hub_passes[slot] = owner, 0
                    if hub_passes[slot] < hub_cap:
                        hub_passes[slot] += 1
                    else:
                        degree = 0
                if degree > 0:
                    j = start + _below(r, degree)
                    if weighted:
                        _prefetch(item_prob, j)
                        _prefetch(item_alias, j)
                    _prefetch(item_idx, j)
                    pos[lane] = j
                    stage[lane] = LISTENER
                else:
                    stage[lane] = START
    return n_touched, steps, n_record


@numba.njit(nogil=True)
def _thread_buffers(g, items, lanes):
    counts = np.zeros((items, 4), dtype=np.int32)
    counts[:, LAST] = -1
    visit_buf = (
        counts,
        np.zeros(items, dtype=np.float64),  # boosted: sum over seeds of sqrt(visits)
        np.empty(items, dtype=np.int32),  # touched
    )
    hub_buf = (np.zeros(g.hubs, dtype=np.int32), np.full(g.hubs, -1, dtype=np.int64))
    # Per lane: stage, track, hops so far, a position or node, listener, followed account.
    lanes_buf = (np.zeros(lanes, dtype=np.int64), np.zeros(lanes, dtype=np.int64),
                 np.zeros(lanes, dtype=np.int64), np.zeros(lanes, dtype=np.int64),
                 np.zeros(lanes, dtype=np.int64), np.zeros(lanes, dtype=np.int64))
    return visit_buf, hub_buf, lanes_buf


@numba.njit(nogil=True)
def _scores(p, visit_buf, n_touched, score):
    """Each touched track's score (boosted or plain visits) into `score[:n_touched]`, folding
    in the last seed's counts; return their sum."""
    counts, boosted, touched = visit_buf
    total = 0.0
    for i in range(n_touched):
        t = touched[i]
        if p.boost:
            b = boosted[t] + np.sqrt(np.float64(counts[t, CURRENT]))
            score[i] = b * b
        else:
            score[i] = counts[t, VISITS]
        total += score[i]
    return total


@numba.njit(nogil=True)
def _best(tracks, score, n, k):
    """Positions of the k best of the first n (score descending, then track), best first."""
    if n > k:
        threshold = -np.partition(-score[:n], k - 1)[k - 1]
        above = np.flatnonzero(score[:n] > threshold)
        ties = np.flatnonzero(score[:n] == threshold)
        ties = ties[np.argsort(tracks[ties])][: k - len(above)]
        keep = np.concatenate((above, ties))
    else:
        keep = np.arange(n)
    order = keep[np.argsort(-score[keep])]

    # Equal scores by track: sort each run of ties.
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and score[order[end]] == score[order[start]]:
            end += 1
        if end - start > 1:
            run = order[start:end]
            order[start:end] = run[np.argsort(tracks[run])]
        start = end
    return order


@numba.njit(nogil=True)
def _reset(visit_buf, n_touched):
    counts, boosted, touched = visit_buf
    for i in range(n_touched):
        t = touched[i]
        counts[t, LAST] = -1
        counts[t, CURRENT:] = 0
        boosted[t] = 0.0


@numba.njit(cache=True, parallel=True)
def walk_scores(g, p, users, seed_ptr, seed_idx, seed_walks, exclude_ptr, exclude_idx, items,
                k, chunks):
    """The k best visited tracks of every user (row of the seed CSR).

    Row r walks from tracks `seed_idx[seed_ptr[r]:seed_ptr[r + 1]]`, `seed_walks` walks each,
    with random numbers keyed by `users[r]`; tracks in its `exclude` row are left out of its
    list but not of the walks. Returns (track, score, visits, reach), each (rows, k), best
    first, -1 and 0 past a user's visited tracks, and the steps walked per row. Scores are
    normalized over everything the user's walks visited, so they sum to 1 with nothing
    excluded and k large enough.
    """
    rows = len(seed_ptr) - 1
    out_track = np.full((rows, k), -1, dtype=np.int32)
    out_score = np.zeros((rows, k), dtype=np.float64)
    out_visits = np.zeros((rows, k), dtype=np.int32)
    out_reach = np.zeros((rows, k), dtype=np.int32)
    steps = np.zeros(rows, dtype=np.int64)
    no_targets = np.empty(0, dtype=np.int32)
    no_record = np.empty((0, 5), dtype=np.int64)
    for chunk in numba.prange(chunks):
        visit_buf, hub_buf, lanes_buf = _thread_buffers(g, items, p.lanes)
        counts, touched = visit_buf[0], visit_buf[2]
        score = np.empty(items, dtype=np.float64)
        kept_track = np.empty(items, dtype=np.int32)
        kept_score = np.empty(items, dtype=np.float64)
        excluded = np.zeros(items, dtype=np.bool_)
        for row in range(chunk, rows, chunks):
            lo, hi = seed_ptr[row], seed_ptr[row + 1]
            n, steps[row], _ = _walk_user(g, p, row, users[row], seed_idx[lo:hi],
                                          seed_walks[lo:hi],
                                          visit_buf, hub_buf, lanes_buf,
                                          no_targets, no_record)
            total = _scores(p, visit_buf, n, score)

            # The excluded tracks count in the total but are not offered.
            dropped = exclude_idx[exclude_ptr[row]:exclude_ptr[row + 1]]
            excluded[dropped] = True
            kept = 0
            for i in range(n):
                if not excluded[touched[i]]:
                    kept_track[kept] = touched[i]
                    kept_score[kept] = score[i] / total
                    kept += 1
            excluded[dropped] = False

            for r, i in enumerate(_best(kept_track, kept_score, kept, k)):
                t = kept_track[i]
                out_track[row, r] = t
                out_score[row, r] = kept_score[i]
                out_visits[row, r] = counts[t, VISITS]
                out_reach[row, r] = counts[t, REACH]
            _reset(visit_buf, n)
    return out_track, out_score, out_visits, out_reach, steps


@numba.njit(nogil=True)
def _lexsort(record, n):
    """Order of the first n records by all their columns, the first column most significant."""
    order = np.arange(n)
    for c in range(record.shape[1] - 1, -1, -1):
        order = order[np.argsort(record[order, c], kind="mergesort")]
    return order


@numba.njit(inline="always")
def _same(a, b):
    for c in range(len(a)):
        if a[c] != b[c]:
            return False
    return True


@numba.njit(nogil=True)
def _top_paths(record, n, target_lo, per_track, out_path, out_visits):
    """Count the distinct paths among the first n records and write each target's
    `per_track` most travelled (ties in path order) to row `target_lo + slot`."""
    order = _lexsort(record, n)
    paths = record[order]
    counts = np.ones(n, dtype=np.int64)
    distinct = 0
    for i in range(n):
        if distinct and _same(paths[i], paths[distinct - 1]):
            counts[distinct - 1] += 1
        else:
            paths[distinct] = paths[i]
            counts[distinct] = 1
            distinct += 1
    start = 0
    while start < distinct:
        end = start
        while end < distinct and paths[end, 0] == paths[start, 0]:
            end += 1
        best = np.argsort(-counts[start:end], kind="mergesort")[:per_track]
        row = target_lo + paths[start, 0]
        for j, b in enumerate(best):
            out_path[row, j] = paths[start + b, 1:]
            out_visits[row, j] = counts[start + b]
        start = end


@numba.njit(cache=True, parallel=True)
def walk_paths(g, p, users, seed_ptr, seed_idx, seed_walks, target_ptr, target_idx, items,
               per_track, capacity, chunks):
    """The most travelled last hops into chosen tracks, from the same walks as `walk_scores`.

    Row r's targets are `target_idx[target_ptr[r]:target_ptr[r + 1]]`. Returns `path` of shape
    (targets, per_track, 4): seed track, from-track, listener, followed account (-1 when the
    hop took no follow edge), all -1 where a target has fewer paths, and `visits` (targets,
    per_track). `capacity` bounds the hops of one user (walks times max length).
    """
    rows = len(seed_ptr) - 1
    n_targets = len(target_idx)
    out_path = np.full((n_targets, per_track, 4), -1, dtype=np.int64)
    out_visits = np.zeros((n_targets, per_track), dtype=np.int64)
    for chunk in numba.prange(chunks):
        visit_buf, hub_buf, lanes_buf = _thread_buffers(g, items, p.lanes)
        targets = np.full(items, -1, dtype=np.int32)
        record = np.empty((capacity, 5), dtype=np.int64)
        for row in range(chunk, rows, chunks):
            lo, hi = seed_ptr[row], seed_ptr[row + 1]
            t_lo, t_hi = target_ptr[row], target_ptr[row + 1]
            for slot in range(t_hi - t_lo):
                targets[target_idx[t_lo + slot]] = slot
            n, _, n_record = _walk_user(g, p, row, users[row], seed_idx[lo:hi], seed_walks[lo:hi],
                                        visit_buf, hub_buf, lanes_buf, targets,
                                        record)
            for i in range(n_record):
                record[i, 1] = seed_idx[lo + record[i, 1]]
            _top_paths(record, n_record, t_lo, per_track, out_path, out_visits)
            _reset(visit_buf, n)
            for t in target_idx[t_lo:t_hi]:
                targets[t] = -1
    return out_path, out_visits


@numba.njit(cache=True, parallel=True)
def alias_tables(ptr, weights):
    """Per CSR row, Vose's alias table over its weights: (prob, alias), where entry j of a row
    is kept when 32 random bits fall below prob[j] (scaled to 2 ** 32) and otherwise replaced
    by entry alias[j] (a position in the same row)."""
    prob = np.empty(len(weights), dtype=np.int64)
    alias = np.empty(len(weights), dtype=np.int64)
    small = np.empty(len(weights), dtype=np.int64)
    large = np.empty(len(weights), dtype=np.int64)
    scaled = np.empty(len(weights), dtype=np.float64)
    for row in numba.prange(len(ptr) - 1):
        start, end = ptr[row], ptr[row + 1]
        degree = end - start
        if degree == 0:
            continue
        total = weights[start:end].sum()
        n_small, n_large = start, start
        for j in range(start, end):
            scaled[j] = weights[j] * degree / total
            alias[j] = j
            if scaled[j] < 1.0:
                small[n_small] = j
                n_small += 1
            else:
                large[n_large] = j
                n_large += 1
        while n_small > start and n_large > start:
            n_small -= 1
            s = small[n_small]
            big = large[n_large - 1]
            prob[s] = np.int64(scaled[s] * 4294967296.0)
            alias[s] = big
            scaled[big] -= 1.0 - scaled[s]
            if scaled[big] < 1.0:
                n_large -= 1
                small[n_small] = big
                n_small += 1
        for i in range(start, n_large):
            prob[large[i]] = np.int64(4294967296)
        for i in range(start, n_small):
            prob[small[i]] = np.int64(4294967296)
    return prob, alias
