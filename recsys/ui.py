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

from recsys import diff, queries, shap_on_demand, whatif
from recsys.config import Config
from recsys.stages.treeshap import TreeShap
from recsys.stages.similarity import MEASURES
from recsys.store import resolve_store

# Widget keys; USER_KEY is also the query parameter of the inspector (?user=<id>), TRACK_KEY
# that of the track explorer (?track=<id>).
USER_KEY = "user"
RUN_KEY = "run"  # the sidebar's run selector, bound to the query parameter ?run=<id>
DIFF_A_KEY = "diff_run_a"
DIFF_B_KEY = "diff_run_b"
SEARCH_KEY = "user_search"
ENTITY_KEY = "entity"
TRACK_KEY = "track"
TRACK_SEARCH_KEY = "track_search"
MEASURE_KEY = "whatif_measure"
BETA_KEY = "whatif_beta"
K1_KEY = "whatif_bm25_k1"
B_KEY = "whatif_bm25_b"
CAP_KEY = "whatif_max_per_creator"
SAMPLE_KEY = "whatif_sample_size"
SEED_KEY = "whatif_seed"
ORDER_KEY = "whatif_order"
RUN_WHATIF_KEY = "whatif_run"
WHATIF_KEY = "whatif_settings"  # session state: the settings of the last sample what-if run
WHATIF_REQUESTED = "whatif_requested"  # session state: the button was pressed
ONE_USER_SEARCH_KEY = "whatif_user_search"
ONE_USER_KEY = "whatif_user"
CHANGE_KEY = "whatif_change"

ENTITY_WORDS = {"track": "Tracks", "creator": "Creators"}
BY_MODEL, BY_ORDER = "The run's ranker", "The candidate order (no model)"
FORGET, MUTE = "Remove a history track", "Mute a creator"
EXPOSURE_COLUMNS = {
    "listening_share": st.column_config.NumberColumn(format="percent"),
    "recommendation_share": st.column_config.NumberColumn(format="percent"),
    "mean_share": st.column_config.NumberColumn(format="percent"),
    "amplification": st.column_config.NumberColumn(format="%.2f×"),
}
RUN_COLUMNS = {
    "open": st.column_config.LinkColumn(display_text="open"),
    "fingerprint": st.column_config.TextColumn("input"),
    "code_version": st.column_config.TextColumn("code"),
    "seconds": st.column_config.NumberColumn(format="%.1f s"),
}
DIFF_COLUMNS = {
    "share_a": st.column_config.NumberColumn("share A", format="percent"),
    "share_b": st.column_config.NumberColumn("share B", format="percent"),
    "change": st.column_config.NumberColumn(format="percent"),
    "slots_a": st.column_config.NumberColumn("slots A"),
    "slots_b": st.column_config.NumberColumn("slots B"),
}

LEDGER_COLUMNS = ("rank", "title", "rank_before", "moved", "sources", "top_shap")
LEDGER_CONFIG = {
    "rank": st.column_config.NumberColumn("rank after"),
    "rank_before": st.column_config.NumberColumn("rank before"),
    "moved": st.column_config.NumberColumn("places gained", format="%+d"),
    "top_shap": st.column_config.TextColumn("largest SHAP contributions"),
}
LEDGER_CAPTION = (
    "rank before: its place in the plain candidate order (by its best source score) among all "
    "of this user's candidates; rank after: its place in the ranker's list. sources: the "
    "candidate sources that proposed it."
)
ALS_WORDS = "Listeners whose taste matches yours play this"

REASON_WORDS = {
    "popular_in_genre": "No history track led here: popular in your genres",
    "popular": "No history track led here: popular overall",
}
IN_PROGRESS = (
    "A newer run is being written… These pages show the current run until it is published."
)

MARGIN = {"l": 10, "r": 10, "t": 10, "b": 10}
PATH_WORDS = {"seed": "your track {}", "via": "via track {}", "listener": "listener {}",
              "target": "this recommendation"}


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
    """Open the run chosen in the sidebar (the current one unless another kept run is chosen,
    or named by `?run=<id>`) for a page, or say that there is no run and stop."""
    _run_through_app()
    store = resolve_store()
    current = queries.current_run_file(store)
    if current is None:
        st.info("There is no run in this store yet. Run the batch first:")
        st.code(f"recsys run DATA --store {store}", language="bash")
        st.stop()
    if queries.run_in_progress(store) is not None:
        st.caption(IN_PROGRESS)
    return Run(store, str(_chosen_run(store, current)))


def _chosen_run(store: Path, current: Path) -> Path:
    """The file of the run chosen in the sidebar; the current run by default, or the run that
    the link names (`?run=<id>`). The choice holds across pages."""
    kept = queries.kept_runs(store)
    labels = {row["id"]: run_label(row) for row in kept.iter_rows(named=True)}
    current_id = current.name.removesuffix(".duckdb")
    labels.setdefault(current_id, f"{current_id} · current")
    options = list(labels)
    linked = st.query_params.get(RUN_KEY)
    if linked and linked not in labels:
        st.warning("The run named in the link is not kept in this store; showing the current "
                   "run.")
    start = linked if linked in labels else current_id
    chosen = st.sidebar.selectbox(
        "Run", options, index=options.index(start), format_func=labels.get, key=RUN_KEY,
        persist_state="session",
        help="Every page shows this run, read-only; the last `store.keep_runs` runs are kept.",
    )
    path = queries.run_file(store, chosen) if chosen != current_id else current
    if path is None:
        st.warning("The chosen run was deleted since it was listed; showing the current run.")
        chosen, path = current_id, current
    if chosen == current_id:
        st.query_params.pop(RUN_KEY, None)
    else:
        st.query_params[RUN_KEY] = chosen
        st.sidebar.caption("An earlier run, as it was served that day; not the current one.")
    return path


def run_diff(store: Path, run_a: str, run_b: str) -> diff.RunDiff | None:
    """Run B against run A (see `recsys.diff`), cached per pair of run files; None when one of
    them is no longer kept."""
    paths = [queries.run_file(store, run_id) for run_id in (run_a, run_b)]
    if None in paths:
        return None
    return _run_diff(str(paths[0]), str(paths[1]))


@st.cache_data(max_entries=8, show_spinner="Comparing the runs…")
def _run_diff(path_a: str, path_b: str) -> diff.RunDiff:
    return diff.diff_runs(path_a, path_b)


def jaccard_chart(distribution: pl.DataFrame) -> go.Figure:
    """Users per tenth of the Jaccard index, and at exactly 1."""
    labels = [f"{low:.1f}–{high:.1f}" if low < 1 else "1 (same)"
              for low, high in zip(distribution["low"], distribution["high"])]
    figure = go.Figure(go.Bar(x=labels, y=distribution["users"].to_list()))
    figure.update_layout(xaxis_title="Jaccard index of the two lists", yaxis_title="users",
                         margin=MARGIN, height=260)
    return figure


def maybe(value: float | None, template: str) -> str:
    return "none" if value is None else template.format(value)


def run_label(run: dict) -> str:
    """ "as of YYYY-MM-DD HH:MM · <id>", with " · current" for the current run."""
    return f"as of {minute(run['as_of'])} · {run['id']}" + (" · current" if run["current"] else "")


def minute(iso: str | None) -> str:
    """An ISO time from the registry as "YYYY-MM-DD HH:MM"."""
    return (iso or "").replace("T", " ")[:16]


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


def shap_for(run: Run, user_id: str, track_id: str) -> tuple[pl.DataFrame, bool]:
    """feature, value, feature_value of one recommendation (as `queries.shap_for`), and whether
    they were computed on demand: the batch stores SHAP for a share of users only
    (`recommend.shap_share`). Empty for a run without a ranker."""
    stored = run.read(queries.shap_for, user_id, track_id)
    if not stored.is_empty():
        return stored, False
    computed = _user_shap(run.path, user_id).filter(pl.col("track_id") == track_id)
    return computed.drop("track_id"), not computed.is_empty()


@st.cache_resource(max_entries=2, show_spinner="Reading the run's ranker…")
def _explainer(path: str) -> TreeShap | None:
    with _connect(path).cursor() as cursor:
        return shap_on_demand.load_explainer(cursor)


@st.cache_data(max_entries=256, show_spinner=False)
def _user_shap(path: str, user_id: str) -> pl.DataFrame:
    with _connect(path).cursor() as cursor:
        return shap_on_demand.user_shap(cursor, user_id, _explainer(path))


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
    """Add `reason`: "because you liked ..." for a similar track, "people who played ... also
    played this" for a walk, the fallback in words."""
    words = pl.col("reason_kind").replace_strict(REASON_WORDS, default=None)
    walked = pl.when(pl.col("reason_kind") == "walk").then(
        pl.lit("People who played ") + pl.col("because") + pl.lit(" also played this")
    )
    liked = pl.lit("Because you liked ") + pl.col("because")
    factored = pl.when(pl.col("reason_kind") == "als").then(pl.lit(ALS_WORDS))
    reason = pl.coalesce(words, walked, liked, factored,
                         pl.lit("Similar to tracks in your history"))
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


def walk_path_chart(paths: pl.DataFrame) -> go.Figure:
    """The top walk paths into a recommendation as a flow of visits: the user's seed track,
    the track the last hop left (where it is not the seed), the listener who played both,
    the recommendation. Nodes are numbered, not named: plotly renders some markup in labels,
    so the titles and names go in `walk_path_table` beside the chart."""
    nodes: dict[tuple[str, str], int] = {}
    labels: list[str] = []

    def node(column: str, key: str) -> int:
        if (column, key) not in nodes:
            count = sum(c == column for c, _ in nodes) + 1
            nodes[(column, key)] = len(labels)
            labels.append(PATH_WORDS[column].format(count))
        return nodes[(column, key)]

    sources, targets, values = [], [], []
    end = node("target", "")
    for row in paths.iter_rows(named=True):
        hops = [node("seed", row["seed_track_id"])]
        if row["via_track_id"] != row["seed_track_id"]:
            hops.append(node("via", row["via_track_id"]))
        hops += [node("listener", row["listener_id"]), end]
        for a, b in zip(hops, hops[1:]):
            sources.append(a)
            targets.append(b)
            values.append(row["path_visits"])
    figure = go.Figure(go.Sankey(
        node={"label": labels, "pad": 18},
        link={"source": sources, "target": targets, "value": values,
              "hovertemplate": "%{value} visits<extra></extra>"},
    ))
    figure.update_layout(height=120 + 60 * max(1, paths.height), margin=MARGIN)
    return figure


def walk_path_table(paths: pl.DataFrame) -> pl.DataFrame:
    """The paths of `walk_path_chart` as text, with the chart's node numbers."""
    seen: dict[str, dict[str, int]] = {"seed": {}, "via": {}, "listener": {}}
    rows = []
    for row in paths.iter_rows(named=True):
        seed = seen["seed"].setdefault(row["seed_track_id"], len(seen["seed"]) + 1)
        via = None
        if row["via_track_id"] != row["seed_track_id"]:
            via = seen["via"].setdefault(row["via_track_id"], len(seen["via"]) + 1)
        listener = seen["listener"].setdefault(row["listener_id"], len(seen["listener"]) + 1)
        rows.append({
            "your track": f"{seed}. {row['seed_title'] or row['seed_track_id']}",
            "via track": f"{via}. {row['via_title'] or row['via_track_id']}" if via else "",
            "listener": f"{listener}. {row['listener_name'] or row['listener_id']}",
            "visits": row["path_visits"],
        })
    return pl.DataFrame(rows, schema={"your track": pl.String, "via track": pl.String,
                                      "listener": pl.String, "visits": pl.Int64})


def lorenz_chart(curve: pl.DataFrame) -> go.Figure:
    """The Lorenz curve of exposure against the diagonal of equal exposure."""
    x, y = curve["population_share"].to_list(), curve["exposure_share"].to_list()
    figure = go.Figure([
        go.Scatter(x=x, y=y, mode="lines", name="recommendations",
                   hovertemplate="%{x:.0%} of the catalogue get %{y:.1%} of the slots"
                                 "<extra></extra>"),
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="equal exposure",
                   line={"dash": "dot"}, hoverinfo="skip"),
    ])
    figure.update_layout(
        xaxis_title="share of the catalogue, least recommended first",
        yaxis_title="share of recommendation slots", height=380, margin=MARGIN,
        xaxis={"tickformat": ".0%"}, yaxis={"tickformat": ".0%"},
    )
    return figure


def entity_labels(board: pl.DataFrame) -> dict[str, str]:
    """entity_id -> "name · id · N users" for a leaderboard, the name left out where none."""
    return {
        row["entity_id"]: " · ".join([*([row["name"]] if row["name"] else []), row["entity_id"],
                                      f"{row['users_reached']:,} users"])
        for row in board.iter_rows(named=True)
    }


def track_labels(tracks: pl.DataFrame) -> dict[str, str]:
    """track_id -> "title · id · N listeners"."""
    return {
        row["track_id"]: " · ".join([*([row["title"]] if row["title"] else []), row["track_id"],
                                     f"{row['popularity']:,} listeners"])
        for row in tracks.iter_rows(named=True)
    }


def history_labels(history: pl.DataFrame) -> dict[str, str]:
    """track_id -> "title · id · last heard <date>" for a user's history."""
    return {
        row["track_id"]: " · ".join([*([row["title"]] if row["title"] else []), row["track_id"],
                                     f"last heard {row['last_ts']:%Y-%m-%d}"])
        for row in history.iter_rows(named=True)
    }


def show_routes(run: Run, entity: str, entity_id: str) -> None:
    """How the lists reach a track or creator: by reason, then by the history tracks named."""
    kinds = run.read(queries.reason_kinds, entity, entity_id)
    if kinds.is_empty():
        st.info("No list holds it in this run.")
        return
    st.dataframe(kinds, hide_index=True)
    routes = run.read(queries.routes, entity, entity_id)
    if routes.is_empty():
        st.info("No history track leads to it: every list that holds it got it as a fallback.")
        return
    st.dataframe(routes, hide_index=True, column_config=EXPOSURE_COLUMNS)
    st.caption("users: how many users' lists hold it because of that history track (the seeds "
               "each recommendation names); mean_share: that seed's share of its similarity.")


def stored_run(run: Run) -> whatif.StoredRun:
    """The run's interactions, neighbours, lists and model, read once per run file."""
    return _stored(run.path)


@st.cache_resource(max_entries=2, show_spinner="Reading the run's interactions…")
def _stored(path: str) -> whatif.StoredRun:
    with _connect(path).cursor() as cursor:
        return whatif.load_stored_run(cursor)


def neighbours(run: Run, measure: str) -> pl.DataFrame:
    """Every track's neighbours under `measure` (the run's other similarity settings)."""
    return _neighbours(run.path, measure)


@st.cache_data(max_entries=len(MEASURES) * 2, show_spinner="Computing neighbours…")
def _neighbours(path: str, measure: str) -> pl.DataFrame:
    stored = _stored(path)
    cfg = whatif.with_settings(stored.cfg, similarity={"measure": measure})
    return whatif.neighbours_under(stored, cfg)


def what_if_settings(cfg: Config) -> dict:
    """The sample what-if's widgets, starting from the run's config `cfg`; their values."""
    sim = cfg.similarity
    left, middle, right = st.columns(3)
    measure = left.selectbox("Similarity measure", MEASURES, index=MEASURES.index(sim.measure),
                             key=MEASURE_KEY)
    similarity = {"measure": measure}
    if measure == "rp3beta":
        similarity["beta"] = left.slider("beta: popularity damping of the target", 0.0, 2.0,
                                         sim.beta, 0.05, key=BETA_KEY)
    if measure == "bm25":
        similarity["bm25_k1"] = left.number_input("BM25 k1", 0.0, 10.0, sim.bm25_k1, 0.1,
                                                  key=K1_KEY)
        similarity["bm25_b"] = left.slider("BM25 b", 0.0, 1.0, sim.bm25_b, 0.05, key=B_KEY)
    cap = middle.number_input("At most this many tracks per creator in a list (0: no cap)", 0,
                              None, cfg.curation.max_per_creator or 0, key=CAP_KEY)
    order = middle.radio("Rank by", (BY_MODEL, BY_ORDER), key=ORDER_KEY)
    size = right.number_input("Users in the sample", 1, None, whatif.DEFAULT_SAMPLE, 50,
                              key=SAMPLE_KEY)
    seed = right.number_input("Sample seed", 0, None, 0, key=SEED_KEY)
    return {"similarity": similarity, "curation": {"max_per_creator": cap or None},
            "use_model": order == BY_MODEL, "sample_size": int(size), "seed": int(seed)}


def request_what_if() -> None:
    """The what-if button's callback. A flag in the session state outlives a rerun of the
    script (see `_run_through_app`), where the button's own value would not."""
    st.session_state[WHATIF_REQUESTED] = True


def sample_what_if(run: Run, settings: dict) -> whatif.SampleWhatIf:
    """The sample what-if of `settings` (from `what_if_settings`), cached per run file."""
    return _sample_what_if(run.path, settings)


@st.cache_data(max_entries=16, show_spinner="Recomputing the sample's lists…")
def _sample_what_if(path: str, settings: dict) -> whatif.SampleWhatIf:
    stored = _stored(path)
    cfg = whatif.with_settings(stored.cfg, similarity=settings["similarity"],
                               curation=settings["curation"])
    users = whatif.sample_users(stored.recommendations, settings["sample_size"],
                                seed=settings["seed"])
    return whatif.sample_what_if(stored, cfg, users, use_model=settings["use_model"])


def user_what_if(run: Run, user_id: str, *, forget_track: str | None = None,
                 mute_creator: str | None = None) -> pl.DataFrame:
    """One user's list with a history track forgotten or a creator muted, with reasons."""
    return _user_what_if(run.path, user_id, forget_track, mute_creator)


@st.cache_data(max_entries=64, show_spinner="Recomputing the list…")
def _user_what_if(path: str, user_id: str, forget_track: str | None,
                  mute_creator: str | None) -> pl.DataFrame:
    stored = _stored(path)
    _, after = whatif.user_what_if(stored, user_id, forget_track=forget_track,
                                   mute_creator=mute_creator)
    return reason_text(whatif.because(after, stored.tracks))
