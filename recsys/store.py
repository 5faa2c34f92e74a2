"""The store: a folder of DuckDB run files, a pointer to the current one and a registry.

    DIR/runs/<run_id>.duckdb   one file per run, written under a temporary name, checkpointed,
                               closed and renamed into place when complete
    DIR/current.duckdb         a symbolic link to the current run, replaced atomically
    DIR/registry.json          every run: id, as_of, config, input fingerprint, status, timings,
                               and the id of the current run

A reader never sees half a run: the run file is renamed into place only when complete, and the
link is swapped in one step. A failed or killed run leaves the current run untouched; a killed
one is marked failed, and its temporary files removed, when the next run registers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
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
RUNNING = "running"
FAILED = "failed"
KILLED = "the process ended without finishing (killed?)"
# /proc/<pid>/stat gives a process's start in clock ticks after boot, and boot is given to the
# second: a process that started this much later than its run did is another one.
START_SLACK_SECONDS = 2.0
# Characters of the input fingerprint (a sha256) shown in listings: enough to tell inputs apart.
FINGERPRINT_SHOWN = 12
_REGISTRY_ADVICE = ("restore it from a backup, or move the store folder aside and run again "
                    "into a new one (the run files in runs/ stay readable)")


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


def check_store(store: str | Path) -> None:
    """Raise UsageError if `store` exists but is not a folder (a new path is fine)."""
    store = Path(store)
    if store.exists() and not store.is_dir():
        raise UsageError(f"{store} is a file, not a store folder; choose a folder (new, or one "
                         "holding runs/, current.duckdb and registry.json)")


def read_registry(store: str | Path) -> dict:
    """The registry of `store`: {"current": run id or None, "runs": [...]}; UsageError if it
    cannot be read."""
    path = Path(store) / REGISTRY
    if not path.exists():
        return {"current": None, "runs": []}
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); {_REGISTRY_ADVICE}") from exc
    if not isinstance(registry, dict) or not isinstance(registry.get("runs"), list):
        raise UsageError(f"{path}: holds no list of runs; {_REGISTRY_ADVICE}")
    return registry


def _write_registry(store: Path, registry: dict) -> None:
    tmp = store / f".{REGISTRY}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(registry, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, store / REGISTRY)


def record_run(store: str | Path, entry: dict) -> None:
    """Add or update one run's entry (matched by id) in the registry.

    A new run registering first reaps the dead ones (see `reap_dead_runs`). A running entry is
    stamped with this machine's name, since its pid means something only here.
    """
    store = Path(store)
    if entry.get("status") == RUNNING:
        entry.setdefault("host", socket.gethostname())
    with _registry_lock(store):
        registry = read_registry(store)
        if all(r["id"] != entry["id"] for r in registry["runs"]):
            _reap(store, registry)
        runs = [r for r in registry["runs"] if r["id"] != entry["id"]]
        runs.append(entry)
        registry["runs"] = sorted(runs, key=lambda r: r["id"])
        _write_registry(store, registry)


def reap_dead_runs(store: str | Path) -> list[str]:
    """Mark each `running` entry whose process has ended as failed and remove its temporary
    files; return their ids. A run of a live process, or of another machine, is left alone."""
    store = Path(store)
    if not (store / REGISTRY).exists():
        return []
    with _registry_lock(store):
        registry = read_registry(store)
        reaped = _reap(store, registry)
        if reaped:
            _write_registry(store, registry)
    return reaped


def _reap(store: Path, registry: dict) -> list[str]:
    reaped = []
    for entry in registry["runs"]:
        if entry.get("status") == RUNNING and process_ended(entry):
            entry.update(status=FAILED, error=KILLED)
            discard_temporary(store, entry["id"])
            reaped.append(entry["id"])
    if reaped:
        log.info("marked %s failed: their processes ended without finishing", ", ".join(reaped))
    return reaped


def process_ended(entry: dict) -> bool:
    """Whether the process of a running entry is known to be gone: no process has its pid on
    this machine, or the one that has it started after the run (the pid was reused). Unknown
    (no pid, another machine) counts as alive."""
    pid, here = entry.get("pid"), socket.gethostname()
    if not isinstance(pid, int) or pid <= 0 or entry.get("host", here) != here:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, under another user
    started = _process_start(pid)
    run_start = entry.get("started_at")
    if started is None or not run_start:
        return False
    return started > datetime.fromisoformat(run_start).timestamp() + START_SLACK_SECONDS


def _process_start(pid: int) -> float | None:
    """When process `pid` started (Unix time), from /proc; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    # The command name (field 2) may hold spaces; the start time is field 22 overall.
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")


def list_runs(store: str | Path) -> list[dict]:
    """The registry's runs, newest first, each with `current` (bool), `kept` (its run file is
    in runs/), `seconds` (None until it finished) and the first characters of its input
    `fingerprint`; a running entry whose process ended shows as failed."""
    store = Path(store)
    current = current_run_id(store)
    rows = []
    for entry in sorted(read_registry(store)["runs"], key=lambda r: r["id"], reverse=True):
        status, error = entry.get("status"), entry.get("error")
        if status == RUNNING and process_ended(entry):
            status, error = FAILED, KILLED
        rows.append({
            "id": entry["id"], "status": status, "as_of": entry.get("as_of"),
            "started_at": entry.get("started_at"), "seconds": _seconds(entry),
            "recommendations": (entry.get("counts") or {}).get("recommendations"),
            "fingerprint": (entry.get("fingerprint") or "")[:FINGERPRINT_SHOWN],
            "code_version": entry.get("code_version"), "input": entry.get("input"),
            "current": entry["id"] == current,
            "kept": run_path(store, entry["id"]).exists(), "error": error,
        })
    return rows


def kept_runs(store: str | Path) -> list[dict]:
    """The runs whose files are kept (see `list_runs`), newest first: the runs one can open."""
    return [row for row in list_runs(store) if row["kept"]]


def _seconds(entry: dict) -> float | None:
    if not entry.get("started_at") or not entry.get("finished_at"):
        return None
    finished, started = (datetime.fromisoformat(entry[k]) for k in ("finished_at", "started_at"))
    return round((finished - started).total_seconds(), 1)


class RunWriter:
    """Writes one run's tables into a temporary DuckDB file, then publishes it atomically."""

    def __init__(self, store: str | Path, run_id: str):
        self.store = Path(store)
        self.run_id = run_id
        (self.store / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        self.tmp_path = _temporary_path(self.store, run_id)
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

    def read(self, sql: str) -> pl.DataFrame:
        """The result of `sql` over the tables written so far."""
        return self.con.sql(sql).pl()

    def checkpoint(self) -> None:
        """Write everything to the temporary file (publishing does it again, quickly)."""
        self.con.execute("CHECKPOINT")

    def publish(self) -> Path:
        """Checkpoint, close, rename into place and point current.duckdb at the run."""
        self.con.execute("CHECKPOINT")
        self.con.close()
        final = run_path(self.store, self.run_id)
        os.replace(self.tmp_path, final)
        _point_current(self.store, final)
        _set_current(self.store, self.run_id)
        log.debug("published %s", final)
        return final

    def abandon(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        _unlink_temporary(self.tmp_path)


def discard_temporary(store: str | Path, run_id: str) -> None:
    """Delete the temporary files of run `run_id`, if any (also those of a writer that was
    interrupted while it opened them)."""
    _unlink_temporary(_temporary_path(Path(store), run_id))


def _temporary_path(store: Path, run_id: str) -> Path:
    return store / RUNS_DIR / f".{run_id}{TMP_SUFFIX}"


def _unlink_temporary(tmp_path: Path) -> None:
    # Best effort: a cleanup that fails (the runs folder is not a folder) must not hide why
    # the run stopped.
    for path in (tmp_path, tmp_path.with_name(f"{tmp_path.name}.wal")):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _point_current(store: Path, final: Path) -> None:
    link = store / CURRENT
    tmp = store / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path(RUNS_DIR) / final.name)
    os.replace(tmp, link)


def _set_current(store: Path, run_id: str) -> None:
    """Name `run_id` as current in the registry, as current.duckdb now points at it."""
    with _registry_lock(store):
        registry = read_registry(store)
        registry["current"] = run_id
        _write_registry(store, registry)


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
        if run_id:
            raise UsageError(f"{store}: no run {run_id}; `recsys runs --store {store}` lists "
                             "the runs kept")
        raise UsageError(f"{store}: no current run; run `recsys run DATA --store {store}` first")
    return duckdb.connect(str(path), read_only=True)


def resolve_store(store: str | Path | None = None) -> Path:
    """The store folder: the argument, else $RECSYS_STORE, else ./store."""
    return Path(store or os.environ.get(ENV_STORE) or DEFAULT_STORE)
