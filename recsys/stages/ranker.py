"""The ranker: LightGBM lambdarank over the candidate features, grouped per user.

Training rows are (user, candidate) pairs with features from before a cut and labels from the
window after it. A user whose candidates all share one label teaches the ranker nothing and is
left out (and counted). Rows are sorted by user and track first, so shuffling the input does not
change the model.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property

import lightgbm as lgb
import numpy as np
import polars as pl

from recsys import schema as s
from recsys.config import RankerConfig
from recsys.stages import treeshap
from recsys.stages.labels import LABEL

log = logging.getLogger(__name__)

SCORE = "score"
CUT = "cut"  # training rows stacked from several cuts: one ranking group per (cut, user)


def _groups(rows: pl.DataFrame) -> list[str]:
    return [CUT, s.USER_ID] if CUT in rows.columns else [s.USER_ID]


@dataclass
class TrainedRanker:
    booster: lgb.Booster
    features: tuple[str, ...]
    best_iteration: int
    train_users: int
    train_rows: int
    dropped_users: int
    info: dict[str, float] = field(default_factory=dict)

    def raw_scores(self, frame: pl.DataFrame) -> np.ndarray:
        return self.booster.predict(_matrix(frame, self.features), raw_score=True)

    @cached_property
    def explainer(self) -> treeshap.TreeShap:
        """The booster's trees as our TreeSHAP reads them, parsed once."""
        return treeshap.from_booster(self.booster)

    def contributions(self, frame: pl.DataFrame) -> np.ndarray:
        """Exact TreeSHAP values, one column per feature plus the expected value last: LightGBM's
        own `pred_contrib` to rounding, computed by `treeshap` several times faster."""
        return self.explainer.contributions(_matrix(frame, self.features))


def _matrix(frame: pl.DataFrame, features: tuple[str, ...]) -> np.ndarray:
    return frame.select(features).to_numpy().astype(np.float64)


def informative_rows(rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Rows of the groups (users, or (cut, user) pairs) whose labels differ, sorted by group and
    track; and how many groups were left out."""
    groups = _groups(rows)
    spread = rows.group_by(groups).agg(pl.col(LABEL).n_unique().alias("grades"))
    keep = spread.filter(pl.col("grades") > 1).select(groups)
    dropped = spread.height - keep.height
    return rows.join(keep, on=groups, how="semi").sort(*groups, s.TRACK_ID), dropped


def sample_negatives(rows: pl.DataFrame, keep: int | None, seed: int) -> pl.DataFrame:
    """Every positive row and at most `keep` label-0 rows per group, chosen by a seeded hash of
    the group and track, so that the choice does not depend on row order.

    Lambdarank's cost grows with the square of a group's size; a few dozen negatives per user
    teach it as much as two hundred.
    """
    if keep is None:
        return rows
    groups = _groups(rows)
    draw = pl.struct(*groups, s.TRACK_ID).hash(seed)
    nth = draw.rank("ordinal").over(*groups, pl.col(LABEL) > 0)
    return rows.filter((pl.col(LABEL) > 0) | (nth <= keep))


def _holdout(users: pl.Series, share: float, seed: int) -> pl.Series:
    """A stable pseudo-random choice of users, independent of row order."""
    def bucket(user: str) -> float:
        digest = hashlib.blake2b(f"{seed}:{user}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    return users.map_elements(lambda u: bucket(u) < share, return_dtype=pl.Boolean)


def _dataset(rows: pl.DataFrame, features: tuple[str, ...], reference=None) -> lgb.Dataset:
    groups = rows.group_by(_groups(rows), maintain_order=True).len()["len"].to_numpy()
    return lgb.Dataset(
        _matrix(rows, features),
        label=rows[LABEL].to_numpy(),
        group=groups,
        feature_name=list(features),
        reference=reference,
        free_raw_data=False,
    )


def _params(cfg: RankerConfig, max_label: int) -> dict:
    return {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "label_gain": [float(2**g - 1) for g in range(max(max_label, 1) + 1)],
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": cfg.num_threads,
        "verbosity": -1,
    }


def train_ranker(
    rows: pl.DataFrame, features: tuple[str, ...], cfg: RankerConfig, *, num_trees: int | None = None
) -> TrainedRanker | None:
    """Fit lambdarank on `rows` (features and `label`); None when no user has mixed labels.

    With `num_trees` None, a share of users is held out for early stopping; otherwise exactly
    `num_trees` trees are fitted on all rows.
    """
    rows, dropped = informative_rows(rows)
    if rows.height == 0:
        return None
    rows = sample_negatives(rows, cfg.negatives_per_user, cfg.seed)
    params = _params(cfg, int(rows[LABEL].max()))

    if num_trees is not None:
        booster = lgb.train(params, _dataset(rows, features), num_boost_round=num_trees)
        best = num_trees
    else:
        users = rows.select(s.USER_ID).unique().sort(s.USER_ID)
        held = users.filter(_holdout(users[s.USER_ID], cfg.validation_share, cfg.seed))
        fit_rows = rows.join(held, on=s.USER_ID, how="anti")
        stop_rows = rows.join(held, on=s.USER_ID, how="semi")
        if fit_rows.height == 0 or stop_rows.height == 0:
            fit_rows, stop_rows = rows, rows
        train_set = _dataset(fit_rows, features)
        valid_set = _dataset(stop_rows, features, reference=train_set)
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=cfg.num_trees,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
        )
        best = max(booster.best_iteration, 1)
        booster = lgb.train(params, _dataset(rows, features), num_boost_round=best)

    log.debug("ranker: %s trees on %s rows, %s users dropped", best, rows.height, dropped)
    return TrainedRanker(
        booster=booster,
        features=features,
        best_iteration=best,
        train_users=rows[s.USER_ID].n_unique(),
        train_rows=rows.height,
        dropped_users=dropped,
    )


def ndcg_at(rows: pl.DataFrame, score: str, *, k: int = 10) -> tuple[float, int]:
    """Mean NDCG@k of ordering each user's rows by `score` (ties by track id), over users with
    at least one positive label among their rows; and how many users that is.

    The gain of a label g is 2**g - 1, the discount 1 / log2(rank + 1), and the ideal order is
    the user's rows sorted by label.
    """
    graded = rows.filter(pl.col(LABEL).max().over(s.USER_ID) > 0)
    if graded.height == 0:
        return float("nan"), 0
    gain = 2.0 ** pl.col(LABEL) - 1.0
    ranked = (
        graded.sort([s.USER_ID, score, s.TRACK_ID], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over(s.USER_ID).alias("r"))
    )
    ideal = graded.sort([s.USER_ID, LABEL], descending=[False, True]).with_columns(
        pl.int_range(1, pl.len() + 1).over(s.USER_ID).alias("r")
    )

    def dcg(frame: pl.DataFrame) -> pl.DataFrame:
        return (
            frame.filter(pl.col("r") <= k)
            .group_by(s.USER_ID)
            .agg((gain / (pl.col("r") + 1).cast(pl.Float64).log(2)).sum().alias("dcg"))
        )

    per_user = dcg(ranked).join(dcg(ideal).rename({"dcg": "idcg"}), on=s.USER_ID)
    values = per_user.select((pl.col("dcg") / pl.col("idcg")).alias("ndcg"))["ndcg"]
    return float(values.mean()), per_user.height
