"""Shared parts of the benchmarks: the fixed interaction matrix and child-process timing."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

FULL = {"users": 138_000, "tracks": 27_000, "draws": 20_000_000}
SMALL = {"users": 30_000, "tracks": 8_000, "draws": 2_000_000}


def fixed_matrix(users: int, tracks: int, draws: int, seed: int = 0) -> sp.csr_matrix:
    """numpy's default generator seeded `seed` draws (user, track) pairs: user activity
    lognormal(0, 1), track popularity Zipf with exponent 0.9; duplicates merged, binary."""
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, size=users)
    popularity = np.arange(1, tracks + 1, dtype=np.float64) ** -0.9
    user = rng.choice(users, size=draws, p=activity / activity.sum())
    track = rng.choice(tracks, size=draws, p=popularity / popularity.sum())
    matrix = sp.csr_matrix(
        (np.ones(draws, dtype=np.float32), (user, track)), shape=(users, tracks)
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def cached_matrix(size: dict, folder: Path) -> Path:
    """The fixed matrix of `size`, saved once as .npz under `folder`."""
    path = folder / f"matrix_{size['users']}_{size['tracks']}_{size['draws']}.npz"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        sp.save_npz(path, fixed_matrix(**size))
    return path


def peak_gb() -> float:
    """This process's peak resident memory in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def in_child(script: str, *args: str) -> dict:
    """Run `script` (a module path) in its own Python process; it prints one JSON line last."""
    done = subprocess.run(
        [sys.executable, script, *args], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])
