"""The compiled core of item/item similarity: a top-k sparse product over one half of the pairs.

Co-counts are symmetric, so each pair of tracks is computed once. For a track i, the kernel walks
its users and, in each user's (sorted) history, only the tracks j after i, accumulating into a
dense buffer the co-count (and the weighted dot product) with every j reached. It then reads the
later tracks in order and each pair (i, j) offers j to i's neighbours and i to j's, both scored
from the same dot product. Work is half the sum over users of their squared history length, with
no intermediate matrix.

Each worker keeps a buffer of candidate neighbours per track for the pairs it computed (a track's
neighbours come from several workers), merged at the end. A buffer holds 2k entries; when full it
is cut to its k best and remembers the weakest score kept, so that a later, weaker offer costs one
comparison. Memory: the inputs, workers x tracks x 2k buffer entries, and a few dense arrays per
worker.

Scores are `dot(i, j) * source[i] * target[j]`, except Jaccard, which needs the two masses:
`dot / (mass[i] + mass[j] - dot)`. A weighted dot product is summed in single precision (the
interaction weights are single already): half the bytes per update of a double, with a
relative error far inside the 1e-5 the tests allow against scipy's double product.
"""

from __future__ import annotations

import numba
import numpy as np


# The floor of an empty buffer: the smallest positive double, so that a score of 0 (a pair
# with no or too few shared users) never enters. Every measure scores a shared pair above 0.
NO_SCORE = np.nextafter(0.0, 1.0)


@numba.njit(cache=True, nogil=True, inline="always")
def _weaker(score_a, item_a, score_b, item_b):
    """Whether neighbour a ranks below b: a lower score, or the same score and a larger index."""
    return score_a < score_b or (score_a == score_b and item_a > item_b)


@numba.njit(cache=True, nogil=True, inline="always")
def _swap(val, key, x, y):
    val[x], val[y] = val[y], val[x]
    key[x + 1], key[y + 1] = key[y + 1], key[x + 1]


@numba.njit(cache=True, nogil=True)
def _compact(val, key, size, floor, track, slot, k, capacity):
    """Keep the k best entries of a full buffer (by score, then smaller index) and set its
    floor to the weakest score kept: later offers below it cannot enter the top k.

    A quickselect in place (a buffer holds each neighbour once, so the order is strict),
    with no allocation: this runs hundreds of thousands of times.
    """
    base = 2 * slot * capacity
    lo, hi, target = base, base + 2 * (capacity - 1), base + 2 * (k - 1)
    while lo < hi:
        mid = lo + ((hi - lo) // 4) * 2
        p_score, p_item = val[mid], key[mid + 1] >> 32
        x, y = lo, hi
        while x <= y:
            while _weaker(p_score, p_item, val[x], key[x + 1] >> 32):
                x += 2
            while _weaker(val[y], key[y + 1] >> 32, p_score, p_item):
                y -= 2
            if x <= y:
                _swap(val, key, x, y)
                x += 2
                y -= 2
        if target <= y:
            hi = y
        elif target >= x:
            lo = x
        else:
            break
    weakest = val[base]
    for e in range(base + 2, base + 2 * k, 2):
        weakest = min(weakest, val[e])
    size[slot] = k
    floor[track] = max(floor[track], weakest)


@numba.njit(cache=True, nogil=True, inline="always")
def _offer(val, key, size, floor, track, slot, k, capacity, score, item, co):
    """Offer a neighbour to the buffer of `slot` (one worker's candidates for `track`)."""
    if score < floor[track]:
        return
    if size[slot] == capacity:
        _compact(val, key, size, floor, track, slot, k, capacity)
        if score < floor[track]:
            return
    cell = 2 * (slot * capacity + size[slot])
    val[cell] = score
    key[cell + 1] = (np.int64(item) << 32) | np.int64(co)
    size[slot] += 1


@numba.njit(cache=True)
def column_sums(indices, data, columns):
    """Per column of a sparse matrix, the sum of its values and of their squares."""
    total = np.zeros(columns)
    squares = np.zeros(columns)
    for q in range(len(indices)):
        value = np.float64(data[q])
        total[indices[q]] += value
        squares[indices[q]] += value * value
    return total, squares


def relabelled(ui_ptr, ui_idx, ui_val, label_of, valued, threads):
    """The user x track CSR matrix `ui_*` (no duplicates, any order within a row) with track t
    renumbered `label_of[t]`: as a track x user matrix with users ascending in each row, as a
    user x track matrix with tracks ascending in each row, and for each entry (track i, user
    u) of the first, the position of i in u's row of the second. Counting passes, no sort;
    without `valued` (every value 1) the two matrices carry no values (empty arrays).

    The second matrix's track numbers take 16 bits where the catalogue allows, and the
    positions 32 where the matrix allows: the accumulation reads a track number for every
    (user, pair of tracks), about two billion on the benchmark's matrix, and its speed
    follows the bytes read.
    """
    items, entries = len(label_of), len(ui_idx)
    values = entries if valued else 0
    iu_ptr = np.cumsum(_column_counts(ui_idx, label_of))
    iu_idx = np.empty(entries, dtype=np.int32)
    iu_val = np.empty(values, dtype=np.float32)
    _fill_columns(ui_ptr, ui_idx, ui_val, label_of, iu_ptr, iu_idx, iu_val, valued, threads)

    out_ptr = ui_ptr.astype(np.int64)
    out_idx = np.empty(entries, dtype=np.uint16 if items <= 1 << 16 else np.int32)
    out_val = np.empty(values, dtype=np.float32)
    pos = np.empty(entries, dtype=np.int32 if entries < 1 << 31 else np.int64)
    _fill_rows(iu_ptr, iu_idx, iu_val, out_ptr, out_idx, out_val, pos, valued, threads)
    return iu_ptr, iu_idx, iu_val, out_ptr, out_idx, out_val, pos


@numba.njit(cache=True)
def _column_counts(ui_idx, label_of):
    """0, then the number of entries of each renumbered track."""
    counts = np.zeros(len(label_of) + 1, dtype=np.int64)
    for q in range(len(ui_idx)):
        counts[label_of[ui_idx[q]] + 1] += 1
    return counts


@numba.njit(cache=True, parallel=True)
def _fill_columns(ui_ptr, ui_idx, ui_val, label_of, iu_ptr, iu_idx, iu_val, valued, threads):
    """The track x user matrix: reading the users in order writes each track's row in order.
    Each worker reads every entry and writes those of its share of the tracks."""
    items = len(label_of)
    for t in numba.prange(threads):
        lo, hi = items * t // threads, items * (t + 1) // threads
        fill = iu_ptr[:-1].copy()
        for u in range(len(ui_ptr) - 1):
            for q in range(ui_ptr[u], ui_ptr[u + 1]):
                i = label_of[ui_idx[q]]
                if lo <= i < hi:
                    f = fill[i]
                    iu_idx[f] = u
                    if valued:
                        iu_val[f] = ui_val[q]
                    fill[i] = f + 1


@numba.njit(cache=True, parallel=True)
def _fill_rows(iu_ptr, iu_idx, iu_val, out_ptr, out_idx, out_val, pos, valued, threads):
    """The user x track matrix and `pos`: reading the tracks in order writes each user's row
    in order. Each worker reads every entry and writes those of its share of the users."""
    items, users = len(iu_ptr) - 1, len(out_ptr) - 1
    for t in numba.prange(threads):
        lo, hi = users * t // threads, users * (t + 1) // threads
        fill = out_ptr[:-1].copy()
        for i in range(items):
            for p in range(iu_ptr[i], iu_ptr[i + 1]):
                u = iu_idx[p]
                if lo <= u < hi:
                    f = fill[u]
                    out_idx[f] = i
                    if valued:
                        out_val[f] = iu_val[p]
                    pos[p] = f
                    fill[u] = f + 1


@numba.njit(cache=True, nogil=True)
def _accumulate(i, iu_ptr, iu_idx, iu_val, pos, ui_ptr, ui_idx, ui_val, user_weight,
                weighted, valued, co, acc):
    """Add track i's co-counts with every later track its users reached into `co`; weighted,
    each track has two cells, its co-count in `co` and its dot product in `acc` (a float32
    view of the same buffer) side by side, so that an update touches 8 bytes of one cache
    line. Without `valued` (every interaction weighs 1, only users are weighted) the later
    tracks' values are not read."""
    for p in range(iu_ptr[i], iu_ptr[i + 1]):
        u = iu_idx[p]
        start, end = pos[p] + 1, ui_ptr[u + 1]
        if weighted:
            w = np.float32(user_weight[u] * (iu_val[p] if valued else 1.0))
            if valued:
                for q in range(start, end):
                    j = 2 * ui_idx[q]
                    co[j] += 1
                    acc[j + 1] += w * ui_val[q]
            else:
                for q in range(start, end):
                    j = 2 * ui_idx[q]
                    co[j] += 1
                    acc[j + 1] += w
        else:
            for q in range(start, end):
                co[ui_idx[q]] += 1


@numba.njit(cache=True, nogil=True)
def _reached(i, iu_ptr, iu_idx, pos, ui_ptr, ui_idx, co, touched):
    """The distinct later tracks that track i's users reached, listed in `touched` (for a
    track whose users reach few: cheaper than scanning every later track)."""
    n = 0
    for p in range(iu_ptr[i], iu_ptr[i + 1]):
        u = iu_idx[p]
        for q in range(pos[p] + 1, ui_ptr[u + 1]):
            j = ui_idx[q]
            if co[j] == 0:
                co[j] = -1
                touched[n] = j
                n += 1
    for t in range(n):
        co[touched[t]] = 0
    return n


@numba.njit(cache=True, nogil=True)
def _work(i, iu_ptr, iu_idx, pos, ui_ptr):
    """How many (user, later track) entries track i's accumulation reads."""
    total = 0
    for p in range(iu_ptr[i], iu_ptr[i + 1]):
        total += ui_ptr[iu_idx[p] + 1] - pos[p] - 1
    return total


@numba.njit(cache=True, nogil=True, inline="always")
def _scores(i, j, d, source, target, mass, jaccard):
    """The pair (i, j) scored both ways from its dot product `d`: (j for i, i for j)."""
    if jaccard:
        score = d / (mass[i] + mass[j] - d)
        return score, score
    return d * source[i] * target[j], d * source[j] * target[i]


@numba.njit(cache=True, nogil=True, inline="always")
def _offer_pair(i, j, c, d, source, target, mass, label, jaccard, own_i, own_j,
                val, key, size, floor, k, capacity):
    """Score the pair (i, j) both ways and offer j to i's neighbours and i to j's."""
    score_ij, score_ji = _scores(i, j, d, source, target, mass, jaccard)
    _offer(val, key, size, floor, i, own_i, k, capacity, score_ij, label[j], c)
    _offer(val, key, size, floor, j, own_j, k, capacity, score_ji, label[i], c)


@numba.njit(cache=True, parallel=True)
def top_k_neighbours(
    iu_ptr, iu_idx, iu_val, ui_ptr, ui_idx, ui_val, pos,
    user_weight, source, target, mass, label, weighted, valued, jaccard, min_co, k, threads,
):
    """The k best neighbours of every track.

    `iu_*` is the track x user CSR matrix and `ui_*` its transpose (user x track), both with
    sorted indices and the interaction weights as values, and `pos` maps the first's entries
    into the second (see `relabelled`). With `weighted` False (every weight and user weight
    1) the dot product is the co-count and only that is accumulated; with `valued` False
    (every interaction weighs 1, users may not) there are no values to read. Returns (neighbour,
    score, co_count), each of shape (tracks, k), best first (ties by smaller index), -1 where
    a track has fewer neighbours. Tracks are dealt round-robin to `threads` workers, each with
    its own buffers.

    After accumulating a track, the later tracks it shares users with are read by scanning
    every later track (sequential, so the offers to their buffers stream through memory), or,
    for a track whose users reach few others, from a list of the ones reached.

    `label` gives each row's track index in the caller's numbering: ties are broken, and the
    output rows and neighbours numbered, by it. The caller numbers the tracks here in a
    random order, so that the offers a buffer receives come in no particular order of score;
    in an order of rising scores (popular tracks first, under a measure that favours the
    rare), nearly every offer would enter.
    """
    items = len(iu_ptr) - 1
    capacity = 2 * k
    # An entry is two 8-byte cells side by side, its score and (neighbour << 32 | co-count),
    # so that an offer entering a cold buffer touches one cache line.
    key = np.empty(2 * threads * items * capacity, dtype=np.int64)
    val = key.view(np.float64)
    size = np.zeros(threads * items, dtype=np.int32)
    # One floor per track, shared by the workers: a worker's k kept neighbours are k real
    # ones, so the weakest of them bounds the track's final k-th best from below for all.
    # A worker may read a floor another is raising; any value it reads is such a bound.
    floor = np.full(items, NO_SCORE)

    for worker in numba.prange(threads):
        # Weighted, a track's co-count and dot product sit side by side in 8 bytes (an int32
        # and a float32 over the same buffer), so that an update touches one cache line.
        co = np.zeros(2 * items if weighted else items, dtype=np.int32)
        acc = co.view(np.float32)
        touched = np.empty(items, dtype=np.int32)
        pass_j = np.empty(items, dtype=np.int64)
        pass_c = np.empty(items, dtype=np.int32)
        pass_d = np.empty(items, dtype=np.float64)
        own = worker * items
        for i in range(worker, items, threads):
            work = _work(i, iu_ptr, iu_idx, pos, ui_ptr)
            if work == 0:
                continue
            sparse = 4 * work < items - i
            n_touched = 0
            if sparse:
                n_touched = _reached(i, iu_ptr, iu_idx, pos, ui_ptr, ui_idx, co, touched)
            _accumulate(i, iu_ptr, iu_idx, iu_val, pos, ui_ptr, ui_idx, ui_val, user_weight,
                        weighted, valued, co, acc)
            n = n_touched if sparse else items - i - 1
            # First a pass with no branch on the pair: its two scores against the two floors
            # (floors only rise, so one read before the pass lets more through, never
            # fewer), listing the pairs that may enter. A pair the users do not share (or
            # share too little) scores 0, below every floor. Then the offers, for those alone.
            floor_i = floor[i]
            passed = 0
            for t in range(n):
                j = touched[t] if sparse else i + 1 + t
                if weighted:
                    c = co[2 * j]
                    d = np.float64(acc[2 * j + 1])
                    co[2 * j] = 0
                    co[2 * j + 1] = 0
                else:
                    c = co[j]
                    co[j] = 0
                    d = np.float64(c)
                d *= c >= min_co
                score_ij, score_ji = _scores(i, j, d, source, target, mass, jaccard)
                pass_j[passed] = j
                pass_c[passed] = c
                pass_d[passed] = d
                passed += (score_ij >= floor_i) | (score_ji >= floor[j])
            for t in range(passed):
                _offer_pair(i, pass_j[t], pass_c[t], pass_d[t], source, target, mass, label,
                            jaccard, own + i, own + pass_j[t], val, key, size, floor, k,
                            capacity)

    return _merge(val, key, size, label, k, capacity, threads)


@numba.njit(cache=True, parallel=True)
def _merge(val, key, size, label, k, capacity, threads):
    """Each track's k best neighbours over the buffers of every worker, best first, in the
    rows and numbering of `label`."""
    items = len(label)
    out_item = np.full((items, k), -1, dtype=np.int32)
    out_score = np.zeros((items, k), dtype=np.float64)
    out_co = np.zeros((items, k), dtype=np.int32)
    for i in numba.prange(items):
        total = 0
        for w in range(threads):
            total += size[w * items + i]
        score = np.empty(total, dtype=np.float64)
        item = np.empty(total, dtype=np.int32)
        co = np.empty(total, dtype=np.int32)
        n = 0
        for w in range(threads):
            slot = w * items + i
            for e in range(size[slot]):
                cell = 2 * (slot * capacity + e)
                score[n] = val[cell]
                item[n] = key[cell + 1] >> 32
                co[n] = key[cell + 1] & 0xFFFFFFFF
                n += 1
        # By score descending, then by index: sort by index, then stably by score.
        order = np.argsort(item)
        ranked = order[np.argsort(-score[order], kind="mergesort")]
        row = label[i]
        for r in range(min(k, total)):
            e = ranked[r]
            out_item[row, r] = item[e]
            out_score[row, r] = score[e]
            out_co[row, r] = co[e]
    return out_item, out_score, out_co
