"""Faithfulness of "because you liked": does the named history track carry the score?

For a seeded sample of served recommendations that name a history seed, the seed with the
largest share is removed from the user's history (it no longer counts as a positive: it seeds
nothing, and leaves the user's genre shares, history size and the track's popularity; it stays
heard, as in the what-if), the candidate's features are rebuilt with the batch's own functions
from the same moment, neighbours and model, and the model scores it again. A faithful reason is
one whose removal lowers the score; the share where it does is the measure. A track that no
source proposes any more is still scored, from the features it has left (its source scores
and ranks empty), and counted as no longer a candidate.

Both scores come from the same path, one user at a time, so that only the seed differs; the
score before equals the served score (the tests check it).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

import polars as pl

from recsys import schema as s
from recsys.config import Config
from recsys.io.dataset import Dataset
from recsys.pipeline import build_snapshot, follows_before, snapshot_features
from recsys.stages.candidates import SEED_TRACK_ID, SOURCES_COLUMN
from recsys.stages.explain import REASON_KIND, SHARE
from recsys.stages.feedback import POSITIVE
from recsys.stages.ranker import SCORE, TrainedRanker

log = logging.getLogger(__name__)

BEFORE, AFTER, DROPPED, STILL = "score_before", "score_after", "dropped", "still_candidate"
SCHEMA = {s.USER_ID: pl.String, s.TRACK_ID: pl.String, SEED_TRACK_ID: pl.String,
          REASON_KIND: pl.String, SHARE: pl.Float64, BEFORE: pl.Float64, AFTER: pl.Float64,
          DROPPED: pl.Boolean, STILL: pl.Boolean}


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def named_seeds(recommendations: pl.DataFrame, reasons: pl.DataFrame) -> pl.DataFrame:
    """The recommendations that name a seed, each with its largest (ties: lowest id)."""
    top = (
        reasons.sort([s.USER_ID, s.TRACK_ID, SHARE, SEED_TRACK_ID],
                     descending=[False, False, True, False])
        .group_by(s.USER_ID, s.TRACK_ID, maintain_order=True)
        .first()
    )
    return recommendations.select(s.USER_ID, s.TRACK_ID, REASON_KIND).join(
        top, on=[s.USER_ID, s.TRACK_ID]).sort(s.USER_ID, s.TRACK_ID)


def seed_removal(
    data: Dataset,
    moment: datetime,
    tables: dict[str, pl.DataFrame],
    ranker: TrainedRanker,
    cfg: Config,
    *,
    sample: int,
    seed: int = 0,
) -> pl.DataFrame:
    """user_id, track_id, seed_track_id, reason_kind, share, score_before, score_after, dropped,
    still_candidate for `sample` served recommendations (seeded) with a named seed.

    `tables` are the batch's tables at `moment` (`pipeline.serve`): its feedback, neighbours,
    recommendations and recommendation_reasons.
    """
    started = time.perf_counter()
    named = named_seeds(tables["recommendations"], tables["recommendation_reasons"])
    chosen = named.sample(min(sample, named.height), seed=seed).sort(s.USER_ID, s.TRACK_ID)
    fb, similar = tables["feedback"], tables["similar_tracks"]
    with _quiet_stages():
        rows = [row for user_id, group in chosen.group_by(s.USER_ID, maintain_order=True)
                for row in _user_rows(data, moment, fb, similar, ranker, user_id[0], group, cfg)]
    frame = pl.DataFrame(rows, schema=SCHEMA) if rows else empty()
    log.info("faithfulness: the score dropped for %s of %s recommendations without their "
             "named seed in %.1f s", int(frame[DROPPED].sum()), frame.height,
             time.perf_counter() - started)
    return frame


def _user_rows(data, moment, fb, similar, ranker, user_id, group, cfg) -> list[dict]:
    """The rows of one user's sampled recommendations: the score before, then one removal
    per recommendation."""
    before = _scores(data, moment, fb, similar, ranker, user_id, group[s.TRACK_ID], cfg)
    rows = []
    for row in group.iter_rows(named=True):
        forgotten = _forget(fb, user_id, row[SEED_TRACK_ID])
        after = _scores(data, moment, forgotten, similar, ranker, user_id,
                        pl.Series([row[s.TRACK_ID]]), cfg)
        score_after, still = after[row[s.TRACK_ID]]
        score_before = before[row[s.TRACK_ID]][0]
        rows.append({**row, BEFORE: score_before, AFTER: score_after,
                     DROPPED: score_after < score_before, STILL: still})
    return rows


@contextlib.contextmanager
def _quiet_stages() -> Iterator[None]:
    """The stages log one INFO line per call, and here they run once per recommendation
    tested: at the INFO level their lines are held back meanwhile (--verbose shows them)."""
    stages = logging.getLogger("recsys.stages")
    level = stages.level
    if stages.getEffectiveLevel() == logging.INFO:
        stages.setLevel(logging.WARNING)
    try:
        yield
    finally:
        stages.setLevel(level)


def _forget(feedback: pl.DataFrame, user_id: str, track_id: str) -> pl.DataFrame:
    """`feedback` with the user's interaction with the track no longer positive."""
    row = (pl.col(s.USER_ID) == user_id) & (pl.col(s.TRACK_ID) == track_id)
    return feedback.with_columns(pl.when(row).then(False).otherwise(pl.col(POSITIVE))
                                 .alias(POSITIVE))


def _scores(data: Dataset, moment: datetime, fb: pl.DataFrame, similar: pl.DataFrame,
            ranker: TrainedRanker, user_id: str, targets: pl.Series,
            cfg: Config) -> dict[str, tuple[float, bool]]:
    """track -> (the model's raw score, whether a source still proposes it) for the user's
    `targets`, from candidates and features rebuilt from `fb`."""
    snap = build_snapshot(moment, pl.Series(s.USER_ID, [user_id]), fb, similar, data.tracks,
                          follows_before(data.follows, moment), cfg)
    wanted = pl.DataFrame({s.USER_ID: [user_id] * targets.len(), s.TRACK_ID: targets},
                          schema={s.USER_ID: pl.String, s.TRACK_ID: pl.String})
    keys = [s.USER_ID, s.TRACK_ID]
    found = snap.candidates.join(wanted, on=keys, how="semi")
    gone = wanted.join(found, on=keys, how="anti").with_columns(
        pl.lit([], dtype=pl.List(pl.String)).alias(SOURCES_COLUMN))
    rows = pl.concat([found, gone], how="diagonal_relaxed")
    features = snapshot_features(data, replace(snap, candidates=rows), cfg)
    scored = features.with_columns(pl.Series(SCORE, ranker.raw_scores(features)))
    proposed = set(found[s.TRACK_ID].to_list())
    return {track: (score, track in proposed)
            for track, score in scored.select(s.TRACK_ID, SCORE).iter_rows()}
