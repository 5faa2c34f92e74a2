"""Who to follow: pick a user, see whom they follow, the accounts suggested to them with the
reason for each, and which sources proposed it; and how each source did in the evaluation.

A link can name the user: `?user=<id>`.
"""

import polars as pl
import streamlit as st

from recsys import queries, ui

SOURCE_WORDS = {
    "co_followed": "followed by the people who follow the accounts you follow",
    "played": "a creator whose tracks you played",
    "co_listened": "a creator that the listeners of your creators also play",
    "als": "a creator that listeners like you play (matrix factorization)",
    "trust": "close to you in the follow graph (personalized PageRank)",
    "most_followed": "one of the most followed accounts",
}

run = ui.setup()
st.title("Who to follow")
counts = run.read(queries.follow_counts)
if counts["suggestions"] == 0:
    st.info("This run has no follow suggestions: its data has no follows.")
    st.stop()
st.caption(f"{counts['suggestions']:,} suggestions for {counts['users']:,} users.")

# The user: as in the inspector, matches of the search text; a user named by the link leads.
text = st.text_input("Find a user by id or name", key=ui.SEARCH_KEY)
matches = run.read(queries.find_users, text)
linked = st.query_params.get(ui.USER_KEY)
if linked and not text and linked not in matches["user_id"]:
    found = run.read(queries.user, linked)
    if found.is_empty():
        st.warning("The user named in the link is not in this run.")
    matches = pl.concat([found, matches])
if matches.is_empty():
    st.info("No user id or name contains that text.")
    st.stop()
labels = ui.user_labels(matches)
options = list(labels)
user_id = st.selectbox("User", options, format_func=labels.get, key=ui.USER_KEY,
                       index=options.index(linked) if linked in labels else 0)
st.query_params[ui.USER_KEY] = user_id

st.subheader("Follows")
follows = run.read(queries.user_follows, user_id)
if follows.is_empty():
    st.info("This user follows nobody before the as-of time.")
else:
    st.dataframe(follows.select("name", "followee_id", "ts", "followers"), hide_index=True)
    st.caption(f"{follows.height:,} accounts, most recent first, with their followers.")

st.subheader("Suggestions")
suggestions = run.read(queries.follow_recommendations, user_id)
if suggestions.is_empty():
    st.info("No account to suggest to this user in this run.")
    st.stop()
shown = suggestions.with_columns(pl.col("sources").list.join(", "))
st.dataframe(shown.select("rank", "name", "followee_id", "reason", "sources", "score"),
             hide_index=True)

st.subheader("Why this suggestion")
names = {row["followee_id"]: f"{row['rank']}. {row['name'] or row['followee_id']}"
         for row in suggestions.iter_rows(named=True)}
# Unkeyed: another user's list is another widget, which starts on their first suggestion.
followee_id = st.selectbox("Suggestion", list(names), format_func=names.get)
chosen = suggestions.filter(pl.col("followee_id") == followee_id).row(0, named=True)
st.text(chosen["reason"])
sources = run.read(queries.follow_sources, user_id, followee_id).with_columns(
    pl.col("source").replace_strict(SOURCE_WORDS, default=None).alias("meaning")
)
st.dataframe(sources.select("source", "meaning", "score", "rank"), hide_index=True)
st.caption("The sources that proposed it, with its score and rank in each; the merge "
           f"scored it {chosen['score']:.4f}.")

st.subheader("How the sources did")
evaluation = run.read(queries.follow_evaluation)
if evaluation.is_empty():
    st.info("This run has no follow evaluation.")
else:
    table = evaluation.pivot("metric", index="list", values="value")
    st.dataframe(table, hide_index=True)
    first = evaluation.row(0, named=True)
    where = ("the follows made after " + f"{first['window_start']:%Y-%m-%d}"
             if first["protocol"] == "window" else "a seeded random hold-out of the edges")
    st.caption(f"Recall and NDCG at 10 on {where}, over {first['users']:,} users; "
               "most_followed is the baseline.")
    als = run.read(queries.follow_als_validation)
    if not als.is_empty():
        st.dataframe(als, hide_index=True)
        st.caption("ALS: the factor counts tried on the validation, the chosen one marked.")
