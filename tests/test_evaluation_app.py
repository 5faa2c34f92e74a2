"""The Evaluation page and the popularity trade-off on the Super nodes page, run by AppTest.

Every expected value is read from the evaluation, sweep or run file with DuckDB here, not
through `recsys.results` or `recsys.queries`.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from recsys import ui_evaluation as uie
from recsys.results import EVALUATIONS, SWEEPS, latest
from test_app import open_page, run_file

EVALUATION = "pages/evaluation.py"
SUPERNODES = "pages/supernodes.py"


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def trace(chart: dict, name: str) -> dict:
    [found] = [t for t in chart["data"] if t.get("name") == name]
    return found


@pytest.fixture(scope="module")
def evaluation_rows(evaluated_store):
    with duckdb.connect(str(latest(evaluated_store, EVALUATIONS)), read_only=True) as con:
        ndcg = dict(con.sql("""SELECT model, value FROM metrics WHERE metric = 'ndcg@10'
                               AND slice_kind = 'all'""").fetchall())
        buckets = con.sql("""SELECT slice, value FROM metrics WHERE metric = 'recall@10'
                             AND slice_kind = 'popularity_bucket' AND model = 'hybrid'
                             ORDER BY slice""").fetchall()
        scored = con.sql("SELECT sum(users_scored) FROM cuts").fetchall()[0][0]
        dropped, tested = con.sql("SELECT sum(dropped::INT), count(*) FROM faithfulness"
                                  ).fetchall()[0]
    return {"ndcg": ndcg, "buckets": dict(buckets), "scored": scored, "dropped": dropped,
            "tested": tested}


def test_the_evaluation_page_shows_the_files_metrics_by_model_and_slice(
    evaluated_store, evaluation_rows, monkeypatch
):
    at = open_page(evaluated_store, monkeypatch, EVALUATION)
    assert at.title[0].value == "Evaluation"
    shown = metrics(at)
    assert shown["Users scored"] == f"{evaluation_rows['scored']:,}"
    share = evaluation_rows["dropped"] / evaluation_rows["tested"]
    assert shown["Score dropped without the named seed"] == f"{share:.0%}"

    # NDCG by model: the bar of k = 10 holds each model's value.
    bars = trace(charts(at)[0], "@10")
    assert dict(zip(bars["x"], bars["y"])) == pytest.approx(evaluation_rows["ndcg"])

    # The popularity buckets of recall@10.
    at.radio(key=uie.SLICE_KIND_KEY).set_value("popularity_bucket").run()
    at.selectbox(key=uie.SLICE_METRIC_KEY).set_value("recall").run()
    assert not at.exception
    [sliced] = [c for c in charts(at) if any(t.get("name") == "hybrid" and t["type"] == "bar"
                                             for t in c["data"])]
    hybrid = trace(sliced, "hybrid")
    assert dict(zip(hybrid["x"], hybrid["y"])) == pytest.approx(evaluation_rows["buckets"])


def test_the_evaluation_page_draws_the_runs_shap_summary(evaluated_store, monkeypatch):
    with run_file(evaluated_store) as con:
        top = [r[0] for r in con.sql("""SELECT feature FROM feature_importance
                                        ORDER BY mean_abs_shap DESC, feature LIMIT 12
                                     """).fetchall()]
        stored = con.sql(f"""SELECT count(*) FROM shap_values WHERE feature IN
                             ({', '.join('?' * len(top))})""", params=top).fetchall()[0][0]
    at = open_page(evaluated_store, monkeypatch, EVALUATION)
    [swarm] = [c for c in charts(at) if c["data"][0]["type"] == "scattergl"]
    dots = len(swarm["data"][0]["x"])
    assert 0 < dots <= stored and dots <= 400 * len(top)
    # The rows of the chart are the top features, the largest mean |SHAP| at the top.
    axis = swarm["layout"]["yaxis"]
    assert axis["ticktext"] == top and axis["tickvals"] == list(range(len(top), 0, -1))


def test_the_evaluation_page_without_an_evaluation_says_how_to_make_one(
    sample_store, monkeypatch
):
    at = open_page(sample_store, monkeypatch, EVALUATION)
    assert "no evaluation in this store" in at.info[0].value
    assert at.code[0].value == f"recsys evaluate DATA --store {sample_store}"
    assert any(c["data"][0]["type"] == "bar" for c in charts(at))  # the SHAP summary


def test_the_super_nodes_page_plots_the_sweep_and_marks_the_setting_in_use(
    evaluated_store, monkeypatch
):
    with duckdb.connect(str(latest(evaluated_store, SWEEPS)), read_only=True) as con:
        points = {r[0]: r[1:] for r in con.sql(
            "SELECT setting, tail_share, gini, ndcg FROM sweep_points").fetchall()}
    with run_file(evaluated_store) as con:
        config = json.loads(con.sql("SELECT config FROM runs").fetchall()[0][0])
    assert config["similarity"]["measure"] == "rp3beta"
    in_use = f"rp3beta beta={config['similarity']['beta']:g}"

    at = open_page(evaluated_store, monkeypatch, SUPERNODES)
    [frontier] = [c for c in charts(at) if any(t.get("name") == "in use" for t in c["data"])]
    stars = [t for t in frontier["data"] if t.get("name") == "in use"]
    tail, gini, ndcg = points[in_use]
    assert (stars[0]["x"], stars[0]["y"]) == ([tail], [ndcg])
    assert (stars[1]["x"], stars[1]["y"]) == ([gini], [ndcg])
    dots = [t for t in frontier["data"] if t.get("name") == "settings"][0]
    assert sorted(dots["text"]) == sorted(points)
    assert any(in_use in c.value for c in at.caption)


def test_the_super_nodes_page_without_a_sweep_says_how_to_make_one(sample_store, monkeypatch):
    at = open_page(sample_store, monkeypatch, SUPERNODES)
    assert any("No sweep in this store yet" in i.value for i in at.info)
