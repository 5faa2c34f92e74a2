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
