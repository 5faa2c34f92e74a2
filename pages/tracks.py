"""Track explorer: one track's neighbours under every similarity measure, the users it is
recommended to and through which of their history tracks, and its amplification.

A link can name the track: `?track=<id>`.
"""

import polars as pl
import streamlit as st

from recsys import queries, ui, whatif
from recsys.stages.similarity import MEASURES

run = ui.setup()
st.title("Track explorer")

# The track: matches of the search text, most recommended first; a linked track leads.
text = st.text_input("Find a track by id or title", key=ui.TRACK_SEARCH_KEY)
matches = run.read(queries.find_tracks, text)
linked = st.query_params.get(ui.TRACK_KEY)
if linked and not text and linked not in matches["track_id"]:
    matches = pl.concat([run.read(queries.find_tracks, linked).head(1), matches])
if matches.is_empty():
    st.info("No track id or title contains that text.")
    st.stop()
labels = ui.track_labels(matches)
options = list(labels)
track_id = st.selectbox("Track", options, format_func=labels.get, key=ui.TRACK_KEY,
                        index=options.index(linked) if linked in labels else 0)
st.query_params[ui.TRACK_KEY] = track_id
track = matches.filter(pl.col("track_id") == track_id).row(0, named=True)
st.text(track["title"] or track["track_id"])
st.text(f"by {track['creator_id'] or 'unknown creator'}, genre {track['genre'] or 'unknown'}")

exposure = run.read(queries.exposure_of, "track", track_id).row(0, named=True)
figures = st.columns(5)
figures[0].metric("Listeners", f"{exposure['listeners']:,}")
figures[1].metric("Recommended to", f"{exposure['users_reached']:,} users")
figures[2].metric("Listening share", f"{exposure['listening_share']:.3%}")
figures[3].metric("Recommendation share", f"{exposure['recommendation_share']:.3%}")
amplification = exposure["amplification"]
figures[4].metric("Amplification", "none listened" if amplification is None
                  else f"{amplification:.2f}×")

st.subheader("Neighbours under each measure")
stored = ui.stored_run(run)
neighbours = {measure: ui.neighbours(run, measure) for measure in MEASURES}
st.dataframe(whatif.side_by_side(neighbours, track_id, stored.tracks), hide_index=True)
st.dataframe(whatif.neighbour_popularity(neighbours, track_id, stored.feedback),
             hide_index=True)
sim = stored.cfg.similarity
st.caption(f"Computed from the run's interactions with its settings (top {sim.k}, at least "
           f"{sim.min_co_count} shared users, beta {sim.beta}, BM25 k1 {sim.bm25_k1} b "
           f"{sim.bm25_b}); the run itself used {sim.measure}.")

st.subheader("Routes: the history tracks that lead users to it")
ui.show_routes(run, "track", track_id)
