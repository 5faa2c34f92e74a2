"""Shared fixtures: the shipped sample data, the real datasets, and a store built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import Config
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
