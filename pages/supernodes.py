"""Super nodes: the tracks and creators the lists push to everybody, the history tracks that
lead there, and what another similarity setting or a creator cap would change, tried on a
sample of users or on one user without rerunning the batch."""

import polars as pl
import streamlit as st

from recsys import queries, results, sweep, ui, ui_evaluation, whatif

run = ui.setup()
st.title("Super nodes")
entity = st.radio("Leaderboard of", list(ui.ENTITY_WORDS), format_func=ui.ENTITY_WORDS.get,
                  horizontal=True, key=ui.ENTITY_KEY)

st.subheader("Most recommended")
board = run.read(queries.leaderboard, entity)
if board.is_empty():
    st.info("This run recommends nothing.")
    st.stop()
st.dataframe(board, hide_index=True, column_config=ui.EXPOSURE_COLUMNS)
st.caption("slots: recommendations of it; amplification: its recommendation share over its "
           "listening share (its share of all positive interactions).")

st.subheader("Lorenz curve of exposure")
measures = dict(run.read(queries.bias_measures, entity).iter_rows())
st.metric("Gini index of exposure", f"{measures['gini']:.3f}")
st.plotly_chart(ui.lorenz_chart(run.read(queries.lorenz_curve, entity)))
st.caption(f"Share of slots to the 1% most listened: {measures['top1_share']:.1%}; catalogue "
           f"covered: {measures['coverage']:.1%}; slots outside the short head: "
           f"{measures['tail_share']:.1%}.")

st.subheader("Popularity trade-off")
sweeps = ui_evaluation.result_files(run.store, results.SWEEPS)
if not sweeps:
    st.info("No sweep in this store yet: `recsys sweep DATA --store DIR` measures NDCG@10 "
            "against tail share and Gini for several damping settings on a sample of users.")
else:
    swept = sweeps[0].read(results.sweep_summary).row(0, named=True)
    in_use = sweep.setting_label(whatif.run_config(
        run.read(queries.current_run)["config"][0]).similarity)
    points = sweeps[0].read(results.sweep_points)
    st.plotly_chart(ui_evaluation.frontier_chart(points, in_use))
    marked = (f"The star is the current run's setting ({in_use})."
              if in_use in points["setting"].to_list()
              else f"The current run's setting ({in_use}) is not among the sweep's.")
    st.caption(f"Sweep {swept['sweep_id']}: {swept['sample_users']:,} users with history "
               f"sampled over {swept['cuts']} cut(s) up to {swept['as_of']:%Y-%m-%d}, "
               f"{swept['users_scored']:,} of them with a new positive in the window after "
               "their cut; each setting's similarity expansion alone, top 10. " + marked)

st.subheader("Routes")
labels = ui.entity_labels(board)
node = st.selectbox("Super node", list(labels), format_func=labels.get)
ui.show_routes(run, entity, node)

st.subheader("What-if on a sample of users")
stored = ui.stored_run(run)
for note in stored.notes:
    st.warning(note)
settings = ui.what_if_settings(stored.cfg)
st.button("Run the what-if", key=ui.RUN_WHATIF_KEY, on_click=ui.request_what_if)
if st.session_state.pop(ui.WHATIF_REQUESTED, False):
    st.session_state[ui.WHATIF_KEY] = settings
tried = st.session_state.get(ui.WHATIF_KEY)
if tried is None:
    st.info("Choose a setting and run the what-if: the sample's lists are recomputed from the "
            "run's interactions and compared with their lists under the run's settings.")
else:
    if tried != settings:
        st.caption("The settings changed since this what-if ran; run it again to see them.")
    result = ui.sample_what_if(run, tried)
    st.text(f"{result.users:,} users, recomputed in {result.seconds:.1f} s")
    st.dataframe(result.bias, hide_index=True)
    st.caption("Measured over the sample's lists only. The run's ranker learnt from the run's "
               "similarity scores; under another measure it can prefer the popular fallbacks. "
               "Rank by the candidate order to see the similarity's own effect.")
    st.dataframe(result.after.effects, hide_index=True)
    enter, leave = st.columns(2)
    enter.text("Tracks that enter lists (users)")
    enter.dataframe(whatif.entering(result.changes), hide_index=True)
    leave.text("Tracks that leave lists (users)")
    leave.dataframe(whatif.leaving(result.changes), hide_index=True)

st.subheader("What-if for one user")
text = st.text_input("Find a user by id or name", key=ui.ONE_USER_SEARCH_KEY)
users = run.read(queries.find_users, text)
if users.is_empty():
    st.info("No user id or name contains that text.")
    st.stop()
names = ui.user_labels(users)
user_id = st.selectbox("User", list(names), format_func=names.get, key=ui.ONE_USER_KEY)
before = ui.reason_text(run.read(queries.user_recommendations, user_id))
history = run.read(queries.user_history, user_id).filter(pl.col("positive"))
change = st.radio("Change", (ui.FORGET, ui.MUTE), horizontal=True, key=ui.CHANGE_KEY)
if change == ui.FORGET:
    if history.is_empty():
        st.info("This user has no positive history track to remove.")
        st.stop()
    titles = ui.history_labels(queries.most_recent(history, history.height))
    forget = st.selectbox("History track", list(titles), format_func=titles.get)
    after = ui.user_what_if(run, user_id, forget_track=forget)
else:
    creators = before["creator_id"].drop_nulls().unique(maintain_order=True).to_list()
    if not creators:
        st.info("No creator is known in this user's list.")
        st.stop()
    muted = st.selectbox("Creator", creators)
    after = ui.user_what_if(run, user_id, mute_creator=muted)
shown = ["rank", "title", "creator_id", "reason"]
left, right = st.columns(2)
left.text("The run's list")
left.dataframe(before.select(shown), hide_index=True)
right.text("After the change")
right.dataframe(after.select(shown), hide_index=True)
