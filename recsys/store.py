"""The store: a folder of DuckDB run files, a pointer to the current one and a registry.

    DIR/runs/<run_id>.duckdb   one file per run, written under a temporary name, checkpointed,
                               closed and renamed into place when complete
    DIR/current.duckdb         a symbolic link to the current run, replaced atomically
    DIR/registry.json          every run: id, as_of, config, input fingerprint, status, timings

A reader never sees half a run: the run file is renamed into place only when complete, and the
link is swapped in one step. A failed or killed run leaves the current run untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from recsys.errors import UsageError

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
CURRENT = "current.duckdb"
REGISTRY = "registry.json"
TMP_SUFFIX = ".duckdb.tmp"
ENV_STORE = "RECSYS_STORE"
DEFAULT_STORE = "store"


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_path(store: Path, run_id: str) -> Path:
    return Path(store) / RUNS_DIR / f"{run_id}.duckdb"


@contextlib.contextmanager
def _registry_lock(store: Path) -> Iterator[None]:
    store.mkdir(parents=True, exist_ok=True)
    with open(store / ".registry.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_registry(store: str | Path) -> dict:
    """The registry of `store`: {"current": run id or None, "runs": [...]}."""
    path = Path(store) / REGISTRY
    if not path.exists():
        return {"current": None, "runs": []}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_registry(store: Path, registry: dict) -> None:
    tmp = store / f".{REGISTRY}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(registry, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, store / REGISTRY)


def record_run(store: str | Path, entry: dict) -> None:
    """Add or update one run's entry (matched by id) in the registry."""
    store = Path(store)
    with _registry_lock(store):
        registry = read_registry(store)
        runs = [r for r in registry["runs"] if r["id"] != entry["id"]]
        runs.append(entry)
        registry["runs"] = sorted(runs, key=lambda r: r["id"])
        _write_registry(store, registry)


class RunWriter:
    """Writes one run's tables into a temporary DuckDB file, then publishes it atomically."""

    def __init__(self, store: str | Path, run_id: str):
        self.store = Path(store)
        self.run_id = run_id
        (self.store / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.store / RUNS_DIR / f".{run_id}{TMP_SUFFIX}"
        self.tmp_path.unlink(missing_ok=True)
        self.con = duckdb.connect(str(self.tmp_path))

    def write(self, name: str, frame: pl.DataFrame) -> None:
        """Create table `name` from `frame` (replacing it if it exists)."""
        arrow = frame.to_arrow()
        self.con.register("_incoming", arrow)
        self.con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _incoming')
        self.con.unregister("_incoming")

    def append(self, name: str, frame: pl.DataFrame) -> None:
        """Append `frame` to table `name`, creating it on first use."""
        tables = {row[0] for row in self.con.execute("SHOW TABLES").fetchall()}
        if name not in tables:
            self.write(name, frame)
            return
        self.con.register("_incoming", frame.to_arrow())
        self.con.execute(f'INSERT INTO "{name}" SELECT * FROM _incoming')
        self.con.unregister("_incoming")

    def publish(self) -> Path:
        """Checkpoint, close, rename into place and point current.duckdb at the run."""
        self.con.execute("CHECKPOINT")
        self.con.close()
        final = run_path(self.store, self.run_id)
        os.replace(self.tmp_path, final)
        _point_current(self.store, final)
        log.debug("published %s", final)
        return final

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self.con.close()
        self.tmp_path.unlink(missing_ok=True)


def _point_current(store: Path, final: Path) -> None:
    link = store / CURRENT
    tmp = store / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path(RUNS_DIR) / final.name)
    os.replace(tmp, link)


def current_run_id(store: str | Path) -> str | None:
    link = Path(store) / CURRENT
    if not link.is_symlink() and not link.exists():
        return None
    return Path(os.readlink(link)).name.removesuffix(".duckdb")


def prune_runs(store: str | Path, keep: int) -> list[str]:
    """Delete the oldest published run files beyond `keep`, never the current one."""
    store = Path(store)
    current = current_run_id(store)
    files = sorted((store / RUNS_DIR).glob("*.duckdb"))
    removed = []
    for path in files[: max(len(files) - keep, 0)]:
        run_id = path.name.removesuffix(".duckdb")
        if run_id != current:
            path.unlink(missing_ok=True)
            removed.append(run_id)
    if removed:
        with _registry_lock(store):
            registry = read_registry(store)
            for entry in registry["runs"]:
                if entry["id"] in removed:
                    entry["status"] = "pruned"
            _write_registry(store, registry)
    return removed


def open_run(store: str | Path, run_id: str | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection to run `run_id`, or to the current run."""
    store = Path(store)
    path = run_path(store, run_id) if run_id else store / CURRENT
    if not path.exists():
        what = f"run {run_id}" if run_id else "current run"
        raise UsageError(
            f"{store}: no {what}; run `recsys run DATA --store {store}` first"
        )
    return duckdb.connect(str(path), read_only=True)


def resolve_store(store: str | Path | None = None) -> Path:
    """The store folder: the argument, else $RECSYS_STORE, else ./store."""
    return Path(store or os.environ.get(ENV_STORE) or DEFAULT_STORE)
