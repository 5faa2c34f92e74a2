"""The batch on the real datasets: the figures the README shows for each of them.

Imports HetRec Last.fm 2K and MovieLens ml-latest-small from ../shared/datasets (into a
temporary folder, never into the project), runs the batch on them and on sample_data, and
prints per dataset: users, recommendations, users with a list, seconds per stage, peak memory
(of this process, which runs every batch in turn), and the ranker's NDCG@10 against the plain
candidate order with the number of users scored. On HetRec it runs a second time with plain
cosine similarity, and prints the popularity-bias measures of both settings side by side.

    python benchmarks/real_data.py            # every dataset, full size
    python benchmarks/real_data.py --small    # sample_data only, about a minute

The last line is `RESULT <dataset>_ndcg_ranker=.. <dataset>_ndcg_order=.. <dataset>_users=..
<dataset>_s=..` for each dataset run.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import duckdb

from recsys.config import Config, load_config
from recsys.io.importers import HETREC, MOVIELENS, import_dataset
from recsys.pipeline import run_batch
from recsys.store import CURRENT
from recsys.whatif import with_settings

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
REAL = {
    "hetrec": (HETREC, DATASETS / "hetrec2011-lastfm-2k", ROOT / "configs" / "hetrec.toml"),
    "movielens": (MOVIELENS, DATASETS / "ml-latest-small",
                  ROOT / "configs" / "movielens.toml"),
}


def run_one(name: str, data: Path, store: Path, cfg: Config) -> dict:
    """One batch run; its summary, stage timings and bias measures from the published file."""
    run_batch(data, store, cfg=cfg)
    with duckdb.connect(str(store / CURRENT), read_only=True) as con:
        summary = con.sql("SELECT * FROM runs").pl().row(0, named=True)
        stages = con.execute("SELECT stage, seconds FROM stages").fetchall()
        bias = con.execute("SELECT entity, metric, value FROM popularity_bias").fetchall()
        recall = con.execute(
            "SELECT sources, positives, found, recall, users FROM candidate_recall"
        ).fetchall()
    print(f"\n## {name}: {data.name}")
    print(f"users {summary['users']:,}, tracks {summary['tracks']:,}, events "
          f"{summary['events']:,}; {summary['recommendations']:,} recommendations for "
          f"{summary['users_with_recommendations']:,} users")
    print("stages: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stages))
    print(f"total {summary['seconds']:.1f} s, peak memory {summary['peak_memory_mb']:,.0f} MB")
    print(f"ndcg@10: ranker {summary['ndcg_ranker']}, candidate order "
          f"{summary['ndcg_candidate_order']}, over {summary['ndcg_users']} users "
          f"(kpi {summary['kpi']}, window {cfg.labels.window_days} days)")
    print("candidate recall of the validation window: " + "; ".join(
        f"{name} {found:,}/{positives:,} = {value or 0:.3f}" for name, positives, found, value, _
        in recall) + (f" (later positives of {recall[0][4]} users)" if recall else ""))
    return {**summary, "bias": {(e, m): v for e, m, v in bias}}


def bias_side_by_side(runs: dict[str, dict]) -> None:
    """The bias measures of several runs of one dataset, a column per run."""
    names = list(runs)
    print("\n| entity | measure | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for key in runs[names[0]]["bias"]:
        values = " | ".join(f"{runs[n]['bias'][key]:.3f}" for n in names)
        print(f"| {key[0]} | {key[1]} | {values} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="sample_data only, about a minute")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    results = {}
    with tempfile.TemporaryDirectory(prefix="recsys-real-") as tmp:
        tmp = Path(tmp)
        results["sample"] = run_one("sample", ROOT / "sample_data", tmp / "sample", Config())
        if not args.small:
            for name, (fmt, src, config) in REAL.items():
                import_dataset(fmt, src, tmp / f"{name}-data")
                cfg = load_config(config)
                results[name] = run_one(name, tmp / f"{name}-data", tmp / name, cfg)

            damped = results["hetrec"]
            cosine_cfg = with_settings(load_config(REAL["hetrec"][2]),
                                       similarity={"measure": "cosine"})
            cosine = run_one("hetrec, plain cosine", tmp / "hetrec-data", tmp / "hetrec-cos",
                             cosine_cfg)
            bias_side_by_side({"cosine": cosine, "rp3beta (default)": damped})

    fields = []
    for name, r in results.items():
        fields += [f"{name}_ndcg_ranker={r['ndcg_ranker'] or 0:.4f}",
                   f"{name}_ndcg_order={r['ndcg_candidate_order'] or 0:.4f}",
                   f"{name}_users={r['ndcg_users']}", f"{name}_s={r['seconds']:.1f}"]
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
