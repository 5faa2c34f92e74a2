"""Popularity bias: how recommendation exposure spreads over tracks and creators.

Exposure is the number of recommendation slots an entity (a track, or a creator through their
tracks) fills. Against it stands the entity's listening share: its share of all positive
(user, track) pairs before as_of. The measures, per entity kind:

- `top1_share`: share of all slots that go to the 1% most listened entities (at least one);
- `gini`: Gini index of exposure over the whole catalogue (entities never recommended count
  with exposure 0): 0 when every entity gets as much, near 1 when one gets all;
- `mean_popularity`: mean number of listeners of the entity in a slot;
- `tail_share`: share of slots outside the short head, the most listened entities that together
  make 80% of positive pairs;
- `coverage`: share of the catalogue recommended at least once.

Per entity (`exposure`): users reached, listening share, recommendation share, amplification
(recommendation share over listening share; null for an entity nobody listened to) and, for
tracks, in-degree in the similarity graph (how many tracks list it as a neighbour).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys import schema as s

ENTITY = "entity"  # "track" or "creator"
ENTITY_ID = "entity_id"
LISTENERS = "listeners"
SLOTS = "slots"
USERS_REACHED = "users_reached"
LISTENING_SHARE = "listening_share"
RECOMMENDATION_SHARE = "recommendation_share"
AMPLIFICATION = "amplification"
IN_DEGREE = "in_degree"
HEAD_SHARE = 0.8
LORENZ_POINTS = 101


def exposure(
    recommendations: pl.DataFrame,
    popularity: pl.DataFrame,
    tracks: pl.DataFrame,
    similar: pl.DataFrame,
) -> pl.DataFrame:
    """One row per catalogue track and per known creator with its exposure figures.

    `popularity` holds track_id and popularity (listeners); `similar` the neighbour pairs.
    """
    slots = recommendations.group_by(s.TRACK_ID).agg(
        pl.len().alias(SLOTS), pl.col(s.USER_ID).n_unique().alias(USERS_REACHED)
    )
    degree = similar.group_by(pl.col("neighbour_id").alias(s.TRACK_ID)).agg(
        pl.len().alias(IN_DEGREE)
    )
    per_track = (
        tracks.select(s.TRACK_ID, s.CREATOR_ID)
        .join(popularity.select(s.TRACK_ID, pl.col("popularity").alias(LISTENERS)),
              on=s.TRACK_ID, how="left")
        .join(slots, on=s.TRACK_ID, how="left")
        .join(degree, on=s.TRACK_ID, how="left")
        .with_columns(pl.col(LISTENERS, SLOTS, USERS_REACHED, IN_DEGREE).fill_null(0))
    )
    creator_reach = (
        recommendations.join(tracks.select(s.TRACK_ID, s.CREATOR_ID), on=s.TRACK_ID)
        .filter(pl.col(s.CREATOR_ID).is_not_null())
        .group_by(s.CREATOR_ID)
        .agg(pl.col(s.USER_ID).n_unique().alias(USERS_REACHED))
    )
    per_creator = (
        per_track.filter(pl.col(s.CREATOR_ID).is_not_null())
        .group_by(s.CREATOR_ID)
        .agg(pl.col(LISTENERS, SLOTS, IN_DEGREE).sum())
        .join(creator_reach, on=s.CREATOR_ID, how="left")
        .with_columns(pl.col(USERS_REACHED).fill_null(0))
    )
    frames = [
        _shares(per_track.rename({s.TRACK_ID: ENTITY_ID}), "track"),
        _shares(per_creator.rename({s.CREATOR_ID: ENTITY_ID}), "creator"),
    ]
    return pl.concat(frames).sort([ENTITY, SLOTS, ENTITY_ID], descending=[False, True, False])


def _shares(frame: pl.DataFrame, entity: str) -> pl.DataFrame:
    listened = pl.col(LISTENERS) / pl.col(LISTENERS).sum()
    recommended = pl.col(SLOTS) / pl.max_horizontal(pl.col(SLOTS).sum(), 1)
    return frame.select(
        pl.lit(entity).alias(ENTITY),
        ENTITY_ID,
        pl.col(LISTENERS).cast(pl.Int64),
        pl.col(SLOTS).cast(pl.Int64),
        pl.col(USERS_REACHED).cast(pl.Int64),
        listened.alias(LISTENING_SHARE),
        recommended.alias(RECOMMENDATION_SHARE),
        pl.when(pl.col(LISTENERS) > 0).then(recommended / listened).alias(AMPLIFICATION),
        pl.col(IN_DEGREE).cast(pl.Int64),
    )


def gini(values: np.ndarray) -> float:
    """Gini index of non-negative values (0 for perfect equality)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(values), values.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * ranks - n - 1) @ values / (n * total))


def lorenz(values: np.ndarray, points: int = LORENZ_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The Lorenz curve of `values`: population share and exposure share, from (0, 0)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    total = cumulative[-1] or 1.0
    x = np.linspace(0.0, 1.0, points)
    y = np.interp(x * len(values), np.arange(len(values) + 1), cumulative) / total
    return x, y


def bias_metrics(exposed: pl.DataFrame) -> pl.DataFrame:
    """entity, metric, value: the summary measures per entity kind."""
    rows = []
    for entity in ("track", "creator"):
        frame = exposed.filter(pl.col(ENTITY) == entity)
        if frame.height == 0:
            continue
        by_listeners = frame.sort([LISTENERS, ENTITY_ID], descending=[True, False])
        slots = by_listeners[SLOTS].to_numpy().astype(np.float64)
        listeners = by_listeners[LISTENERS].to_numpy().astype(np.float64)
        total_slots = slots.sum() or 1.0
        top = max(1, int(np.ceil(0.01 * len(slots))))
        head = _head_size(listeners)
        rows += [
            (entity, "top1_share", slots[:top].sum() / total_slots),
            (entity, "gini", gini(slots)),
            (entity, "mean_popularity", (slots * listeners).sum() / total_slots),
            (entity, "tail_share", slots[head:].sum() / total_slots),
            (entity, "coverage", float((slots > 0).mean())),
        ]
    return pl.DataFrame(rows, schema=[ENTITY, "metric", "value"], orient="row")


def _head_size(listeners_desc: np.ndarray) -> int:
    """How many of the most listened entities make HEAD_SHARE of all listening."""
    total = listeners_desc.sum()
    if total == 0:
        return 0
    return int(np.searchsorted(np.cumsum(listeners_desc), HEAD_SHARE * total) + 1)


def lorenz_points(exposed: pl.DataFrame) -> pl.DataFrame:
    """entity, population_share, exposure_share: the Lorenz curve of exposure per kind."""
    frames = []
    for entity in ("track", "creator"):
        slots = exposed.filter(pl.col(ENTITY) == entity)[SLOTS].to_numpy()
        if len(slots) == 0:
            continue
        x, y = lorenz(slots)
        frames.append(pl.DataFrame({ENTITY: entity, "population_share": x, "exposure_share": y}))
    return pl.concat(frames) if frames else pl.DataFrame(
        schema={ENTITY: pl.String, "population_share": pl.Float64, "exposure_share": pl.Float64}
    )
