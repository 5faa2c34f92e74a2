"""Who to follow on sample_data and HetRec: the figures the README shows.

Runs `recsys.follow_batch.follow_tables` (what `recsys run` calls for the follow tables) on
sample_data (dated follows: the window protocol) and on HetRec Last.fm 2K (imported into a
temporary folder; its undated friend graph: the seeded hold-out), with the default settings and
with ALS's variants (the classification form, genre bays, graph bays), and prints recall@10 and
NDCG@10 of every list with the users scored, the factor counts chosen, the seconds, and the
share of the served slots that go to the 1% most followed accounts. On sample_data it also
scores `co_followed` alone at the evaluation cut under each damping of the account similarity,
with the same share for its lists.

    python benchmarks/follow.py            # both datasets, every variant (a few minutes)
    python benchmarks/follow.py --small    # sample_data, default settings and damping

The last line is `RESULT <dataset>_<list>_recall=.. <dataset>_<list>_ndcg=.. <dataset>_users=..
<dataset>_s=..` for the merged list and the most-followed baseline of each default run.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import polars as pl

from recsys import schema as s
from recsys.config import Config, config_from
from recsys.follow_batch import View, follow_tables, window_protocol
from recsys.io.dataset import read_dataset
from recsys.io.importers import HETREC, import_dataset
from recsys.pipeline import default_as_of
from recsys.stages import follow as fl
from recsys.stages.feedback import events_before, feedback
from recsys.stages.follow_eval import ranking_metrics

ROOT = Path(__file__).resolve().parents[1]
HETREC_SRC = ROOT.parent / "shared" / "datasets" / "hetrec2011-lastfm-2k"
VARIANTS = {
    "default": {},
    "classification": {"affinity": "classification"},
    "genre bays": {"bays": "genre"},
    "graph bays": {"bays": "graph"},
}
DAMPING = {
    "cooccurrence": {"measure": "cooccurrence"},
    "cosine": {"measure": "cosine"},
    "bm25": {"measure": "bm25"},
    "rp3beta, beta 0": {"measure": "rp3beta", "beta": 0.0},
    "rp3beta, beta 0.5 (default)": {"measure": "rp3beta", "beta": 0.5},
    "rp3beta, beta 1": {"measure": "rp3beta", "beta": 1.0},
}


def head_share(lists: pl.DataFrame, follows: pl.DataFrame, k: int = 10) -> float:
    """The share of the top-k slots that go to the 1% most followed accounts."""
    counts = fl.follower_counts(follows).sort([fl.FOLLOWERS, s.FOLLOWEE_ID],
                                              descending=[True, False])
    head = counts.head(max(1, counts.height // 100))[s.FOLLOWEE_ID]
    slots = lists.filter(pl.col("rank") <= k)
    return slots[s.FOLLOWEE_ID].is_in(head.implode()).mean() if slots.height else 0.0


def run_variant(dataset: str, data, name: str, settings: dict) -> dict:
    cfg = config_from({"follow": settings})
    started = time.perf_counter()
    tables = follow_tables(data, default_as_of(data.events), cfg)
    seconds = time.perf_counter() - started
    evaluation = tables["follow_evaluation"].pivot("metric", index=["list", "users"],
                                                   values="value")
    chosen = tables["follow_als_validation"].filter(pl.col("chosen"))
    share = head_share(tables["follow_recommendations"], tables["follows"])
    print(f"\n## {dataset}, {name}: {tables['follow_evaluation']['protocol'][0]} protocol, "
          f"{seconds:.1f} s")
    print("ALS factors chosen: " + ", ".join(f"{m} {f}" for m, f in
                                             chosen.select("model", "factors").iter_rows()))
    print(f"served slots going to the 1% most followed accounts: {share:.3f}")
    print("| list | users | recall@10 | ndcg@10 |\n|---|---|---|---|")
    for row in evaluation.iter_rows(named=True):
        print(f"| {row['list']} | {row['users']:,} | {row['recall@10']:.3f} | "
              f"{row['ndcg@10']:.3f} |")
    figures = {(r["list"], m): r[m] for r in evaluation.iter_rows(named=True)
               for m in ("recall@10", "ndcg@10")}
    return {"figures": figures, "users": evaluation["users"][0], "seconds": seconds}


def damping(data) -> None:
    """co_followed alone at the evaluation cut, under each similarity of accounts."""
    base = Config()
    as_of = default_as_of(data.events)
    edges = fl.follow_edges(data.follows.filter(pl.col(s.TS) < as_of))
    served = View(as_of, edges, feedback(events_before(data.events, as_of), base.feedback))
    test = window_protocol(data, served, base).test
    users = test.targets[s.USER_ID].unique()
    print("\n## sample_data, co_followed alone at the evaluation cut\n")
    print("| similarity | recall@10 | ndcg@10 | slots to the 1% most followed |")
    print("|---|---|---|---|")
    for name, settings in DAMPING.items():
        cfg = config_from({"follow": {"similarity": settings}}).follow
        lists, _ = fl.co_followed(test.view.follows, users, cfg, moment=test.view.moment)
        scored = ranking_metrics(lists, test.targets)
        print(f"| {name} | {scored['recall']:.3f} | {scored['ndcg']:.3f} | "
              f"{head_share(lists, test.view.follows):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true",
                        help="sample_data, default settings and damping, about a minute")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    results = {}
    sample = read_dataset(ROOT / "sample_data")
    variants = {"default": {}} if args.small else VARIANTS
    for name, settings in variants.items():
        results[("sample", name)] = run_variant("sample_data", sample, name, settings)
    damping(sample)
    if not args.small:
        with tempfile.TemporaryDirectory(prefix="recsys-follow-") as tmp:
            import_dataset(HETREC, HETREC_SRC, Path(tmp) / "hetrec")
            hetrec = read_dataset(Path(tmp) / "hetrec")
            for name in ("default", "genre bays", "graph bays"):
                results[("hetrec", name)] = run_variant("hetrec", hetrec, name, VARIANTS[name])

    fields = []
    for (dataset, name), r in results.items():
        if name != "default":
            continue
        for lst in ("merged", "most_followed"):
            fields += [f"{dataset}_{lst}_recall={r['figures'][(lst, 'recall@10')]:.4f}",
                       f"{dataset}_{lst}_ndcg={r['figures'][(lst, 'ndcg@10')]:.4f}"]
        fields += [f"{dataset}_users={r['users']}", f"{dataset}_s={r['seconds']:.1f}"]
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
