"""The Evaluation page's and the popularity trade-off's reads and charts.

Evaluation and sweep files (see `recsys.results`) are read through cached read-only
connections, like run files. Every label in these charts is a model, metric, feature or
setting name made by the engine, never a string from the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import plotly.graph_objects as go
import polars as pl
import streamlit as st
from plotly.subplots import make_subplots

from recsys import results
from recsys.ui import MARGIN

ACCURACY_METRICS = ("ndcg", "precision", "recall", "map", "hit_rate")
BEYOND_METRICS = ("novelty", "gini", "tail_share", "coverage", "mean_popularity", "top1_share")
METRIC_WORDS = {
    "ndcg": "NDCG", "precision": "precision", "recall": "recall", "map": "MAP",
    "hit_rate": "hit rate", "novelty": "novelty (bits)", "gini": "Gini of exposure",
    "tail_share": "tail share", "coverage": "catalogue coverage",
    "mean_popularity": "mean listeners per slot", "top1_share": "share to the top 1%",
}
SLICE_WORDS = {"activity_decile": "User activity decile (1: least active)",
               "popularity_bucket": "Popularity of the relevant tracks"}
BUCKET_ORDER = ("head", "mid", "tail", "unheard")
BEESWARM_FEATURES = 12
EVALUATION_KEY = "evaluation_file"
METRIC_KEY = "evaluation_metric"
SLICE_KIND_KEY = "evaluation_slice_kind"
SLICE_METRIC_KEY = "evaluation_slice_metric"
SLICE_K_KEY = "evaluation_slice_k"


@dataclass(frozen=True)
class ResultFile:
    """One evaluation or sweep file."""

    path: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1].removesuffix(".duckdb")

    def read(self, query: Callable[..., Any], *args: object) -> Any:
        """`query(con, *args)` for a function of `recsys.results`, cached per file."""
        return _read(self.path, query.__name__, args)


@st.cache_resource(max_entries=8, show_spinner=False)
def _connect(path: str) -> duckdb.DuckDBPyConnection:
    # A published file never changes (a new evaluation is a new file): one connection each.
    return duckdb.connect(path, read_only=True)


@st.cache_data(max_entries=256, show_spinner=False)
def _read(path: str, name: str, args: tuple) -> Any:
    with _connect(path).cursor() as cursor:
        return getattr(results, name)(cursor, *args)


def result_files(store, folder: str) -> list[ResultFile]:
    """The published files of `folder`, newest first."""
    return [ResultFile(str(p)) for p in results.result_files(store, folder)]


def metric_label(metric: str) -> str:
    return METRIC_WORDS.get(metric, metric)


def by_model(metrics: pl.DataFrame, metric: str) -> pl.DataFrame:
    """model, k, value, users: one metric (`ndcg`) at every k, from `results.metrics` rows."""
    prefix = f"{metric}@"
    return metrics.filter(pl.col("metric").str.starts_with(prefix)).select(
        "model", "k", "value", "users")


def metrics_chart(metrics: pl.DataFrame, metric: str, models: list[str]) -> go.Figure:
    """Grouped bars: one group per model (in `models` order), one bar per k."""
    rows = by_model(metrics, metric)
    figure = go.Figure([
        go.Bar(name=f"@{k}", x=models,
               y=[_value(rows, model, k) for model in models],
               hovertemplate=f"%{{x}}: {metric}@{k} %{{y:.4f}}<extra></extra>")
        for k in sorted(rows["k"].unique())
    ])
    figure.update_layout(barmode="group", yaxis_title=metric_label(metric), height=380,
                         margin=MARGIN, legend_title_text="k")
    return figure


def _value(rows: pl.DataFrame, model: str, k: int) -> float | None:
    found = rows.filter((pl.col("model") == model) & (pl.col("k") == k))["value"]
    return float(found[0]) if found.len() else None


def table_at(metrics: pl.DataFrame, k: int, models: list[str]) -> pl.DataFrame:
    """model and one column per metric at `k` (accuracy, then beyond accuracy)."""
    wanted = [f"{m}@{k}" for m in ACCURACY_METRICS + BEYOND_METRICS]
    picked = metrics.filter(pl.col("metric").is_in(wanted))
    wide = picked.pivot("metric", index="model", values="value")
    order = pl.DataFrame({"model": models}).with_row_index("_order")
    columns = [c for c in wanted if c in wide.columns]
    return wide.join(order, on="model").sort("_order").select("model", *columns)


def slice_chart(sliced: pl.DataFrame, metric: str, kind: str, models: list[str]) -> go.Figure:
    """One line (deciles) or bar group (buckets) per model over the slices of `kind`."""
    rows = sliced.filter(pl.col("metric") == metric)
    order = ([str(d) for d in range(1, 11)] if kind == "activity_decile"
             else [b for b in BUCKET_ORDER if b in set(rows["slice"])])
    traces = []
    for model in models:
        mine = rows.filter(pl.col("model") == model)
        values = dict(mine.select("slice", "value").rows())
        users = dict(mine.select("slice", "users").rows())
        common = {"name": model, "x": order, "y": [values.get(s) for s in order],
                  "customdata": [users.get(s, 0) for s in order],
                  "hovertemplate": f"{model}, %{{x}}: %{{y:.4f}} over %{{customdata}} "
                                   "users<extra></extra>"}
        traces.append(go.Scatter(mode="lines+markers", **common) if kind == "activity_decile"
                      else go.Bar(**common))
    figure = go.Figure(traces)
    figure.update_layout(barmode="group", xaxis_title=SLICE_WORDS[kind], yaxis_title=metric,
                         height=400, margin=MARGIN, xaxis={"type": "category"})
    return figure


def faithfulness_summary(rows: pl.DataFrame) -> pl.DataFrame:
    """reason_kind, tested, dropped, dropped_share, mean_change, no_longer_candidate."""
    return (
        rows.group_by("reason_kind")
        .agg(pl.len().alias("tested"), pl.col("dropped").sum().alias("dropped"),
             pl.col("dropped").mean().alias("dropped_share"),
             (pl.col("score_after") - pl.col("score_before")).mean().alias("mean_change"),
             (~pl.col("still_candidate")).sum().alias("no_longer_candidate"))
        .sort("reason_kind")
    )


def change_histogram(rows: pl.DataFrame) -> go.Figure:
    """How far each tested score moved when its named seed was removed."""
    change = (rows["score_after"] - rows["score_before"]).to_list()
    figure = go.Figure(go.Histogram(x=change, nbinsx=30,
                                    hovertemplate="%{y} recommendations<extra></extra>"))
    figure.add_vline(x=0, line_dash="dot")
    figure.update_layout(xaxis_title="score without the seed minus score with it (raw score)",
                         yaxis_title="recommendations", height=320, margin=MARGIN)
    return figure


def beeswarm_chart(points: pl.DataFrame, importance: pl.DataFrame,
                   features: int = BEESWARM_FEATURES) -> go.Figure:
    """Each stored contribution as a dot: SHAP value across, its feature down (largest mean
    |SHAP| at the top, jittered within the row), coloured by the feature's value as a
    percentile among that feature's dots (0 lowest, 1 highest)."""
    top = importance.sort("mean_abs_shap", descending=True)["feature"].head(features).to_list()
    rows = points.filter(pl.col("feature").is_in(top)).with_columns(
        ((pl.col("feature_value").rank("average").over("feature") - 1)
         / pl.max_horizontal(pl.len().over("feature") - 1, 1)).alias("percentile")
    )
    position = {feature: len(top) - i for i, feature in enumerate(top)}
    rng = np.random.default_rng(0)
    y = np.array([position[f] for f in rows["feature"]], dtype=float)
    y += rng.uniform(-0.3, 0.3, len(y))
    figure = go.Figure(go.Scattergl(
        x=rows["value"].to_list(), y=y.tolist(), mode="markers",
        marker={"color": rows["percentile"].fill_null(0.5).to_list(), "colorscale": "Bluered",
                "size": 5, "opacity": 0.7,
                "colorbar": {"title": "feature value<br>(percentile)"}},
        customdata=rows.select("feature", "feature_value").rows(),
        hovertemplate="%{customdata[0]} = %{customdata[1]:.3g}: SHAP %{x:.4f}<extra></extra>",
    ))
    figure.update_layout(
        xaxis_title="SHAP value (raw score)", height=140 + 36 * len(top), margin=MARGIN,
        yaxis={"tickvals": list(position.values()), "ticktext": list(position.keys())},
    )
    figure.add_vline(x=0, line_dash="dot")
    return figure


# The popularity trade-off on the Super nodes page.

FRONTIER_AXES = (("tail_share", "tail share of the lists", True),
                 ("gini", "Gini of exposure", False))


def pareto(points: pl.DataFrame, x: str, more_is_better: bool) -> pl.DataFrame:
    """The points no other beats on both NDCG@10 and `x` (more or less of it being better),
    sorted along `x`."""
    sign = 1.0 if more_is_better else -1.0
    rows = points.drop_nulls(["ndcg", x]).select("setting", x, "ndcg").rows()
    kept = [
        (setting, a, b) for setting, a, b in rows
        if not any(sign * c >= sign * a and d >= b and (sign * c > sign * a or d > b)
                   for _, c, d in rows)
    ]
    return pl.DataFrame(kept, schema=["setting", x, "ndcg"], orient="row").sort(x)


def frontier_chart(points: pl.DataFrame, in_use: str | None) -> go.Figure:
    """NDCG@10 against tail share and against Gini, a dot per setting, the frontier joined,
    the run's setting marked."""
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06)
    for col, (x, title, more) in enumerate(FRONTIER_AXES, start=1):
        figure.add_trace(go.Scatter(
            x=points[x].to_list(), y=points["ndcg"].to_list(), mode="markers+text",
            text=points["setting"].to_list(), textposition="top center", name="settings",
            showlegend=col == 1, marker={"size": 9, "color": "#1f77b4"},
            hovertemplate=f"%{{text}}: NDCG@10 %{{y:.4f}}, {title} %{{x:.3f}}<extra></extra>",
        ), row=1, col=col)
        front = pareto(points, x, more)
        figure.add_trace(go.Scatter(
            x=front[x].to_list(), y=front["ndcg"].to_list(), mode="lines", name="frontier",
            showlegend=col == 1, line={"dash": "dot", "color": "#7f7f7f"}, hoverinfo="skip",
        ), row=1, col=col)
        used = points.filter(pl.col("setting") == in_use) if in_use else points.clear()
        figure.add_trace(go.Scatter(
            x=used[x].to_list(), y=used["ndcg"].to_list(), mode="markers", name="in use",
            showlegend=col == 1,
            marker={"size": 18, "symbol": "star", "color": "#d62728"},
            hovertemplate="in use: NDCG@10 %{y:.4f}<extra></extra>",
        ), row=1, col=col)
        figure.update_xaxes(title_text=title, row=1, col=col)
    figure.update_yaxes(title_text="NDCG@10 on the later window", row=1, col=1)
    figure.update_layout(height=440, margin=MARGIN)
    return figure
