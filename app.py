"""The app: wires the pages together; each page opens the run chosen in the sidebar (the
current one by default) through `recsys.ui`.

    RECSYS_STORE=store streamlit run app.py
"""

import streamlit as st

st.set_page_config(page_title="recsys", layout="wide")
pages = [
    st.Page("pages/overview.py", title="Overview", default=True),
    st.Page("pages/inspector.py", title="User inspector", url_path="inspector"),
    st.Page("pages/supernodes.py", title="Super nodes", url_path="supernodes"),
    st.Page("pages/tracks.py", title="Track explorer", url_path="tracks"),
    st.Page("pages/follow.py", title="Who to follow", url_path="follow"),
    st.Page("pages/runs.py", title="Runs", url_path="runs"),
    st.Page("pages/evaluation.py", title="Evaluation", url_path="evaluation"),
]
st.navigation(pages).run()
