"""Runs: the store's kept runs, a note while a newer one is being written, and a way to open
any kept run (every page then shows it, read-only, as it was served that day)."""

import polars as pl
import streamlit as st

from recsys import queries, ui

run = ui.setup()
st.title("Runs")

running = queries.run_in_progress(run.store)
if running is not None:
    st.info(f"Run {running['id']} (as of {ui.minute(running.get('as_of'))} UTC) is being "
            f"written since {ui.minute(running.get('started_at'))} UTC; the pages show the "
            "current run until it is published.")

kept = queries.kept_runs(run.store)
st.subheader("Kept runs")
st.dataframe(
    kept.with_columns(pl.format("./?{}={}", pl.lit(ui.RUN_KEY), pl.col("id")).alias("open"))
    .select("open", "id", "as_of", "status", "current", "seconds", "recommendations",
            "fingerprint", "code_version", "started_at"),
    hide_index=True, column_config=ui.RUN_COLUMNS,
)
st.caption("Choose a run in the sidebar (or follow its link) to see it in every page as it was "
           "served; the last `store.keep_runs` runs are kept. `input` is the start of the "
           "sha256 of the input files.")

gone = queries.registry_runs(run.store).filter(~pl.col("kept"))
if not gone.is_empty():
    with st.expander(f"Runs without a file ({gone.height}): failed, running or pruned"):
        st.dataframe(gone.select("id", "as_of", "status", "started_at", "seconds", "error"),
                     hide_index=True)

st.subheader("Compare two runs")
if kept.height < 2:
    st.info("Only one run is kept: a comparison needs two.")
    st.stop()
labels = {row["id"]: ui.run_label(row) for row in kept.iter_rows(named=True)}
ids = list(labels)
left, right = st.columns(2)
run_a = left.selectbox("Run A (before)", ids, index=1, format_func=labels.get, key=ui.DIFF_A_KEY)
run_b = right.selectbox("Run B (after)", ids, index=0, format_func=labels.get, key=ui.DIFF_B_KEY)
diff = ui.run_diff(run.store, run_a, run_b)
if diff is None:
    st.warning("One of these runs was deleted since it was listed.")
    st.stop()

st.text(f"Lists: the top {diff.n} of each user with a list in both runs")
figures = st.columns(5)
figures[0].metric("Users in both", f"{diff.churn.height:,}")
figures[1].metric("Mean Jaccard", ui.maybe(diff.mean_jaccard, "{:.3f}"))
figures[2].metric("Unchanged lists", ui.maybe(diff.unchanged_share, "{:.1%}"))
figures[3].metric("Users only in A", f"{diff.only_a.height:,}")
figures[4].metric("Users only in B", f"{diff.only_b.height:,}")
st.plotly_chart(ui.jaccard_chart(diff.distribution))
st.caption("Jaccard index of a user's two sets of tracks: 1 when the same tracks are served "
           "(in any order), 0 when none is served again.")

st.subheader("Exposure: the largest changes in share of the slots")
for entity, tab in zip(ui.ENTITY_WORDS, st.tabs(list(ui.ENTITY_WORDS.values()))):
    rose, fell = tab.columns(2)
    rose.text("Rose most")
    rose.dataframe(diff.rises(entity).drop("entity"), hide_index=True,
                   column_config=ui.DIFF_COLUMNS)
    fell.text("Fell most")
    fell.dataframe(diff.falls(entity).drop("entity"), hide_index=True,
                   column_config=ui.DIFF_COLUMNS)

st.subheader("Popularity bias and evaluation")
st.dataframe(diff.bias, hide_index=True)
st.dataframe(diff.evaluation, hide_index=True)
st.caption("change = B - A; evaluation values are the users-weighted means over each run's "
           "validation windows.")
