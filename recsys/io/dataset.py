"""Reading, validating and writing a dataset folder.

A dataset is a folder with `events` and `tracks`, and optionally `users` and `follows`, each as
`<table>.parquet` or `<table>.csv`. Reading normalizes types (ids as strings, timestamps as UTC,
a naive timestamp read as UTC), checks every rule of the input format and raises one
`DataError` that names the file, the column, the rule, how many rows break it and a few of them.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import dataframely as dy
import polars as pl

from recsys import schema as s
from recsys.errors import DataError, UsageError

log = logging.getLogger(__name__)

ROW = "_row"  # 1-based data row in the file (the header is not counted)
EXAMPLES = 5
SUFFIXES = (".parquet", ".csv")
TIMESTAMP_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


class _Events(dy.Schema):
    _row = dy.UInt32(nullable=False)
    user_id = dy.String(nullable=False, min_length=1)
    track_id = dy.String(nullable=False, min_length=1)
    kind = dy.Enum(s.EVENT_KINDS, nullable=False)
    ts = dy.Datetime(nullable=False, time_zone="UTC")
    ms_played = dy.Int64(nullable=True, min=0)
    count = dy.Int64(nullable=False, min=0)


class _Tracks(dy.Schema):
    _row = dy.UInt32(nullable=False)
    track_id = dy.String(nullable=False, min_length=1)
    title = dy.String(nullable=True)
    creator_id = dy.String(nullable=True)
    genre = dy.String(nullable=True)
    created_at = dy.Datetime(nullable=True, time_zone="UTC")
    duration_ms = dy.Int64(nullable=True, min=0)


class _Users(dy.Schema):
    _row = dy.UInt32(nullable=False)
    user_id = dy.String(nullable=False, min_length=1)
    name = dy.String(nullable=True)


class _Follows(dy.Schema):
    _row = dy.UInt32(nullable=False)
    follower_id = dy.String(nullable=False, min_length=1)
    followee_id = dy.String(nullable=False, min_length=1)
    ts = dy.Datetime(nullable=True, time_zone="UTC")


RULE_SCHEMAS: dict[str, type[dy.Schema]] = {
    s.EVENTS: _Events,
    s.TRACKS: _Tracks,
    s.USERS: _Users,
    s.FOLLOWS: _Follows,
}

RULE_TEXT = {
    "nullability": ("must not be empty", "fill it in or drop those rows"),
    "min_length": ("must not be empty", "fill it in or drop those rows"),
    "min": ("must be 0 or more", "fix or drop those rows"),
    "enum": (
        f"must be one of {', '.join(s.EVENT_KINDS)}",
        "map other kinds to these or drop those rows",
    ),
    "dtype": ("has a value of the wrong type", "fix those values"),
}


@dataclass
class Problem:
    """One broken rule: where, which rule, how many rows and a few examples."""

    file: str
    column: str
    rule: str
    rows: int
    examples: str
    advice: str

    def __str__(self) -> str:
        return (
            f"{self.file}: column '{self.column}': {self.rule}: {self.rows:,} "
            f"{'rows break' if self.rows != 1 else 'row breaks'} it ({self.examples}); {self.advice}"
        )


@dataclass
class Dataset:
    """The normalized tables of a dataset and what reading them found."""

    events: pl.DataFrame
    tracks: pl.DataFrame
    users: pl.DataFrame
    follows: pl.DataFrame
    source: str = ""
    duplicates_dropped: int = 0
    files: dict[str, str] = field(default_factory=dict)

    def table(self, name: str) -> pl.DataFrame:
        return getattr(self, name)

    def summary(self) -> dict[str, object]:
        """What the dataset holds, in numbers."""
        ev = self.events
        first, last = (ev[s.TS].min(), ev[s.TS].max()) if ev.height else (None, None)
        kinds = ev.group_by(s.KIND).agg(pl.len()).sort(s.KIND)
        return {
            "events": ev.height,
            "tracks": self.tracks.height,
            "users_table": self.users.height,
            "follows": self.follows.height,
            "users": ev[s.USER_ID].n_unique(),
            "tracks_with_events": ev[s.TRACK_ID].n_unique(),
            "creators": self.tracks[s.CREATOR_ID].drop_nulls().n_unique(),
            "genres": self.tracks[s.GENRE].drop_nulls().n_unique(),
            "first_event": first,
            "last_event": last,
            "events_per_kind": {str(k): n for k, n in kinds.iter_rows()},
            "duplicates_dropped": self.duplicates_dropped,
        }


def table_file(folder: Path, table: str) -> Path | None:
    """The file that holds `table` in `folder`, or None; both formats at once is an error."""
    found = [folder / f"{table}{suffix}" for suffix in SUFFIXES if (folder / f"{table}{suffix}").exists()]
    if len(found) > 1:
        names = " and ".join(p.name for p in found)
        raise UsageError(f"{folder}: both {names} exist; keep one of them")
    return found[0] if found else None


def read_dataset(folder: str | Path) -> Dataset:
    """Read, normalize and check the dataset in `folder`; raise DataError listing every problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such dataset folder")

    raw: dict[str, tuple[str, pl.DataFrame]] = {}
    for table in s.REQUIRED_TABLES + s.OPTIONAL_TABLES:
        path = table_file(folder, table)
        if path is None:
            if table in s.REQUIRED_TABLES:
                raise DataError(
                    f"{folder}: no {table}.parquet or {table}.csv; a dataset needs "
                    f"{' and '.join(s.REQUIRED_TABLES)} (see the README's input format)"
                )
            continue
        raw[table] = (path.name, _read_file(path))

    problems: list[Problem] = []
    tables: dict[str, pl.DataFrame] = {}
    for table, (name, frame) in raw.items():
        tables[table] = _normalize(table, name, frame, problems)
    for table in s.OPTIONAL_TABLES:
        tables.setdefault(table, s.empty_frame(table).with_columns(pl.lit(0, pl.UInt32).alias(ROW)))
    if not problems:
        _check_references(tables, raw[s.EVENTS][0], problems)
    if problems:
        raise DataError("\n".join(str(p) for p in problems))

    events = tables[s.EVENTS].drop(ROW)
    before = events.height
    events = events.unique(maintain_order=True)
    dropped = before - events.height
    if dropped:
        log.info("%s: dropped %s exact duplicate events", raw[s.EVENTS][0], f"{dropped:,}")
    return Dataset(
        events=events,
        tracks=tables[s.TRACKS].drop(ROW),
        users=tables[s.USERS].drop(ROW),
        follows=_unique_follows(tables[s.FOLLOWS].drop(ROW)),
        source=str(folder),
        duplicates_dropped=dropped,
        files={t: n for t, (n, _) in raw.items()},
    )


def read_table(folder: str | Path, table: str) -> pl.DataFrame:
    """One table of the dataset in `folder` as `read_dataset` returns it, checked on its own
    (rules across tables are not); an optional table that is absent reads as empty."""
    folder = Path(folder)
    path = table_file(folder, table) if folder.is_dir() else None
    if path is None:
        if table in s.REQUIRED_TABLES:
            raise UsageError(f"{folder}: no {table}.parquet or {table}.csv")
        return s.empty_frame(table)
    problems: list[Problem] = []
    frame = _normalize(table, path.name, _read_file(path), problems)
    if problems:
        raise DataError("\n".join(str(p) for p in problems))
    frame = frame.drop(ROW)
    return _unique_follows(frame) if table == s.FOLLOWS else frame


def _unique_follows(follows: pl.DataFrame) -> pl.DataFrame:
    return follows.unique([s.FOLLOWER_ID, s.FOLLOWEE_ID], keep="first", maintain_order=True)


def _read_file(path: Path) -> pl.DataFrame:
    try:
        if path.suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False)
        else:
            frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{path.name}: cannot be read as {path.suffix[1:]}: {exc}") from exc
    return frame.with_row_index(ROW, offset=1)


def _normalize(table: str, name: str, frame: pl.DataFrame, problems: list[Problem]) -> pl.DataFrame:
    """Cast `frame` to the table's columns and types, recording every rule it breaks."""
    columns = s.TABLE_COLUMNS[table]
    optional = s.OPTIONAL_COLUMNS[table]
    known = len(problems)
    missing = [c for c in columns if c not in frame.columns and c not in optional]
    if missing:
        problems.append(
            Problem(name, ", ".join(missing), "missing column", frame.height, "whole file",
                    f"the file has {', '.join(c for c in frame.columns if c != ROW)}; "
                    "add the column (see the README's input format)")
        )
        return frame

    exprs = [pl.col(ROW)]
    for column, dtype in columns.items():
        if column not in frame.columns:
            exprs.append(pl.lit(optional[column], dtype=dtype if column != s.KIND else pl.String).alias(column))
        else:
            exprs.append(_cast(frame, column, dtype))
    cast = frame.select(exprs)

    # A value present in the file that did not survive the cast has the wrong type.
    for column, dtype in columns.items():
        if column not in frame.columns or column == s.KIND:
            continue
        given = _present(frame, column)
        lost = frame.filter(given & cast[column].is_null())
        if lost.height:
            problems.append(_type_problem(name, column, dtype, lost))
    if len(problems) > known:
        return cast
    # An empty cell in a column with a default takes the default (count: 1).
    cast = cast.with_columns(
        pl.col(c).fill_null(v) for c, v in optional.items() if v is not None and c in frame.columns
    )

    _, failure = RULE_SCHEMAS[table].filter(cast, cast=True)
    for key, count in failure.counts().items():
        column, rule = key.split("|", 1)
        bad = failure.details().filter(pl.col(key) == "invalid")
        examples = _examples(bad, column)
        if column == s.KIND and rule == "dtype":
            rule = "enum"
        phrase, advice = RULE_TEXT.get(rule, (rule, "fix those rows"))
        problems.append(Problem(name, column, phrase, count, examples, advice))
    if table == s.TRACKS:
        dup = cast.filter(pl.col(s.TRACK_ID).is_duplicated())
        if dup.height:
            problems.append(Problem(name, s.TRACK_ID, "must be unique", dup.height,
                                    _examples(dup, s.TRACK_ID), "keep one row per track"))
    if table == s.EVENTS and len(problems) == known:
        return cast.with_columns(pl.col(s.KIND).cast(s.EVENT_KIND))
    return cast


def _present(frame: pl.DataFrame, column: str) -> pl.Series:
    col = frame[column]
    if col.dtype == pl.String:
        return col.is_not_null() & (col.str.strip_chars() != "")
    return col.is_not_null()


def _cast(frame: pl.DataFrame, column: str, dtype: pl.DataType) -> pl.Expr:
    source = frame[column].dtype
    col = pl.col(column)
    if isinstance(dtype, pl.Enum):
        return col.cast(pl.String)
    if dtype == pl.String():
        if source == pl.String:
            stripped = col.str.strip_chars()
            return pl.when(stripped == "").then(None).otherwise(col).alias(column)
        if source.is_integer() or source == pl.String:
            return col.cast(pl.String)
        return col.cast(pl.String, strict=False)
    if dtype == pl.Int64():
        if source == pl.String:
            return col.str.strip_chars().cast(pl.Int64, strict=False)
        if source.is_float():
            return pl.when(col == col.round()).then(col).otherwise(None).cast(pl.Int64, strict=False)
        return col.cast(pl.Int64, strict=False)
    return _to_utc(col, source).alias(column)


def _to_utc(col: pl.Expr, source: pl.DataType) -> pl.Expr:
    """A timestamp column as UTC; a naive one is taken to be UTC already."""
    if isinstance(source, pl.Datetime):
        if source.time_zone is None:
            return col.dt.replace_time_zone("UTC").cast(s.UTC_DATETIME)
        return col.dt.convert_time_zone("UTC").cast(s.UTC_DATETIME)
    if source == pl.Date:
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if source != pl.String:
        return pl.lit(None, dtype=s.UTC_DATETIME)
    text = col.str.strip_chars().str.replace(r"Z$", "+00:00")
    parsed = []
    for fmt in TIMESTAMP_FORMATS:
        if "%z" in fmt:
            parsed.append(text.str.strptime(s.UTC_DATETIME, fmt, strict=False))
        else:
            naive = text.str.strptime(pl.Datetime("us"), fmt, strict=False)
            parsed.append(naive.dt.replace_time_zone("UTC"))
    return pl.coalesce(parsed)


def _type_problem(name: str, column: str, dtype: pl.DataType, lost: pl.DataFrame) -> Problem:
    if isinstance(dtype, pl.Datetime):
        rule = "timestamp that cannot be parsed"
        advice = "write ISO 8601 such as 2024-05-01T13:45:00Z (a time without offset is UTC)"
    else:
        rule = f"wrong type, expected {'an integer' if dtype == pl.Int64() else dtype}"
        advice = "fix those values or leave them empty where the column allows it"
    return Problem(name, column, rule, lost.height, _examples(lost, column), advice)


def _examples(bad: pl.DataFrame, column: str) -> str:
    head = bad.head(EXAMPLES)
    shown = ", ".join(
        f"row {row}: {value!r}" for row, value in zip(head[ROW], head[column].cast(pl.String))
    )
    return shown + (", ..." if bad.height > EXAMPLES else "")


def _check_references(tables: dict[str, pl.DataFrame], name: str, problems: list[Problem]) -> None:
    events, tracks = tables[s.EVENTS], tables[s.TRACKS]
    unknown = events.join(tracks.select(s.TRACK_ID), on=s.TRACK_ID, how="anti")
    if unknown.height:
        problems.append(
            Problem(name, s.TRACK_ID, "track not in tracks", unknown.height,
                    _examples(unknown, s.TRACK_ID),
                    "add those tracks to the tracks table or drop their events")
        )


def write_dataset(tables: dict[str, pl.DataFrame], dest: str | Path) -> Path:
    """Write normalized tables as Parquet into `dest`, replacing it only when all are written."""
    dest = Path(dest)
    if dest.exists() and any(p.name.split(".")[0] not in s.TABLE_COLUMNS for p in dest.iterdir()):
        raise UsageError(f"{dest}: exists and holds files that are not dataset tables; "
                         "choose an empty or new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a dataset folder is an ordinary one
    try:
        for table, frame in tables.items():
            columns = s.TABLE_COLUMNS[table]
            frame.select([pl.col(c).cast(t) for c, t in columns.items()]).write_parquet(
                tmp / f"{table}.parquet"
            )
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old)
        else:
            tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
