"""Similarity speed: our top-100 neighbours for every measure against implicit's cosine.

On one fixed matrix (see common.fixed_matrix; at full size 138,000 users, 27,000 tracks, 20M
draws, about 16.0M interactions), each method runs in its own process three times, in three
rounds of every method; the figure is the median time of the fit alone and, for ours, the peak
memory of the process.

    python benchmarks/similarity.py            # the size the issue names
    python benchmarks/similarity.py --small    # about a minute

The last line is `RESULT ratio_vs_implicit=<slowest measure / implicit> peak_gb=<ours>`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import FULL, SMALL, cached_matrix, in_child, peak_gb  # noqa: E402

MEASURES = ("cosine", "cooccurrence", "jaccard", "lift", "bm25", "rp3beta")
K = 100
REPEATS = 3


def child(method: str, path: str) -> None:
    """Load the matrix, warm up, time one fit, print JSON."""
    import numpy as np
    import scipy.sparse as sp

    matrix = sp.load_npz(path).tocsr()
    if method == "implicit":
        from implicit.nearest_neighbours import CosineRecommender

        started = time.perf_counter()
        CosineRecommender(K=K).fit(matrix, show_progress=False)
    else:
        from recsys.config import SimilarityConfig
        from recsys.stages.similarity import neighbours

        cfg = SimilarityConfig(measure=method, k=K, min_co_count=1)
        neighbours(matrix[:50, :50], cfg)  # compile outside the timed part
        started = time.perf_counter()
        src, _, _, _ = neighbours(matrix, cfg)
        assert len(np.unique(src)) > 0
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_gb": peak_gb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a smaller matrix, about a minute")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    size = SMALL if args.small else FULL
    path = cached_matrix(size, Path(tempfile.gettempdir()) / "recsys-bench")
    import scipy.sparse as sp

    nnz = sp.load_npz(path).nnz
    print(f"matrix: {size['users']:,} users x {size['tracks']:,} tracks, {nnz:,} interactions")

    # Rounds, each timing every method once: a slow spell of the machine (it is shared)
    # then falls on every method alike rather than on the three runs of one.
    methods = ("implicit", *MEASURES)
    runs = {method: [] for method in methods}
    for round_ in range(REPEATS):
        for method in methods:
            runs[method].append(in_child(__file__, "--child", method, str(path)))
        print(f"round {round_ + 1}: " + ", ".join(
            f"{m} {runs[m][-1]['seconds']:.2f} s" for m in methods))
    results = {}
    for method in methods:
        seconds = statistics.median(r["seconds"] for r in runs[method])
        memory = max(r["peak_gb"] for r in runs[method])
        results[method] = (seconds, memory)
        print(f"{method:>13}: {seconds:7.2f} s (median of {REPEATS}), peak {memory:.2f} GB")

    reference = results["implicit"][0]
    slowest = max(results[m][0] for m in MEASURES)
    for method in MEASURES:
        print(f"{method:>13}: {results[method][0] / reference:.3f} x implicit's time")
    peak = max(results[m][1] for m in MEASURES)
    print(f"RESULT ratio_vs_implicit={slowest / reference:.3f} peak_gb={peak:.2f}")


if __name__ == "__main__":
    main()
