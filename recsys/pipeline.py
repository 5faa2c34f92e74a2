"""The batch: runs the stages in order for one as-of moment and publishes a run to the store.

Time (see DESIGN.md): a run at `as_of` sees the events with ts < as_of. With `w` the label
window (`labels.window_days`) and `n` the training cuts (`ranker.training_cuts`):

- window i (i = 0..n): features from the events before `as_of - (i + 1) w`, labels from the
  window after that cut. Window 0 is the validation window, windows 1..n the training windows,
  stacked as one ranking group per window and user;
- the number of trees: fitted on windows 2..n and stopped early on window 1 (with n = 1, on a
  seeded share of window 1's users);
- validation: a ranker fitted on windows 1..n with that many trees, and the plain candidate
  order, are both scored on window 0 (NDCG@10), which neither saw;
- serving: the ranker is refitted with the same number of trees on windows 0..n-1 (the latest
  n) and applied to the features at `as_of`.

At each moment the global stages (feedback of everyone, similarity, popularity, the listener
graph) run once (`world_at`); the per-user stages (candidates and walks, features, labels or
scores, curation, lists, explanations) then run over partitions of `batch.partition_users`
users (`snapshot_of` and `serve_users`), and serving streams each partition's rows into the run
file. A user's rows do not depend on the partition they fall in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recsys import __version__, bias, evaluate, follow_batch, partitions, schema as s
from recsys.config import Config
from recsys.errors import RecsysError, RunError, UsageError
from recsys.io.dataset import Dataset, read_dataset
from recsys.memory import PeakTracker
from recsys.stages import candidates as cand
from recsys.stages import affinity, explain, factors as fx, features as feat, walks
from recsys.stages.curation import apply_rules
from recsys.stages.feedback import events_before, feedback
from recsys.stages.labels import LABEL, LABEL_POSITIVE, labels
from recsys.stages.ranker import CUT, SCORE, TrainedRanker, ndcg_at, train_ranker
from recsys.stages.similarity import similar_tracks
from recsys.store import (
    RunWriter, discard_temporary, new_run_id, prune_runs, read_registry, record_run,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
ORDER_SCORE = "order_score"
RANKER_COLUMNS = (s.USER_ID, s.TRACK_ID, *feat.FEATURES, LABEL, LABEL_POSITIVE, ORDER_SCORE)
# Paths recorded per walk recommendation to share its visits between seeds; the store keeps
# the top `walks.paths_per_track` of them.
SHARE_PATHS = 50


@dataclass
class Snapshot:
    """What the engine knows at one moment: feedback, neighbours, the users' seeds and the
    listener graph their walks ran on, the ALS factors, and the candidates with their seed
    contributions."""

    moment: datetime
    feedback: pl.DataFrame
    similar: pl.DataFrame
    candidates: pl.DataFrame
    contributions: pl.DataFrame
    seeds: pl.DataFrame
    graph: walks.ListenerGraph
    factors: fx.Factors | None = None
    popularity: pl.DataFrame | None = None  # of everyone, when `feedback` holds only some users
    by_track: pl.DataFrame | None = None  # affinity.track_figures of everyone, likewise


@dataclass
class World:
    """What the global stages know at one moment, about everyone: feedback, neighbours, track
    popularity and the other per-track figures, the listener graph the walks run on, the ALS
    factors, and the follows made before it."""

    moment: datetime
    feedback: pl.DataFrame
    similar: pl.DataFrame
    popularity: pl.DataFrame
    by_track: pl.DataFrame
    graph: walks.ListenerGraph
    factors: fx.Factors | None
    follows: pl.DataFrame


@dataclass
class RunResult:
    run_id: str
    path: Path
    summary: dict
    stages: list[dict] = field(default_factory=list)


class StageLog:
    """Times each stage, logs one INFO line with its counts, seconds and peak memory, and
    reports progress.

    A stage starts with `start()`. A stage that runs once per user partition reports each
    partition with `part(...)` (a DEBUG line) and is summed into one INFO line by `close`.
    """

    def __init__(self, progress: Progress | None, total: int):
        self.progress = progress
        self.total = total
        self.done = 0
        self.rows: list[dict] = []
        self.memory = PeakTracker()
        self._cpu = time.process_time()
        self._parts: dict[str, dict] = {}

    def start(self) -> float:
        self.memory.start()
        self._cpu = time.process_time()
        return time.perf_counter()

    def __call__(self, name: str, started: float, **counts: int) -> None:
        seconds, peak = time.perf_counter() - started, self.memory.stage_peak()
        self._record(name, seconds, time.process_time() - self._cpu, peak, counts)
        self._advance(name)

    def part(self, name: str, started: float, partition: tuple[int, int], **counts: int) -> None:
        """One partition's share of stage `name`; `partition` is (its number from 1, of how
        many)."""
        seconds, peak = time.perf_counter() - started, self.memory.stage_peak()
        log.debug("%s, partition %s of %s: %s in %.1f s, peak %.0f MB", name, *partition,
                  _counts(counts), seconds, peak)
        summed = self._parts.setdefault(name, _nothing())
        summed["seconds"] += seconds
        summed["cpu"] += time.process_time() - self._cpu
        summed["peak"] = max(summed["peak"], peak)
        for key, value in counts.items():
            summed["counts"][key] = summed["counts"].get(key, 0) + value
        if self.progress:
            self.progress(f"{name} ({partition[0]}/{partition[1]})", self.done, self.total)

    def close(self, *names: str) -> None:
        """Log and record the summed partitions of each stage in `names`."""
        for name in names:
            summed = self._parts.pop(name, _nothing())
            self._record(name, summed["seconds"], summed["cpu"], summed["peak"],
                         summed["counts"])
            self._advance(name)

    @property
    def peak_mb(self) -> float:
        """The peak memory of the run so far (MB)."""
        self.memory.stage_peak()
        return self.memory.overall_mb

    def _record(self, name: str, seconds: float, cpu: float, peak: float, counts: dict) -> None:
        log.info("%s: %s in %.1f s, peak %.0f MB", name, _counts(counts), seconds, peak)
        self.rows.append({"stage": name, "seconds": round(seconds, 3),
                          "rows": sum(counts.values()), "cpu_seconds": round(cpu, 3),
                          "peak_memory_mb": round(peak, 1)})

    def _advance(self, name: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(name, self.done, self.total)


def _nothing() -> dict:
    return {"seconds": 0.0, "cpu": 0.0, "peak": 0.0, "counts": {}}


def _counts(counts: dict) -> str:
    return ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in counts.items())


def default_as_of(events: pl.DataFrame) -> datetime:
    """One second after the latest event, so that a default run sees everything."""
    if events.height == 0:
        return datetime.now(timezone.utc)
    return events[s.TS].max() + timedelta(seconds=1)


def check_as_of(events: pl.DataFrame, as_of: datetime) -> None:
    """Raise UsageError unless some event comes before `as_of`: with none, there is nothing
    to learn from."""
    first = events[s.TS].min()
    if first is None or first >= as_of:
        raise UsageError(f"--as-of {as_of.isoformat()} is not after any event (the first is "
                         f"{first.isoformat() if first else 'missing'}); choose a later time")


def take_snapshot(data: Dataset, moment: datetime, users: pl.Series, cfg: Config) -> Snapshot:
    """Build feedback, similarity and candidates from the events before `moment`."""
    return snapshot_of(world_at(data, moment, cfg), users, data, cfg)


def world_at(data: Dataset, moment: datetime, cfg: Config) -> World:
    """The global stages at `moment`: everyone's feedback from the events before it, the
    neighbours, the tracks' popularity and other figures, the listener graph and ALS."""
    fb = feedback(events_before(data.events, moment), cfg.feedback)
    similar = similar_tracks(fb, cfg.similarity, moment=moment)
    follows = follows_before(data.follows, moment)
    graph = walks.listener_graph(
        fb, follows=follows if cfg.walks.follow_probability > 0 else None
    )
    factors = fx.fit_factors(fb, cfg.factors) if cfg.factors.enabled else None
    by_track = affinity.track_figures(fb, moment, cfg.features)
    return World(moment, fb, similar, cand.popularity(fb), by_track, graph, factors, follows)


def snapshot_of(world: World, users: pl.Series, data: Dataset, cfg: Config) -> Snapshot:
    """The candidates of `users` in `world`, from their feedback and that of the accounts they
    follow (all that the per-user stages read besides the global figures)."""
    followed = world.follows.join(
        users.to_frame(s.FOLLOWER_ID), on=s.FOLLOWER_ID, how="semi"
    ).select(pl.col(s.FOLLOWEE_ID).alias(s.USER_ID))
    around = pl.concat([users.to_frame(s.USER_ID), followed]).unique()
    fb = world.feedback.join(around, on=s.USER_ID, how="semi")
    return build_snapshot(world.moment, users, fb, world.similar, data.tracks, world.follows,
                          cfg, graph=world.graph, popularity=world.popularity,
                          by_track=world.by_track, factors=world.factors)


def build_snapshot(
    moment: datetime,
    users: pl.Series,
    fb: pl.DataFrame,
    similar: pl.DataFrame,
    tracks: pl.DataFrame,
    follows: pl.DataFrame,
    cfg: Config,
    *,
    graph: walks.ListenerGraph | None = None,
    popularity: pl.DataFrame | None = None,
    by_track: pl.DataFrame | None = None,
    factors: fx.Factors | None = None,
) -> Snapshot:
    """The candidates of `users` from feedback `fb` and neighbours `similar`: similarity
    expansion, walks from the same seeds, ALS, and the fallbacks.

    `graph`, `popularity`, `by_track` and `factors`, built from everyone's feedback, let `fb`
    hold only the rows of `users` and of the accounts they follow; None builds them from `fb`
    (ALS is fitted on `fb` unless `factors` are given).
    """
    user_seeds = cand.seeds(fb, cfg.candidates).join(
        users.unique().to_frame(s.USER_ID), on=s.USER_ID, how="semi"
    )
    if graph is None:
        graph = walks.listener_graph(
            fb, follows=follows if cfg.walks.follow_probability > 0 else None
        )
    walked = walks.walk_candidates(graph, user_seeds, fb.select(s.USER_ID, s.TRACK_ID),
                                   cfg.walks)
    if factors is None and cfg.factors.enabled:
        factors = fx.fit_factors(fb, cfg.factors)
    factored = fx.als_candidates(factors, users, cfg.factors) if cfg.factors.enabled else None
    candidates, contributions = cand.generate_candidates(
        users, fb, similar, tracks, cfg.candidates, walked=walked, factored=factored,
        track_popularity=popularity,
    )
    return Snapshot(moment, fb, similar, candidates, contributions, user_seeds, graph, factors,
                    popularity, by_track)


def follows_before(follows: pl.DataFrame, moment: datetime) -> pl.DataFrame:
    """The follows made before `moment`; an undated follow counts at every moment."""
    return follows.filter(pl.col(s.TS).is_null() | (pl.col(s.TS) < moment))


def snapshot_features(data: Dataset, snap: Snapshot, cfg: Config) -> pl.DataFrame:
    return feat.build_features(
        snap.candidates, snap.contributions, snap.feedback, data.tracks,
        follows_before(data.follows, snap.moment), moment=snap.moment, cfg=cfg.candidates,
        features=cfg.features, track_popularity=snap.popularity, by_track=snap.by_track,
    )


def explain_lists(
    recs: pl.DataFrame, snap: Snapshot, cfg: Config
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The "because you liked" seeds of each recommendation (from its similarity
    contributions; for a walk, from the visits of its walk paths; for ALS, from implicit's
    explanation of its score) and the top walk paths into every recommendation that the walks
    proposed."""
    walked = recs.filter(pl.col(cand.SOURCES_COLUMN).list.contains(cand.WALK))
    paths_cfg = cfg.walks.model_copy(
        update={"paths_per_track": max(cfg.walks.paths_per_track, SHARE_PATHS)}
    )
    paths = walks.walk_reasons(snap.graph, snap.seeds, walked.select(s.USER_ID, s.TRACK_ID),
                               paths_cfg)
    reasons = pl.concat([
        explain.seed_reasons(recs, snap.contributions, cfg.recommend),
        explain.walk_seed_reasons(recs, paths, cfg.recommend),
        fx.als_reasons(snap.factors, explain.of_kind(recs, cand.ALS), cfg.recommend),
    ])
    return reasons.sort(s.USER_ID, s.TRACK_ID), explain.top_paths(paths, cfg.walks.paths_per_track)


def candidate_order(frame: pl.DataFrame) -> pl.Series:
    """The plain candidate order as a score: by similarity sum, then by walk score, then by ALS
    score, then by the fallbacks' scores; a source that did not propose a candidate puts it
    after those it did propose (an ALS score can be negative)."""
    proposed = [
        pl.when(pl.col(cand.rank_column(src)).is_not_null()).then(pl.col(cand.score_column(src)))
        for src in cand.SOURCES[1:]
    ]
    keys = [pl.col(s.USER_ID), pl.col(feat.SIM_SUM), *proposed, pl.col(s.TRACK_ID)]
    ranked = frame.with_row_index("_i").sort(
        keys, descending=[False, *[True] * (len(keys) - 2), False], nulls_last=True
    )
    position = ranked.with_columns(pl.int_range(pl.len()).over(s.USER_ID).alias("_p"))
    return -position.sort("_i")["_p"].cast(pl.Float64)


def labelled_rows(
    data: Dataset, moment: datetime, end: datetime, cfg: Config
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Training rows at `moment`: candidates of users with history, labelled by [moment, end);
    and the candidate recall of that window (see `evaluate.candidate_recall`).

    With `ranker.training_users` set, only a seeded sample of the users with a positive label
    in the window give rows. The users' rows are built partition by partition.
    """
    world = world_at(data, moment, cfg)
    graded = labels(data.events, start=moment, end=end, kpi=cfg.labels.kpi, weights=cfg.feedback,
                    tracks=data.tracks, thresholds=cfg.labels)
    users = world.feedback[s.USER_ID].unique()
    if cfg.ranker.training_users is not None:
        labelled = graded.filter(pl.col(LABEL) > 0)[s.USER_ID]
        users = partitions.sample(users.filter(users.is_in(labelled.implode())),
                                  cfg.ranker.training_users, cfg.ranker.seed)
    rows, recall = [], []
    for part in partitions.partitions(users, cfg.batch.partition_users):
        snap = snapshot_of(world, part, data, cfg)
        part_rows = snapshot_features(data, snap, cfg).join(
            graded, on=[s.USER_ID, s.TRACK_ID], how="left"
        ).with_columns(pl.col(LABEL).fill_null(0), pl.col(LABEL_POSITIVE).fill_null(False))
        rows.append(part_rows.with_columns(candidate_order(part_rows).alias(ORDER_SCORE)))
        recall.append(evaluate.candidate_recall(snap.candidates, graded, snap.feedback,
                                                snap.seeds))
    return pl.concat(rows), partitions.combine_recall(recall)


def fingerprint(data: Dataset, folder: Path) -> str:
    """sha256 over the input files' names and bytes."""
    digest = hashlib.sha256()
    for table in sorted(data.files):
        path = folder / data.files[table]
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class RankerOutcome:
    """The serving ranker, its comparison with the candidate order on the validation window,
    and the ranker that comparison scored (`judged`, fitted without the validation window)."""

    ranker: TrainedRanker | None
    evaluation: pl.DataFrame
    status: str
    recall: pl.DataFrame
    judged: TrainedRanker | None = None


def fit_ranker(data: Dataset, as_of: datetime, cfg: Config, stage: StageLog) -> RankerOutcome:
    """Label the windows, choose the number of trees, compare the ranker with the candidate
    order on the latest window, and refit for serving (see the module's docstring)."""
    window = timedelta(days=cfg.labels.window_days)
    valid_cut = as_of - window
    n = cfg.ranker.training_cuts

    started = stage.start()
    windows, recall = [], None
    for i in range(n + 1):
        cut = as_of - (i + 1) * window
        rows, window_recall = labelled_rows(data, cut, cut + window, cfg)
        rows = rows.select(RANKER_COLUMNS).with_columns(pl.lit(i, dtype=pl.Int32).alias(CUT))
        windows.append(rows)
        recall = window_recall if recall is None else recall
    stage("training rows", started, train_rows=sum(w.height for w in windows[1:]),
          validation_rows=windows[0].height)

    started = stage.start()
    trees = choose_trees(windows, cfg)
    judged = train_ranker(pl.concat(windows[1:]), feat.FEATURES, cfg.ranker, num_trees=trees)
    evaluation = compare_orders(judged, windows[0], valid_cut)
    final = train_ranker(pl.concat(windows[:n]), feat.FEATURES, cfg.ranker, num_trees=trees)
    final = final or judged
    status = "fitted" if final else "skipped: no user has both positive and other candidates"
    stage("ranker", started, train_rows=final.train_rows if final else 0,
          trees=final.best_iteration if final else 0)
    if evaluation.height:
        values = dict(zip(evaluation["order"], evaluation["value"]))
        log.info("ranker (%s): ndcg@10 %.4f against candidate order %.4f over %s users",
                 cfg.ranker.objective, values["ranker"], values["candidate_order"],
                 evaluation["users"][0])
    for row in recall.iter_rows(named=True):
        log.info("candidate recall (%s): %s of %s later positives of %s users",
                 row["sources"], f"{row['found']:,}", f"{row['positives']:,}", row["users"])
    recall = recall.select(pl.lit(valid_cut, dtype=s.UTC_DATETIME).alias("window_start"),
                           pl.all())
    return RankerOutcome(final, evaluation, status, recall, judged)


def choose_trees(windows: list[pl.DataFrame], cfg: Config) -> int | None:
    """The number of trees, by early stopping: fitted on the training windows before the latest
    one and stopped on the latest (`windows[1]`); with one training window (or nothing to learn
    before the latest), on a share of the users held out of the training windows. None when no
    training window has a user with mixed labels."""
    if len(windows) > 2:
        chooser = train_ranker(pl.concat(windows[2:]), feat.FEATURES, cfg.ranker,
                               stop_rows=windows[1])
        if chooser is not None:
            return chooser.best_iteration
    chooser = train_ranker(pl.concat(windows[1:]), feat.FEATURES, cfg.ranker)
    return chooser.best_iteration if chooser else None


def compare_orders(
    ranker: TrainedRanker | None, rows: pl.DataFrame, window_start: datetime
) -> pl.DataFrame:
    """window_start, order, metric, value, users: NDCG@10 of the ranker's order and of the
    plain candidate order on `rows` (a window the ranker did not learn from)."""
    schema = {"window_start": s.UTC_DATETIME, "order": pl.String, "metric": pl.String,
              "value": pl.Float64, "users": pl.Int64}
    if ranker is None or rows.height == 0:
        return pl.DataFrame(schema=schema)
    scored = rows.with_columns(pl.Series(SCORE, ranker.raw_scores(rows)))
    evaluation = []
    for order, column in (("ranker", SCORE), ("candidate_order", ORDER_SCORE)):
        value, users = ndcg_at(scored, column, k=10)
        evaluation.append({"window_start": window_start, "order": order, "metric": "ndcg@10",
                           "value": value, "users": users})
    return pl.DataFrame(evaluation, schema=schema)


# The tables that serving writes partition by partition, and its per-partition stages.
PER_USER_TABLES = ("candidates", "recommendations", "recommendation_features",
                   "recommendation_reasons", "walk_paths", "shap_values")
SERVING_STAGES = ("candidates", "features", "scoring", "explanations")


@dataclass
class Served:
    """What serving gives besides the per-user rows it streamed into the run file."""

    tables: dict[str, pl.DataFrame]
    recommendations: int
    users_with_recommendations: int
    expected_value: float | None


def serve(data: Dataset, as_of: datetime, ranker: TrainedRanker | None, cfg: Config,
          stage: StageLog, writer: RunWriter | None = None) -> Served:
    """Serve every user at `as_of`: the global stages once, then the per-user stages over
    partitions of `batch.partition_users` users, each partition's rows appended to the run
    file as it is done; then the popularity bias of all the lists.

    Without a `writer` (offline evaluation), the per-user tables, feedback and similar_tracks
    are kept in memory and returned in `Served.tables` with the others."""
    kept: dict[str, list[pl.DataFrame]] = {}
    started = stage.start()
    world = world_at(data, as_of, cfg)
    if writer is not None:
        writer.write("feedback", world.feedback)
        writer.write("similar_tracks", world.similar)
    stage("global", started, interactions=world.feedback.height,
          neighbour_pairs=world.similar.height)

    users = pl.concat([data.users[s.USER_ID], world.feedback[s.USER_ID]])
    size = cfg.batch.partition_users
    total = partitions.count(users, size)
    effects, contribs, listed = [], [], []
    for number, part in enumerate(partitions.partitions(users, size), 1):
        tables, part_effects, contrib = serve_users(world, part, data, ranker, cfg, stage,
                                                    (number, total))
        for name in PER_USER_TABLES:
            if writer is None:
                kept.setdefault(name, []).append(tables[name])
            else:
                writer.append(name, tables[name])
        listed.append(tables["recommendations"].select(s.USER_ID, s.TRACK_ID))
        effects.append(part_effects)
        contribs.append(contrib)
    stage.close(*SERVING_STAGES)

    started = stage.start()
    recs = pl.concat(listed)
    exposed = bias.exposure(recs, world.popularity, data.tracks, world.similar)
    tables = {
        "exposure": exposed,
        "popularity_bias": bias.bias_metrics(exposed),
        "lorenz": bias.lorenz_points(exposed),
        "curator_effects": partitions.combine_effects(effects),
        **catalogue_tables(data, world.feedback),
    }
    if writer is None:
        tables.update({name: pl.concat(frames) for name, frames in kept.items()},
                      feedback=world.feedback, similar_tracks=world.similar)
    stage("bias", started, exposure_rows=exposed.height)

    contrib = np.concatenate(contribs) if ranker else None
    tables["feature_importance"] = (explain.global_importance(ranker, contrib) if ranker
                                    else explain.empty_importance())
    expected = _expected_value(ranker)
    return Served(tables, recs.height, recs[s.USER_ID].n_unique(), expected)


def serve_users(
    world: World, users: pl.Series, data: Dataset, ranker: TrainedRanker | None, cfg: Config,
    stage: StageLog, partition: tuple[int, int],
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, np.ndarray | None]:
    """The per-user stages for one partition of `users`: candidates, features, scores, curated
    top-N lists, reasons and, for `recommend.shap_share` of the users, SHAP rows.

    Returns the partition's tables (PER_USER_TABLES), the curator rules' effects, and the SHAP
    contributions of the explained recommendations (None without a ranker).
    """
    started = stage.start()
    snap = snapshot_of(world, users, data, cfg)
    stage.part("candidates", started, partition, users=users.len(),
               candidates=snap.candidates.height)

    started = stage.start()
    rows = snapshot_features(data, snap, cfg)
    stage.part("features", started, partition, rows=rows.height)

    started = stage.start()
    order = candidate_order(rows)
    score = pl.Series(SCORE, ranker.raw_scores(rows)) if ranker else order
    rows = rows.with_columns(order.alias(ORDER_SCORE), score.alias(SCORE))
    rows = rows.with_columns(explain.rank_before(ORDER_SCORE))
    allowed, effects = apply_rules(rows, data.tracks, cfg.curation, n=cfg.recommend.n)
    recs = explain.top_n(allowed, cfg.recommend.n).with_columns(explain.reason_kind())
    stage.part("scoring", started, partition, recommendations=recs.height)

    started = stage.start()
    reasons, paths = explain_lists(recs, snap, cfg)
    shap, contrib = _shap(recs, ranker, cfg)
    stage.part("explanations", started, partition, reasons=reasons.height,
               walk_paths=paths.height, shap_rows=shap.height)

    tables = {
        "candidates": rows.select(
            s.USER_ID, s.TRACK_ID, cand.SOURCES_COLUMN,
            *[_source_column(c, src) for src in cand.SOURCES
              for c in (cand.score_column(src), cand.rank_column(src))],
            SCORE,
        ),
        "recommendations": recs.select(s.USER_ID, explain.RANK, s.TRACK_ID, SCORE,
                                       explain.REASON_KIND, *explain.LEDGER_COLUMNS),
        "recommendation_features": recs.select(s.USER_ID, s.TRACK_ID, *feat.FEATURES),
        "recommendation_reasons": reasons,
        "walk_paths": paths,
        "shap_values": shap,
    }
    return tables, effects, contrib


def _shap(
    recs: pl.DataFrame, ranker: TrainedRanker | None, cfg: Config
) -> tuple[pl.DataFrame, np.ndarray | None]:
    """The SHAP rows of the recommendations of `recommend.shap_share` of the users (chosen by a
    hash of `recommend.shap_seed` and their ids, whatever the partition), and their
    contributions. The others' are computed on demand from the stored features
    (recommendation_features) and model."""
    if ranker is None:
        return explain.empty_shap(), None
    explained = explain.shap_sample(recs, cfg.recommend.shap_share, cfg.recommend.shap_seed)
    if explained.height == 0:
        return explain.empty_shap(), np.zeros((0, len(ranker.features) + 1))
    contrib = ranker.contributions(explained)
    return explain.shap_rows(explained, contrib, ranker.features, cfg.recommend), contrib


def _expected_value(ranker: TrainedRanker | None) -> float | None:
    """The SHAP base value (the same for every row): our TreeSHAP explainer's."""
    return float(ranker.explainer.expected_value) if ranker else None


def _source_column(column: str, source: str) -> pl.Expr:
    """A source's score or rank, null where the source did not propose the candidate (the
    features fill some with 0)."""
    proposed = pl.col(cand.SOURCES_COLUMN).list.contains(source)
    return pl.when(proposed).then(pl.col(column)).alias(column)


def catalogue_tables(data: Dataset, fb: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The users and tracks of the run, with their activity at as_of."""
    activity = fb.group_by(s.USER_ID).agg(
        pl.len().cast(pl.Int64).alias("tracks_heard"),
        pl.col("positive").sum().cast(pl.Int64).alias("positive_tracks"),
    )
    everyone = pl.concat([data.users.select(s.USER_ID), fb.select(s.USER_ID)]).unique()
    users = (
        everyone.join(data.users, on=s.USER_ID, how="left")
        .join(activity, on=s.USER_ID, how="left")
        .with_columns(pl.col("tracks_heard", "positive_tracks").fill_null(0))
        .sort(s.USER_ID)
    )
    tracks = data.tracks.join(cand.popularity(fb), on=s.TRACK_ID, how="left").with_columns(
        pl.col(cand.POPULARITY).fill_null(0)
    )
    return {"users": users, "tracks": tracks.sort(s.TRACK_ID)}


def run_batch(
    data_dir: str | Path,
    store: str | Path,
    *,
    cfg: Config,
    as_of: datetime | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Run every stage on the dataset in `data_dir` and publish the run into `store`."""
    data_dir, store = Path(data_dir), Path(store)
    begun = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    stage = StageLog(progress, total=11)

    read_registry(store)  # a registry that cannot be read stops the run before any work
    started = stage.start()
    data = read_dataset(data_dir)
    stage("validate", started, events=data.events.height, tracks=data.tracks.height)
    as_of = as_of or default_as_of(data.events)
    # An empty run would replace the current one and take every user's list away.
    check_as_of(data.events, as_of)

    run_id = new_run_id(started_at)
    entry = {
        "id": run_id, "as_of": as_of.isoformat(), "input": str(data_dir.resolve()),
        "fingerprint": fingerprint(data, data_dir), "config": cfg.model_dump(),
        "code_version": __version__, "status": "running", "pid": os.getpid(),
        "started_at": started_at.isoformat(),
    }
    record_run(store, entry)
    writer = None
    try:
        writer = RunWriter(store, run_id)
        outcome = fit_ranker(data, as_of, cfg, stage)
        served = serve(data, as_of, outcome.ranker, cfg, stage, writer)
        if served.recommendations == 0:
            raise RunError("no user got a recommendation: the events before "
                           f"{as_of.isoformat()} hold no play, like or repost; check the input "
                           "or --as-of")
        tables = served.tables
        started = stage.start()
        tables.update(follow_batch.follow_tables(data, as_of, cfg))
        stage("follow", started, follow_recommendations=tables["follow_recommendations"].height)
        started = stage.start()
        model = [outcome.ranker.booster.model_to_string()] if outcome.ranker else []
        tables["models"] = pl.DataFrame(
            {"name": ["ranker"] * len(model), "format": ["lightgbm"] * len(model),
             "content": model},
            schema={"name": pl.String, "format": pl.String, "content": pl.String},
        )
        tables["ranker_evaluation"] = outcome.evaluation
        tables["candidate_recall"] = outcome.recall
        summary = _summary(entry, data, served, outcome, as_of, cfg)
        for name, frame in tables.items():
            writer.write(name, frame)
        writer.checkpoint()
        stage("store", started, tables=len(tables) + len(PER_USER_TABLES) + 2)
        summary["seconds"] = round(time.perf_counter() - begun, 2)
        summary["peak_memory_mb"] = round(stage.peak_mb, 1)
        writer.write("stages", pl.DataFrame(stage.rows))
        writer.write("runs", pl.DataFrame([summary]))
        replaced = _current_as_of(store)
        path = writer.publish()
    except BaseException as exc:
        if writer is not None:
            writer.abandon()
        else:  # an interrupt may have come while the writer was opening its files
            discard_temporary(store, run_id)
        entry.update(status="failed", error=str(exc) or type(exc).__name__,
                     finished_at=datetime.now(timezone.utc).isoformat())
        record_run(store, entry)
        # Usage and data errors and interrupts pass as they are. A stage's RunError, or
        # anything unexpected, is a run that could not complete (exit code 4), reported with
        # the run and its last stage; the traceback goes to the DEBUG log.
        interrupted = not isinstance(exc, Exception)
        if interrupted or (isinstance(exc, RecsysError) and not isinstance(exc, RunError)):
            raise
        log.debug("run %s failed", run_id, exc_info=exc)
        done = stage.rows[-1]["stage"] if stage.rows else "none"
        cause = str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"
        raise RunError(
            f"run {run_id} failed after stage {done!r}: {cause}; the current run is unchanged "
            "(`recsys --verbose run ...` shows the traceback)"
        ) from exc
    if replaced is not None and as_of < replaced:
        log.warning("run %s is as of %s, before the run it replaced as current (as of %s); "
                    "`recsys runs` lists both", run_id, as_of.isoformat(), replaced.isoformat())
    entry.update(status="published", finished_at=datetime.now(timezone.utc).isoformat(),
                 stages=stage.rows,
                 counts={k: summary[k] for k in ("users", "tracks", "events", "recommendations")})
    record_run(store, entry)
    prune_runs(store, cfg.store.keep_runs)
    log.info("run %s published: %s recommendations, peak memory %.0f MB",
             run_id, f"{summary['recommendations']:,}", summary["peak_memory_mb"])
    return RunResult(run_id, path, summary, stage.rows)


def _current_as_of(store: Path) -> datetime | None:
    """The as-of time of the store's current run, None without one."""
    registry = read_registry(store)
    for entry in registry["runs"]:
        if entry["id"] == registry["current"]:
            return datetime.fromisoformat(entry["as_of"])
    return None


def _summary(entry, data, served, outcome, as_of, cfg) -> dict:
    window = timedelta(days=cfg.labels.window_days)
    evaluation = {row["order"]: row for row in outcome.evaluation.iter_rows(named=True)}
    return {
        "run_id": entry["id"], "as_of": as_of,
        "train_cut": as_of - (cfg.ranker.training_cuts + 1) * window,
        "valid_cut": as_of - window, "input": entry["input"], "fingerprint": entry["fingerprint"],
        "config": json.dumps(entry["config"]), "code_version": __version__,
        "started_at": datetime.fromisoformat(entry["started_at"]), "kpi": cfg.labels.kpi,
        "users": served.tables["users"].height, "tracks": data.tracks.height,
        "events": data.events.height, "duplicates_dropped": data.duplicates_dropped,
        "recommendations": served.recommendations,
        "users_with_recommendations": served.users_with_recommendations,
        "ranker_status": outcome.status,
        "ranker_trees": outcome.ranker.best_iteration if outcome.ranker else 0,
        "ranker_train_rows": outcome.ranker.train_rows if outcome.ranker else 0,
        "ranker_dropped_users": outcome.ranker.dropped_users if outcome.ranker else 0,
        "expected_value": served.expected_value,
        "ndcg_ranker": evaluation.get("ranker", {}).get("value"),
        "ndcg_candidate_order": evaluation.get("candidate_order", {}).get("value"),
        "ndcg_users": evaluation.get("ranker", {}).get("users", 0),
    }


def parse_as_of(text: str | None) -> datetime | None:
    """An --as-of value as a UTC datetime; a naive time is UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"--as-of: cannot parse {text!r}; "
                         "write ISO 8601 such as 2024-05-01T00:00:00Z") from exc
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
