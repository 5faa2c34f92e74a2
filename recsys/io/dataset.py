"""Reading, validating and writing a dataset folder.

A dataset is a folder with `events` and `tracks`, and optionally `users` and `follows`, each as
`<table>.parquet` or `<table>.csv`. Reading normalizes types (ids as strings, timestamps as UTC,
a naive timestamp read as UTC), checks every rule of the input format and raises one
`DataError` that names the file, the column, the rule, how many rows break it and a few of them.
"""

from __future__ import annotations

import csv
import logging
import os
import re
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
DATASET_FILES = frozenset(f"{table}{suffix}" for table in s.TABLE_COLUMNS for suffix in SUFFIXES)
TIMESTAMP_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


# The largest `count` of one event row: far above any real play count, far below the sums
# that would overflow a 64-bit integer.
MAX_COUNT = 1_000_000_000
# The tables whose id must be unique, and what one row stands for.
UNIQUE_KEYS = {s.TRACKS: (s.TRACK_ID, "track"), s.USERS: (s.USER_ID, "user")}


class _Events(dy.Schema):
    _row = dy.UInt32(nullable=False)
    user_id = dy.String(nullable=False, min_length=1)
    track_id = dy.String(nullable=False, min_length=1)
    kind = dy.Enum(s.EVENT_KINDS, nullable=False)
    ts = dy.Datetime(nullable=False, time_zone="UTC")
    ms_played = dy.Int64(nullable=True, min=0)
    count = dy.Int64(nullable=False, min=0, max=MAX_COUNT)


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
    "max": (f"must be at most {MAX_COUNT:,}", "fix or drop those rows"),
    "dtype": ("has a value of the wrong type", "fix those values"),
}
# Rules that a value failing its type cast would break again once it is null.
EMPTY_RULES = ("nullability", "min_length")
CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
REASON_LENGTH = 160
UNREADABLE = {
    ".csv": ("CSV", "save it as UTF-8 CSV with a header row"),
    ".parquet": ("Parquet", "rewrite it with a Parquet writer or use CSV"),
}


# The examples of a problem with the file itself (a missing column), not with some rows.
WHOLE_FILE = "whole file"


@dataclass
class Problem:
    """One broken rule: where, which rule, how many rows and a few examples."""

    file: str
    column: str  # empty for a rule about whole rows
    rule: str
    rows: int
    examples: str
    advice: str

    def __str__(self) -> str:
        where = f"column '{self.column}': " if self.column else ""
        if self.examples == WHOLE_FILE:
            return f"{self.file}: {where}{self.rule}; {self.advice}"
        return (
            f"{self.file}: {where}{self.rule}: {self.rows:,} "
            f"{'rows break' if self.rows != 1 else 'row breaks'} it ({self.examples}); "
            f"{self.advice}"
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


@dataclass
class _Checked:
    """A table cast to its normalized columns, and the columns its file lacks."""

    frame: pl.DataFrame
    missing: list[str]


def table_file(folder: Path, table: str) -> Path | None:
    """The file that holds `table` in `folder`, or None; both formats at once is an error."""
    found = [p for p in (folder / f"{table}{suffix}" for suffix in SUFFIXES) if p.exists()]
    if len(found) > 1:
        names = " and ".join(p.name for p in found)
        raise DataError(f"{folder}: both {names} exist; keep one of them and move the other "
                        "out of the folder")
    return found[0] if found else None


def read_dataset(folder: str | Path) -> Dataset:
    """Read, normalize and check the dataset in `folder`; raise DataError listing every problem."""
    folder = Path(folder)
    if not folder.is_dir():
        if folder.exists():
            raise UsageError(f"{folder} is a file, not a dataset folder")
        raise UsageError(f"{folder}: no such dataset folder")

    # Every check runs, whatever an earlier one found, so that one run lists every problem.
    problems: list[Problem | str] = []
    files = _find_files(folder, problems)
    checked: dict[str, _Checked] = {}
    for table, path in files.items():
        frame = _read_file(path, problems)
        if frame is None:
            continue
        if table == s.EVENTS and frame.height == 0:
            problems.append(f"{path.name}: no events; a dataset needs at least one event")
        checked[table] = _normalize(table, path.name, frame, problems)
    _check_references(checked, files, problems)
    if problems:
        raise DataError("\n".join(str(p) for p in problems))

    tables = {t: c.frame.drop(ROW) for t, c in checked.items()}
    for table in s.OPTIONAL_TABLES:
        tables.setdefault(table, s.empty_frame(table))
    events = tables[s.EVENTS]
    before = events.height
    events = events.unique(maintain_order=True)
    dropped = before - events.height
    if dropped:
        log.info("%s: dropped %s exact duplicate events", files[s.EVENTS].name, f"{dropped:,}")
    return Dataset(
        events=events,
        tracks=tables[s.TRACKS],
        users=tables[s.USERS],
        follows=_unique_follows(tables[s.FOLLOWS]),
        source=str(folder),
        duplicates_dropped=dropped,
        files={t: p.name for t, p in files.items()},
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
    problems: list[Problem | str] = []
    frame = _read_file(path, problems)
    if frame is not None:
        frame = _normalize(table, path.name, frame, problems).frame.drop(ROW)
    if problems:
        raise DataError("\n".join(str(p) for p in problems))
    return _unique_follows(frame) if table == s.FOLLOWS else frame


def _find_files(folder: Path, problems: list[Problem | str]) -> dict[str, Path]:
    """The file of each table present in `folder`; a missing required table is a problem."""
    files = {}
    for table in s.REQUIRED_TABLES + s.OPTIONAL_TABLES:
        try:
            path = table_file(folder, table)
        except DataError as exc:
            problems.append(str(exc))
            continue
        if path is not None:
            files[table] = path
        elif table in s.REQUIRED_TABLES:
            problems.append(
                f"{folder}: no {table}.parquet or {table}.csv; a dataset needs "
                f"{' and '.join(s.REQUIRED_TABLES)} (see the README's input format)"
            )
    return files


def _unique_follows(follows: pl.DataFrame) -> pl.DataFrame:
    return follows.unique([s.FOLLOWER_ID, s.FOLLOWEE_ID], keep="first", maintain_order=True)


# --- reading files ----------------------------------------------------------------------------


def _read_file(path: Path, problems: list[Problem | str]) -> pl.DataFrame | None:
    """The rows of `path` numbered from 1 in column ROW, or None (a problem) when unreadable."""
    try:
        frame = _read_csv(path, problems) if path.suffix == ".csv" else pl.read_parquet(path)
    except OSError as exc:
        problems.append(f"{path.name}: cannot be opened ({exc.strerror or exc}); check that it "
                        "is a file you may read")
        return None
    except pl.exceptions.PolarsError as exc:
        kind, advice = UNREADABLE[path.suffix]
        problems.append(f"{path.name}: not a readable {kind} file ({_reason(exc)}); {advice}")
        return None
    if path.suffix != ".csv":
        frame = frame.drop(ROW, strict=False).with_row_index(ROW, offset=1)
    return frame


def _read_csv(path: Path, problems: list[Problem | str]) -> pl.DataFrame:
    """A CSV file as text columns, rows numbered from 1 after the header."""
    try:
        frame = pl.read_csv(path, infer_schema=False)
        # polars pads a short row with nulls, so only a null in the last column hints at one.
        suspect = frame.width > 0 and frame[frame.columns[-1]].null_count() > 0
    except pl.exceptions.ComputeError as exc:
        frame = _read_truncated(path, exc)
        suspect = True
    frame = frame.drop(ROW, strict=False).with_row_index(ROW, offset=1)
    return _drop_ragged_rows(path, frame, problems) if suspect else frame


def _read_truncated(path: Path, first: pl.exceptions.ComputeError) -> pl.DataFrame:
    """The file read again with long rows cut to the header's width (they are reported later);
    when that fails too, the file is unreadable for the first reason."""
    try:
        return pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
    except pl.exceptions.PolarsError:
        raise first from None


def _drop_ragged_rows(
    path: Path, frame: pl.DataFrame, problems: list[Problem | str]
) -> pl.DataFrame:
    """`frame` without the rows whose number of fields differs from the header's. A short or
    long row is reported once, not by every rule its shifted or missing values would break;
    a blank line is left out silently."""
    width = frame.width - 1
    fields = _field_counts(path, width, frame.height)
    if not fields:
        return frame
    ragged = pl.DataFrame(
        {ROW: list(fields), "fields": list(fields.values())},
        schema={ROW: frame.schema[ROW], "fields": pl.Int64},
    ).sort(ROW)
    for rule, rows in (
        ("too few fields", ragged.filter(pl.col("fields").is_between(1, width - 1))),
        ("too many fields", ragged.filter(pl.col("fields") > width)),
    ):
        if rows.height:
            shown = [f"row {r}: {n} of {width} fields" for r, n in rows.head(EXAMPLES).iter_rows()]
            examples = ", ".join(shown) + (", ..." if rows.height > EXAMPLES else "")
            problems.append(Problem(path.name, "", rule, rows.height, examples,
                                    "give every row one field per header column (an empty "
                                    "field where a value may be empty)"))
    return frame.join(ragged, on=ROW, how="anti").sort(ROW)


def _field_counts(path: Path, width: int, records: int) -> dict[int, int] | None:
    """Row number -> number of fields for each row whose count is not `width` (a blank line
    has none), or None when the csv module splits the file into other rows than polars."""
    counts: dict[int, int] = {}
    seen = 0
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            for seen, record in enumerate(reader, start=1):
                if len(record) != width:
                    counts[seen] = len(record)
    except (csv.Error, UnicodeDecodeError) as exc:
        log.debug("%s: fields per row not counted: %s", path.name, exc)
        return None
    if seen != records:
        log.debug("%s: fields per row not counted: %s rows against %s", path.name, seen, records)
        return None
    return counts


def _reason(exc: Exception) -> str:
    """The gist of a reader's error on one line: the underlying error when it names one, with
    no control characters and none of the reader's advice about its own options."""
    text = str(exc)
    if "Original error:" in text:
        text = text.split("Original error:", 1)[1].replace("`", "")
    else:
        text = text.split("\n\n", 1)[0]
    text = " ".join(CONTROL.sub(" ", text).split())
    return text if len(text) <= REASON_LENGTH else text[: REASON_LENGTH - 3].rstrip() + "..."


# --- checking tables ---------------------------------------------------------------------------


def _normalize(
    table: str, name: str, frame: pl.DataFrame, problems: list[Problem | str]
) -> _Checked:
    """Cast `frame` to the table's columns and types, recording every rule it breaks.

    A value that fails its cast is reported once and is null for the other rules; a missing
    column is reported once and is null, its rules left unchecked.
    """
    columns = s.TABLE_COLUMNS[table]
    missing = [c for c in columns if c not in frame.columns and c not in s.OPTIONAL_COLUMNS[table]]
    if missing:
        given = ", ".join(c for c in frame.columns if c != ROW) or "no columns"
        problems.append(Problem(name, ", ".join(missing), "missing column", frame.height,
                                WHOLE_FILE, f"the file has {given}; add the column "
                                "(see the README's input format)"))
    cast = frame.select(pl.col(ROW), *(_column(frame, table, c) for c in columns))

    lost = {}
    for column, dtype in columns.items():
        if column in frame.columns:
            bad = frame.filter(_present(frame, column) & cast[column].is_null())
            if bad.height:
                lost[column] = bad.select(ROW, column)
                problems.append(_type_problem(name, column, dtype, bad))

    # An empty cell in a column with a default takes the default (count: 1).
    cast = cast.with_columns(
        pl.col(c).fill_null(v)
        for c, v in s.OPTIONAL_COLUMNS[table].items()
        if v is not None and c in frame.columns
    )
    problems.extend(_rule_problems(table, name, cast, lost, missing))
    if table in UNIQUE_KEYS:
        key, what = UNIQUE_KEYS[table]
        dup = cast.filter(pl.col(key).is_not_null() & pl.col(key).is_duplicated())
        if dup.height:
            problems.append(Problem(name, key, "must be unique", dup.height,
                                    _examples(dup, key), f"keep one row per {what}"))
    return _Checked(cast, missing)


def _column(frame: pl.DataFrame, table: str, column: str) -> pl.Expr:
    """`column` cast to its type, or its default (null for a missing required column)."""
    dtype = s.TABLE_COLUMNS[table][column]
    if column in frame.columns:
        return _cast(frame, column, dtype)
    return pl.lit(s.OPTIONAL_COLUMNS[table].get(column), dtype=dtype).alias(column)


def _rule_problems(table: str, name: str, cast: pl.DataFrame, lost: dict[str, pl.DataFrame],
                   missing: list[str]) -> list[Problem]:
    """The rules of the table's dataframely schema that `cast` breaks, one problem per rule."""
    _, failure = RULE_SCHEMAS[table].filter(cast, cast=True)
    details = failure.details()
    found = []
    for key in failure.counts():
        column, rule = key.split("|", 1)
        if column in missing:
            continue
        bad = details.filter(pl.col(key) == "invalid")
        if rule in EMPTY_RULES and column in lost:
            bad = bad.join(lost[column].select(ROW), on=ROW, how="anti")
        if bad.height:
            phrase, advice = RULE_TEXT.get(rule, (rule, "fix those rows"))
            examples = _examples(bad.sort(ROW), column)
            found.append(Problem(name, column, phrase, bad.height, examples, advice))
    return found


def _present(frame: pl.DataFrame, column: str) -> pl.Series:
    col = frame[column]
    if col.dtype == pl.String:
        return col.is_not_null() & (col.str.strip_chars() != "")
    return col.is_not_null()


def _cast(frame: pl.DataFrame, column: str, dtype: pl.DataType) -> pl.Expr:
    source = frame[column].dtype
    col = pl.col(column)
    if isinstance(dtype, pl.Enum):
        # An unknown kind becomes null here and is reported as a value outside the enum.
        return col.cast(pl.String).cast(dtype, strict=False)
    if dtype == pl.String():
        if source == pl.String:
            stripped = col.str.strip_chars()
            return pl.when(stripped == "").then(None).otherwise(col).alias(column)
        if source.is_integer():
            return col.cast(pl.String)
        return col.cast(pl.String, strict=False)
    if dtype == pl.Int64():
        if source == pl.String:
            return col.str.strip_chars().cast(pl.Int64, strict=False)
        if source.is_float():
            whole = pl.when(col == col.round()).then(col).otherwise(None)
            return whole.cast(pl.Int64, strict=False)
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
    if isinstance(dtype, pl.Enum):
        rule = f"must be one of {', '.join(s.EVENT_KINDS)}"
        advice = "map other kinds to these or drop those rows"
    elif isinstance(dtype, pl.Datetime):
        rule = "timestamp that cannot be parsed"
        advice = "write ISO 8601 such as 2024-05-01T13:45:00Z (a time without offset is UTC)"
    else:
        rule = f"wrong type, expected {'an integer' if dtype == pl.Int64() else dtype}"
        advice = "fix those values or leave them empty where the column allows it"
    return Problem(name, column, rule, lost.height, _examples(lost, column), advice)


def _examples(bad: pl.DataFrame, column: str) -> str:
    head = bad.head(EXAMPLES)
    shown = ", ".join(
        f"row {row}: {'empty' if value is None else repr(value)}"
        for row, value in zip(head[ROW], head[column].cast(pl.String))
    )
    return shown + (", ..." if bad.height > EXAMPLES else "")


def _check_references(checked: dict[str, _Checked], files: dict[str, Path],
                      problems: list[Problem | str]) -> None:
    """Every event's track must be in tracks (checked whenever both tables have track_id)."""
    events, tracks = checked.get(s.EVENTS), checked.get(s.TRACKS)
    if events is None or tracks is None or s.TRACK_ID in events.missing + tracks.missing:
        return
    known = tracks.frame.select(s.TRACK_ID).drop_nulls()
    unknown = (
        events.frame.filter(pl.col(s.TRACK_ID).is_not_null())
        .join(known, on=s.TRACK_ID, how="anti")
        .sort(ROW)
    )
    if unknown.height:
        problems.append(
            Problem(files[s.EVENTS].name, s.TRACK_ID, "track not in tracks", unknown.height,
                    _examples(unknown, s.TRACK_ID),
                    "add those tracks to the tracks table or drop their events")
        )


def check_dest(dest: str | Path) -> None:
    """Raise UsageError unless `dest` is absent or holds only files `write_dataset` replaces:
    `<table>.parquet` and `<table>.csv` of the four tables (a CSV would clash with the Parquet)."""
    dest = Path(dest)
    if not dest.exists():
        return
    if not dest.is_dir():
        raise UsageError(f"{dest}: exists and is not a folder; choose a new or empty folder")
    others = sorted(p.name for p in dest.iterdir() if p.name not in DATASET_FILES or p.is_dir())
    if others:
        shown = ", ".join(others[:EXAMPLES]) + (f" and {len(others) - EXAMPLES:,} more"
                                                if len(others) > EXAMPLES else "")
        are = "is not a dataset table" if len(others) == 1 else "are not dataset tables"
        those = "it" if len(others) == 1 else "those"
        raise UsageError(f"{dest}: holds {shown}, which {are}; choose a new or empty folder, or "
                         f"move {those} out (only the tables' .parquet and .csv files are ever "
                         "replaced)")


def write_dataset(tables: dict[str, pl.DataFrame], dest: str | Path) -> Path:
    """Write normalized tables as Parquet into `dest`, once every table is written.

    Only the dataset's own files in `dest` are replaced or removed (see `check_dest`); a `dest`
    holding anything else is refused, and no folder is ever deleted.
    """
    dest = Path(dest)
    check_dest(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for table, frame in tables.items():
            columns = s.TABLE_COLUMNS[table]
            frame.select([pl.col(c).cast(t) for c, t in columns.items()]).write_parquet(
                tmp / f"{table}.parquet"
            )
        if dest.exists():
            _replace_files(tmp, dest)
        else:
            tmp.chmod(0o755)  # mkdtemp makes it private; a dataset folder is an ordinary one
            tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _replace_files(new: Path, dest: Path) -> None:
    """Move the files of `new` into `dest`, then remove the dataset files of `dest` that are
    not among them (a clashing CSV, a table the new dataset lacks)."""
    replaced = sorted(p.name for p in dest.iterdir() if p.name in DATASET_FILES)
    if replaced:
        log.warning("%s: replaced the dataset files it held (%s)", dest, ", ".join(replaced))
    written = {p.name for p in new.iterdir()}
    for name in sorted(written):
        os.replace(new / name, dest / name)
    for name in sorted(DATASET_FILES - written):
        (dest / name).unlink(missing_ok=True)
