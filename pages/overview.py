"""Overview: the current run, its stages, the ranker against the candidate order, and which
features the ranker leans on."""

import streamlit as st

from recsys import queries, ui

run = ui.setup()
summary = run.read(queries.current_run).row(0, named=True)

st.title("Overview")
st.text(f"Run {summary['run_id']}, as of {summary['as_of']:%Y-%m-%d %H:%M:%S} UTC")
st.text(f"Input: {summary['input']}")
counts = st.columns(4)
for column, key in zip(counts, ("users", "tracks", "events", "recommendations")):
    column.metric(key.capitalize(), f"{summary[key]:,}")

st.subheader("Stages")
stages = run.read(queries.stage_timings)
st.dataframe(stages, hide_index=True, column_config={"seconds": st.column_config.NumberColumn(
    format="%.2f s")})
st.caption(f"{summary['seconds']:.1f} s in all, peak memory {summary['peak_memory_mb']:,.0f} MB")

st.subheader("Ranker")
st.text(f"Ranker: {summary['ranker_status']}, {summary['ranker_trees']} trees, "
        f"{summary['ranker_train_rows']:,} training rows, KPI {summary['kpi']}")
if summary["ndcg_users"]:
    scores = st.columns(3)
    scores[0].metric("NDCG@10, ranker", f"{summary['ndcg_ranker']:.4f}")
    scores[1].metric("NDCG@10, candidate order", f"{summary['ndcg_candidate_order']:.4f}")
    scores[2].metric("Users scored", f"{summary['ndcg_users']:,}")
    st.dataframe(run.read(queries.ranker_evaluation), hide_index=True)
else:
    st.info("The ranker was not compared with the candidate order in this run.")

st.subheader("Feature importance")
importance = run.read(queries.feature_importance)
if importance.is_empty():
    st.info("This run has no ranker, so no feature importance.")
else:
    st.plotly_chart(ui.importance_chart(importance))
    st.caption("Mean absolute SHAP value over the served recommendations, in raw score units.")
