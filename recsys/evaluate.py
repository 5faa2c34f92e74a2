"""Offline measures of a run's candidates against what users did later.

Candidate recall: of the positives of a label window (pairs graded above 0) on tracks a user
had not heard before the cut, by users with seeds before it, the share that a set of candidate
sources proposed. A positive on a track already heard can never be a candidate, as heard
tracks are removed; a user without seeds has only the fallbacks.
"""

from __future__ import annotations

import polars as pl

from recsys import schema as s
from recsys.stages.candidates import ALS, SIMILAR, SOURCES, SOURCES_COLUMN, WALK
from recsys.stages.labels import LABEL

SOURCE_SET = "sources"
POSITIVES, FOUND, RECALL, USERS = "positives", "found", "recall", "users"
# The source sets whose recall is measured: each history source alone, both, everything.
RECALL_SETS = {
    SIMILAR: (SIMILAR,),
    WALK: (WALK,),
    f"{SIMILAR}+{WALK}": (SIMILAR, WALK),
    ALS: (ALS,),
    "all": SOURCES,
}


def candidate_recall(
    candidates: pl.DataFrame, graded: pl.DataFrame, heard: pl.DataFrame, seeds: pl.DataFrame
) -> pl.DataFrame:
    """sources, positives, found, recall, users: per set of `RECALL_SETS`, the later positives
    (`graded`: user_id, track_id, label) of seeded users (`seeds`) on tracks not in `heard`
    (user_id, track_id pairs before the cut) that the set's sources proposed."""
    keys = [s.USER_ID, s.TRACK_ID]
    positives = (
        graded.filter(pl.col(LABEL) > 0)
        .join(seeds.select(s.USER_ID).unique(), on=s.USER_ID, how="semi")
        .join(heard.select(keys), on=keys, how="anti")
        .join(candidates.select(*keys, SOURCES_COLUMN), on=keys, how="left")
        .with_columns(pl.col(SOURCES_COLUMN).fill_null(pl.lit([], dtype=pl.List(pl.String))))
    )
    rows = []
    for name, sources in RECALL_SETS.items():
        hit = pl.col(SOURCES_COLUMN).list.set_intersection(list(sources)).list.len() > 0
        found = positives.filter(hit).height
        rows.append({SOURCE_SET: name, POSITIVES: positives.height, FOUND: found,
                     RECALL: found / positives.height if positives.height else None,
                     USERS: positives[s.USER_ID].n_unique()})
    return pl.DataFrame(rows, schema={SOURCE_SET: pl.String, POSITIVES: pl.Int64,
                                      FOUND: pl.Int64, RECALL: pl.Float64, USERS: pl.Int64})
