"""User inspector: find a user, see what they heard, what they are recommended and why.

A link can name the user: `?user=<id>`.
"""

import polars as pl
import streamlit as st

from recsys import queries, ui

run = ui.setup()
st.title("User inspector")

user_id = ui.pick_user(run)

st.subheader("History")
history = run.read(queries.user_history, user_id)
if history.is_empty():
    st.info("This user has no history before the as-of time.")
else:
    shown = ["title", "creator_id", "genre", "kinds", "first_ts", "last_ts"]
    played, recent = st.tabs(["Most played", "Most recent"])
    played.dataframe(queries.most_played(history).select(shown), hide_index=True)
    recent.dataframe(queries.most_recent(history).select(shown), hide_index=True)

st.subheader("Recommendations")
recs = ui.reason_text(run.read(queries.user_recommendations, user_id))
if recs.is_empty():
    st.info("This user has no recommendations in this run.")
    st.stop()
if recs["reason_kind"].is_in(list(ui.REASON_WORDS)).all():
    st.info("No history track led to any of these: this is a fallback list of popular tracks.")
st.dataframe(recs.select("rank", "title", "creator_id", "score", "reason_kind", "reason"),
             hide_index=True)

st.subheader("What the ranker changed")
if run.read(queries.has_ledger):
    st.dataframe(run.read(queries.ledger, user_id).select(ui.LEDGER_COLUMNS), hide_index=True,
                 column_config=ui.LEDGER_CONFIG)
    st.caption(ui.LEDGER_CAPTION)
else:
    st.info("This run has no ledger of the ranker's changes; a new run of the batch has one.")

st.subheader("Why this recommendation")
titles = {row["track_id"]: f"{row['rank']}. {row['title'] or row['track_id']}"
          for row in recs.iter_rows(named=True)}
# Unkeyed: another user's list is another widget, which starts on their first recommendation.
track_id = st.selectbox("Recommendation", list(titles), format_func=titles.get)
chosen = recs.filter(pl.col("track_id") == track_id).row(0, named=True)
st.text(chosen["title"] or chosen["track_id"])
st.text(f"by {chosen['creator_id'] or 'unknown creator'}, genre {chosen['genre'] or 'unknown'}")
st.text(chosen["reason"])
seeds = run.read(queries.reasons, user_id).filter(pl.col("track_id") == track_id)
if not seeds.is_empty():
    st.dataframe(seeds.select("seed_title", "seed_track_id", "share"), hide_index=True,
                 column_config={"share": st.column_config.ProgressColumn(format="percent")})

sources = run.read(queries.candidate_sources, user_id, track_id)
st.dataframe(sources, hide_index=True)
st.caption("The candidate sources that proposed it, with its score and rank in each.")
paths = run.read(queries.walk_paths_for, user_id, track_id)
if not paths.is_empty():
    st.plotly_chart(ui.walk_path_chart(paths))
    st.dataframe(ui.walk_path_table(paths), hide_index=True)
    st.caption("The walks' most travelled paths into it: from your history track (or a track "
               "the walk reached from it), through a listener who played both, to it; widths "
               "are visits.")

shap, computed = ui.shap_for(run, user_id, track_id)
expected = run.read(queries.expected_value)
if expected is None:
    st.info("No SHAP values: this run has no ranker, so the score is the candidate order.")
elif shap.is_empty():
    st.info("No SHAP values for this user: the run keeps them for a share of the users "
            "(recommend.shap_share).")
else:
    st.plotly_chart(ui.shap_waterfall(shap, expected))
    st.caption(f"Score {chosen['score']:.4f} = expected value {expected:.4f} + the contributions")
    if computed:
        st.caption("Computed now from the stored features and model: the batch stored SHAP "
                   "for a share of users (recommend.shap_share).")
