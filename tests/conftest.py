"""Shared fixtures: the shipped sample data, the real datasets, and a store built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import Config, config_from
from recsys.pipeline import run_batch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "sample_data"
DATASETS = ROOT.parent / "shared" / "datasets"


def real_dataset(name: str) -> Path:
    """The folder of a real public dataset beside the checkout, or skip the test."""
    path = DATASETS / name
    if not path.is_dir():
        pytest.skip(f"{path} is not here (the real datasets live in ../shared/datasets)")
    return path


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory) -> Path:
    """A store with one published run of the batch on sample_data, built once per session."""
    store = tmp_path_factory.mktemp("sample_store")
    run_batch(SAMPLE_DATA, store, cfg=Config())
    return store


# A small generated dataset with a run, an evaluation and a sweep, for the evaluation's tests.
SMALL_CONFIG = {
    # The references in the tests grade by plays (binary), as the default did before.
    "labels": {"kpi": "plays"},
    "ranker": {"training_cuts": 1},
    "evaluation": {"faithfulness_sample": 20, "ease_lambdas": [10.0, 100.0],
                   "als_factors": [8], "als_regularization": [0.01, 0.1],
                   "similarity_k": [20, 50], "walks_restart": [0.3]},
    "sweep": {"users": 150, "betas": [0.0, 1.0], "bm25_b": [0.75]},
}


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """400 users and 400 tracks from the generator (seed 1)."""
    from recsys.io.generate import generate

    dest = tmp_path_factory.mktemp("small") / "data"
    generate(dest, users=400, tracks=400, seed=1, config=Config().generator)
    return dest


@pytest.fixture(scope="session")
def evaluated_store(small_data, tmp_path_factory) -> Path:
    """A store with a run, an evaluation and a sweep of `small_data` (config SMALL_CONFIG)."""
    from recsys.offline import run_evaluation
    from recsys.sweep import run_sweep

    store = tmp_path_factory.mktemp("evaluated_store")
    cfg = config_from(SMALL_CONFIG)
    run_batch(small_data, store, cfg=cfg)
    run_evaluation(small_data, store, cfg=cfg)
    run_sweep(small_data, store, cfg=cfg)
    return store
