"""The offline evaluation (`recsys evaluate`): every model on the same time split.

Time (DESIGN.md): with `w` the label window (`labels.window_days`), the first cut is one window
before the end of the data (or `--as-of`): models see the events before it and are scored on
the window after it. When that window scores fewer than `evaluation.min_users` users, rolling
cuts one window earlier each are stacked, up to `evaluation.max_cuts`. At each cut:

- the scored users are those with a positive track before the cut and a positive in the
  window on a track they had not heard before it (users with none are left out and counted);
- each baseline's settings are tuned on the window just before the cut (models fitted on the
  events before that window, chosen by NDCG@10), then refitted on every event before the cut;
  with `evaluation.tune_each_cut` off, they are tuned once, on the window before the earliest
  cut, and kept at every cut (still never on a test window, and far cheaper for EASE);
- the hybrid is the batch itself: `pipeline.fit_ranker` and `pipeline.serve` at the cut, which
  train the ranker on earlier windows only and early-stop on the window before the cut.

Nothing at or after a cut feeds a model of that cut. The metrics (`recsys.evaluate`) are means
over the (cut, user) pairs scored.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from recsys import __version__, baselines, evaluate as ev, faithfulness, schema as s
from recsys.baselines import HYBRID, RANK, ModelSkipped, Train
from recsys.config import Config
from recsys.errors import RunError, UsageError
from recsys.io.dataset import Dataset, read_dataset
from recsys.pipeline import (
    Progress, StageLog, check_as_of, default_as_of, fingerprint, fit_ranker, serve,
)
from recsys.results import EVALUATIONS, ResultWriter
from recsys.stages.candidates import popularity
from recsys.stages.feedback import POSITIVE, events_before, feedback
from recsys.stages.labels import LABEL, labels
from recsys.store import new_run_id

log = logging.getLogger(__name__)

CUT, MODEL = "cut", "model"
TUNE_K = 10  # settings are chosen by NDCG at this k on the validation window


@dataclass
class Window:
    """One label window [start, end): the feedback before it, the users it scores (user_id,
    history_size) and their new positives (user_id, track_id, label)."""

    start: datetime
    end: datetime
    train: Train
    users: pl.DataFrame
    positives: pl.DataFrame
    without_positive: int
    cold: int

    @property
    def scored(self) -> int:
        return self.users.height


def label_window(data: Dataset, start: datetime, end: datetime, cfg: Config) -> Window:
    """The users scored on [start, end) and their positives on tracks new to them."""
    fb = feedback(events_before(data.events, start), cfg.feedback)
    graded = labels(data.events, start=start, end=end, kpi=cfg.labels.kpi, weights=cfg.feedback)
    fresh = ev.new_positives(graded, fb)
    history = fb.filter(pl.col(POSITIVE)).group_by(s.USER_ID).agg(
        pl.len().cast(pl.Int64).alias(ev.HISTORY_SIZE))
    later = fresh.select(s.USER_ID).unique()
    users = history.join(later, on=s.USER_ID, how="semi").sort(s.USER_ID)
    return Window(
        start, end, Train(start, fb), users,
        fresh.join(users, on=s.USER_ID, how="semi").select(s.USER_ID, s.TRACK_ID, LABEL),
        without_positive=history.height - users.height,
        cold=later.join(history, on=s.USER_ID, how="anti").height,
    )


@dataclass
class Cut:
    """A cut: the window it is scored on and the window before it, for tuning."""

    index: int
    test: Window
    validation: Window


def plan_cuts(data: Dataset, first: datetime, cfg: Config) -> list[Cut]:
    """Cuts from `first` back, one label window apart, until `evaluation.min_users` users are
    scored or `evaluation.max_cuts` are taken; a cut with no event before its validation
    window ends the list."""
    width = timedelta(days=cfg.labels.window_days)
    earliest = data.events[s.TS].min()
    cuts: list[Cut] = []
    windows: dict[datetime, Window] = {}

    def window_at(start: datetime) -> Window:
        if start not in windows:
            windows[start] = label_window(data, start, start + width, cfg)
        return windows[start]

    for index in range(cfg.evaluation.max_cuts):
        start = first - index * width
        if earliest is None or start - width <= earliest:
            break
        cut = Cut(index, window_at(start), window_at(start - width))
        cuts.append(cut)
        log.info("cut %d at %s: %s users scored (%s with history but no new positive, %s new "
                 "users with one)", index, f"{start:%Y-%m-%d %H:%M:%S}", cut.test.scored,
                 f"{cut.test.without_positive:,}", cut.test.cold)
        if sum(c.test.scored for c in cuts) >= cfg.evaluation.min_users:
            break
    if not cuts or not sum(c.test.scored for c in cuts):
        raise RunError(
            f"no user has both a positive track before a cut and a new positive in the "
            f"{cfg.labels.window_days:g}-day window after it, over {len(cuts)} cut(s) from "
            f"{first:%Y-%m-%d}; try a longer labels.window_days or another labels.kpi"
        )
    return cuts


@dataclass
class Evaluation:
    """Everything one evaluation produced, before it is written to its file."""

    cuts: list[Cut]
    lists: pl.DataFrame
    tuning: list[dict] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    faithfulness: pl.DataFrame | None = None
    chosen: dict[str, dict] = field(default_factory=dict)
    candidates: list[pl.DataFrame] = field(default_factory=list)


def tune(model: str, cut: Cut, cfg: Config) -> tuple[dict, list[dict]]:
    """The setting of `model` with the best NDCG@10 on the cut's validation window, and one
    row per setting tried. With nobody to score there, the grid's first setting."""
    window, settings = cut.validation, baselines.grid(model, cfg)
    rows = []
    for params in settings:
        value = None
        if window.scored and len(settings) > 1:
            lists = baselines.recommend(model, window.train, window.users[s.USER_ID], TUNE_K,
                                        params, cfg)
            per_user = ev.accuracy(lists, window.positives, ks=(TUNE_K,))
            value = float(per_user[ev.NDCG].mean())
        rows.append({CUT: cut.index, MODEL: model, "params": json.dumps(params),
                     "validation_ndcg": value, "validation_users": window.scored})
    best = max(range(len(settings)), key=lambda i: (rows[i]["validation_ndcg"] or 0.0, -i))
    for i, row in enumerate(rows):
        row["chosen"] = i == best
    return settings[best], rows


def evaluate_baseline(model: str, cut: Cut, cfg: Config, result: Evaluation) -> pl.DataFrame:
    """The lists of `model` for the cut's scored users, tuned first; empty when it is skipped."""
    started = time.perf_counter()
    try:
        if cfg.evaluation.tune_each_cut or model not in result.chosen:
            params, rows = tune(model, cut, cfg)
            result.chosen[model] = params
        else:
            params, rows = result.chosen[model], []
        lists = baselines.recommend(model, cut.test.train, cut.test.users[s.USER_ID],
                                    max(cfg.evaluation.ks), params, cfg)
    except ModelSkipped as exc:
        result.status[model] = f"skipped: {exc}"
        log.warning("%s skipped: %s", model, exc)
        return pl.DataFrame()
    result.tuning += rows
    log.info("%s at cut %d: %s, %s lists in %.1f s", model, cut.index, json.dumps(params),
             f"{lists[s.USER_ID].n_unique():,}", time.perf_counter() - started)
    return lists


def hybrid_config(cfg: Config) -> Config:
    """The batch's config with lists as long as the longest k measured."""
    return cfg.model_copy(update={"recommend": cfg.recommend.model_copy(
        update={"n": max(cfg.evaluation.ks)})})


def evaluate_hybrid(data: Dataset, cut: Cut, cfg: Config, result: Evaluation) -> pl.DataFrame:
    """The batch's own lists at the cut (its fit and serve functions), for the scored users;
    at the latest cut also the faithfulness of its "because you liked" seeds."""
    started = time.perf_counter()
    batch_cfg = hybrid_config(cfg)
    stage = StageLog(None, total=0)
    outcome = fit_ranker(data, cut.test.start, batch_cfg, stage)
    tables = serve(data, cut.test.start, outcome.ranker, batch_cfg, stage).tables
    note = f"ranker {outcome.status}" if outcome.ranker else outcome.status
    before = result.status.get(HYBRID)
    if before not in (None, note):
        note = f"{before}; cut {cut.index}: {note}"
    result.status[HYBRID] = note
    if cut.index == 0 and outcome.ranker is not None and cfg.evaluation.faithfulness_sample:
        result.faithfulness = faithfulness.seed_removal(
            data, cut.test.start, tables, outcome.ranker, batch_cfg,
            sample=cfg.evaluation.faithfulness_sample, seed=cfg.evaluation.seed,
        )
    scored = cut.test.users.select(s.USER_ID)
    result.candidates.append(tables["candidates"].join(scored, on=s.USER_ID, how="semi")
                             .select(pl.lit(cut.index).alias(CUT), s.USER_ID, s.TRACK_ID))
    lists = tables["recommendations"].join(scored, on=s.USER_ID, how="semi")
    log.info("hybrid at cut %d: %s lists in %.1f s", cut.index, f"{lists[s.USER_ID].n_unique():,}",
             time.perf_counter() - started)
    return lists.select(s.USER_ID, s.TRACK_ID, pl.col(RANK).cast(pl.Int64))


def run_models(data: Dataset, cuts: list[Cut], cfg: Config,
               progress: Progress | None = None) -> Evaluation:
    """Every model's lists at every cut, with the tuning rows and the models' status. The cuts
    run from the earliest, where the settings are tuned once when `tune_each_cut` is off."""
    models = baselines.model_names(cfg)
    result = Evaluation(cuts, pl.DataFrame())
    frames, done = [], 0
    for cut in reversed(cuts):
        for model in models:
            if not result.status.get(model, "").startswith("skipped"):
                lists = (evaluate_hybrid(data, cut, cfg, result) if model == HYBRID
                         else evaluate_baseline(model, cut, cfg, result))
                if lists.height:
                    frames.append(lists.with_columns(pl.lit(model).alias(MODEL),
                                                     pl.lit(cut.index).alias(CUT)))
            done += 1
            if progress:
                progress(f"cut {cut.index}: {model}", done, len(cuts) * len(models))
    for model in models:
        result.status.setdefault(model, "evaluated")
    result.lists = pl.concat(frames) if frames else pl.DataFrame(
        schema={s.USER_ID: pl.String, s.TRACK_ID: pl.String, RANK: pl.Int64, MODEL: pl.String,
                CUT: pl.Int32})
    return result


def metrics_table(result: Evaluation, tracks: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """model, metric, k, value, users, slice_kind, slice for every model evaluated."""
    keys = (CUT, s.USER_ID)
    ks = cfg.evaluation.ks
    cuts = result.cuts
    positives = pl.concat([c.test.positives.with_columns(pl.lit(c.index).alias(CUT))
                           for c in cuts])
    history = pl.concat([c.test.users.with_columns(pl.lit(c.index).alias(CUT)) for c in cuts])
    deciles = ev.activity_deciles(history, keys=keys)
    listeners = {c.index: popularity(c.test.train.feedback) for c in cuts}
    buckets = pl.concat([ev.popularity_buckets(listeners[c.index], tracks)
                         .with_columns(pl.lit(c.index).alias(CUT)) for c in cuts])

    frames = []
    for model in result.lists[MODEL].unique(maintain_order=True):
        lists = result.lists.filter(pl.col(MODEL) == model).drop(MODEL)
        per_query = ev.accuracy(lists, positives, ks, keys).join(deciles, on=list(keys))
        rows = [ev.mean_rows(per_query, ev.ACCURACY),
                ev.mean_rows(per_query, ev.ACCURACY, slice_kind=ev.ACTIVITY_DECILE,
                             slice_by=ev.ACTIVITY_DECILE)]
        for bucket in ev.BUCKETS:
            relevant = positives.join(buckets.filter(pl.col(ev.POPULARITY_BUCKET) == bucket),
                                      on=[CUT, s.TRACK_ID], how="semi")
            if relevant.height:
                sliced = ev.accuracy(lists, relevant, ks, keys).with_columns(
                    pl.lit(bucket).alias(ev.POPULARITY_BUCKET))
                rows.append(ev.mean_rows(sliced, ev.ACCURACY, slice_kind=ev.POPULARITY_BUCKET,
                                         slice_by=ev.POPULARITY_BUCKET))
        rows.append(_beyond_accuracy(lists, cuts, listeners, tracks, ks))
        if model == HYBRID and result.candidates:
            rows.append(_candidate_recall(pl.concat(result.candidates), positives))
        frames.append(pl.concat(rows).select(pl.lit(model).alias(MODEL), pl.all()))
    return pl.concat(frames) if frames else pl.DataFrame(schema={MODEL: pl.String,
                                                                 **ev.ROW_SCHEMA})


def comparisons(result: Evaluation, cfg: Config) -> pl.DataFrame:
    """model, metric, hybrid_minus_model, ci_low, ci_high, users: the hybrid's NDCG at the
    middle k against each other model's, paired over the (cut, user) pairs, with a seeded 95%
    bootstrap interval; empty without the hybrid."""
    ks = sorted(cfg.evaluation.ks)
    k = ks[len(ks) // 2]
    keys = [CUT, s.USER_ID]
    positives = pl.concat([c.test.positives.with_columns(pl.lit(c.index).alias(CUT))
                           for c in result.cuts])
    models = result.lists[MODEL].unique(maintain_order=True).to_list()

    def ndcg(model: str) -> pl.DataFrame:
        lists = result.lists.filter(pl.col(MODEL) == model).drop(MODEL)
        return ev.accuracy(lists, positives, ks=(k,), keys=keys).select(*keys, ev.NDCG)

    rows = []
    if HYBRID in models:
        hybrid = ndcg(HYBRID)
        for model in (m for m in models if m != HYBRID):
            paired = hybrid.join(ndcg(model), on=keys, suffix="_other")
            mean, low, high = ev.paired_bootstrap(paired[ev.NDCG].to_numpy(),
                                                  paired[f"{ev.NDCG}_other"].to_numpy(),
                                                  seed=cfg.evaluation.seed)
            rows.append({MODEL: model, ev.METRIC: ev.metric_name(ev.NDCG, k),
                         "hybrid_minus_model": mean, "ci_low": low, "ci_high": high,
                         ev.USERS: paired.height})
    return pl.DataFrame(rows, schema={MODEL: pl.String, ev.METRIC: pl.String,
                                      "hybrid_minus_model": pl.Float64, "ci_low": pl.Float64,
                                      "ci_high": pl.Float64, ev.USERS: pl.Int64})


def _candidate_recall(pool: pl.DataFrame, positives: pl.DataFrame) -> pl.DataFrame:
    """The row `candidate_recall` (k null): the mean share of a scored user's positives among
    all the hybrid's candidates, the ceiling of its recall at any k."""
    per_query = ev.pool_recall(pool, positives, keys=(CUT, s.USER_ID))
    row = {ev.METRIC: ev.CANDIDATE_RECALL, ev.K: None,
           ev.VALUE: per_query[ev.CANDIDATE_RECALL].mean(), ev.USERS: per_query.height,
           ev.SLICE_KIND: ev.ALL, ev.SLICE: ev.ALL}
    return pl.DataFrame([row], schema=ev.ROW_SCHEMA)


def _beyond_accuracy(lists, cuts, listeners, tracks, ks) -> pl.DataFrame:
    """Novelty (a mean over the (cut, user) lists) and the bias measures (per cut over its
    lists, then averaged over the cuts weighted by their lists)."""
    novelty = pl.concat([
        ev.novelty(lists.filter(pl.col(CUT) == c.index), listeners[c.index],
                   users=c.test.train.positive()[s.USER_ID].n_unique(), ks=ks, keys=(s.USER_ID,))
        for c in cuts
    ])
    per_cut = pl.concat([
        ev.bias_rows(lists.filter(pl.col(CUT) == c.index), listeners[c.index], tracks, ks)
        for c in cuts if lists.filter(pl.col(CUT) == c.index).height
    ])
    bias = per_cut.group_by(ev.METRIC, ev.K, ev.SLICE_KIND, ev.SLICE).agg(
        ((pl.col(ev.VALUE) * pl.col(ev.USERS)).sum() / pl.col(ev.USERS).sum()).alias(ev.VALUE),
        pl.col(ev.USERS).sum(),
    )
    return pl.concat([ev.mean_rows(novelty, (ev.NOVELTY,)), bias.select(ev.ROW_SCHEMA.keys())
                      .cast(ev.ROW_SCHEMA)])


def first_cut(data: Dataset, as_of: datetime | None, cfg: Config) -> datetime:
    """The latest cut: `as_of`, or one label window before the end of the data; its window
    must end by the end of the data."""
    end = default_as_of(data.events)
    width = timedelta(days=cfg.labels.window_days)
    if as_of is None:
        return end - width
    check_as_of(data.events, as_of)
    if as_of + width > end:
        last = end - timedelta(seconds=1)
        raise UsageError(
            f"--as-of {as_of:%Y-%m-%dT%H:%M:%SZ}: its {cfg.labels.window_days:g}-day label "
            f"window would end after the last event ({last:%Y-%m-%d %H:%M:%S}); choose a "
            "time at least labels.window_days before it"
        )
    return as_of


@dataclass
class EvaluationRun:
    evaluation_id: str
    path: Path
    metrics: pl.DataFrame
    cuts: pl.DataFrame
    status: dict[str, str]
    faithfulness: pl.DataFrame | None
    comparisons: pl.DataFrame


def run_evaluation(data_dir: str | Path, store: str | Path, *, cfg: Config,
                   as_of: datetime | None = None,
                   progress: Progress | None = None) -> EvaluationRun:
    """Evaluate every model of `cfg.evaluation.models` on `data_dir` and write the result into
    `store/evaluations/<id>.duckdb`."""
    begun = time.perf_counter()
    created = datetime.now(timezone.utc)
    data_dir = Path(data_dir)
    data = read_dataset(data_dir)
    cuts = plan_cuts(data, first_cut(data, as_of, cfg), cfg)
    result = run_models(data, cuts, cfg, progress)
    metrics = metrics_table(result, data.tracks, cfg)
    compared = comparisons(result, cfg)
    cut_rows = cuts_table(cuts)
    evaluation_id = new_run_id(created)
    summary = {
        "evaluation_id": evaluation_id, "created_at": created, "input": str(data_dir.resolve()),
        "fingerprint": fingerprint(data, data_dir), "config": json.dumps(cfg.model_dump()),
        "code_version": __version__, "kpi": cfg.labels.kpi,
        "window_days": cfg.labels.window_days, "as_of": cuts[0].test.start, "cuts": len(cuts),
        "users_scored": int(cut_rows["users_scored"].sum()),
        "seconds": round(time.perf_counter() - begun, 2),
    }
    tables = {
        "evaluation": pl.DataFrame([summary]),
        "cuts": cut_rows,
        "metrics": metrics,
        "model_status": pl.DataFrame({MODEL: list(result.status),
                                      "status": list(result.status.values())},
                                     schema={MODEL: pl.String, "status": pl.String}),
        "tuning": tuning_table(result.tuning),
        "comparisons": compared,
        "lists": result.lists.select(MODEL, CUT, s.USER_ID, RANK, s.TRACK_ID)
        .sort(MODEL, CUT, s.USER_ID, RANK),
        "faithfulness": result.faithfulness if result.faithfulness is not None
        else faithfulness.empty(),
    }
    path = ResultWriter(store, EVALUATIONS, evaluation_id).write_all(tables)
    log.info("evaluation %s written: %s metric rows, %s (cut, user) pairs scored in %.0f s",
             evaluation_id, f"{metrics.height:,}", summary["users_scored"], summary["seconds"])
    return EvaluationRun(evaluation_id, path, metrics, cut_rows, result.status,
                         result.faithfulness, compared)


def cuts_table(cuts: list[Cut]) -> pl.DataFrame:
    """cut, as_of, window_end, validation_start, users_scored, positives, users_without_positive,
    cold_users: one row per cut."""
    return pl.DataFrame([{
        CUT: c.index, "as_of": c.test.start, "window_end": c.test.end,
        "validation_start": c.validation.start, "users_scored": c.test.scored,
        "positives": c.test.positives.height, "users_without_positive": c.test.without_positive,
        "cold_users": c.test.cold,
    } for c in cuts], schema={CUT: pl.Int64, "as_of": s.UTC_DATETIME,
                              "window_end": s.UTC_DATETIME, "validation_start": s.UTC_DATETIME,
                              "users_scored": pl.Int64, "positives": pl.Int64,
                              "users_without_positive": pl.Int64, "cold_users": pl.Int64})


def tuning_table(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={CUT: pl.Int64, MODEL: pl.String, "params": pl.String,
                                      "validation_ndcg": pl.Float64,
                                      "validation_users": pl.Int64, "chosen": pl.Boolean})
