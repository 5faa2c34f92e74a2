"""Our TreeSHAP against shap's TreeExplainer, LightGBM's own contributions and Shapley values
enumerated over every subset of features, on small real LightGBM models."""

from __future__ import annotations

import itertools
import math

import lightgbm as lgb
import numpy as np
import pytest
import shap

from recsys.stages import treeshap

EXACT = 1e-9  # what the tests ask; the bar is 1e-6


def _data(rows: int, features: int, seed: int, *, nan_share: float = 0.0):
    """Features with a label that needs several of them and their interactions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    x[:, 0] = rng.integers(0, 4, size=rows)  # a few distinct values: repeated splits
    y = x[:, 0] * x[:, 1] + np.sin(2 * x[:, 2]) + (x[:, -1] > 0) + rng.normal(0, 0.1, rows)
    if nan_share:
        x[rng.random(x.shape) < nan_share] = np.nan
    return x, y


def _fit(x, y, *, trees: int = 20, leaves: int = 15, init_model=None, **params) -> lgb.Booster:
    params = {"objective": "regression", "num_leaves": leaves, "min_data_in_leaf": 5,
              "learning_rate": 0.2, "verbosity": -1, "seed": 0, "num_threads": 1, **params}
    return lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=trees,
                     init_model=init_model, keep_training_booster=True)


def _ours(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    return treeshap.from_booster(booster).contributions(x)


@pytest.mark.parametrize("missing", ["nan", "zero", "none"])
def test_matches_shap_and_lightgbm_with_missing_values(missing):
    # NaN in training gives splits with missing_type NaN; zero_as_missing gives Zero; a model
    # trained without NaN has missing_type None, where LightGBM reads a NaN as 0.
    x, y = _data(600, 6, seed=1, nan_share=0.0 if missing == "none" else 0.15)
    booster = _fit(x, y, zero_as_missing=missing == "zero")
    probe, _ = _data(300, 6, seed=2, nan_share=0.2)
    probe[:20, 1] = 0.0  # exact zeros: missing under "zero"
    ours = _ours(booster, probe)

    explainer = shap.TreeExplainer(booster)
    reference = explainer.shap_values(probe)
    assert np.abs(ours[:, :-1] - reference).max() < EXACT
    assert ours[0, -1] == pytest.approx(explainer.expected_value, abs=EXACT)
    assert np.abs(ours - booster.predict(probe, pred_contrib=True)).max() < EXACT
    # Additivity: the expected value plus the contributions is the raw score.
    raw = booster.predict(probe, raw_score=True)
    assert np.abs(ours.sum(axis=1) - raw).max() < 1e-6


def test_missing_types_are_the_ones_the_test_above_means():
    types = {}
    for missing in ("nan", "zero", "none"):
        x, y = _data(600, 6, seed=1, nan_share=0.0 if missing == "none" else 0.15)
        dump = _fit(x, y, zero_as_missing=missing == "zero").dump_model()
        types[missing] = {node["missing_type"] for node in _splits(dump)}
    assert "NaN" in types["nan"] and types["zero"] == {"Zero"} and types["none"] == {"None"}


def _splits(dump: dict):
    stack = [tree["tree_structure"] for tree in dump["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            yield node
            stack += [node["left_child"], node["right_child"]]


def _expectation(node: dict, x: np.ndarray, known: set[int]) -> float:
    """The tree's output when only the features in `known` are known: at a split on an unknown
    feature, the two sides weighted by their training rows (the path-dependent expectation)."""
    if "leaf_value" in node:
        return node["leaf_value"]
    left, right = node["left_child"], node["right_child"]
    feature = node["split_feature"]
    if feature in known:
        value = x[feature]
        if np.isnan(value):  # the models of this test are trained with NaN: missing_type NaN
            assert node["missing_type"] == "NaN"
            return _expectation(left if node["default_left"] else right, x, known)
        return _expectation(left if value <= node["threshold"] else right, x, known)
    rows = [child.get("internal_count", child.get("leaf_count")) for child in (left, right)]
    return (rows[0] * _expectation(left, x, known)
            + rows[1] * _expectation(right, x, known)) / node["internal_count"]


def _enumerated_shapley(dump: dict, x: np.ndarray) -> np.ndarray:
    """Shapley values by the definition: every subset of the other features, weighted."""
    n = dump["max_feature_idx"] + 1
    trees = [tree["tree_structure"] for tree in dump["tree_info"]]

    def value(known: set[int]) -> float:
        return sum(_expectation(tree, x, known) for tree in trees)

    phi = np.zeros(n + 1)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                phi[i] += weight * (value({*subset, i}) - value(set(subset)))
    phi[n] = value(set())
    return phi


def test_matches_shapley_values_enumerated_over_every_subset():
    # Four features and deep trees: paths split on the same feature several times.
    x, y = _data(800, 4, seed=3, nan_share=0.1)
    booster = _fit(x, y, trees=6, leaves=31, min_data_in_leaf=3)
    dump = booster.dump_model()
    repeats = [_most_repeated(tree["tree_structure"]) for tree in dump["tree_info"]]
    assert max(repeats) >= 3, "some path splits three times on one feature"
    probe, _ = _data(12, 4, seed=4, nan_share=0.2)
    ours = _ours(booster, probe)
    for row in range(len(probe)):
        assert np.abs(ours[row] - _enumerated_shapley(dump, probe[row])).max() < EXACT


def _most_repeated(node: dict, path: tuple = ()) -> int:
    if "leaf_value" in node:
        return max((path.count(f) for f in set(path)), default=0)
    path = (*path, node["split_feature"])
    return max(_most_repeated(node["left_child"], path), _most_repeated(node["right_child"], path))


def test_a_single_leaf_tree_adds_only_to_the_expected_value():
    x, y = _data(400, 5, seed=5)
    # First a tree that cannot split (too few rows per leaf allowed): a lone leaf holding the
    # mean label; then ordinary trees on top of it.
    stump = _fit(x, y, trees=1, min_data_in_leaf=1000)
    booster = _fit(x, y, trees=8, init_model=stump)
    dump = booster.dump_model()
    assert dump["tree_info"][0]["num_leaves"] == 1 and len(dump["tree_info"]) == 9
    probe, _ = _data(200, 5, seed=6, nan_share=0.1)
    ours = _ours(booster, probe)
    assert np.abs(ours - booster.predict(probe, pred_contrib=True)).max() < EXACT
    alone = treeshap.from_booster(stump)
    assert alone.expected_value == pytest.approx(y.mean())
    assert np.all(alone.contributions(probe)[:, :-1] == 0)


def test_a_lambdarank_model_of_the_ranker_shape_adds_up_to_its_raw_score():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3000, 12))
    x[rng.random(x.shape) < 0.05] = np.nan
    score = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1] * x[:, 2]) + rng.normal(0, 0.3, 3000)
    label = np.digitize(score, np.quantile(score, [0.7, 0.9]))
    params = {"objective": "lambdarank", "num_leaves": 31, "min_data_in_leaf": 10,
              "verbosity": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, label=label, group=[30] * 100),
                        num_boost_round=40)
    ours = _ours(booster, x)
    assert np.abs(ours.sum(axis=1) - booster.predict(x, raw_score=True)).max() < 1e-6
    assert np.abs(ours[:, :-1] - shap.TreeExplainer(booster).shap_values(x)).max() < EXACT


def test_categorical_splits_are_refused_by_name():
    rng = np.random.default_rng(8)
    x = np.column_stack([rng.integers(0, 6, 500), rng.normal(size=500)])
    y = (x[:, 0] % 3 == 0) + x[:, 1]
    booster = lgb.train({"objective": "regression", "verbosity": -1, "min_data_in_leaf": 5},
                        lgb.Dataset(x, label=y, categorical_feature=[0]), num_boost_round=3)
    with pytest.raises(treeshap.UnsupportedModel, match="categorical split.*feature 0"):
        treeshap.from_booster(booster)


def test_linear_trees_are_refused_by_name():
    x, y = _data(300, 3, seed=9)
    booster = _fit(x, y, trees=2, linear_tree=True)
    with pytest.raises(treeshap.UnsupportedModel, match="linear tree"):
        treeshap.from_booster(booster)


def test_rows_of_the_wrong_width_are_refused():
    x, y = _data(300, 3, seed=10)
    model = treeshap.from_booster(_fit(x, y, trees=2))
    with pytest.raises(ValueError, match="expects rows of 3 features"):
        model.contributions(np.zeros((2, 4)))


def test_the_model_string_of_the_store_gives_the_same_values():
    x, y = _data(300, 5, seed=11, nan_share=0.1)
    booster = _fit(x, y)
    text = booster.model_to_string()
    assert np.array_equal(treeshap.from_model_string(text).contributions(x),
                          _ours(booster, x))


def test_a_short_list_in_one_thread_gives_what_blocks_of_rows_in_threads_give():
    x, y = _data(500, 5, seed=12, nan_share=0.1)
    model = treeshap.from_booster(_fit(x, y))
    together = model.contributions(x)  # blocks of rows over threads
    one_by_one = np.vstack([model.contributions(x[k:k + 10]) for k in range(0, 500, 10)])
    assert np.array_equal(together, one_by_one)
