"""Offline measures: of a run's candidates, and of top-k lists, against what users did later.

Candidate recall: of the positives of a label window (pairs graded above 0) on tracks a user
had not heard before the cut, by users with seeds before it, the share that a set of candidate
sources proposed. A positive on a track already heard can never be a candidate, as heard
tracks are removed; a user without seeds has only the fallbacks.

Ranking metrics at k (`accuracy`): precision, recall, NDCG, MAP and hit rate of each user's top
k against their new positives of the window; beyond accuracy, `novelty` (mean self-information
of the listed tracks) and the popularity-bias measures of `recsys.bias` (`bias_rows`). Each is
also taken per slice: the user's activity decile and the popularity bucket of the relevant
tracks. `recsys.offline` runs the models and fills the `metrics` table from these.
"""

from __future__ import annotations

import polars as pl

from recsys import bias, schema as s
from recsys.stages.candidates import (
    ALS, POPULARITY as POPULARITY_COLUMN, SIMILAR, SOURCES, SOURCES_COLUMN, WALK,
)
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


# Ranking metrics: top-k lists against the positives of a later window.
#
# A list is (keys..., track_id, rank) with ranks from 1; a positive is (keys..., track_id,
# label) with label > 0. `keys` name one query: a user, or a (cut, user) pair when several cuts
# are stacked. The relevant tracks of a query are its positives; a query with none is excluded
# from the means (and counted by the caller), never scored as perfect or as zero.

RANK = "rank"
K = "k"
PRECISION, NDCG, MAP, HIT_RATE, NOVELTY = "precision", "ndcg", "map", "hit_rate", "novelty"
CANDIDATE_RECALL = "candidate_recall"
ACCURACY = (PRECISION, RECALL, NDCG, MAP, HIT_RATE)
N_RELEVANT = "n_relevant"


def new_positives(graded: pl.DataFrame, heard: pl.DataFrame, keys=(s.USER_ID,)) -> pl.DataFrame:
    """The positives of a window (`graded`: keys, track_id, label) on tracks the user had not
    heard before the cut (`heard`: keys, track_id): the only ones a list can hold, since every
    model leaves out what the user heard, skips included."""
    pairs = [*keys, s.TRACK_ID]
    return graded.filter(pl.col(LABEL) > 0).join(heard.select(pairs), on=pairs, how="anti")


def accuracy(
    lists: pl.DataFrame, positives: pl.DataFrame, ks=(5, 10, 20), keys=(s.USER_ID,)
) -> pl.DataFrame:
    """keys, k, precision, recall, ndcg, map, hit_rate for every query with a positive.

    With `hits` the relevant tracks in the top k and `R` the relevant tracks of the query:
    precision = hits / k (a shorter list still counts k slots); recall = hits / |R|; hit_rate =
    1 when hits > 0; map = average precision, the sum of precision@i over the ranks i <= k that
    hold a relevant track, divided by min(k, |R|); ndcg = DCG / ideal DCG, with gain 2**label - 1
    and discount 1 / log2(rank + 1), the ideal ranking the query's positives by label.
    A query without a list scores 0 on each.
    """
    keys = list(keys)
    relevant = positives.filter(pl.col(LABEL) > 0).select(*keys, s.TRACK_ID, LABEL)
    counts = relevant.group_by(keys).agg(pl.len().alias(N_RELEVANT))
    gain = 2.0 ** pl.col(LABEL).cast(pl.Float64) - 1.0
    discount = 1.0 / (pl.col(RANK) + 1).cast(pl.Float64).log(2)

    marked = (
        lists.select(*keys, s.TRACK_ID, RANK)
        .join(relevant, on=[*keys, s.TRACK_ID], how="left")
        .with_columns(pl.col(LABEL).fill_null(0))
        .sort(*keys, RANK)
        .with_columns((pl.col(LABEL) > 0).cum_sum().over(keys).alias("_hits_so_far"))
    )
    ideal = relevant.sort([*keys, LABEL, s.TRACK_ID], descending=[*[False] * len(keys), True,
                                                                  False])
    ideal = ideal.with_columns(pl.int_range(1, pl.len() + 1).over(keys).alias(RANK))

    frames = []
    for k in ks:
        top = marked.filter(pl.col(RANK) <= k).group_by(keys).agg(
            (pl.col(LABEL) > 0).sum().alias("_hits"),
            (gain * discount).sum().alias("_dcg"),
            pl.when(pl.col(LABEL) > 0).then(pl.col("_hits_so_far") / pl.col(RANK))
            .otherwise(0.0).sum().alias("_ap"),
        )
        best = ideal.filter(pl.col(RANK) <= k).group_by(keys).agg(
            (gain * discount).sum().alias("_idcg")
        )
        per_query = (
            counts.join(top, on=keys, how="left")
            .join(best, on=keys, how="left")
            .with_columns(pl.col("_hits", "_dcg", "_ap").fill_null(0))
        )
        frames.append(per_query.select(
            *keys,
            pl.lit(k, dtype=pl.Int64).alias(K),
            (pl.col("_hits") / k).alias(PRECISION),
            (pl.col("_hits") / pl.col(N_RELEVANT)).alias(RECALL),
            (pl.col("_dcg") / pl.col("_idcg")).alias(NDCG),
            (pl.col("_ap") / pl.min_horizontal(pl.col(N_RELEVANT), k)).alias(MAP),
            (pl.col("_hits") > 0).cast(pl.Float64).alias(HIT_RATE),
        ))
    return pl.concat(frames).sort(K, *keys)


def pool_recall(pool: pl.DataFrame, positives: pl.DataFrame, keys=(s.USER_ID,)) -> pl.DataFrame:
    """keys, candidate_recall: the share of each query's positives that are in its `pool` (keys,
    track_id), such as every candidate a ranker could choose from: a ceiling on its recall."""
    keys = list(keys)
    pairs = [*keys, s.TRACK_ID]
    marked = positives.filter(pl.col(LABEL) > 0).select(pairs).join(
        pool.select(pairs).unique().with_columns(pl.lit(True).alias("_in")), on=pairs,
        how="left")
    return marked.group_by(keys).agg(pl.col("_in").fill_null(False).mean()
                                     .alias(CANDIDATE_RECALL)).sort(keys)


def novelty(
    lists: pl.DataFrame, popularity: pl.DataFrame, users: int, ks=(5, 10, 20), keys=(s.USER_ID,)
) -> pl.DataFrame:
    """keys, k, novelty: the mean self-information -log2(p) of the tracks in each top-k list,
    with p a track's listeners (`popularity`: track_id, popularity) over `users`, the users
    with history; a track nobody listened to counts as having one listener."""
    keys = list(keys)
    info = lists.join(popularity.select(s.TRACK_ID, POPULARITY_COLUMN), on=s.TRACK_ID,
                      how="left").with_columns(
        (-(pl.max_horizontal(pl.col(POPULARITY_COLUMN).fill_null(0), 1) / users).log(2))
        .alias(NOVELTY)
    )
    frames = [
        info.filter(pl.col(RANK) <= k).group_by(keys).agg(pl.col(NOVELTY).mean())
        .with_columns(pl.lit(k, dtype=pl.Int64).alias(K))
        for k in ks
    ]
    return pl.concat(frames).select(*keys, K, NOVELTY).sort(K, *keys)


# The long form of the `metrics` table: one row per (metric at k, slice), for one model.

METRIC, VALUE, SLICE_KIND, SLICE = "metric", "value", "slice_kind", "slice"
ALL = "all"
ACTIVITY_DECILE, POPULARITY_BUCKET = "activity_decile", "popularity_bucket"
HISTORY_SIZE = "history_size"
# Popularity buckets of tracks, by listeners before the cut: the most listened tracks that make
# the first half of all positive pairs, those that make the next 30%, the rest, and the tracks
# nobody had listened to.
HEAD, MID, TAIL, UNHEARD = "head", "mid", "tail", "unheard"
BUCKET_SHARES = ((HEAD, 0.5), (MID, 0.8))
BUCKETS = (HEAD, MID, TAIL, UNHEARD)
ROW_SCHEMA = {METRIC: pl.String, K: pl.Int64, VALUE: pl.Float64, USERS: pl.Int64,
              SLICE_KIND: pl.String, SLICE: pl.String}


def metric_name(metric: str, k: int) -> str:
    return f"{metric}@{k}"


def mean_rows(
    per_query: pl.DataFrame, metrics, *, slice_kind: str = ALL, slice_by: str | None = None
) -> pl.DataFrame:
    """metric (as `ndcg@10`), k, value (the mean over queries), users (queries averaged),
    slice_kind and slice, from a frame of one row per query and k (`accuracy`, `novelty`),
    per value of column `slice_by` (or over all rows)."""
    slice_expr = pl.col(slice_by).cast(pl.String) if slice_by else pl.lit(ALL)
    frame = per_query.with_columns(slice_expr.alias(SLICE))
    long = frame.unpivot(index=[K, SLICE], on=list(metrics), variable_name=METRIC,
                         value_name=VALUE)
    means = long.group_by(METRIC, K, SLICE).agg(pl.col(VALUE).mean(),
                                                pl.len().cast(pl.Int64).alias(USERS))
    named = pl.concat_str([pl.col(METRIC), pl.lit("@"), pl.col(K).cast(pl.String)])
    return means.select(named.alias(METRIC), K, VALUE, USERS, pl.lit(slice_kind).alias(SLICE_KIND),
                        SLICE).cast(ROW_SCHEMA)


def activity_deciles(history: pl.DataFrame, keys=(s.USER_ID,)) -> pl.DataFrame:
    """keys and `activity_decile` (1 the least active tenth of the queries, 10 the most), by
    `history_size`, the user's positive tracks before the cut; ties by user id. With stacked
    cuts the deciles are taken within each cut (the keys before user_id)."""
    within = [key for key in keys if key != s.USER_ID]
    position = pl.struct(HISTORY_SIZE, s.USER_ID).rank("ordinal")
    count = pl.len()
    if within:
        position, count = position.over(within), count.over(within)
    decile = ((position * 10 - 1) // count + 1).cast(pl.Int64)
    return history.select(*keys, decile.alias(ACTIVITY_DECILE))


def popularity_buckets(popularity: pl.DataFrame, tracks: pl.DataFrame) -> pl.DataFrame:
    """track_id, popularity_bucket for every catalogue track (`BUCKET_SHARES`); `popularity`
    holds the listeners of the tracks that have any."""
    ordered = (
        tracks.select(s.TRACK_ID)
        .join(popularity.select(s.TRACK_ID, POPULARITY_COLUMN), on=s.TRACK_ID, how="left")
        .with_columns(pl.col(POPULARITY_COLUMN).fill_null(0))
        .sort([POPULARITY_COLUMN, s.TRACK_ID], descending=[True, False])
    )
    total = max(int(ordered[POPULARITY_COLUMN].sum()), 1)
    before = (pl.col(POPULARITY_COLUMN).cum_sum() - pl.col(POPULARITY_COLUMN)) / total
    bucket = pl.when(pl.col(POPULARITY_COLUMN) == 0).then(pl.lit(UNHEARD))
    for name, share in BUCKET_SHARES:
        bucket = bucket.when(before < share).then(pl.lit(name))
    return ordered.select(s.TRACK_ID, bucket.otherwise(pl.lit(TAIL)).alias(POPULARITY_BUCKET))


def bias_rows(
    lists: pl.DataFrame, popularity: pl.DataFrame, tracks: pl.DataFrame, ks=(5, 10, 20)
) -> pl.DataFrame:
    """The popularity-bias measures of `recsys.bias` over the top-k of `lists` (user_id,
    track_id, rank), per k, in the long form: the tracks' measures named as they are
    (`gini@10`), the creators' with a `creator_` prefix; users: the lists measured."""
    no_neighbours = pl.DataFrame(schema={s.TRACK_ID: pl.String, "neighbour_id": pl.String})
    frames = []
    for k in ks:
        top = lists.filter(pl.col(RANK) <= k)
        measures = bias.bias_metrics(bias.exposure(top, popularity, tracks, no_neighbours))
        prefix = pl.when(pl.col(bias.ENTITY) == "creator").then(pl.lit("creator_")).otherwise(
            pl.lit(""))
        frames.append(measures.select(
            pl.concat_str([prefix, pl.col("metric"), pl.lit(f"@{k}")]).alias(METRIC),
            pl.lit(k).alias(K), pl.col("value").alias(VALUE),
            pl.lit(top[s.USER_ID].n_unique()).alias(USERS),
            pl.lit(ALL).alias(SLICE_KIND), pl.lit(ALL).alias(SLICE),
        ).cast(ROW_SCHEMA))
    return pl.concat(frames)
