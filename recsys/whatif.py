"""What-if: a run's lists recomputed under other settings, for a sample of users or for one
user, from what the run stored, without rerunning the batch.

The run's `feedback` table (its interactions at as_of) is the starting point. Similarity is
recomputed from it with the chosen measure; the users' candidates and features are built with
the stages' own functions, scored by the run's stored LightGBM model, filtered by the curation
rules and cut to N, as the batch serves them. With the run's own settings this reproduces the
run's lists (a test checks it on the sample data).

The ALS factors are refitted from the run's feedback with the run's settings (seeded, so they
are the run's own); a what-if that changes one user's history recomputes that user's factors
from it, keeping the track factors.

One input is not in the store: the follows, which feed the `friends_plays` feature. They are
read from the run's input folder (`runs.input`). When that folder is gone the feature is 0 for
every candidate and `StoredRun.notes` says so; a folder changed since the run gives today's
follows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import lightgbm as lgb
import numpy as np
import polars as pl

from recsys import bias, queries, schema as s
from recsys.config import Config
from recsys.errors import RunError
from recsys.io.dataset import Dataset, read_table
from recsys.pipeline import build_snapshot, candidate_order, explain_lists, snapshot_features
from recsys.stages import candidates as cand
from recsys.stages import explain
from recsys.stages import factors as fx
from recsys.stages.curation import apply_rules
from recsys.stages.feedback import POSITIVE
from recsys.stages.ranker import SCORE
from recsys.stages.similarity import NEIGHBOUR_ID, RANK, similar_tracks

log = logging.getLogger(__name__)

DEFAULT_SAMPLE = 200
LIST_COLUMNS = (s.USER_ID, explain.RANK, s.TRACK_ID, SCORE, explain.REASON_KIND)
USERS_BEFORE, USERS_AFTER = "users_before", "users_after"
ENTERED, LEFT = "entered", "left"
BEFORE, AFTER, CHANGE = "before", "after", "change"
MEASURE = "measure"


@dataclass(frozen=True)
class StoredRun:
    """What a what-if starts from: a run's settings, interactions, neighbours, lists and model.

    `tracks` is the catalogue as the input gave it; `recommendations` the run's lists
    (user_id, rank, track_id, score, reason_kind); `booster` None for a run without a ranker,
    whose lists follow the candidate order.
    """

    as_of: datetime
    cfg: Config
    feedback: pl.DataFrame
    tracks: pl.DataFrame
    follows: pl.DataFrame
    similar: pl.DataFrame
    recommendations: pl.DataFrame
    booster: lgb.Booster | None = None
    notes: tuple[str, ...] = ()
    factors: fx.Factors | None = None


@dataclass(frozen=True)
class Lists:
    """Top-N lists as the batch serves them: the lists, their seed reasons, the rules' effects."""

    recommendations: pl.DataFrame
    reasons: pl.DataFrame
    effects: pl.DataFrame


@dataclass(frozen=True)
class SampleWhatIf:
    """A sample's lists in the run and under other settings, and what changed."""

    users: int
    before: pl.DataFrame
    after: Lists
    changes: pl.DataFrame
    bias: pl.DataFrame
    seconds: float


def load_stored_run(con: duckdb.DuckDBPyConnection) -> StoredRun:
    """Everything a what-if needs from one run file, plus the follows of its input folder."""
    summary = queries.current_run(con).row(0, named=True)
    as_of = summary["as_of"].astimezone(timezone.utc)
    follows, notes = input_follows(summary["input"], as_of)
    model = queries.ranker_model(con)
    cfg = run_config(summary["config"])
    fb = queries.feedback(con)
    return StoredRun(
        as_of=as_of,
        cfg=cfg,
        feedback=fb,
        tracks=queries.catalogue(con),
        follows=follows,
        similar=queries.neighbour_pairs(con),
        recommendations=queries.all_recommendations(con),
        booster=lgb.Booster(model_str=model) if model else None,
        notes=notes,
        factors=fx.fit_factors(fb, cfg.factors) if cfg.factors.enabled else None,
    )


def run_config(config_json: str) -> Config:
    """The typed config of a run from its stored JSON."""
    return Config.model_validate_json(config_json)


def input_follows(folder: str | Path, as_of: datetime) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """The follows in the input folder that a run at `as_of` saw, and a note when there are none
    to read there."""
    if not Path(folder).is_dir():
        note = (f"The run's input folder {folder} is not here: the what-if counts no plays by "
                "followed accounts (friends_plays is 0), so its lists can differ from the run's.")
        return s.empty_frame(s.FOLLOWS), (note,)
    follows = read_table(folder, s.FOLLOWS)
    return follows.filter(pl.col(s.TS).is_null() | (pl.col(s.TS) < as_of)), ()


def with_settings(
    cfg: Config, *, similarity: dict | None = None, curation: dict | None = None
) -> Config:
    """`cfg` with some similarity and curation settings replaced, validated like a config file."""
    data = cfg.model_dump()
    data["similarity"].update(similarity or {})
    data["curation"].update(curation or {})
    # The widgets give numbers of the right kind already; lax, as a slider's 5.0 is a 5.
    return Config.model_validate(data, strict=False)


def sample_users(recommendations: pl.DataFrame, size: int, *, seed: int = 0) -> pl.Series:
    """A seeded sample of `size` users among those with a list (all of them when fewer), sorted."""
    users = recommendations[s.USER_ID].unique().sort()
    return users.sample(min(size, users.len()), seed=seed).sort()


def neighbours_under(stored: StoredRun, cfg: Config) -> pl.DataFrame:
    """Every track's neighbours under `cfg.similarity`, from the run's interactions."""
    return similar_tracks(stored.feedback, cfg.similarity, moment=stored.as_of)


def rank_lists(
    stored: StoredRun,
    users: pl.Series,
    cfg: Config,
    similar: pl.DataFrame,
    feedback: pl.DataFrame | None = None,
) -> Lists:
    """The lists of `users` as the batch serves them from `feedback` (default: the run's) and
    `similar`: candidates, features, the run's model, `cfg`'s curation rules, the top N."""
    factors = stored.factors
    if feedback is not None and feedback is not stored.feedback and factors is not None:
        factors = fx.with_feedback(factors, feedback, cfg.factors)
    feedback = stored.feedback if feedback is None else feedback
    snap = build_snapshot(stored.as_of, users, feedback, similar, stored.tracks, stored.follows,
                          cfg, factors=factors)
    data = Dataset(events=s.empty_frame(s.EVENTS), tracks=stored.tracks,
                   users=s.empty_frame(s.USERS), follows=stored.follows)
    rows = snapshot_features(data, snap, cfg)
    rows = rows.with_columns(_scores(rows, stored.booster).alias(SCORE))

    allowed, effects = apply_rules(rows, stored.tracks, cfg.curation, n=cfg.recommend.n)
    recs = explain.top_n(allowed, cfg.recommend.n).with_columns(explain.reason_kind())
    reasons, _ = explain_lists(recs, snap, cfg)
    return Lists(recs.select(LIST_COLUMNS), reasons, effects)


def _scores(rows: pl.DataFrame, booster: lgb.Booster | None) -> pl.Series:
    """The model's raw scores, or the plain candidate order for a run without a ranker."""
    if booster is None:
        return candidate_order(rows)
    features = booster.feature_name()
    missing = [f for f in features if f not in rows.columns]
    if missing:
        message = (f"the run's model uses features this engine does not build: "
                   f"{', '.join(missing)}; rerun the batch with this version")
        raise RunError(message)
    matrix = rows.select(features).to_numpy().astype(np.float64)
    return pl.Series(booster.predict(matrix, raw_score=True))


def sample_what_if(
    stored: StoredRun, cfg: Config, users: pl.Series, *, use_model: bool = True
) -> SampleWhatIf:
    """The lists of `users` under the run's settings against their lists under `cfg`, with
    similarity recomputed.

    With `use_model` the lists are ranked by the run's model and "before" is the run's own
    lists. The model learnt from similarity features of the run's measure, whose scale another
    measure or setting changes, so it can rank the fallbacks above damped neighbours. Without
    it both sides follow the plain candidate order, which shows the similarity's own effect.
    """
    started = time.perf_counter()
    similar = neighbours_under(stored, cfg)
    if use_model:
        before = stored.recommendations.join(users.to_frame(s.USER_ID), on=s.USER_ID, how="semi")
    else:
        stored = replace(stored, booster=None)
        before = rank_lists(stored, users, stored.cfg, stored.similar).recommendations
    after = rank_lists(stored, users, cfg, similar)

    changes = list_changes(before, after.recommendations, stored.tracks)
    measures = bias_change(stored, (before, stored.similar), (after.recommendations, similar))
    seconds = time.perf_counter() - started
    log.info("what-if (%s): %s users, %s recommendations changed in %.1f s",
             cfg.similarity.measure, f"{users.len():,}", f"{changes[ENTERED].sum():,}", seconds)
    return SampleWhatIf(users.len(), before, after, changes, measures, seconds)


def list_changes(before: pl.DataFrame, after: pl.DataFrame, tracks: pl.DataFrame) -> pl.DataFrame:
    """Per track in either lists: track_id, title, creator_id, users_before, users_after,
    `entered` (users whose list gains it) and `left` (users whose list loses it)."""
    pairs = [s.USER_ID, s.TRACK_ID]

    def per_track(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.group_by(s.TRACK_ID).agg(pl.col(s.USER_ID).n_unique().alias(name))

    counts = [
        per_track(before, USERS_BEFORE),
        per_track(after, USERS_AFTER),
        per_track(after.join(before, on=pairs, how="anti"), ENTERED),
        per_track(before.join(after, on=pairs, how="anti"), LEFT),
    ]
    frame = pl.concat([before.select(s.TRACK_ID), after.select(s.TRACK_ID)]).unique()
    for count in counts:
        frame = frame.join(count, on=s.TRACK_ID, how="left")
    frame = frame.with_columns(pl.col(USERS_BEFORE, USERS_AFTER, ENTERED, LEFT).fill_null(0))
    titled = frame.join(tracks.select(s.TRACK_ID, s.TITLE, s.CREATOR_ID), on=s.TRACK_ID,
                        how="left")
    return titled.select(s.TRACK_ID, s.TITLE, s.CREATOR_ID, USERS_BEFORE, USERS_AFTER, ENTERED,
                         LEFT).sort(s.TRACK_ID)


def entering(changes: pl.DataFrame) -> pl.DataFrame:
    """The tracks that enter some lists, most users first."""
    return changes.filter(pl.col(ENTERED) > 0).sort([ENTERED, s.TRACK_ID],
                                                     descending=[True, False])


def leaving(changes: pl.DataFrame) -> pl.DataFrame:
    """The tracks that leave some lists, most users first."""
    return changes.filter(pl.col(LEFT) > 0).sort([LEFT, s.TRACK_ID], descending=[True, False])


def bias_change(
    stored: StoredRun,
    before: tuple[pl.DataFrame, pl.DataFrame],
    after: tuple[pl.DataFrame, pl.DataFrame],
) -> pl.DataFrame:
    """entity, metric, before, after, change: `recsys.bias` measures of two sets of lists, each
    given with its neighbours, over the run's catalogue and listeners."""
    listeners = cand.popularity(stored.feedback)

    def measures(lists: pl.DataFrame, similar: pl.DataFrame, name: str) -> pl.DataFrame:
        exposed = bias.exposure(lists, listeners, stored.tracks, similar)
        return bias.bias_metrics(exposed).rename({"value": name})

    return (
        measures(*before, BEFORE)
        .join(measures(*after, AFTER), on=[bias.ENTITY, "metric"], how="full", coalesce=True)
        .with_columns((pl.col(AFTER) - pl.col(BEFORE)).alias(CHANGE))
    )


def user_what_if(
    stored: StoredRun,
    user_id: str,
    *,
    forget_track: str | None = None,
    mute_creator: str | None = None,
) -> tuple[pl.DataFrame, Lists]:
    """One user's list in the run, and their lists with one history track forgotten or one
    creator muted.

    A forgotten track no longer counts as a positive interaction: it seeds nothing and leaves
    the user's genre shares, history size and the track's popularity; it stays heard, so it is
    not served back. A muted creator's tracks are never served to the user. The neighbours are
    the run's: one user's change is too small to move them, and reusing them keeps it quick.
    """
    feedback = stored.feedback
    if forget_track is not None:
        row = (pl.col(s.USER_ID) == user_id) & (pl.col(s.TRACK_ID) == forget_track)
        feedback = feedback.with_columns(
            pl.when(row).then(False).otherwise(pl.col(POSITIVE)).alias(POSITIVE)
        )
    cfg = stored.cfg
    if mute_creator is not None:
        blocked = [*cfg.curation.block_creators, mute_creator]
        cfg = with_settings(cfg, curation={"block_creators": blocked})

    users = pl.Series(s.USER_ID, [user_id])
    after = rank_lists(stored, users, cfg, stored.similar, feedback)
    before = stored.recommendations.filter(pl.col(s.USER_ID) == user_id).sort(explain.RANK)
    return before, after


def because(lists: Lists, tracks: pl.DataFrame) -> pl.DataFrame:
    """The lists with title, creator_id and `because` ("Title (40%), ..." for a similar track,
    null for a fallback), in the shape of `queries.user_recommendations`."""
    titles = tracks.select(s.TRACK_ID, s.TITLE)
    seeds = (
        lists.reasons.join(titles.rename({s.TRACK_ID: cand.SEED_TRACK_ID}),
                           on=cand.SEED_TRACK_ID, how="left")
        .sort([explain.SHARE, cand.SEED_TRACK_ID], descending=[True, False])
        .with_columns(
            (pl.coalesce(s.TITLE, cand.SEED_TRACK_ID) + " ("
             + (100 * pl.col(explain.SHARE)).round().cast(pl.Int64).cast(pl.String) + "%)")
            .alias("because")
        )
        .group_by(s.USER_ID, s.TRACK_ID, maintain_order=True)
        .agg(pl.col("because").str.join(", "))
    )
    return (
        lists.recommendations.join(tracks.select(s.TRACK_ID, s.TITLE, s.CREATOR_ID),
                                   on=s.TRACK_ID, how="left")
        .join(seeds, on=[s.USER_ID, s.TRACK_ID], how="left")
        .sort(s.USER_ID, explain.RANK)
    )


def side_by_side(
    neighbours: dict[str, pl.DataFrame], track_id: str, tracks: pl.DataFrame, *, n: int = 10
) -> pl.DataFrame:
    """rank and one column per measure: the track's n nearest neighbours as "title · id"."""
    labels = tracks.select(
        pl.col(s.TRACK_ID).alias(NEIGHBOUR_ID),
        pl.concat_str([pl.coalesce(s.TITLE, s.TRACK_ID), s.TRACK_ID], separator=" · ")
        .alias("label"),
    )
    table = pl.DataFrame({RANK: range(1, n + 1)}, schema={RANK: pl.Int64})
    for measure, pairs in neighbours.items():
        mine = pairs.filter((pl.col(s.TRACK_ID) == track_id) & (pl.col(RANK) <= n))
        named = mine.join(labels, on=NEIGHBOUR_ID, how="left").select(
            pl.col(RANK).cast(pl.Int64), pl.col("label").alias(measure)
        )
        table = table.join(named, on=RANK, how="left")
    return table


def neighbour_popularity(
    neighbours: dict[str, pl.DataFrame], track_id: str, feedback: pl.DataFrame, *, n: int = 10
) -> pl.DataFrame:
    """measure, neighbours, median_listeners: how popular each measure's n nearest are."""
    listeners = cand.popularity(feedback).rename({s.TRACK_ID: NEIGHBOUR_ID})
    rows = []
    for measure, pairs in neighbours.items():
        mine = pairs.filter((pl.col(s.TRACK_ID) == track_id) & (pl.col(RANK) <= n))
        counts = mine.join(listeners, on=NEIGHBOUR_ID, how="left")[cand.POPULARITY].fill_null(0)
        rows.append({MEASURE: measure, "neighbours": mine.height,
                     "median_listeners": counts.median() if counts.len() else None})
    return pl.DataFrame(rows, schema={MEASURE: pl.String, "neighbours": pl.Int64,
                                      "median_listeners": pl.Float64})

