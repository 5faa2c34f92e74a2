"""Who to follow: the sources, the merge's features and reasons, and the evaluation, on tiny
follow graphs whose answers are worked out by hand (or by networkx)."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import polars as pl
import pytest
from helpers import day, events, tracks

from recsys import schema as s
from recsys.config import Config, FollowConfig, SimilarityConfig, config_from
from recsys.follow_batch import View, candidates, follow_tables, serve, window_protocol
from recsys.io.dataset import Dataset
from recsys.stages import follow as fl
from recsys.stages import follow_merge as mg
from recsys.stages.feedback import feedback
from recsys.stages.follow_eval import holdout_edges, ranking_metrics

T0 = day(0)


def follows(pairs: list[tuple], *, dated: bool = False) -> pl.DataFrame:
    """Follow edges from (follower, followee[, day]) tuples; undated unless days are given."""
    return pl.DataFrame(
        {s.FOLLOWER_ID: [p[0] for p in pairs], s.FOLLOWEE_ID: [p[1] for p in pairs],
         s.TS: [day(p[2]) if dated else None for p in pairs]},
        schema=s.TABLE_COLUMNS[s.FOLLOWS],
    )


def users(*ids: str) -> pl.Series:
    return pl.Series(s.USER_ID, list(ids))


def names(mapping: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame({"account_id": list(mapping), s.NAME: list(mapping.values())},
                        schema={"account_id": pl.String, s.NAME: pl.String})


def evidence(edges: pl.DataFrame, *, fb: pl.DataFrame | None = None,
             catalogue: pl.DataFrame | None = None, steps: dict | None = None,
             named: dict[str, str] | None = None) -> mg.Evidence:
    fb = fb if fb is not None else feedback(events([]), Config().feedback)
    catalogue = catalogue if catalogue is not None else tracks([])
    empty = fl.Expansion(
        pl.DataFrame(schema={s.USER_ID: pl.String, fl.VIA_ID: pl.String, "weight": pl.Float64}),
        pl.DataFrame(schema={fl.VIA_ID: pl.String, s.FOLLOWEE_ID: pl.String,
                             fl.SCORE: pl.Float64}),
    )
    return mg.Evidence(
        follows=edges, by_creator=fl.creator_feedback(fb, catalogue),
        expansions={fl.CO_FOLLOWED: empty, fl.CO_LISTENED: empty, **(steps or {})},
        followers=fl.follower_counts(edges), names=names(named or {}),
    )


# Three users (a, b, c) follow the same two accounts X and Y; d follows X only.
THREE_FOLLOW_BOTH = [("a", "X"), ("a", "Y"), ("b", "X"), ("b", "Y"), ("c", "X"), ("c", "Y"),
                     ("d", "X")]


def test_co_followed_with_plain_co_counts():
    cfg = FollowConfig(similarity=SimilarityConfig(measure="cooccurrence"))
    scored, steps = fl.co_followed(follows(THREE_FOLLOW_BOTH), users("a", "d"), cfg, moment=T0)
    # d follows X; X and Y share 3 followers, so Y scores 3. a follows both: nothing left.
    assert scored.rows() == [("d", "Y", 3.0, 1)]
    assert steps.contributions(scored).rows() == [("d", "Y", "X", 3.0)]


def test_co_followed_damps_popular_accounts_as_rp3beta_does():
    cfg = FollowConfig(similarity=SimilarityConfig(measure="rp3beta", beta=0.5))
    scored, _ = fl.co_followed(follows(THREE_FOLLOW_BOTH), users("d"), cfg, moment=T0)
    # Each of a, b, c follows 2 accounts: 3 * (1/2), over X's 4 followers and sqrt(Y's 3).
    assert scored[fl.SCORE].to_list() == pytest.approx([1.5 / 4 / math.sqrt(3)])


def test_co_followed_reason_names_the_account_the_user_follows():
    edges = follows(THREE_FOLLOW_BOTH)
    cfg = FollowConfig(similarity=SimilarityConfig(measure="cooccurrence"))
    scored, steps = fl.co_followed(edges, users("d"), cfg, moment=T0)
    recs = mg.union({fl.CO_FOLLOWED: scored})
    shown = mg.with_reasons(recs, evidence(edges, steps={fl.CO_FOLLOWED: steps},
                                           named={"X": "Xavier"}))
    assert shown[mg.REASON].to_list() == ["people who follow Xavier also follow them"]


def test_followed_by_people_you_follow_names_the_most_followed_first():
    # e follows a, b and c, who all follow Y; c also has d as a follower.
    edges = follows([("e", "a"), ("e", "b"), ("e", "c"), ("d", "c"), ("a", "Y"), ("b", "Y"),
                     ("c", "Y")])
    recs = pl.DataFrame({s.USER_ID: ["e"], s.FOLLOWEE_ID: ["Y"],
                         mg.SOURCES_COLUMN: [[fl.TRUST]]})
    shown = mg.with_reasons(recs, evidence(edges, named={"a": "Ann"}))
    assert shown[mg.REASON][0] == "followed by 3 people you follow (c, Ann, b)"
    one = mg.with_reasons(recs.with_columns(pl.lit("d").alias(s.USER_ID)), evidence(edges))
    assert one[mg.REASON][0] == "followed by 1 person you follow (c)"


def test_every_reason_kind_is_worded():
    edges = follows([("u", "F"), ("v", "P"), ("v", "M"), ("w", "M")])
    fb = feedback(events([("u", "t1", "play", 1), ("u", "t2", "play", 2), ("u", "t3", "like", 2)]),
                  Config().feedback)
    catalogue = tracks([("t1", "P", "rock"), ("t2", "P", "rock"), ("t3", "Q", "rock")])
    listened = fl.Expansion(
        pl.DataFrame({s.USER_ID: ["u", "u"], fl.VIA_ID: ["P", "Q"], "weight": [0.4, 0.5]}),
        pl.DataFrame({fl.VIA_ID: ["P", "Q"], s.FOLLOWEE_ID: ["L", "L"], fl.SCORE: [0.5, 1.0]}),
    )
    recs = pl.DataFrame({
        s.USER_ID: ["u"] * 5,
        s.FOLLOWEE_ID: ["P", "L", "A", "T", "M"],
        mg.SOURCES_COLUMN: [[fl.PLAYED], [fl.CO_LISTENED], [fl.ALS], [fl.TRUST],
                            [fl.MOST_FOLLOWED]],
    })
    shown = mg.with_reasons(recs, evidence(edges, fb=fb, catalogue=catalogue,
                                           steps={fl.CO_LISTENED: listened}))
    assert shown[mg.REASON].to_list() == [
        "you played 2 tracks by them",
        "listeners of Q and P also play them",
        "listeners like you play them",
        "close to you in the follow graph",
        "followed by 2 people",
    ]


def _tiny_dataset(edges: pl.DataFrame) -> Dataset:
    """u follows X; v and w follow both X and u (so CF would offer u to u); u plays their own
    track, X's and Z's; creators are users."""
    ev = events([("u", "tu", "play", 1), ("u", "tx", "play", 1), ("u", "tz", "play", 1),
                 ("v", "tx", "play", 1), ("v", "tz", "play", 1), ("v", "tu", "play", 1),
                 ("w", "tz", "like", 1), ("w", "tu", "play", 1), ("w", "tx", "play", 1)])
    catalogue = tracks([("tu", "u", "rock"), ("tx", "X", "rock"), ("tz", "Z", "rock")])
    people = pl.DataFrame({s.USER_ID: ["u", "v", "w", "X", "Z"], s.NAME: [None] * 5},
                          schema=s.TABLE_COLUMNS[s.USERS])
    return Dataset(events=ev, tracks=catalogue, users=people, follows=edges)


def test_nobody_is_offered_themselves_or_an_account_they_follow():
    edges = follows([("u", "X"), ("v", "X"), ("v", "u"), ("w", "X"), ("w", "u")])
    data = _tiny_dataset(edges)
    cfg = config_from({"follow": {"similarity": {"min_co_count": 1},
                                            "factor_choices": [2]}})
    view = View(day(5), edges, feedback(data.events, cfg.feedback))
    everyone = users("u", "v", "w", "X", "Z")
    rows, _ = candidates(view, everyone, data, cfg, factors=2)
    served = serve(view, everyone, data, cfg, 2, None)["follow_recommendations"]

    banned = {(a, b) for a, b in edges.select(s.FOLLOWER_ID, s.FOLLOWEE_ID).iter_rows()}
    banned |= {(x, x) for x in everyone}
    for frame in (rows, served):
        pairs = set(frame.select(s.USER_ID, s.FOLLOWEE_ID).iter_rows())
        assert pairs and not pairs & banned
    assert ("u", "Z") in set(rows.select(s.USER_ID, s.FOLLOWEE_ID).iter_rows())
    assert served[mg.REASON].null_count() == 0

    # Without the rule, CF would offer u to u: v and w follow both X (which u follows) and u.
    pairs = edges.select(pl.col(s.FOLLOWER_ID).alias(s.USER_ID),
                         pl.col(s.FOLLOWEE_ID).alias(s.TRACK_ID), pl.lit(T0).alias("last_ts"))
    similar = fl.similar_accounts(pairs, cfg.follow, moment=T0)
    assert ("X", "u") in set(similar.select(fl.VIA_ID, s.FOLLOWEE_ID).iter_rows())


def test_personalized_pagerank_on_a_two_node_chain():
    # u -> v, v a dead end: from u the walker moves on with 0.7; from v it always goes back.
    adjacency = fl.follow_matrix(follows([("u", "v")]))[0]
    rank = fl.personalized_pagerank(adjacency, np.array([0]), restart=0.3)
    assert rank[:, 0] == pytest.approx([1 / 1.7, 0.7 / 1.7], abs=1e-6)


def test_personalized_pagerank_matches_networkx():
    rng = np.random.default_rng(3)
    pairs = {(f"n{a}", f"n{b}") for a, b in rng.integers(0, 30, (90, 2)) if a != b}
    pairs |= {("n0", "n31")}  # n31 follows nobody: a dead end
    edges = follows(sorted(pairs))
    adjacency, accounts = fl.follow_matrix(edges)
    graph = nx.DiGraph(sorted(pairs))
    for source in ("n0", "n7"):
        index = accounts.ids.to_list().index(source)
        ours = fl.personalized_pagerank(adjacency, np.array([index]), restart=0.3)[:, 0]
        theirs = nx.pagerank(graph, alpha=0.7, personalization={source: 1},
                             dangling={source: 1}, tol=1e-13, max_iter=10_000)
        assert ours == pytest.approx([theirs[a] for a in accounts.ids], abs=2e-6)

    # The trust source: the best accounts by that rank, never n0 itself or whom n0 follows.
    top = fl.trust(edges, users("n0"), FollowConfig(per_source=5))
    theirs = nx.pagerank(graph, alpha=0.7, personalization={"n0": 1}, dangling={"n0": 1},
                         tol=1e-13, max_iter=10_000)
    allowed = {a: v for a, v in theirs.items() if a != "n0" and ("n0", a) not in pairs}
    assert set(top[s.FOLLOWEE_ID]) <= set(allowed)
    assert top[fl.SCORE].to_list() == pytest.approx(sorted(allowed.values())[::-1][:5], abs=2e-6)
    assert top[fl.SCORE].to_list() == pytest.approx([allowed[a] for a in top[s.FOLLOWEE_ID]],
                                                    abs=2e-6)


def test_the_walked_circle_of_trust_estimates_the_exact_one():
    # Above `trust_exact_accounts` the PageRank is walked; with many walks its scores are the
    # exact ones to within sampling noise, and the best accounts the same.
    rng = np.random.default_rng(5)
    pairs = {(f"n{a}", f"n{b}") for a, b in rng.integers(0, 40, (160, 2)) if a != b}
    edges = follows(sorted(pairs))
    who = users("n0", "n7", "n11")
    exact = fl.trust(edges, who, FollowConfig(per_source=5))
    walked = fl.trust(edges, who, FollowConfig(per_source=5, trust_exact_accounts=0,
                                               trust_walks=200_000))
    joined = exact.join(walked, on=[s.USER_ID, s.FOLLOWEE_ID], how="left", suffix="_walked")
    assert walked.height == exact.height == 15
    assert joined[fl.SCORE].to_list() == pytest.approx(joined[f"{fl.SCORE}_walked"].to_list(),
                                                       abs=3e-3)
    for user in ("n0", "n7", "n11"):
        best = exact.filter(pl.col(s.USER_ID) == user).row(0, named=True)
        top = walked.filter(pl.col(s.USER_ID) == user).row(0, named=True)
        assert top[s.FOLLOWEE_ID] == best[s.FOLLOWEE_ID]
    # Never the user or whom they follow; the same user gets the same list when served alone.
    followed = set(edges.select(s.FOLLOWER_ID, s.FOLLOWEE_ID).iter_rows())
    assert not any((u, a) in followed or u == a
                   for u, a in walked.select(s.USER_ID, s.FOLLOWEE_ID).iter_rows())
    alone = fl.trust(edges, users("n7"), FollowConfig(per_source=5, trust_exact_accounts=0,
                                                      trust_walks=200_000))
    assert alone.equals(walked.filter(pl.col(s.USER_ID) == "n7"))


def test_most_followed_is_the_same_list_minus_what_each_user_follows():
    edges = follows([("a", "P"), ("b", "P"), ("c", "P"), ("a", "Q"), ("b", "Q"), ("c", "R")])
    top = fl.most_followed(edges, users("a", "z"), FollowConfig(per_source=2))
    assert top.rows() == [("a", "R", 1.0, 1), ("z", "P", 3.0, 1), ("z", "Q", 2.0, 2)]


def test_played_and_co_listened_creators():
    ev = events([("u", "p1", "play", 1), ("u", "p2", "play", 1), ("u", "p2", "like", 1),
                 ("v", "p1", "play", 1), ("v", "q1", "play", 1),
                 ("w", "p2", "play", 1), ("w", "q1", "play", 1)])
    catalogue = tracks([("p1", "P", "rock"), ("p2", "P", "rock"), ("q1", "Q", "rock")])
    by_creator = fl.creator_feedback(feedback(ev, Config().feedback), catalogue)
    cfg = FollowConfig(similarity=SimilarityConfig(measure="cooccurrence"))
    no_follows = follows([])
    # u's strength on P: two plays (1 each) and a like (4); no listening time.
    assert fl.played(by_creator, users("u"), no_follows, cfg).rows() == [("u", "P", 6.0, 1)]
    # P and Q share two listeners (v, w); u plays only P, with all of their strength.
    scored, steps = fl.co_listened(by_creator, users("u"), no_follows, cfg, moment=T0)
    assert scored.rows() == [("u", "Q", 2.0, 1)]
    assert steps.contributions(scored).rows() == [("u", "Q", "P", 2.0)]


def test_merge_features_by_hand():
    # u follows a and b; a and b follow c; c follows u; u and c share two tracks.
    edges = follows([("u", "a"), ("u", "b"), ("a", "c"), ("b", "c"), ("c", "u"), ("x", "c")])
    ev = events([("u", "t1", "play", 1), ("u", "t2", "play", 1), ("u", "t3", "play", 1),
                 ("c", "t1", "play", 1), ("c", "t2", "play", 1)])
    fb = feedback(ev, Config().feedback)
    rows = mg.union({
        fl.TRUST: pl.DataFrame({s.USER_ID: ["u", "u"], s.FOLLOWEE_ID: ["c", "x"],
                                fl.SCORE: [0.5, 0.1], fl.RANK: [1, 2]}),
        fl.MOST_FOLLOWED: pl.DataFrame({s.USER_ID: ["u"], s.FOLLOWEE_ID: ["c"],
                                        fl.SCORE: [3.0], fl.RANK: [1]}),
    })
    featured = mg.add_features(rows, evidence(edges), fb).sort(s.FOLLOWEE_ID)
    assert featured.select(s.FOLLOWEE_ID, *mg.FEATURES[-5:]).rows() == [
        ("c", 2, 1, 2, 3, 2),  # mutual, follows you, shared tracks, followers, sources
        ("x", 0, 0, 0, 0, 1),
    ]
    # Without a model the sources are fused by reciprocal rank.
    fused = mg.merged_scores(featured, None).to_list()
    assert fused == pytest.approx([1 / 61 + 1 / 61, 1 / 62])


def test_ranking_metrics_by_hand():
    ranked = pl.DataFrame({s.USER_ID: ["A", "A", "A", "B", "C"],
                           s.FOLLOWEE_ID: ["x", "z", "y", "q", "x"], "rank": [1, 2, 3, 1, 1]})
    targets = pl.DataFrame({s.USER_ID: ["A", "A", "B"], s.FOLLOWEE_ID: ["x", "y", "w"]})
    scored = ranking_metrics(ranked, targets, k=10)
    # A: both hits, at ranks 1 and 3; B: none; C has no target and is not scored.
    ndcg_a = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert scored == {"recall": pytest.approx(0.5), "ndcg": pytest.approx(ndcg_a / 2),
                      "users": 2}
    # With k = 2, y (rank 3) is out of reach: half of A's targets, one of its two ideal slots.
    cut = ranking_metrics(ranked, targets, k=2)
    assert cut["recall"] == pytest.approx(0.25)
    assert cut["ndcg"] == pytest.approx(1 / (1 + 1 / math.log2(3)) / 2)


def test_the_hold_out_is_seeded_disjoint_and_keeps_friendships_whole():
    rng = np.random.default_rng(0)
    pairs = {tuple(sorted((f"u{a}", f"u{b}"))) for a, b in rng.integers(0, 80, (300, 2)) if a != b}
    both = sorted(pairs) + sorted((b, a) for a, b in pairs)
    edges = follows(both)
    kept, held = holdout_edges(edges, 0.2, seed=5)

    as_set = lambda f: set(f.select(s.FOLLOWER_ID, s.FOLLOWEE_ID).iter_rows())  # noqa: E731
    assert as_set(kept) | as_set(held) == set(both) and not as_set(kept) & as_set(held)
    assert {(b, a) for a, b in as_set(held)} == as_set(held)
    assert 0.1 < held.height / edges.height < 0.3
    # The same seed gives the same split whatever the row order; another seed another one.
    _, again = holdout_edges(edges.sample(fraction=1.0, shuffle=True, seed=1), 0.2, seed=5)
    assert as_set(again) == as_set(held)
    assert as_set(holdout_edges(edges, 0.2, seed=6)[1]) != as_set(held)


def test_the_window_protocol_scores_later_follows_of_users_active_before():
    # w = 10 days before as_of = day 30: training cut day 10, evaluation cut day 20.
    edges = follows([("a", "X", 1), ("a", "Y", 12), ("a", "Z", 25), ("b", "X", 22),
                     ("n", "X", 26)], dated=True)
    ev = events([("a", "t", "play", 1), ("b", "t", "play", 15), ("n", "t", "play", 21)])
    data = Dataset(events=ev, tracks=tracks([("t", "X", "rock")]),
                   users=s.empty_frame(s.USERS), follows=edges)
    cfg = config_from({"follow": {"window_days": 10}})
    served = View(day(30), edges, feedback(ev, cfg.feedback))
    protocol = window_protocol(data, served, cfg)

    assert protocol.window_start == day(20)
    # Training: a was active before day 10 and followed Y on day 12.
    assert protocol.train.targets.rows() == [("a", "Y")]
    # Evaluation: a (Z on day 25) and b (active on day 15, X on day 22); n joined after day 20.
    assert sorted(protocol.test.targets.rows()) == [("a", "Z"), ("b", "X")]
    assert protocol.test.view.follows.height == 2  # a -> X and a -> Y


def test_a_dataset_without_follows_gives_empty_tables():
    data = Dataset(events=events([("u", "t", "play", 1)]), tracks=tracks([("t", "c", "rock")]),
                   users=s.empty_frame(s.USERS), follows=s.empty_frame(s.FOLLOWS))
    tables = follow_tables(data, day(2), Config())
    assert set(tables) == {"follow_recommendations", "follow_sources", "follow_evaluation",
                           "follow_als_validation", "follows"}
    assert all(frame.height == 0 for frame in tables.values())
    assert tables["follow_recommendations"].columns == [
        "user_id", "rank", "followee_id", "score", "sources", "reason"]
