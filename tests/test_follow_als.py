"""Who to follow by ALS: the affinity forms by hand, the fit's checks, the source against
implicit's own recommend, the factor choice, and the musical bays."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from helpers import events, tracks
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from recsys import schema as s
from recsys.config import Config, FollowConfig, config_from
from recsys.errors import RunError
from recsys.stages import follow_als as als
from recsys.stages.feedback import feedback

NO_FOLLOWS = pl.DataFrame(schema={s.FOLLOWER_ID: pl.String, s.FOLLOWEE_ID: pl.String})


def _feedback(rows):
    return feedback(events(rows), Config().feedback)


CATALOGUE = tracks([("p1", "P", "rock"), ("p2", "P", "rock"), ("q1", "Q", "jazz"),
                    ("r1", "R", "jazz")])
# u: 2 plays and a like of P's tracks, a play and a skip of Q's; v: 4 plays and a skip of Q's,
# 3 plays and a skip of R's.
FEEDBACK_ROWS = [("u", "p1", "play", 1), ("u", "p2", "play", 1), ("u", "p2", "like", 1),
                 ("u", "q1", "play", 1), ("u", "q1", "skip", 2),
                 ("v", "q1", "play", 1), ("v", "q1", "play", 2), ("v", "q1", "play", 3),
                 ("v", "q1", "play", 4), ("v", "q1", "skip", 5),
                 ("v", "r1", "play", 1), ("v", "r1", "play", 2), ("v", "r1", "play", 3),
                 ("v", "r1", "skip", 4)]


def test_weighted_affinity_by_hand():
    got = als.creator_affinity(_feedback(FEEDBACK_ROWS), CATALOGUE, FollowConfig())
    # Plays weigh 1, likes 4, reposts 6; skips do not count in the weighted form.
    assert got.rows() == [("u", "P", pytest.approx(math.log1p(2 + 4))),
                          ("u", "Q", pytest.approx(math.log1p(1))),
                          ("v", "Q", pytest.approx(math.log1p(4))),
                          ("v", "R", pytest.approx(math.log1p(3)))]


def test_classification_affinity_counts_skips_against():
    cfg = FollowConfig(affinity="classification")
    got = als.creator_affinity(_feedback(FEEDBACK_ROWS), CATALOGUE, cfg)
    # u-Q: 1 - 3 < 0 and v-R: 3 - 3 = 0 are not positive; v-Q: 4 - 3 > 0 is.
    assert got.rows() == [("u", "P", 1.0), ("v", "Q", 1.0)]


def _blocks(seed: int = 0, users: int = 60, creators: int = 40) -> pl.DataFrame:
    """Affinity in two taste blocks: even users play the first half of the creators, odd users
    the second half, each some random creators of their half."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        half = np.arange(creators // 2) + (creators // 2 if u % 2 else 0)
        for c in rng.choice(half, 8, replace=False):
            rows.append((f"u{u:02d}", f"c{c:02d}", float(rng.integers(1, 5))))
    return pl.DataFrame(rows, schema={s.USER_ID: pl.String, s.CREATOR_ID: pl.String,
                                      als.AFFINITY: pl.Float64}, orient="row")


def test_fit_gives_finite_factors_with_one_row_per_user_and_creator():
    matrix, users, creators = als.affinity_matrix(_blocks())
    model = als.fit_als(matrix, 8, FollowConfig())
    user_factors, creator_factors = model.user_factors, model.item_factors
    assert user_factors.shape == (len(users), 8) and len(users) == 60
    assert creator_factors.shape == (len(creators), 8) and len(creators) == 40
    assert np.isfinite(user_factors).all() and np.isfinite(creator_factors).all()


def test_the_fit_check_rejects_bad_factors():
    good = np.ones((3, 2)), np.ones((4, 2))
    als.check_factors(*good, (3, 4))
    with pytest.raises(RunError, match="user and .* creator factor rows"):
        als.check_factors(*good, (3, 5))
    broken = np.ones((3, 2))
    broken[1, 0] = np.nan
    with pytest.raises(RunError, match="non-finite"):
        als.check_factors(broken, good[1], (3, 4))


def test_the_als_source_ranks_as_implicits_recommend_does():
    affinity = _blocks(seed=1)
    cfg = FollowConfig(per_source=5)
    ours = als.als_candidates(affinity, affinity[s.USER_ID].unique(), NO_FOLLOWS, 6, cfg)

    matrix, users, creators = als.affinity_matrix(affinity)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=6, regularization=cfg.als_regularization,
                                        alpha=cfg.als_alpha, iterations=cfg.als_iterations,
                                        random_state=cfg.seed, num_threads=1)
        model.fit(sp.csr_matrix(matrix, dtype=np.float32), show_progress=False)
    rows = np.arange(len(users))
    ids, scores = model.recommend(rows, matrix.astype(np.float32).tocsr(), N=5,
                                  filter_already_liked_items=True)
    theirs = pl.DataFrame({
        s.USER_ID: np.repeat(users.ids.to_numpy(), 5),
        s.FOLLOWEE_ID: creators.to_ids(ids.ravel()),
        "their_score": scores.ravel().astype(np.float64),
    }).filter(pl.col("their_score") > 0)
    joined = ours.join(theirs, on=[s.USER_ID, s.FOLLOWEE_ID], how="full", coalesce=True)
    assert joined.height == ours.height == theirs.height
    assert joined["score"].to_numpy() == pytest.approx(joined["their_score"].to_numpy(), rel=1e-4)
    # Nothing the user already plays; odd users are offered creators of the second half.
    played = set(affinity.select(s.USER_ID, s.CREATOR_ID).iter_rows())
    assert not played & set(ours.select(s.USER_ID, s.FOLLOWEE_ID).iter_rows())
    odd = ours.filter(pl.col(s.USER_ID).str.slice(1).cast(pl.Int32) % 2 == 1)
    assert (odd[s.FOLLOWEE_ID].str.slice(1).cast(pl.Int32) >= 20).mean() > 0.9


def test_the_factor_count_is_the_one_that_scores_best_on_validation():
    affinity = _blocks(seed=2)
    held = affinity.group_by(s.USER_ID, maintain_order=True).head(2)
    train = affinity.join(held, on=[s.USER_ID, s.CREATOR_ID], how="anti")
    cfg = FollowConfig(factor_choices=(2, 4, 16))
    best, same, table = als.choose_factors(train, held.select(s.USER_ID, s.CREATOR_ID), cfg,
                                           protocol="holdout")
    assert table["factors"].to_list() == [2, 4, 16] and (table["users"] == 60).all()
    assert best == same
    chosen = table.filter(pl.col("chosen"))
    assert chosen.height == 1 and chosen["factors"][0] == best
    assert chosen["ndcg"][0] == table["ndcg"].max()


def test_genre_bays_take_the_dominant_genre_and_merge_small_ones():
    fb = _feedback([("u", "p1", "play", 1), ("u", "q1", "play", 1), ("u", "q1", "like", 1),
                    ("v", "p1", "play", 1), ("w", "r1", "play", 1)])
    assert als.genre_bays(fb, CATALOGUE).sort(s.USER_ID).rows() == [
        ("u", "jazz"), ("v", "rock"), ("w", "jazz")]
    people = pl.Series(s.USER_ID, ["u", "v", "w", "x"])
    cfg = FollowConfig(bays="genre", min_bay_users=2)
    bays = als.assign_bays(people, fb, CATALOGUE, NO_FOLLOWS, cfg)
    # jazz has two users; rock and the user without listening are merged.
    assert bays.rows() == [("u", "jazz"), ("v", als.OTHER_BAY), ("w", "jazz"),
                           ("x", als.OTHER_BAY)]


def test_graph_bays_are_the_follow_graphs_communities():
    pairs = [("a", "b"), ("b", "c"), ("c", "a"), ("x", "y"), ("y", "z"), ("z", "x"), ("a", "x")]
    edges = pl.DataFrame({s.FOLLOWER_ID: [p[0] for p in pairs],
                          s.FOLLOWEE_ID: [p[1] for p in pairs]})
    bays = dict(als.graph_bays(edges, seed=0).iter_rows())
    assert bays["a"] == bays["b"] == bays["c"] != bays["x"] == bays["y"] == bays["z"]


def test_a_bay_model_only_knows_its_own_users_creators():
    affinity = _blocks(seed=3)
    bays = affinity.select(s.USER_ID).unique().with_columns(
        pl.when(pl.col(s.USER_ID).str.slice(1).cast(pl.Int32) % 2 == 1)
        .then(pl.lit("odd")).otherwise(pl.lit("even")).alias(als.BAY)
    )
    cfg = FollowConfig(per_source=10)
    ours = als.als_candidates(affinity, bays[s.USER_ID], NO_FOLLOWS, 4, cfg, bays=bays)
    number = pl.col(s.FOLLOWEE_ID).str.slice(1).cast(pl.Int32)
    odd = pl.col(s.USER_ID).str.slice(1).cast(pl.Int32) % 2 == 1
    # A creator nobody in the bay plays has zero factors there: never proposed.
    assert ours.height > 0
    assert ours.filter(odd & (number < 20)).height == 0
    assert ours.filter(~odd & (number >= 20)).height == 0


def test_bays_are_compared_with_the_global_model(tmp_path):
    from recsys.follow_batch import follow_tables
    from recsys.io.dataset import read_dataset
    from recsys.io.generate import generate
    from recsys.pipeline import default_as_of

    generate(tmp_path / "data", users=300, tracks=400, seed=4, config=Config().generator)
    data = read_dataset(tmp_path / "data")
    as_of = default_as_of(data.events)
    settings = {"factor_choices": [4, 8], "min_bay_users": 20}
    plain = follow_tables(data, as_of, config_from({"follow": settings}))
    bays = follow_tables(data, as_of, config_from(
        {"follow": settings | {"bays": "genre"}}))

    validation = bays["follow_als_validation"]
    assert sorted(validation.select("model", "factors").rows()) == [
        ("bays", 4), ("bays", 8), ("global", 4), ("global", 8)]
    assert validation.filter(pl.col("chosen"))["model"].sort().to_list() == ["bays", "global"]
    # The global rows are the plain run's; its ALS is the bays run's "als_global".
    assert validation.filter(pl.col("model") == "global").to_dicts() == plain[
        "follow_als_validation"].to_dicts()
    evaluated = {name: frame.filter(pl.col("list") == name).select("metric", "value", "users")
                 .sort("metric") for name, frame in (("als", plain["follow_evaluation"]),
                                                     ("als_global", bays["follow_evaluation"]))}
    assert evaluated["als_global"].to_dicts() == evaluated["als"].to_dicts()
    assert evaluated["als"]["users"][0] > 0
