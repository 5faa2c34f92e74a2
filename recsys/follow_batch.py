"""Who to follow in the batch: the evaluation protocol, the merge's training, the served lists.

Three snapshots, each with the follow edges and the feedback it may see:

- training: the merge (LightGBM) learns which candidates users went on to follow, and ALS's
  factor count is chosen;
- evaluation: every source, the merged list and the most-followed baseline are scored by
  recall@10 and NDCG@10 (`follow_evaluation`); the merge is refitted here for serving;
- serving: every user's list at `as_of`, with reasons (`follow_recommendations`).

Protocol `window` (dated follows): with w = `follow.window_days`, training sees what happened
before `as_of - 2w` and learns from the follows of the next w; evaluation sees what happened
before `as_of - w` and is scored on the follows of the last w. ALS's factor count is chosen on
the creators users took to in the training window (positive affinity with a creator they had
none with before it).

Protocol `holdout` (undated follows, such as HetRec's friend graph): a seeded hash puts each
edge (both directions of a friendship together) in a bucket in [0, 1); with h =
`follow.holdout_share`, evaluation hides the edges below h and is scored on them, training
also hides those in [h, 2h) and learns from them. All the feedback is seen (it has no part in
the split). ALS's factor count is chosen on a seeded share h of the (user, creator) affinity
pairs, held out of its fit.

In both, a user is scored when they have at least one target and were active before (a
follow or a positive track in the snapshot).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from recsys import schema as s
from recsys.config import Config
from recsys.io.dataset import Dataset
from recsys.stages import follow as fl
from recsys.stages import follow_als as als
from recsys.stages import follow_merge as mg
from recsys.stages.feedback import POSITIVE, events_before, feedback
from recsys.stages.follow_eval import (
    BUCKET, NDCG, RANK, RECALL, USERS, edge_buckets, pair_buckets, ranking_metrics,
)

log = logging.getLogger(__name__)

K = 10
MERGED = "merged"
ALS_GLOBAL = "als_global"
WINDOW, HOLDOUT = "window", "holdout"
TABLES = {
    "follow_recommendations": {s.USER_ID: pl.String, RANK: pl.Int64, s.FOLLOWEE_ID: pl.String,
                               fl.SCORE: pl.Float64, mg.SOURCES_COLUMN: pl.List(pl.String),
                               mg.REASON: pl.String},
    "follow_sources": {s.USER_ID: pl.String, s.FOLLOWEE_ID: pl.String, "source": pl.String,
                       fl.SCORE: pl.Float64, RANK: pl.Int64},
    "follow_evaluation": {"protocol": pl.String, "window_start": s.UTC_DATETIME,
                          "list": pl.String, "metric": pl.String, "value": pl.Float64,
                          USERS: pl.Int64},
    "follow_als_validation": als.VALIDATION_SCHEMA,
    "follows": {s.FOLLOWER_ID: pl.String, s.FOLLOWEE_ID: pl.String, s.TS: s.UTC_DATETIME},
}


@dataclass
class View:
    """What one snapshot sees: the follow edges and the feedback, at `moment`."""

    moment: datetime
    follows: pl.DataFrame
    feedback: pl.DataFrame


@dataclass
class Labelled:
    """A view and the follows it is scored on (user_id, followee_id)."""

    view: View
    targets: pl.DataFrame


@dataclass
class Protocol:
    name: str
    window_start: datetime | None
    train: Labelled
    test: Labelled
    als_train: pl.DataFrame  # user_id, creator_id, affinity
    als_targets: pl.DataFrame  # user_id, creator_id


def empty_tables() -> dict[str, pl.DataFrame]:
    return {name: pl.DataFrame(schema=schema) for name, schema in TABLES.items()}


def follow_tables(data: Dataset, as_of: datetime, cfg: Config) -> dict[str, pl.DataFrame]:
    """The who-to-follow tables of a run at `as_of` (see the module's docstring); empty tables
    when the data has no follows."""
    edges = fl.follow_edges(data.follows.filter(pl.col(s.TS).is_null() | (pl.col(s.TS) < as_of)))
    if edges.height == 0:
        log.info("follow: the data has no follows before %s; no suggestions", as_of)
        return empty_tables()
    events = events_before(data.events, as_of)
    served = View(as_of, edges, feedback(events, cfg.feedback))
    protocol = window_protocol(data, served, cfg) if _dated(edges, cfg) else holdout_protocol(
        data, served, cfg)

    bays = _bays(protocol.als_train[s.USER_ID], protocol.train.view, data, cfg)
    global_factors, bay_factors, validation = als.choose_factors(
        protocol.als_train, protocol.als_targets, cfg.follow, protocol=protocol.name, bays=bays
    )
    factors = bay_factors if bays is not None else global_factors

    train_rows = _labelled_rows(protocol.train, data, cfg, factors)
    first = mg.train_merge(train_rows, cfg.ranker)
    test_rows = _labelled_rows(protocol.test, data, cfg, factors)
    evaluation = evaluate(protocol, test_rows, first, data, cfg, global_factors)
    final = mg.train_merge(test_rows, cfg.ranker,
                           num_trees=first.best_iteration if first else None) or first
    log.info("follow merge: %s", f"LightGBM, {final.best_iteration} trees" if final else
             f"no model could be trained, reciprocal-rank fusion (k={mg.RRF_K})")

    tables = serve(served, _everyone(data, served), data, cfg, factors, final)
    tables.update(follow_evaluation=evaluation, follow_als_validation=validation,
                  follows=edges.sort(s.FOLLOWER_ID, s.FOLLOWEE_ID))
    return {name: tables[name].select(list(schema)).cast(schema)  # type: ignore[arg-type]
            for name, schema in TABLES.items()}


def _dated(edges: pl.DataFrame, cfg: Config) -> bool:
    if cfg.follow.protocol != "auto":
        return cfg.follow.protocol == WINDOW
    return edges[s.TS].null_count() == 0


def window_protocol(data: Dataset, served: View, cfg: Config) -> Protocol:
    """Training before as_of - 2w scored on the next w, evaluation before as_of - w on the
    last w; ALS validated on the creators new to users in the training window."""
    window = timedelta(days=cfg.follow.window_days)
    test_cut, train_cut = served.moment - window, served.moment - 2 * window
    train, test = (_window(data, served, cut, cut + window, cfg) for cut in (train_cut, test_cut))

    tracks = data.tracks
    before = als.creator_affinity(train.view.feedback, tracks, cfg.follow)
    during = events_before(data.events, test_cut).filter(pl.col(s.TS) >= train_cut)
    later = als.creator_affinity(feedback(during, cfg.feedback), tracks, cfg.follow)
    targets = later.join(before, on=[s.USER_ID, s.CREATOR_ID], how="anti").join(
        before.select(s.USER_ID).unique(), on=s.USER_ID, how="semi"
    )
    return Protocol(WINDOW, test_cut, train, test, before, targets.select(s.USER_ID,
                                                                        s.CREATOR_ID))


def _window(data: Dataset, served: View, cut: datetime, end: datetime, cfg: Config) -> Labelled:
    edges = served.follows
    seen = edges.filter(pl.col(s.TS).is_null() | (pl.col(s.TS) < cut))
    later = edges.filter((pl.col(s.TS) >= cut) & (pl.col(s.TS) < end))
    view = View(cut, seen, feedback(events_before(data.events, cut), cfg.feedback))
    return Labelled(view, _targets(view, later))


def holdout_protocol(data: Dataset, served: View, cfg: Config) -> Protocol:
    """Edges below the hold-out share scored at evaluation, the next share at training; ALS
    validated on a seeded share of the affinity pairs."""
    share, seed = cfg.follow.holdout_share, cfg.follow.seed
    edges = edge_buckets(served.follows, seed)
    test_view = View(served.moment, edges.filter(pl.col(BUCKET) >= share).drop(BUCKET),
                     served.feedback)
    train_view = View(served.moment, edges.filter(pl.col(BUCKET) >= 2 * share).drop(BUCKET),
                      served.feedback)
    test = Labelled(test_view, _targets(test_view, edges.filter(pl.col(BUCKET) < share)))
    train = Labelled(train_view, _targets(train_view, edges.filter(
        (pl.col(BUCKET) >= share) & (pl.col(BUCKET) < 2 * share))))

    affinity = als.creator_affinity(served.feedback, data.tracks, cfg.follow)
    held = pair_buckets(affinity, s.USER_ID, s.CREATOR_ID, seed) < share
    kept = affinity.filter(~held)
    targets = affinity.filter(held).join(kept.select(s.USER_ID).unique(), on=s.USER_ID,
                                         how="semi")
    return Protocol(HOLDOUT, None, train, test, kept, targets.select(s.USER_ID, s.CREATOR_ID))


def _targets(view: View, later: pl.DataFrame) -> pl.DataFrame:
    """user_id, followee_id: the `later` edges of users active in `view`, not yet followed."""
    active = pl.concat([
        view.follows[s.FOLLOWER_ID],
        view.feedback.filter(pl.col(POSITIVE))[s.USER_ID],
    ]).unique().to_frame(s.USER_ID)
    return (
        later.select(pl.col(s.FOLLOWER_ID).alias(s.USER_ID), s.FOLLOWEE_ID)
        .join(active, on=s.USER_ID, how="semi")
        .join(view.follows.select(pl.col(s.FOLLOWER_ID).alias(s.USER_ID), s.FOLLOWEE_ID),
              on=[s.USER_ID, s.FOLLOWEE_ID], how="anti")
        .unique()
    )


def _bays(users: pl.Series, view: View, data: Dataset, cfg: Config) -> pl.DataFrame | None:
    if cfg.follow.bays == "none":
        return None
    return als.assign_bays(users, view.feedback, data.tracks, view.follows, cfg.follow)


def candidates(
    view: View, users: pl.Series, data: Dataset, cfg: Config, factors: int
) -> tuple[pl.DataFrame, mg.Evidence]:
    """Every source's accounts for `users` in `view`, merged into one row per candidate with
    the merge's features; and the evidence for the reasons."""
    fc, moment = cfg.follow, view.moment
    by_creator = fl.creator_feedback(view.feedback, data.tracks)
    co_followed, co_followed_steps = fl.co_followed(view.follows, users, fc, moment=moment)
    co_listened, co_listened_steps = fl.co_listened(by_creator, users, view.follows, fc,
                                                    moment=moment)
    affinity = als.creator_affinity(view.feedback, data.tracks, fc)
    bays = _bays(affinity[s.USER_ID], view, data, cfg)
    by_source = {
        fl.CO_FOLLOWED: co_followed,
        fl.PLAYED: fl.played(by_creator, users, view.follows, fc),
        fl.CO_LISTENED: co_listened,
        fl.ALS: als.als_candidates(affinity, users, view.follows, factors, fc, bays=bays),
        fl.TRUST: fl.trust(view.follows, users, fc),
        fl.MOST_FOLLOWED: fl.most_followed(view.follows, users, fc),
    }
    evidence = mg.Evidence(
        follows=view.follows, by_creator=by_creator,
        expansions={fl.CO_FOLLOWED: co_followed_steps, fl.CO_LISTENED: co_listened_steps},
        followers=fl.follower_counts(view.follows), names=_names(data),
    )
    rows = mg.add_features(mg.union(by_source), evidence, view.feedback)
    sizes = ", ".join(f"{name} {frame.height:,}" for name, frame in by_source.items())
    log.debug("follow candidates: %s rows for %s users (%s)", f"{rows.height:,}",
              f"{users.n_unique():,}", sizes)
    return rows, evidence


def _labelled_rows(labelled: Labelled, data: Dataset, cfg: Config, factors: int) -> pl.DataFrame:
    users = labelled.targets[s.USER_ID].unique()
    rows, _ = candidates(labelled.view, users, data, cfg, factors)
    return mg.label_rows(rows, labelled.targets)


def evaluate(protocol: Protocol, rows: pl.DataFrame, model, data: Dataset, cfg: Config,
             global_factors: int) -> pl.DataFrame:
    """protocol, window_start, list, metric, value, users: recall@10 and NDCG@10 of each source,
    the merged list and (with bays) the global ALS with its own factor count, on the test
    targets."""
    targets = protocol.test.targets
    lists = {src: rows.filter(pl.col(mg.rank_column(src)).is_not_null())
             .select(s.USER_ID, s.FOLLOWEE_ID, pl.col(mg.rank_column(src)).alias(RANK))
             for src in mg.SOURCES}
    lists[MERGED] = mg.suggestions(rows.with_columns(mg.merged_scores(rows, model)), K)
    if cfg.follow.bays != "none":
        view, users = protocol.test.view, targets[s.USER_ID].unique()
        affinity = als.creator_affinity(view.feedback, data.tracks, cfg.follow)
        lists[ALS_GLOBAL] = als.als_candidates(affinity, users, view.follows, global_factors,
                                               cfg.follow)
    out = []
    for name, ranked in lists.items():
        scored = ranking_metrics(ranked, targets, k=K)
        for metric in (RECALL, NDCG):
            out.append({"protocol": protocol.name, "window_start": protocol.window_start,
                        "list": name, "metric": f"{metric}@{K}", "value": scored[metric],
                        USERS: scored[USERS]})
    frame = pl.DataFrame(out, schema=TABLES["follow_evaluation"])
    _log_evaluation(frame)
    return frame


def _log_evaluation(frame: pl.DataFrame) -> None:
    wide = {(r["list"], r["metric"]): r["value"] for r in frame.iter_rows(named=True)}
    users = frame[USERS].max() if frame.height else 0
    log.info("follow evaluation (%s): merged recall@10 %.4f, ndcg@10 %.4f against most "
             "followed %.4f, %.4f over %s users", frame["protocol"][0] if frame.height else "-",
             wide.get((MERGED, "recall@10")) or 0, wide.get((MERGED, "ndcg@10")) or 0,
             wide.get((fl.MOST_FOLLOWED, "recall@10")) or 0,
             wide.get((fl.MOST_FOLLOWED, "ndcg@10")) or 0, f"{users:,}")


def serve(view: View, users: pl.Series, data: Dataset, cfg: Config, factors: int,
          model) -> dict[str, pl.DataFrame]:
    """follow_recommendations and follow_sources for `users` at the view's moment."""
    rows, evidence = candidates(view, users, data, cfg, factors)
    rows = rows.with_columns(mg.merged_scores(rows, model))
    recs = mg.with_reasons(mg.suggestions(rows, cfg.follow.n), evidence)
    by_source = recs.select(s.USER_ID, s.FOLLOWEE_ID).join(rows, on=[s.USER_ID, s.FOLLOWEE_ID])
    long = pl.concat([
        by_source.filter(pl.col(mg.score_column(src)).is_not_null()).select(
            s.USER_ID, s.FOLLOWEE_ID, pl.lit(src).alias("source"),
            pl.col(mg.score_column(src)).alias(fl.SCORE), pl.col(mg.rank_column(src)).alias(RANK))
        for src in mg.SOURCES
    ]).sort(s.USER_ID, s.FOLLOWEE_ID, "source")
    return {"follow_recommendations": recs.sort(s.USER_ID, RANK), "follow_sources": long}


def _everyone(data: Dataset, view: View) -> pl.Series:
    """The users served: the users table, and whoever follows or has feedback."""
    return pl.concat([data.users[s.USER_ID], view.feedback[s.USER_ID],
                      view.follows[s.FOLLOWER_ID]]).unique().sort()


def _names(data: Dataset) -> pl.DataFrame:
    """account_id, name: the users' names where the data has them."""
    return data.users.select(pl.col(s.USER_ID).alias("account_id"), s.NAME).filter(
        pl.col(s.NAME).is_not_null()
    ).unique("account_id")
