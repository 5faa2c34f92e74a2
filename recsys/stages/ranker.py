"""The ranker: LightGBM over the candidate features, grouped per user.

Training rows are (user, candidate) pairs with features from before a cut and labels from the
window after it. Two objectives (`ranker.objective`):

- `lambdarank` learns the order of the graded `label` (gain 2**g - 1 per grade, passed to
  LightGBM as an explicit `label_gain`);
- `binary` learns the class `label_positive` (the sign of the window's summed signals, skips
  counting against) with a logistic loss, and ranks by its log-odds.

Rows form one ranking group per user (per cut and user when several cuts are stacked). A group
whose rows all share one target teaches the ranker nothing and is left out (and counted). Rows
are sorted by group and track before LightGBM sees them, and the negatives kept per group are
chosen by a hash, so shuffling the input does not change the model. Early stopping watches
NDCG@10 on the rows of a later window (`stop_rows`), or on a seeded share of the users.
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
from recsys.config import RankerConfig, RankerObjective
from recsys.stages import treeshap
from recsys.stages.labels import LABEL, LABEL_POSITIVE, MAX_GRADE

log = logging.getLogger(__name__)

SCORE = "score"
CUT = "cut"  # training rows stacked from several cuts: one ranking group per (cut, user)
TARGET = {"lambdarank": LABEL, "binary": LABEL_POSITIVE}


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
    objective: RankerObjective = "lambdarank"
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


def with_target(rows: pl.DataFrame, objective: RankerObjective) -> pl.DataFrame:
    """`rows` with the objective's integer target as `target` (an unlabelled row is 0)."""
    return rows.with_columns(pl.col(TARGET[objective]).fill_null(0).cast(pl.Int32).alias("target"))


def informative_rows(rows: pl.DataFrame, target: str = LABEL) -> tuple[pl.DataFrame, int]:
    """Rows of the groups (users, or (cut, user) pairs) whose `target` values differ, sorted by
    group and track; and how many groups were left out."""
    groups = _groups(rows)
    spread = rows.group_by(groups).agg(pl.col(target).n_unique().alias("grades"))
    keep = spread.filter(pl.col("grades") > 1).select(groups)
    dropped = spread.height - keep.height
    return rows.join(keep, on=groups, how="semi").sort(*groups, s.TRACK_ID), dropped


def sample_negatives(
    rows: pl.DataFrame, keep: int | None, seed: int, target: str = LABEL
) -> pl.DataFrame:
    """Every positive row and at most `keep` rows of target 0 per group, chosen by a seeded hash
    of the group and track, so that the choice does not depend on row order.

    Lambdarank's cost grows with the square of a group's size; a few dozen negatives per user
    teach it as much as two hundred.
    """
    if keep is None:
        return rows
    groups = _groups(rows)
    draw = pl.struct(*groups, s.TRACK_ID).hash(seed)
    nth = draw.rank("ordinal").over(*groups, pl.col(target) > 0)
    return rows.filter((pl.col(target) > 0) | (nth <= keep))


def group_sizes(rows: pl.DataFrame) -> np.ndarray:
    """The size of each ranking group of `rows`, in row order. Raises ValueError when a group's
    rows are not contiguous (LightGBM would read them as several groups)."""
    keys = rows.select(_groups(rows))
    if keys.height == 0:
        return np.zeros(0, dtype=np.int64)
    changed = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift(1)) for c in keys.columns])
    runs = keys.select(changed.fill_null(True).cum_sum().alias("run"))
    sizes = runs.group_by("run", maintain_order=True).len()["len"].to_numpy()
    if sizes.size != keys.n_unique():
        raise ValueError(f"the rows of a ranking group ({', '.join(keys.columns)}) are not "
                         "contiguous; sort the rows by group first")
    return sizes


def _holdout(users: pl.Series, share: float, seed: int) -> pl.Series:
    """A stable pseudo-random choice of users, independent of row order."""
    def bucket(user: str) -> float:
        digest = hashlib.blake2b(f"{seed}:{user}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    return users.map_elements(lambda u: bucket(u) < share, return_dtype=pl.Boolean)


def _dataset(rows: pl.DataFrame, features: tuple[str, ...], reference=None) -> lgb.Dataset:
    return lgb.Dataset(
        _matrix(rows, features),
        label=rows["target"].to_numpy(),
        group=group_sizes(rows),
        feature_name=list(features),
        reference=reference,
        free_raw_data=False,
    )


def _params(cfg: RankerConfig) -> dict:
    # An explicit gain per grade; for the binary objective, the NDCG of early stopping reads
    # the class as grades 0 and 1.
    grades = MAX_GRADE if cfg.objective == "lambdarank" else 1
    return {
        "objective": cfg.objective,
        "label_gain": [float(2**g - 1) for g in range(grades + 1)],
        "metric": "ndcg",
        "eval_at": [10],
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": cfg.num_threads,
        "verbosity": -1,
    }


def prepare_rows(rows: pl.DataFrame, cfg: RankerConfig) -> tuple[pl.DataFrame, int]:
    """The training rows of `rows`: the objective's target, informative groups only (sorted),
    the negatives sampled; and how many groups were left out."""
    rows = with_target(rows, cfg.objective)
    if rows.height and not 0 <= rows["target"].min() <= rows["target"].max() <= MAX_GRADE:
        raise ValueError(f"labels must be grades 0 to {MAX_GRADE}; seen "
                         f"{rows['target'].min()} to {rows['target'].max()}")
    rows, dropped = informative_rows(rows, "target")
    return sample_negatives(rows, cfg.negatives_per_user, cfg.seed, "target"), dropped


def train_ranker(
    rows: pl.DataFrame,
    features: tuple[str, ...],
    cfg: RankerConfig,
    *,
    num_trees: int | None = None,
    stop_rows: pl.DataFrame | None = None,
) -> TrainedRanker | None:
    """Fit the ranker on `rows` (features and labels); None when no group has mixed targets.

    With `num_trees`, exactly that many trees are fitted on all rows. Otherwise the number of
    trees is chosen by early stopping on NDCG@10 of `stop_rows` (a later window's rows), or,
    without them, of a seeded share of the users held out of `rows`; the model is then refitted
    on all of `rows` with that many trees.
    """
    rows, dropped = prepare_rows(rows, cfg)
    if rows.height == 0:
        return None
    params = _params(cfg)
    best = num_trees if num_trees is not None else _stopping_point(rows, features, cfg, params,
                                                                   stop_rows)
    booster = lgb.train(params, _dataset(rows, features), num_boost_round=best)
    log.debug("ranker (%s): %s trees on %s rows, %s groups dropped", cfg.objective, best,
              rows.height, dropped)
    return TrainedRanker(
        booster=booster,
        features=features,
        best_iteration=best,
        train_users=rows[s.USER_ID].n_unique(),
        train_rows=rows.height,
        dropped_users=dropped,
        objective=cfg.objective,
    )


def _stopping_point(rows, features, cfg, params, stop_rows) -> int:
    """The number of trees after which NDCG@10 on the stopping rows stopped improving."""
    stop = prepare_rows(stop_rows, cfg)[0] if stop_rows is not None else None
    fit_rows = rows
    if stop is None or stop.height == 0:
        users = rows.select(s.USER_ID).unique().sort(s.USER_ID)
        held = users.filter(_holdout(users[s.USER_ID], cfg.validation_share, cfg.seed))
        fit_rows = rows.join(held, on=s.USER_ID, how="anti")
        stop = rows.join(held, on=s.USER_ID, how="semi")
        if fit_rows.height == 0 or stop.height == 0:
            fit_rows, stop = rows, rows
    train_set = _dataset(fit_rows, features)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=cfg.num_trees,
        valid_sets=[_dataset(stop, features, reference=train_set)],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )
    return max(booster.best_iteration, 1)


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
