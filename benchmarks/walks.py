"""Walk speed: our random walks against a plain numba walk, on the similarity benchmark's matrix.

On one fixed matrix (see common.fixed_matrix; at full size 138,000 users, 27,000 tracks, 20M
draws, about 16.0M interactions), each user's seeds are 50 of their tracks (all of them for a
shorter history, chosen by numpy's generator seeded 0). Two methods, each in its own process,
alternating, three times each; the figure is the median:

- ours: `recsys.stages.walks.walk` with the default `WalksConfig` (boosting, hubs, the
  degree-normalized budget, top tracks per user), for 100,000 users (all the users at --small);
- plain: numba over every core with `prange`, one walk per loop iteration, numpy's random
  generator for every draw, scipy's CSR arrays, the same hops (track, listener, track) and
  restart, and no visit counting at all: each walk only writes where it ended.

    python benchmarks/walks.py            # the size the issue names
    python benchmarks/walks.py --small    # about a minute

Steps are moves along an edge (a hop is two). The last line is `RESULT steps_per_s=<ours>
ratio_vs_plain=<ours / plain> users_100k_s=<seconds for 100,000 users>`; at --small the last
figure is scaled from the users walked.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import FULL, SMALL, cached_matrix, in_child, peak_gb  # noqa: E402

SEEDS_PER_USER = 50
USERS = 100_000
PLAIN_WALKS = {"full": 10_000_000, "small": 10_000_000}
REPEATS = 3


@numba.njit(parallel=True)
def plain_walks(track_ptr, track_idx, user_ptr, user_idx, starts, restart, max_length):
    """One walk per iteration from each start track: (end track, steps) per walk."""
    ends = np.empty(len(starts), dtype=np.int32)
    steps = np.zeros(len(starts), dtype=np.int64)
    for w in numba.prange(len(starts)):
        x = starts[w]
        taken = 0
        for _ in range(max_length):
            if np.random.random() < restart:
                break
            lo, hi = track_ptr[x], track_ptr[x + 1]
            if hi == lo:
                break
            m = track_idx[np.random.randint(lo, hi)]
            lo, hi = user_ptr[m], user_ptr[m + 1]
            if hi == lo:
                break
            x = user_idx[np.random.randint(lo, hi)]
            taken += 2
        ends[w] = x
        steps[w] = taken
    return ends, steps


def user_seeds(matrix):
    """Each user's seeds: up to SEEDS_PER_USER of their tracks, at random."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    row = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((rng.random(matrix.nnz), row))
    rank = np.arange(matrix.nnz) - matrix.indptr[row[order]]
    keep = order[rank < SEEDS_PER_USER]
    return sp.csr_matrix(
        (np.ones(len(keep)), (row[keep], matrix.indices[keep])), shape=matrix.shape
    )


def child(method: str, path: str, count: str) -> None:
    """Load the matrix, warm up, time one run, print JSON."""
    import scipy.sparse as sp

    from recsys.config import WalksConfig
    from recsys.stages.walks import bipartite_graph, walk

    matrix = sp.load_npz(path).tocsr()
    cfg = WalksConfig()
    seeds = user_seeds(matrix)
    if method == "ours":
        graph = bipartite_graph(matrix)
        walk(graph, seeds[:10], cfg)  # compile outside the timed part
        started = time.perf_counter()
        result = walk(graph, seeds[: int(count)], cfg, exclude=matrix[: int(count)])
        seconds = time.perf_counter() - started
        steps, users = int(result.steps.sum()), int(count)
    else:
        tracks = matrix.T.tocsr()
        rng = np.random.default_rng(0)
        starts = seeds.indices[rng.integers(0, seeds.nnz, int(count))]
        args = (tracks.indptr, tracks.indices, matrix.indptr, matrix.indices)
        plain_walks(*args, starts[:10], cfg.restart, cfg.max_length)
        started = time.perf_counter()
        _, walked = plain_walks(*args, starts, cfg.restart, cfg.max_length)
        seconds = time.perf_counter() - started
        steps, users = int(walked.sum()), 0
    print(json.dumps({"seconds": seconds, "steps": steps, "users": users, "peak_gb": peak_gb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a smaller matrix, about a minute")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    size = SMALL if args.small else FULL
    path = cached_matrix(size, Path(tempfile.gettempdir()) / "recsys-bench")
    import scipy.sparse as sp

    from recsys.config import WalksConfig

    nnz = sp.load_npz(path).nnz
    users = min(USERS, size["users"])
    counts = {"ours": users, "plain": PLAIN_WALKS["small" if args.small else "full"]}
    print(f"matrix: {size['users']:,} users x {size['tracks']:,} tracks, {nnz:,} interactions")
    print(f"settings: {WalksConfig()!r}")

    runs = {"ours": [], "plain": []}
    for _ in range(REPEATS):
        for method in ("plain", "ours"):
            run = in_child(__file__, "--child", method, str(path), str(counts[method]))
            runs[method].append(run)
            rate = run["steps"] / run["seconds"]
            print(f"{method:>6}: {run['steps']:,} steps in {run['seconds']:.2f} s, "
                  f"{rate / 1e6:.1f}M steps/s, peak {run['peak_gb']:.2f} GB")

    rate = {m: statistics.median(r["steps"] / r["seconds"] for r in runs[m]) for m in runs}
    seconds = statistics.median(r["seconds"] for r in runs["ours"])
    per_user = statistics.median(r["steps"] / r["users"] for r in runs["ours"])
    users_100k = seconds * USERS / users
    walked = f"{users:,} users in {seconds:.1f} s"
    if users != USERS:
        walked += f", so {USERS:,} users in {users_100k:.1f} s (scaled)"
    print(f"ours: {per_user:,.0f} steps per user; {walked}")
    print(
        f"RESULT steps_per_s={rate['ours']:.3g} ratio_vs_plain={rate['ours'] / rate['plain']:.2f}"
        f" users_100k_s={users_100k:.1f}"
    )


if __name__ == "__main__":
    main()
