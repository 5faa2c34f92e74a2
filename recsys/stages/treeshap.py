"""Exact path-dependent TreeSHAP for the LightGBM ranker, faster than LightGBM's and shap's.

LightGBM's own contributions (`pred_contrib`, which shap's TreeExplainer calls for a LightGBM
booster) run the original TreeSHAP, whose cost per row grows with the square of tree depth. The
kernel in `treeshap_kernel.py` computes the same values with cost linear in depth (see its
docstring), in parallel over rows. The model is read once from `Booster.dump_model()` into flat
arrays, nodes in preorder, with every factor the kernel needs precomputed per node.

The values are LightGBM's to rounding (the tests compare with `pred_contrib` and shap's
TreeExplainer, and with Shapley values enumerated by hand): missing values follow LightGBM's
rules (`missing_type` None, Zero or NaN, `default_left`), splits are `x <= threshold`, and the
expected value (the last column) is each tree's leaf values weighted by their training rows.
Categorical splits, linear trees, several trees per iteration (multiclass) and averaged
output (random forest mode) are not supported: `UnsupportedModel` says which.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np

from recsys.errors import RunError
from recsys.stages import treeshap_kernel as kernel

log = logging.getLogger(__name__)

MISSING_TYPES = {"None": kernel.MISSING_NONE, "Zero": kernel.MISSING_ZERO,
                 "NaN": kernel.MISSING_NAN}
CASES = 3  # see treeshap_kernel: the row left the path, left it at this edge, follows it


class UnsupportedModel(RunError):
    """A LightGBM model with a feature this TreeSHAP does not handle."""


@dataclass(frozen=True)
class TreeShap:
    """A LightGBM model as flat arrays for the kernel: nodes of all trees in preorder."""

    feature_names: tuple[str, ...]
    expected_value: float
    tree_start: np.ndarray  # the first node of each tree, and the end
    tree_points: np.ndarray  # Gauss-Legendre points each tree needs
    feature: np.ndarray  # split feature, -1 at a leaf
    threshold: np.ndarray
    default_left: np.ndarray
    missing_type: np.ndarray
    left: np.ndarray
    right: np.ndarray
    parent: np.ndarray
    prev: np.ndarray  # the nearest node above whose incoming edge splits on the same feature
    value: np.ndarray  # leaf values
    ratio: np.ndarray  # nodes x cases x points: the factor an edge multiplies G by
    share: np.ndarray  # nodes x cases x points: weight x the edge's share of S

    @property
    def trees(self) -> int:
        return len(self.tree_start) - 1

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP values of each row of `x` (rows x features): a column per feature, then the
        expected value, as LightGBM's `pred_contrib` gives them."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x has shape {x.shape}; the model expects rows of "
                             f"{self.n_features} features")
        out = np.zeros((x.shape[0], self.n_features + 1))
        max_nodes = int(np.diff(self.tree_start).max(initial=1))
        run = kernel.shap_values if len(x) > kernel.ROWS_PER_BLOCK else kernel.shap_values_serial
        run(
            x, self.tree_start, self.tree_points, self.feature, self.threshold,
            self.default_left, self.missing_type, self.left, self.right, self.parent,
            self.prev, self.value, self.ratio, self.share, max_nodes, out[:, :-1],
        )
        out[:, -1] = self.expected_value
        return out


def from_booster(booster: lgb.Booster) -> TreeShap:
    """The booster's trees (its best iteration where it has one, as `predict` uses)."""
    return from_dump(booster.dump_model())


def from_model_string(text: str) -> TreeShap:
    """A model saved as text (`Booster.model_to_string`, the store's `models.content`)."""
    return from_booster(lgb.Booster(model_str=text))


def from_dump(dump: dict) -> TreeShap:
    """A model from `Booster.dump_model()`."""
    _check_model(dump)
    trees = [_flatten(info) for info in dump["tree_info"]]
    points = [_points_needed(tree) for tree in trees]
    width = max(points, default=1)
    sizes = [len(tree) for tree in trees]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    arrays = {key: np.concatenate([_column(tree, key, dtype, start)
                                   for tree, start in zip(trees, starts)])
              for key, dtype in NODE_COLUMNS.items()}
    tables = [_tables(tree, n, width) for tree, n in zip(trees, points)]
    log.debug("treeshap: %s trees, %s nodes, up to %s points", len(trees), starts[-1], width)
    return TreeShap(
        feature_names=tuple(dump["feature_names"]),
        expected_value=sum(_expected(tree) for tree in trees),
        tree_start=starts,
        tree_points=np.array(points, dtype=np.int64),
        ratio=np.concatenate([r for r, _ in tables]),
        share=np.concatenate([s for _, s in tables]),
        **arrays,
    )


NODE_COLUMNS = {"feature": np.int32, "threshold": np.float64, "default_left": np.bool_,
                "missing_type": np.int8, "left": np.int64, "right": np.int64,
                "parent": np.int64, "prev": np.int64, "value": np.float64}
LINKS = ("left", "right", "parent", "prev")


def _column(tree: list[dict], key: str, dtype, start: int) -> np.ndarray:
    """One field of a tree's nodes; links moved from the tree's numbering to the ensemble's."""
    values = np.array([node[key] for node in tree], dtype=dtype)
    if key in LINKS:
        values[values >= 0] += start
    return values


def _check_model(dump: dict) -> None:
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise UnsupportedModel(
            f"treeshap: the model has {dump['num_tree_per_iteration']} trees per iteration "
            "(multiclass); only single-output models are supported")
    if dump.get("average_output"):
        raise UnsupportedModel("treeshap: the model averages its trees (random forest mode); "
                               "only boosted models are supported")


def _flatten(info: dict) -> list[dict]:
    """The tree's nodes in preorder, each with its parent, children and `prev`: the nearest
    node above whose incoming edge splits on the same feature as its own (-1: none)."""
    nodes: list[dict] = []
    stack = [(info["tree_structure"], -1, "", {})]  # node, parent, side, last edge per feature
    while stack:
        raw, parent, side, above = stack.pop()
        index = len(nodes)
        node = {"parent": parent, "prev": -1, "left": -1, "right": -1}
        if parent >= 0:
            nodes[parent][side] = index
            edge_feature = nodes[parent]["feature"]
            node["prev"] = above.get(edge_feature, -1)
            above = {**above, edge_feature: index}
        if "split_index" in raw:
            _check_split(raw, info["tree_index"])
            node.update(feature=raw["split_feature"], threshold=float(raw["threshold"]),
                        default_left=bool(raw["default_left"]),
                        missing_type=MISSING_TYPES[raw["missing_type"]],
                        cover=float(raw["internal_count"]), value=0.0)
            # Right pushed first, so that the left subtree comes first in preorder.
            stack.append((raw["right_child"], index, "right", above))
            stack.append((raw["left_child"], index, "left", above))
        else:
            if "leaf_coeff" in raw:
                raise UnsupportedModel(f"treeshap: tree {info['tree_index']} is a linear tree "
                                       "(linear_tree=true); only constant leaves are supported")
            node.update(feature=-1, threshold=0.0, default_left=False, missing_type=0,
                        cover=float(raw.get("leaf_count", 0)), value=float(raw["leaf_value"]))
        nodes.append(node)
    return nodes


def _check_split(raw: dict, tree: int) -> None:
    if raw["decision_type"] != "<=":
        raise UnsupportedModel(
            f"treeshap: tree {tree} has a categorical split (decision type "
            f"{raw['decision_type']!r} on feature {raw['split_feature']}); only numerical "
            "splits are supported: train without categorical_feature")
    if raw["internal_count"] <= 0:
        raise UnsupportedModel(f"treeshap: tree {tree} has a split that no training row "
                               "reached; path-dependent SHAP needs the rows at every node")


def _points_needed(tree: list[dict]) -> int:
    """Gauss-Legendre points that integrate the tree's polynomials exactly: ceil(D / 2), D the
    most distinct features on a path from the root to a leaf."""
    distinct = [0] * len(tree)
    for k, node in enumerate(tree):
        if node["parent"] >= 0:
            # An edge adds a feature unless a higher edge on the path already split on it.
            distinct[k] = distinct[node["parent"]] + (node["prev"] < 0)
    return max(1, math.ceil(max(distinct) / 2))


def _expected(tree: list[dict]) -> float:
    """The tree's output averaged over its training rows (a lone leaf: its value)."""
    if len(tree) == 1:
        return tree[0]["value"]
    total = tree[0]["cover"]
    return sum(n["value"] * n["cover"] / total for n in tree if n["feature"] < 0)


def _tables(tree: list[dict], n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per node, case and Gauss-Legendre point: the factor by which the edge into the node
    multiplies the path's product, and the weight of the edge's share (see treeshap_kernel).
    Points past the tree's `n` are left 0."""
    ratio = np.zeros((len(tree), CASES, width))
    share = np.zeros((len(tree), CASES, width))
    t, w = _gauss_legendre(n)
    zero = np.ones(len(tree))  # the product of the cover ratios on the edge's feature so far
    for k, node in enumerate(tree):
        if node["parent"] < 0:
            continue
        z = node["cover"] / tree[node["parent"]]["cover"]
        if node["prev"] >= 0:
            z *= zero[node["prev"]]
        zero[k] = z
        off, on = z * (1 - t), z + t * (1 - z)  # the feature's factor, row off or on the path
        if node["prev"] < 0:
            ratio[k, 0, :n], share[k, 0, :n] = off, -w / (1 - t)
            ratio[k, 2, :n], share[k, 2, :n] = on, w * (1 - z) / on
            continue
        # The edge replaces a higher edge's factor on its feature (the row followed that edge
        # or not) and takes back the share that edge counted for the leaves below.
        above = zero[node["prev"]]
        above_on = above + t * (1 - above)
        ratio[k, 0, :n] = z / above
        ratio[k, 1, :n] = off / above_on
        share[k, 1, :n] = w * (-1 / (1 - t) - (1 - above) / above_on)
        ratio[k, 2, :n] = on / above_on
        share[k, 2, :n] = w * ((1 - z) / on - (1 - above) / above_on)
    return ratio, share


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points and weights of the n-point Gauss-Legendre rule on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) / 2, w / 2
