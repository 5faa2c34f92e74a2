"""SHAP on demand: one user's attributions computed from what a run stored.

The batch computes SHAP for the lists of a share of users (`recommend.shap_share`) and stores
the features of every served recommendation (`recommendation_features`) and the ranker
(`models`). For any other user, the same values come from those two tables: the model is
parsed once (`load_explainer`, which the app caches) and a list of ten takes milliseconds.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from recsys import queries, schema as s
from recsys.config import RecommendConfig
from recsys.stages import explain, treeshap

FEATURE_VALUE = "feature_value"


def load_explainer(con: duckdb.DuckDBPyConnection) -> treeshap.TreeShap | None:
    """The run's ranker parsed for TreeSHAP, None for a run without one."""
    text = queries.ranker_model(con)
    return treeshap.from_model_string(text) if text else None


def user_shap(
    con: duckdb.DuckDBPyConnection, user_id: str, explainer: treeshap.TreeShap | None
) -> pl.DataFrame:
    """track_id, feature, value and feature_value for each of the user's recommendations, as the
    batch would have stored them: the run's `recommend.shap_top` largest contributions plus
    the "(other features)" remainder, largest |value| first and the remainder last. Empty for
    a user without recommendations or a run without a ranker."""
    features = queries.recommendation_features(con, user_id)
    if explainer is None or features.is_empty():
        return pl.DataFrame(schema={s.TRACK_ID: pl.String, explain.FEATURE: pl.String,
                                    explain.VALUE: pl.Float64, FEATURE_VALUE: pl.Float64})
    names = explainer.feature_names
    contrib = explainer.contributions(features.select(names).to_numpy().astype(np.float64))
    top = queries.run_config(con)["recommend"]["shap_top"]
    rows = explain.shap_rows(features.with_columns(pl.lit(user_id).alias(s.USER_ID)), contrib,
                             names, RecommendConfig(shap_top=top))
    inputs = features.select(s.TRACK_ID, *[pl.col(n).cast(pl.Float64) for n in names]).unpivot(
        index=s.TRACK_ID, variable_name=explain.FEATURE, value_name=FEATURE_VALUE)
    order = {track: k for k, track in enumerate(features[s.TRACK_ID])}
    return (
        rows.drop(s.USER_ID)
        .join(inputs, on=[s.TRACK_ID, explain.FEATURE], how="left")
        .with_columns(pl.col(s.TRACK_ID).replace_strict(order).alias("_rank"),
                      (pl.col(explain.FEATURE) == explain.REMAINDER).alias("_remainder"))
        .sort(["_rank", "_remainder", pl.col(explain.VALUE).abs()],
              descending=[False, False, True])
        .drop("_rank", "_remainder")
    )
