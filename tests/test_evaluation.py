"""`recsys evaluate`: the time split, the users it scores, the models on it, the file it writes.

The metrics of the file are checked against a plain-Python computation from the raw events and
the stored lists; the windows and counts against hand-made logs.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta

import duckdb
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys import schema as s
from recsys.cli import app
from recsys.config import Config, config_from
from recsys.errors import RunError, UsageError
from recsys.io.dataset import Dataset
from recsys.offline import first_cut, label_window, plan_cuts, run_models
from recsys.results import EVALUATIONS, latest, result_files

from conftest import SMALL_CONFIG
from helpers import day, events, tracks

WEIGHTS = {"play": 1.0, "like": 4.0, "repost": 6.0, "skip": -3.0}


def dataset(ev: pl.DataFrame, catalogue: pl.DataFrame | None = None) -> Dataset:
    catalogue = catalogue if catalogue is not None else tracks(
        [(t, "c1", "rock") for t in "abcdefgh"])
    return Dataset(events=ev, tracks=catalogue, users=s.empty_frame(s.USERS),
                   follows=s.empty_frame(s.FOLLOWS))


def windows_config(days: float, **evaluation) -> Config:
    return config_from({"labels": {"window_days": days}, "evaluation": evaluation})


def test_a_window_scores_users_with_history_and_a_new_positive_and_counts_the_others():
    data = dataset(events([
        ("u1", "a", "play", 1), ("u1", "b", "play", 2),
        ("u1", "c", "play", 12), ("u1", "a", "play", 13),  # c is new; a was heard
        ("u2", "a", "play", 1), ("u2", "a", "play", 15),  # nothing new: not scored
        ("u2", "d", "play", 20),  # at the window's end: outside it
        ("u3", "b", "play", 12),  # no history: a new user
        ("u4", "b", "skip", 1), ("u4", "c", "play", 14),  # a skip is no positive history
        ("u5", "a", "play", 3), ("u5", "b", "skip", 12),  # a skip is no positive
        ("u6", "c", "play", 5), ("u6", "d", "like", 11), ("u6", "b", "play", 19),
    ]))
    window = label_window(data, day(10), day(20), Config())
    assert dict(window.users.rows()) == {"u1": 2, "u6": 1}
    assert sorted(window.positives.select(s.USER_ID, s.TRACK_ID).rows()) == [
        ("u1", "c"), ("u6", "b"), ("u6", "d")]
    assert window.without_positive == 2  # u2, u5
    assert window.cold == 2  # u3, u4
    # The model side sees only what came before the window.
    assert window.train.feedback["last_ts"].max() < day(10)


def rolling_log(windows: int) -> pl.DataFrame:
    """Over days 0..10*windows: u0 and u1 play a track a day; one new track for one user a
    window, so each window scores one user."""
    rows = [(u, f"t{d % 4}", "play", d + 0.5) for u in ("u0", "u1") for d in range(10)]
    for w in range(1, windows):
        rows.append((f"u{w % 2}", f"n{w}", "play", 10 * w + 5))
    return events(rows)


def test_cuts_are_stacked_until_enough_users_are_scored():
    data = dataset(rolling_log(5), tracks([(f"t{i}", "c", "g") for i in range(4)]
                                          + [(f"n{w}", "c", "g") for w in range(1, 5)]))
    # The latest event is on day 45: the first cut is one 10-day window before its end.
    first = first_cut(data, None, windows_config(10))
    assert first == day(45) + timedelta(seconds=1) - timedelta(days=10)

    cuts = plan_cuts(data, day(40), windows_config(10, min_users=3, max_cuts=8))
    assert [c.test.start for c in cuts] == [day(40), day(30), day(20)]
    assert [c.test.scored for c in cuts] == [1, 1, 1]
    # Each cut tunes on the window just before it, which is the next cut's test window.
    assert [c.validation.start for c in cuts] == [day(30), day(20), day(10)]
    assert cuts[0].validation is cuts[1].test

    assert len(plan_cuts(data, day(40), windows_config(10, min_users=3, max_cuts=2))) == 2
    # A cut needs events before its validation window: day 10 is the last that has them.
    assert len(plan_cuts(data, day(40), windows_config(10, min_users=99))) == 3


def test_an_as_of_whose_window_runs_past_the_data_or_no_user_scored_is_an_error():
    data = dataset(rolling_log(3), tracks([(f"t{i}", "c", "g") for i in range(4)]
                                          + [("n1", "c", "g"), ("n2", "c", "g")]))
    with pytest.raises(UsageError, match="label window would end after the last event"):
        first_cut(data, day(20), windows_config(10))
    quiet = dataset(events([("u0", "t0", "play", d) for d in range(30)]),
                    tracks([("t0", "c", "g")]))
    with pytest.raises(RunError, match="no user has both a positive track before a cut"):
        plan_cuts(quiet, day(20), windows_config(5))


def _future_world(seed: int, *, late_hit: bool) -> Dataset:
    """12 users with 10 tracks each from their block of 40 over days 0..40; after day 40 each
    plays 3 tracks new to them (chosen by `seed`); with `late_hit`, a track released on day 41
    that everybody plays."""
    rng = np.random.default_rng(0)
    rows, heard = [], {}
    for u in range(12):
        block = np.arange(40)[(np.arange(40) // 10) == u % 4]
        picks = rng.choice(np.concatenate([block, rng.choice(40, 4)]), 10, replace=False)
        heard[u] = set(int(t) for t in picks)
        rows += [(f"u{u}", f"t{t}", "play", float(rng.uniform(0, 40))) for t in picks]
    later = np.random.default_rng(seed)
    for u in range(12):
        fresh = [t for t in range(40) if t not in heard[u]]
        rows += [(f"u{u}", f"t{t}", "play", float(later.uniform(40, 50)))
                 for t in later.choice(fresh, 3, replace=False)]
        if late_hit:
            rows.append((f"u{u}", "late", "play", float(later.uniform(41, 50))))
    catalogue = tracks([(f"t{t}", f"c{t % 5}", f"g{t // 10}", 0) for t in range(40)]
                       + [("late", "c0", "g0", 41)])
    return dataset(events(rows), catalogue)


def test_no_model_at_a_cut_sees_what_happens_after_it():
    cfg = config_from({**SMALL_CONFIG, "labels": {"window_days": 10},
                                 "evaluation": {**SMALL_CONFIG["evaluation"], "min_users": 1,
                                                "max_cuts": 1, "ease_min_listeners": 1,
                                                "faithfulness_sample": 0},
                                 "similarity": {"min_co_count": 1}})
    results = []
    for seed, late in ((1, False), (2, True)):
        data = _future_world(seed, late_hit=late)
        cuts = plan_cuts(data, day(40), cfg)
        assert cuts[0].test.scored == 12
        results.append(run_models(data, cuts, cfg))
    calm, busy = (r.lists.sort("model", "cut", s.USER_ID, "rank") for r in results)
    assert set(calm["model"]) == {"most_popular", "ease", "als", "walks", "hybrid",
                                  *(f"similarity:{m}" for m in ("cooccurrence", "cosine",
                                                                "jaccard", "lift", "bm25",
                                                                "rp3beta"))}
    assert calm.equals(busy)
    assert "late" not in busy[s.TRACK_ID].to_list()
    # The futures do differ: the window's positives are not the same.
    assert not results[0].cuts[0].test.positives.equals(results[1].cuts[0].test.positives)


# The evaluation file of a small generated dataset, checked against the raw events.


@pytest.fixture(scope="module")
def evaluation_file(evaluated_store):
    with duckdb.connect(str(latest(evaluated_store, EVALUATIONS)), read_only=True) as con:
        yield {name: con.sql(f"SELECT * FROM {name}").pl()
               for name in ("evaluation", "cuts", "metrics", "model_status", "tuning", "lists",
                            "faithfulness", "comparisons")}


def _reference_positives(small_data, start, end) -> tuple[dict, set]:
    """Plain Python from the raw events: each scored user's new positives in [start, end)
    (KPI plays: the window's strength above 0), and the users with a positive before start."""
    raw = pl.read_parquet(small_data / "events.parquet").to_dicts()
    before, during = {}, {}
    for e in raw:
        weight = WEIGHTS[e["kind"]] * e["count"] + 0.1 * (e["ms_played"] or 0) / 60_000
        pair = (e["user_id"], e["track_id"])
        if e["ts"] < start:
            before[pair] = before.get(pair, 0.0) + weight
        elif e["ts"] < end and e["count"] <= 1:
            during[pair] = during.get(pair, 0.0) + weight
    history = {user for (user, _), w in before.items() if w > 0}
    fresh = {}
    for (user, track), w in during.items():
        if w > 0 and user in history and (user, track) not in before:
            fresh.setdefault(user, set()).add(track)
    return fresh, history


def _ndcg(listed: list[str], relevant: set[str], k: int) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, t in enumerate(listed[:k]) if t in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal


def test_the_file_scores_the_users_the_raw_events_say_with_the_metrics_they_give(
    evaluation_file, small_data
):
    [cut] = evaluation_file["cuts"].to_dicts()  # 400 users: one cut is enough
    fresh, _ = _reference_positives(small_data, cut["as_of"], cut["window_end"])
    assert cut["users_scored"] == len(fresh) > 100
    assert cut["positives"] == sum(len(t) for t in fresh.values())

    lists = evaluation_file["lists"]
    metrics = evaluation_file["metrics"].filter(pl.col("slice_kind") == "all")
    per_user = {}
    for model in ("hybrid", "most_popular", "ease", "als", "similarity:rp3beta"):
        mine = lists.filter(pl.col("model") == model).sort(s.USER_ID, "rank")
        by_user = {u: g[s.TRACK_ID].to_list()
                   for (u,), g in mine.group_by(s.USER_ID, maintain_order=True)}
        assert set(by_user) <= set(fresh)
        for k in (5, 10, 20):
            expected = np.mean([_ndcg(by_user.get(u, []), fresh[u], k) for u in fresh])
            hits = np.mean([bool(set(by_user.get(u, [])[:k]) & fresh[u]) for u in fresh])
            row = {r["metric"]: r for r in metrics.filter(pl.col("model") == model).to_dicts()}
            assert row[f"ndcg@{k}"]["value"] == pytest.approx(expected), (model, k)
            assert row[f"hit_rate@{k}"]["value"] == pytest.approx(hits), (model, k)
            assert row[f"ndcg@{k}"]["users"] == len(fresh)
        per_user[model] = [_ndcg(by_user.get(u, []), fresh[u], 10) for u in sorted(fresh)]

    # The hybrid against each model: the mean paired difference inside its interval.
    compared = {r["model"]: r for r in evaluation_file["comparisons"].to_dicts()}
    assert set(compared) == set(lists["model"]) - {"hybrid"}
    for model in ("most_popular", "ease", "als", "similarity:rp3beta"):
        difference = np.mean(np.array(per_user["hybrid"]) - np.array(per_user[model]))
        row = compared[model]
        assert row["hybrid_minus_model"] == pytest.approx(difference)
        assert row["ci_low"] <= row["hybrid_minus_model"] <= row["ci_high"]
        assert row["users"] == len(fresh) and row["metric"] == "ndcg@10"


def test_every_model_and_slice_is_in_the_file(evaluation_file):
    metrics = evaluation_file["metrics"]
    models = set(metrics["model"])
    assert models == {"most_popular", "ease", "als", "walks", "hybrid",
                      *(f"similarity:{m}" for m in ("cooccurrence", "cosine", "jaccard", "lift",
                                                    "bm25", "rp3beta"))}
    assert set(evaluation_file["model_status"]["status"]) <= {"evaluated", "ranker fitted"}
    names = set(metrics["metric"])
    for k in (5, 10, 20):
        for metric in ("precision", "recall", "ndcg", "map", "hit_rate", "novelty", "gini",
                       "tail_share", "coverage", "top1_share", "mean_popularity"):
            assert f"{metric}@{k}" in names
    kinds = metrics.group_by("slice_kind").agg(pl.col("slice").unique().sort())
    slices = dict(kinds.rows())
    assert slices["all"] == ["all"]
    assert slices["activity_decile"] == [str(d) for d in sorted(range(1, 11), key=str)]
    assert set(slices["popularity_bucket"]) <= {"head", "mid", "tail", "unheard"}
    # The hybrid's candidates bound its recall at every k.
    hybrid = {r["metric"]: r["value"] for r in metrics.filter(
        (pl.col("model") == "hybrid") & (pl.col("slice_kind") == "all")).to_dicts()}
    assert hybrid["recall@20"] <= hybrid["candidate_recall"] <= 1.0
    # The deciles split the scored users: their counts add up to them.
    deciles = metrics.filter((pl.col("slice_kind") == "activity_decile")
                             & (pl.col("metric") == "ndcg@10") & (pl.col("model") == "ease"))
    assert deciles["users"].sum() == evaluation_file["cuts"]["users_scored"].sum()


def test_each_baseline_is_tuned_on_the_validation_window_only(evaluation_file):
    tuning = evaluation_file["tuning"]
    [cut] = evaluation_file["cuts"].to_dicts()
    chosen = tuning.filter(pl.col("chosen"))
    assert chosen.group_by("model").len()["len"].to_list() == [1] * chosen.height
    ease = tuning.filter(pl.col("model") == "ease").sort("params")
    assert [json.loads(p)["lambda"] for p in ease["params"]] == [10.0, 100.0]
    # The chosen setting is the best on the validation window, whose users are not the test's.
    for model, group in tuning.group_by("model"):
        best = group.sort("validation_ndcg", descending=True, nulls_last=True).row(0, named=True)
        assert group.filter(pl.col("chosen"))["params"][0] == best["params"]
    assert (tuning["validation_users"] != cut["users_scored"]).all()


def test_the_cli_prints_the_users_per_cut_and_writes_a_file(small_data, tmp_path):
    config = tmp_path / "eval.toml"
    config.write_text('[ranker]\ntraining_cuts = 1\n[evaluation]\nmodels = ["most_popular", '
                      '"similarity:cosine", "ease"]\nease_max_tracks = 5\n')
    store = tmp_path / "store"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["evaluate", str(small_data), "--store", str(store), "--config", str(config)])
    assert result.exit_code == 0, result.output
    [path] = result_files(store, EVALUATIONS)
    with duckdb.connect(str(path), read_only=True) as con:
        scored = con.sql("SELECT users_scored FROM cuts").fetchall()[0][0]
        ndcg = con.sql("""SELECT value FROM metrics WHERE model = 'similarity:cosine'
                          AND metric = 'ndcg@10' AND slice_kind = 'all'""").fetchall()[0][0]
    assert f"{scored:,} users scored" in result.output
    assert "similarity:cosine" in result.output and f"{ndcg:.4f}" in result.output
    assert f"written to {path}" in result.output.replace("\n", "")
    # EASE is skipped, saying why and what to change; the other models are still measured.
    assert "ease: skipped: " in result.output
    assert "more than evaluation.ease_max_tracks = 5" in " ".join(result.output.split())
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM metrics WHERE model = 'ease'").fetchall()[0][0] == 0
        status = dict(con.sql("SELECT model, status FROM model_status").fetchall())
    assert status["ease"].startswith("skipped: ") and status["most_popular"] == "evaluated"
    assert not list(store.glob("evaluations/.*"))  # no temporary file left


def test_the_cli_says_why_nothing_can_be_scored_and_writes_nothing(tmp_path):
    data = tmp_path / "data"
    from recsys.io.dataset import write_dataset

    write_dataset({"events": events([("u0", "t0", "play", d) for d in range(30)]),
                   "tracks": tracks([("t0", "c", "g")])}, data)
    result = CliRunner().invoke(app, ["evaluate", str(data), "--store", str(tmp_path / "st")])
    assert result.exit_code == 4
    assert "no user has both a positive track before a cut" in result.output
    assert not (tmp_path / "st" / EVALUATIONS).exists() or not result_files(tmp_path / "st",
                                                                            EVALUATIONS)
    late = CliRunner().invoke(app, ["evaluate", str(data), "--store", str(tmp_path / "st"),
                                    "--as-of", "2024-01-25"])
    assert late.exit_code == 2 and "--as-of" in late.output


def test_the_file_holds_the_faithfulness_of_the_latest_cut(evaluation_file):
    rows = evaluation_file["faithfulness"]
    assert rows.height == 20
    assert rows["seed_track_id"].null_count() == 0
    assert (rows["dropped"] == (rows["score_after"] < rows["score_before"])).all()
    assert set(rows["reason_kind"]) <= {"similar", "walk"}


@pytest.mark.parametrize("each_cut", [True, False])
def test_settings_are_tuned_before_every_cut_or_once_before_the_earliest(each_cut):
    data = dataset(rolling_log(5), tracks([(f"t{i}", "c", "g") for i in range(4)]
                                          + [(f"n{w}", "c", "g") for w in range(1, 5)]))
    cfg = config_from({
        "labels": {"window_days": 10}, "similarity": {"min_co_count": 1},
        "evaluation": {"min_users": 3, "models": ["similarity:cooccurrence"],
                       "similarity_k": [5, 1], "tune_each_cut": each_cut},
    })
    cuts = plan_cuts(data, day(40), cfg)
    result = run_models(data, cuts, cfg)
    tuned_at = sorted({row["cut"] for row in result.tuning})
    assert tuned_at == ([0, 1, 2] if each_cut else [2])
    assert all(row["validation_users"] == 1 for row in result.tuning)
    assert set(result.lists["cut"]) == {0, 1, 2}


def test_every_table_and_column_of_evaluation_and_sweep_files_is_documented(evaluated_store):
    import re

    from conftest import ROOT
    from recsys.results import SWEEPS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for folder in (EVALUATIONS, SWEEPS):
        with duckdb.connect(str(latest(evaluated_store, folder)), read_only=True) as con:
            for (table,) in con.execute("SHOW TABLES").fetchall():
                row = re.search(rf"^\| `{table}` \|(.*)$", readme, flags=re.MULTILINE)
                assert row, f"{folder} table {table} is not in the README"
                columns = [d[0] for d in con.execute(f'SELECT * FROM "{table}" LIMIT 0')
                           .description]
                for column in columns:
                    assert f"`{column}`" in row.group(1), f"{table}.{column} not in README"
