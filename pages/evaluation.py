"""Evaluation: every model on the same later windows (`recsys evaluate`), by user activity and
by the popularity of what users went on to like; whether "because you liked" names the track
that carries the score; and what the current run's ranker leans on (SHAP)."""

import polars as pl
import streamlit as st

from recsys import queries, results, ui
from recsys import ui_evaluation as uie

run = ui.setup()
st.title("Evaluation")
files = uie.result_files(run.store, results.EVALUATIONS)


def show_evaluation(chosen: uie.ResultFile) -> None:
    summary = chosen.read(results.evaluation_summary).row(0, named=True)
    created = f"{summary['created_at']:%Y-%m-%d %H:%M}"
    st.text(f"Evaluation {summary['evaluation_id']}, created {created} UTC, on "
            f"{summary['input']}")
    st.text(f"KPI {summary['kpi']}, {summary['window_days']:g}-day label windows; latest cut "
            f"{summary['as_of']:%Y-%m-%d %H:%M:%S} UTC")
    cuts = chosen.read(results.cuts)
    counts = st.columns(3)
    counts[0].metric("Users scored", f"{summary['users_scored']:,}")
    counts[1].metric("Cuts", f"{summary['cuts']:,}")
    counts[2].metric("Seconds", f"{summary['seconds']:,.0f}")
    st.dataframe(cuts, hide_index=True)
    st.caption("A user is scored at a cut when they had a positive track before it and a "
               "positive on a track new to them in the window after it; the others are "
               "counted here, never scored. Means are over the (cut, user) pairs scored.")
    for row in chosen.read(results.model_status).iter_rows(named=True):
        if row["status"].startswith("skipped"):
            st.warning(f"{row['model']}: {row['status']}")

    overall = chosen.read(results.metrics, "all")
    models = overall["model"].unique(maintain_order=True).to_list()
    st.subheader("Metrics by model")
    metric = st.selectbox("Metric", uie.ACCURACY_METRICS + uie.BEYOND_METRICS,
                          format_func=uie.metric_label, key=uie.METRIC_KEY)
    st.plotly_chart(uie.metrics_chart(overall, metric, models))
    ks = sorted(overall["k"].unique())
    middle = ks[len(ks) // 2]
    st.dataframe(uie.table_at(overall, middle, models), hide_index=True)
    ceiling = overall.filter(pl.col("metric") == "candidate_recall")
    if ceiling.height:
        st.caption(f"The hybrid's candidates held {ceiling['value'][0]:.1%} of the scored "
                   "users' new positives: the ceiling of its recall at any k.")

    st.subheader("By slice")
    left, middle_col, right = st.columns(3)
    kind = left.radio("Slice", list(uie.SLICE_WORDS), format_func=uie.SLICE_WORDS.get,
                      key=uie.SLICE_KIND_KEY)
    name = middle_col.selectbox("Metric", uie.ACCURACY_METRICS, format_func=uie.metric_label,
                                key=uie.SLICE_METRIC_KEY)
    k = right.selectbox("k", ks, index=len(ks) // 2, key=uie.SLICE_K_KEY)
    sliced = chosen.read(results.metrics, kind)
    st.plotly_chart(uie.slice_chart(sliced, f"{name}@{k}", kind, models))
    st.caption("Popularity buckets: head, the most listened tracks making half of all positive "
               "interactions before the cut; mid, the next 30%; tail, the rest; unheard, "
               "tracks nobody had listened to. A bucket's figure counts only the relevant "
               "tracks in it, over the users who had one.")

    st.subheader("Tuning")
    st.dataframe(chosen.read(results.tuning), hide_index=True)
    st.caption("Each baseline's settings, tried on the window before its cut; the chosen one "
               "then refitted on everything before the cut.")

    st.subheader('Faithfulness of "because you liked"')
    tested = chosen.read(results.faithfulness)
    if tested.is_empty():
        st.info("This evaluation tested no recommendation (no ranker, or "
                "evaluation.faithfulness_sample = 0).")
        return
    dropped = tested["dropped"].mean()
    st.metric("Score dropped without the named seed", f"{dropped:.0%}",
              help=f"{int(tested['dropped'].sum())} of {tested.height} recommendations tested")
    st.dataframe(uie.faithfulness_summary(tested), hide_index=True)
    st.plotly_chart(uie.change_histogram(tested))
    st.caption("For a sample of the hybrid's recommendations at the latest cut, the history "
               "track named first was removed from the user's history, the candidate's "
               "features rebuilt and the model's score recomputed.")


if not files:
    st.info("There is no evaluation in this store yet. Run one:")
    st.code(f"recsys evaluate DATA --store {run.store}", language="bash")
else:
    labels = {f.path: f.name for f in files}
    path = st.selectbox("Evaluation", list(labels), format_func=labels.get,
                        key=uie.EVALUATION_KEY)
    show_evaluation(uie.ResultFile(path))

st.subheader("What the ranker leans on (the current run)")
importance = run.read(queries.feature_importance)
if importance.is_empty():
    st.info("The current run has no ranker, so no SHAP summary.")
    st.stop()
st.plotly_chart(ui.importance_chart(importance))
st.caption("Mean absolute SHAP value per feature over the served recommendations.")
points = run.read(queries.shap_points)
st.plotly_chart(uie.beeswarm_chart(points, importance))
shown = points.filter(pl.col("feature").is_in(importance["feature"].head(uie.BEESWARM_FEATURES)
                                              .to_list()))
st.caption(f"{shown.height:,} stored contributions, at most {queries.SHAP_POINTS_PER_FEATURE} "
           "per feature: the run stores each recommendation's largest ones, so a feature "
           "appears where it mattered most.")
