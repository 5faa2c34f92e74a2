"""What every page shares: opening the current run, cached reads, the words and the charts.

Strings from the data (titles, names, ids) are shown through `st.text`, `st.dataframe` and
widget options, never through Markdown or HTML, and never inside a plotly chart (plotly renders
a subset of HTML in its labels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import plotly.graph_objects as go
import polars as pl
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from recsys import queries
from recsys.store import resolve_store

# Widget keys; USER_KEY is also the query parameter of the inspector (?user=<id>).
USER_KEY = "user"
SEARCH_KEY = "user_search"

REASON_WORDS = {
    "popular_in_genre": "No history track led here: popular in your genres",
    "popular": "No history track led here: popular overall",
}
IN_PROGRESS = (
    "A newer run is being written… These pages show the current run until it is published."
)

MARGIN = {"l": 10, "r": 10, "t": 10, "b": 10}


@dataclass(frozen=True)
class Run:
    """The current run of a store, as one resolved run file."""

    store: Path
    path: str

    def read(self, query: Callable[..., Any], *args: object) -> Any:
        """`query(con, *args)` for a function of `recsys.queries`, cached per run file."""
        return _read(self.path, query.__name__, args)


@st.cache_resource(max_entries=4, show_spinner=False)
def _connect(path: str) -> duckdb.DuckDBPyConnection:
    # One read-only connection per run file: a new run is a new file, so a newly published
    # run gets a new connection and the old one is never written to.
    return duckdb.connect(path, read_only=True)


@st.cache_data(max_entries=512, show_spinner=False)
def _read(path: str, name: str, args: tuple) -> Any:
    # A cursor per call: a DuckDB connection must not be shared between script threads.
    with _connect(path).cursor() as cursor:
        return getattr(queries, name)(cursor, *args)


def setup() -> Run:
    """Open the store's current run for a page, or say that there is none and stop."""
    _run_through_app()
    store = resolve_store()
    path = queries.current_run_file(store)
    if path is None:
        st.info("There is no run in this store yet. Run the batch first:")
        st.code(f"recsys run DATA --store {store}", language="bash")
        st.stop()
    if queries.run_in_progress(store) is not None:
        st.caption(IN_PROGRESS)
    return Run(store, str(path))


def _run_through_app() -> None:
    """Route a page opened by a link through app.py's navigation.

    With a `pages/` folder beside app.py, Streamlit runs a linked page on its own (its old
    multipage mode) until some session has run app.py's `st.navigation`, so the first visitor of
    a link would miss app.py's page config and navigation. Leaving that mode and rerunning runs
    the same link through app.py. A pages folder under another name would not need this.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def user_labels(users: pl.DataFrame) -> dict[str, str]:
    """user_id -> "id · name · N tracks heard", the name left out where there is none."""
    return {
        row["user_id"]: " · ".join(
            [row["user_id"], *([row["name"]] if row["name"] else []),
             f"{row['tracks_heard']:,} track{'' if row['tracks_heard'] == 1 else 's'} heard"]
        )
        for row in users.iter_rows(named=True)
    }


def reason_text(recommendations: pl.DataFrame) -> pl.DataFrame:
    """Add `reason`: "because you liked ..." for a similar track, the fallback in words."""
    words = pl.col("reason_kind").replace_strict(REASON_WORDS, default=None)
    liked = pl.lit("Because you liked ") + pl.col("because")
    reason = pl.coalesce(words, liked, pl.lit("Similar to tracks in your history"))
    return recommendations.with_columns(reason.alias("reason"))


def importance_chart(importance: pl.DataFrame) -> go.Figure:
    """A horizontal bar per feature: mean |SHAP| over the served recommendations."""
    frame = importance.sort("mean_abs_shap")
    bars = go.Bar(
        x=frame["mean_abs_shap"].to_list(), y=frame["feature"].to_list(), orientation="h",
        customdata=frame.select("gain", "splits").rows(),
        hovertemplate="%{y}: mean |SHAP| %{x:.4f}<br>gain %{customdata[0]:.1f}, "
                      "%{customdata[1]} splits<extra></extra>",
    )
    figure = go.Figure(bars)
    figure.update_layout(xaxis_title="mean |SHAP| (raw score)", height=120 + 24 * frame.height,
                         margin=MARGIN)
    return figure


def shap_waterfall(shap: pl.DataFrame, expected: float) -> go.Figure:
    """From the ranker's expected value, each feature's contribution, to the score."""
    labels = [_feature_label(row) for row in shap.iter_rows(named=True)]
    values = shap["value"].to_list()
    score = expected + sum(values)
    bars = go.Waterfall(
        orientation="h",
        measure=["absolute", *["relative"] * len(values), "total"],
        y=["expected value", *labels, "score"],
        x=[expected, *values, score],
        text=[f"{v:+.4f}" for v in [expected, *values]] + [f"{score:.4f}"],
        textposition="outside",
        cliponaxis=False,
        connector={"line": {"width": 1}},
    )
    figure = go.Figure(bars)
    figure.update_layout(yaxis={"autorange": "reversed"}, xaxis_title="raw score",
                         height=160 + 32 * len(values), margin={**MARGIN, "l": 60, "r": 60})
    return figure


def _feature_label(row: dict) -> str:
    value = row.get("feature_value")
    return row["feature"] if value is None else f"{row['feature']} = {value:.3g}"
