"""Scale: the whole batch on a generated catalogue of 1M users, 200k tracks and about 50M events.

The dataset comes from recsys's own generator (`recsys.io.generate`, seed 0, 50 events per
user on average); it is generated once, not timed, and cached in the temporary folder. The
batch then runs in a child process with the settings the issue names: at most 200 candidates
per user (100 by similarity, 60 by walks, 20 per popularity fallback), lists of 10, SHAP values
for 1% of the users, the default walk budget (1,600 walks per user), the per-user stages in
partitions of 10,000 users, and training rows from 20,000 users per labelled window.

Printed per stage: wall time and the stage's own peak resident memory (from the run's `stages`
table), then the run's total and peak, and the peak resident memory of the child process as
sampled from outside every 0.2 s (an independent check of the engine's own figure). The
reference timed in the same run is the floor any batch pays: reading the events and
aggregating them per (user, track) with polars, in its own process.

    python benchmarks/scale.py             # 1M users, 200k tracks, ~50M events (the target:
                                           # 30 minutes, 16 GB on a 2-core machine)
    python benchmarks/scale.py --medium    # 50k users, 10k tracks, ~2.5M events (for CI)
    python benchmarks/scale.py --small     # 5k users, 1k tracks, ~250k events, about a minute

Wall time on a shared machine depends on the other processes; the CPU seconds (of all threads)
are printed beside it. The last line is `RESULT total_s=<batch seconds> peak_gb=<batch peak>
cpu_s=<batch CPU seconds> users=<users> ratio_vs_read=<batch seconds / reference seconds>`.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZES = {
    "full": {"users": 1_000_000, "tracks": 200_000},
    "medium": {"users": 50_000, "tracks": 10_000},
    "small": {"users": 5_000, "tracks": 1_000},
}
EVENTS_PER_USER = 50.0
SEED = 0
# The batch's settings; everything else keeps its default.
SETTINGS = {
    "candidates": {"max_candidates": 100, "fallback_size": 20},
    "walks": {"max_tracks": 60},
    "recommend": {"n": 10, "shap_share": 0.01},
    "ranker": {"training_users": 20_000},
    "batch": {"partition_users": 10_000},
}
SAMPLE_SECONDS = 0.2


def dataset(size: dict, cache: Path) -> Path:
    """The generated dataset of `size`, made once (in a child process) and cached."""
    folder = cache / f"scale_{size['users']}_{size['tracks']}_{EVENTS_PER_USER:g}_{SEED}"
    if not (folder / "events.parquet").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {size['users']:,} users and {size['tracks']:,} tracks into {folder} "
              "(not timed)", flush=True)
        result = child("generate", str(folder), str(size["users"]), str(size["tracks"]))
        print(f"generated {result['events']:,} events in {result['seconds']:.0f} s, peak "
              f"{result['peak_gb']:.2f} GB", flush=True)
    return folder


def child(*args: str) -> dict:
    """Run this script's `--child` mode; its peak resident memory sampled from outside."""
    process = subprocess.Popen([sys.executable, __file__, "--child", *args],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    sampled = {"peak_kb": 0}
    thread = threading.Thread(target=_sample_rss, args=(process, sampled), daemon=True)
    thread.start()
    out, _ = process.communicate()
    thread.join()
    if process.returncode:
        raise SystemExit(f"the child ({' '.join(args[:1])}) failed with {process.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["sampled_peak_gb"] = sampled["peak_kb"] / 1024**2
    return result


def _sample_rss(process: subprocess.Popen, sampled: dict) -> None:
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sampled["peak_kb"] = max(sampled["peak_kb"], int(line.split()[1]))
        except OSError:
            return
        time.sleep(SAMPLE_SECONDS)


def run_child(mode: str, *args: str) -> None:
    """In the child: generate, read (the reference) or run the batch; print JSON last."""
    import logging

    from recsys.config import config_from
    from recsys.memory import peak_mb

    logging.basicConfig(level=logging.INFO, format="  %(message)s", stream=sys.stderr)
    started = time.perf_counter()
    if mode == "generate":
        from recsys.io.generate import generate

        folder, users, tracks = args
        config = config_from({"generator": {"events_per_user": EVENTS_PER_USER}})
        summary = generate(folder, users=int(users), tracks=int(tracks), seed=SEED,
                           config=config.generator)
        result = {"events": summary["events"]}
    elif mode == "read":
        from recsys.config import FeedbackConfig
        from recsys.io.dataset import read_dataset
        from recsys.stages.feedback import feedback

        pairs = feedback(read_dataset(args[0]).events, FeedbackConfig())
        result = {"pairs": pairs.height}
    else:
        from recsys.pipeline import run_batch

        data, store = args
        run = run_batch(data, store, cfg=config_from(SETTINGS))
        result = {"stages": run.stages, "summary": {
            k: run.summary[k] for k in ("users", "events", "recommendations", "seconds",
                                        "peak_memory_mb", "ndcg_ranker", "ndcg_users")}}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["seconds"] = time.perf_counter() - started
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["peak_gb"] = peak_mb() / 1024
    print(json.dumps(result, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="20k users, about a minute")
    parser.add_argument("--medium", action="store_true", help="100k users, a size for CI")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return

    size = SIZES["small" if args.small else "medium" if args.medium else "full"]
    cache = Path(tempfile.gettempdir()) / "recsys-bench"
    data = dataset(size, cache)
    print(f"settings: {json.dumps(SETTINGS)}", flush=True)

    reference = child("read", str(data))
    print(f"reference (read the events, feedback per user and track with polars): "
          f"{reference['pairs']:,} pairs in {reference['seconds']:.1f} s", flush=True)

    with tempfile.TemporaryDirectory(dir=cache) as store:
        run = child("batch", str(data), store)
    summary = run["summary"]
    print(f"\n{'stage':<14}{'seconds':>10}{'CPU s':>10}{'peak GB':>10}{'rows':>16}")
    for row in run["stages"]:
        print(f"{row['stage']:<14}{row['seconds']:>10.1f}{row['cpu_seconds']:>10.1f}"
              f"{row['peak_memory_mb'] / 1024:>10.2f}{row['rows']:>16,}")
    peak_gb = summary["peak_memory_mb"] / 1024
    print(f"\n{summary['users']:,} users, {summary['events']:,} events, "
          f"{summary['recommendations']:,} recommendations; ranker NDCG@10 "
          f"{summary['ndcg_ranker']} over {summary['ndcg_users']:,} users")
    print(f"batch: {summary['seconds']:.1f} s ({run['cpu_seconds']:.0f} CPU s), peak "
          f"{peak_gb:.2f} GB (sampled from outside: {run['sampled_peak_gb']:.2f} GB); reference "
          f"{reference['seconds']:.1f} s")
    ratio = summary["seconds"] / reference["seconds"]
    print(f"RESULT total_s={summary['seconds']:.1f} peak_gb={peak_gb:.2f} "
          f"cpu_s={run['cpu_seconds']:.0f} users={summary['users']} ratio_vs_read={ratio:.1f}")


if __name__ == "__main__":
    main()
