"""The popularity trade-off (`recsys sweep`): accuracy against exposure for damping settings.

At the evaluation's cuts (`recsys.offline.plan_cuts`: the latest one label window before the
end of the data or `--as-of`, and earlier ones stacked while too few users are scored), each
setting recomputes the similarity from the events before a cut and gives a seeded sample of
users (`sweep.users` among those with history there) the similarity expansion of their seeds
alone, the `similarity:<measure>` model of the evaluation. Each setting records NDCG@10 on the
window after the cut (over the sampled users with a new positive there) against the exposure of
the sample's top-10 lists: tail share, Gini, coverage, mean popularity and the top 1% share of
`recsys.bias`. The settings: every measure with the config's knobs, RP3beta with each beta of
`sweep.betas`, and BM25 with each b of `sweep.bm25_b`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from recsys import baselines, evaluate as ev, schema as s
from recsys.config import Config, SimilarityConfig
from recsys.io.dataset import read_dataset
from recsys.offline import Window, first_cut, plan_cuts
from recsys.pipeline import Progress, fingerprint
from recsys.results import SWEEPS, ResultWriter
from recsys.stages.candidates import popularity
from recsys.stages.similarity import MEASURES
from recsys.store import new_run_id

log = logging.getLogger(__name__)

K = 10
SETTING, MEASURE, BETA, BM25_K1, BM25_B = "setting", "measure", "beta", "bm25_k1", "bm25_b"
NDCG, USERS = "ndcg", "users"
EXPOSURE = ("tail_share", "gini", "coverage", "mean_popularity", "top1_share")
POINT_SCHEMA = {SETTING: pl.String, MEASURE: pl.String, BETA: pl.Float64, BM25_K1: pl.Float64,
                BM25_B: pl.Float64, NDCG: pl.Float64, **{m: pl.Float64 for m in EXPOSURE},
                USERS: pl.Int64}


def setting_label(sim: SimilarityConfig) -> str:
    """A setting in words: the measure and the knob it uses."""
    if sim.measure == "rp3beta":
        return f"rp3beta beta={sim.beta:g}"
    if sim.measure == "bm25":
        return f"bm25 k1={sim.bm25_k1:g} b={sim.bm25_b:g}"
    return sim.measure


def settings(cfg: Config) -> list[SimilarityConfig]:
    """The damping settings of a sweep, each once, in a stable order."""
    base = cfg.similarity
    tried = [base.model_copy(update={"measure": m}) for m in MEASURES]
    tried += [base.model_copy(update={"measure": "rp3beta", "beta": b}) for b in cfg.sweep.betas]
    tried += [base.model_copy(update={"measure": "bm25", "bm25_b": b}) for b in cfg.sweep.bm25_b]
    unique = {setting_label(sim): sim for sim in tried}
    return list(unique.values())


@dataclass
class SweepRun:
    sweep_id: str
    path: Path
    points: pl.DataFrame
    summary: dict


def run_sweep(data_dir: str | Path, store: str | Path, *, cfg: Config,
              as_of: datetime | None = None, progress: Progress | None = None) -> SweepRun:
    """Measure every damping setting on a seeded sample of users at the evaluation's cuts and
    write `store/sweeps/<id>.duckdb`."""
    begun, created = time.perf_counter(), datetime.now(timezone.utc)
    data_dir = Path(data_dir)
    data = read_dataset(data_dir)
    windows = [cut.test for cut in plan_cuts(data, first_cut(data, as_of, cfg), cfg)]
    samples = [sample_users(window, cfg) for window in windows]
    tried = settings(cfg)
    points = []
    for done, sim in enumerate(tried, start=1):
        points.append(measure_setting(windows, samples, sim, data.tracks, cfg))
        if progress:
            progress(setting_label(sim), done, len(tried))
    frame = pl.DataFrame(points, schema=POINT_SCHEMA)
    sweep_id = new_run_id(created)
    summary = {
        "sweep_id": sweep_id, "created_at": created, "input": str(data_dir.resolve()),
        "fingerprint": fingerprint(data, data_dir), "config": json.dumps(cfg.model_dump()),
        "kpi": cfg.labels.kpi, "as_of": windows[0].start, "window_end": windows[0].end,
        "cuts": len(windows), "sample_users": sum(sample.len() for sample in samples),
        "seed": cfg.sweep.seed, "users_scored": int(frame[USERS].max() or 0),
        "in_use": setting_label(cfg.similarity),
        "seconds": round(time.perf_counter() - begun, 2),
    }
    tables = {"sweep": pl.DataFrame([summary]), "sweep_points": frame}
    path = ResultWriter(store, SWEEPS, sweep_id).write_all(tables)
    log.info("sweep %s written: %d settings on %s (cut, user) pairs in %.0f s", sweep_id,
             len(tried), f"{summary['sample_users']:,}", summary["seconds"])
    return SweepRun(sweep_id, path, frame, summary)


def sample_users(window: Window, cfg: Config) -> pl.Series:
    """A seeded sample of `sweep.users` users with history before the window, sorted."""
    users = window.train.positive()[s.USER_ID].unique().sort()
    return users.sample(min(cfg.sweep.users, users.len()), seed=cfg.sweep.seed).sort()


def measure_setting(windows: list[Window], samples: list[pl.Series], sim: SimilarityConfig,
                    tracks: pl.DataFrame, cfg: Config) -> dict:
    """One point of the frontier: NDCG@10 of the samples' lists under `sim` (a mean over the
    (cut, user) pairs scored), and their exposure (per cut, averaged over the cuts by lists)."""
    started = time.perf_counter()
    # Neighbours computed for this k only (the evaluation's grid is not tried here).
    run_cfg = cfg.model_copy(update={"similarity": sim, "evaluation": cfg.evaluation.model_copy(
        update={"similarity_k": (sim.k,)})})
    scored, exposure = [], []
    for window, sample in zip(windows, samples):
        lists = baselines.recommend(baselines.similarity_model(sim.measure), window.train,
                                    sample, K, {"k": sim.k}, run_cfg)
        positives = window.positives.join(sample.to_frame(s.USER_ID), on=s.USER_ID, how="semi")
        scored.append(ev.accuracy(lists, positives, ks=(K,)))
        exposure.append(ev.bias_rows(lists, popularity(window.train.feedback), tracks, ks=(K,)))
    ndcg = pl.concat(scored)[ev.NDCG]
    measures = pl.concat(exposure).group_by(ev.METRIC).agg(
        (pl.col(ev.VALUE) * pl.col(ev.USERS)).sum() / pl.col(ev.USERS).sum())
    values = dict(measures.iter_rows())
    point = {
        SETTING: setting_label(sim), MEASURE: sim.measure, BETA: sim.beta, BM25_K1: sim.bm25_k1,
        BM25_B: sim.bm25_b, NDCG: float(ndcg.mean()) if ndcg.len() else None,
        **{m: values[f"{m}@{K}"] for m in EXPOSURE}, USERS: ndcg.len(),
    }
    log.info("sweep %s: ndcg@10 %.4f over %d users, tail share %.3f, gini %.3f in %.1f s",
             point[SETTING], point[NDCG] or 0.0, point[USERS], point["tail_share"],
             point["gini"], time.perf_counter() - started)
    return point
