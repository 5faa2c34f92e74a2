"""The popularity trade-off (`recsys sweep`): accuracy against exposure for damping settings.

At the evaluation's latest cut (one label window before the end of the data, or `--as-of`),
each setting recomputes the similarity from the events before the cut and gives a seeded
sample of users (`sweep.users` among those with history) the similarity expansion of their
seeds alone, the `similarity:<measure>` model of the evaluation. Each setting records NDCG@10
on the window after the cut (over the sampled users with a new positive there) against the
exposure of the sample's top-10 lists: tail share, Gini, coverage, mean popularity and the top
1% share of `recsys.bias`. The settings: every measure with the config's knobs, RP3beta with
each beta of `sweep.betas`, and BM25 with each b of `sweep.bm25_b`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from recsys import baselines, evaluate as ev, schema as s
from recsys.config import Config, SimilarityConfig
from recsys.io.dataset import read_dataset
from recsys.offline import Window, first_cut, label_window
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


def in_use(points: pl.DataFrame, sim: SimilarityConfig) -> pl.Series:
    """Which sweep points (`sweep_points` rows) are the setting `sim`."""
    return points[SETTING] == setting_label(sim)


@dataclass
class SweepRun:
    sweep_id: str
    path: Path
    points: pl.DataFrame
    summary: dict


def run_sweep(data_dir: str | Path, store: str | Path, *, cfg: Config,
              as_of: datetime | None = None, progress: Progress | None = None) -> SweepRun:
    """Measure every damping setting on a seeded sample of users and write
    `store/sweeps/<id>.duckdb`."""
    begun, created = time.perf_counter(), datetime.now(timezone.utc)
    data_dir = Path(data_dir)
    data = read_dataset(data_dir)
    start = first_cut(data, as_of, cfg)
    window = label_window(data, start, start + timedelta(days=cfg.labels.window_days), cfg)
    sample = sample_users(window, cfg)
    tried = settings(cfg)
    points = []
    for done, sim in enumerate(tried, start=1):
        points.append(measure_setting(window, sample, sim, data.tracks, cfg))
        if progress:
            progress(setting_label(sim), done, len(tried))
    frame = pl.DataFrame(points, schema=POINT_SCHEMA)
    sweep_id = new_run_id(created)
    summary = {
        "sweep_id": sweep_id, "created_at": created, "input": str(data_dir.resolve()),
        "fingerprint": fingerprint(data, data_dir), "config": json.dumps(cfg.model_dump()),
        "kpi": cfg.labels.kpi, "as_of": window.start, "window_end": window.end,
        "sample_users": sample.len(), "seed": cfg.sweep.seed,
        "users_scored": int(frame[USERS].max() or 0),
        "in_use": setting_label(cfg.similarity),
        "seconds": round(time.perf_counter() - begun, 2),
    }
    tables = {"sweep": pl.DataFrame([summary]), "sweep_points": frame}
    path = ResultWriter(store, SWEEPS, sweep_id).write_all(tables)
    log.info("sweep %s written: %d settings on %s users in %.0f s", sweep_id, len(tried),
             f"{sample.len():,}", summary["seconds"])
    return SweepRun(sweep_id, path, frame, summary)


def sample_users(window: Window, cfg: Config) -> pl.Series:
    """A seeded sample of `sweep.users` users with history before the cut, sorted."""
    users = window.train.positive()[s.USER_ID].unique().sort()
    return users.sample(min(cfg.sweep.users, users.len()), seed=cfg.sweep.seed).sort()


def measure_setting(window: Window, sample: pl.Series, sim: SimilarityConfig, tracks: pl.DataFrame,
                    cfg: Config) -> dict:
    """One point of the frontier: NDCG@10 of the sample's lists under `sim`, and their
    exposure."""
    started = time.perf_counter()
    run_cfg = cfg.model_copy(update={"similarity": sim, "evaluation": cfg.evaluation.model_copy(
        update={"similarity_k": (sim.k,)})})
    lists = baselines.recommend(baselines.similarity_model(sim.measure), window.train, sample,
                                K, {"k": sim.k}, run_cfg)
    positives = window.positives.join(sample.to_frame(s.USER_ID), on=s.USER_ID, how="semi")
    scored = ev.accuracy(lists, positives, ks=(K,))
    exposure = ev.bias_rows(lists, popularity(window.train.feedback), tracks, ks=(K,))
    values = dict(exposure.select(ev.METRIC, ev.VALUE).iter_rows())
    point = {
        SETTING: setting_label(sim), MEASURE: sim.measure, BETA: sim.beta, BM25_K1: sim.bm25_k1,
        BM25_B: sim.bm25_b, NDCG: float(scored[ev.NDCG].mean()) if scored.height else None,
        **{m: values[f"{m}@{K}"] for m in EXPOSURE}, USERS: scored.height,
    }
    log.info("sweep %s: ndcg@10 %.4f over %d users, tail share %.3f, gini %.3f in %.1f s",
             point[SETTING], point[NDCG] or 0.0, point[USERS], point["tail_share"],
             point["gini"], time.perf_counter() - started)
    return point
