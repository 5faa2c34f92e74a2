"""Importers: public datasets converted into the normalized input tables.

Each importer reads the files of one public dataset, builds the `events`, `tracks`, `users` and
`follows` tables of `recsys.schema` and writes them with `write_dataset`, only once every file
has been read, so that an error leaves the destination untouched. Rows that cannot be used are
skipped and counted per reason in the returned `ImportReport`; a file that cannot be read at all
raises `DataError` naming it.

Formats
-------
lastfm-hetrec
    HetRec 2011 Last.fm 2K: an artist is a track; each user's play count per artist is one
    aggregated `play` dated at the end of the collection; the tags a user gave an artist in one
    month are one `like`; friendships are follows.
movielens
    MovieLens ml-latest-small: a rating of 4 or more is a `like`, 2 or less a `skip`, the rest a
    `play`; a movie's first listed genre is its genre.
lastfm-1k
    Last.fm 1K (Celma): each scrobble is a `play` at its timestamp; a track is its MusicBrainz
    id, or a key from the normalized artist and track names when the id is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from recsys import schema as s
from recsys.errors import DataError, UsageError
from recsys.io.dataset import check_dest, write_dataset

log = logging.getLogger(__name__)

HETREC = "lastfm-hetrec"
MOVIELENS = "movielens"
LASTFM_1K = "lastfm-1k"
FORMATS = (HETREC, MOVIELENS, LASTFM_1K)

HETREC_FILES = (
    "artists.dat",
    "tags.dat",
    "user_artists.dat",
    "user_friends.dat",
    "user_taggedartists.dat",
)
MOVIELENS_FILES = ("movies.csv", "ratings.csv")
LASTFM_1K_LOG = "userid-timestamp-artid-artname-traid-traname.tsv"
LASTFM_1K_PROFILE = "userid-profile.tsv"

HETREC_FIRST_YEAR = 2005  # earlier tagging years (1956, 1957, 1979) are impossible
LIKE_MIN_RATING = 4.0
SKIP_MAX_RATING = 2.0
NO_GENRE = "(no genres listed)"
LASTFM_1K_FIELDS = 6
LASTFM_1K_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SHOWN_LINES = 20  # line numbers printed per skip reason

ROW = "_row"  # 1-based data row of a table file (the header is not counted)
LINE = "_line"  # 1-based line of a headerless file


@dataclass
class ImportReport:
    """What an import read, wrote and skipped.

    Attributes
    ----------
    fmt, src, dest
        The format, the source folder and the dataset folder written.
    read
        Data rows (lines for a headerless file) read per source file name.
    written
        Rows written per table.
    kinds
        Events written per kind.
    skipped
        Rows skipped per reason; every reason the importer checks is present, with 0 when none.
    skipped_lines
        Per reason, the 1-based line numbers of the skipped lines, for files read line by line.
    notes
        The decisions a figure depends on (for example the date given to aggregated plays).
    """

    fmt: str
    src: Path
    dest: Path
    read: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_lines: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def bad_lines(self) -> list[int]:
        """All skipped line numbers, in order."""
        return sorted(n for lines in self.skipped_lines.values() for n in lines)

    def lines(self) -> list[str]:
        """The report as lines of text for the CLI."""
        out = [f"imported {self.fmt} from {self.src} into {self.dest}"]
        out += [f"read {name}: {rows:,} rows" for name, rows in self.read.items()]
        for table, rows in self.written.items():
            detail = ""
            if table == s.EVENTS and self.kinds:
                detail = " (" + ", ".join(f"{k} {n:,}" for k, n in self.kinds.items()) + ")"
            out.append(f"wrote {table}: {rows:,} rows{detail}")
        out += [self._skip_line(reason, n) for reason, n in self.skipped.items() if n]
        if not any(self.skipped.values()):
            out.append("skipped nothing")
        out += [f"note: {note}" for note in self.notes]
        return out

    def _skip_line(self, reason: str, rows: int) -> str:
        text = f"skipped {rows:,} {'row' if rows == 1 else 'rows'}: {reason}"
        numbers = self.skipped_lines.get(reason)
        if numbers:
            shown = ", ".join(str(n) for n in numbers[:SHOWN_LINES])
            text += f" (lines {shown}{', ...' if len(numbers) > SHOWN_LINES else ''})"
        return text


def import_dataset(fmt: str, src: Path, dest: Path) -> ImportReport:
    """Convert the public dataset in `src` into a dataset folder `dest`.

    Parameters
    ----------
    fmt
        One of `FORMATS`: "lastfm-hetrec", "movielens" or "lastfm-1k".
    src
        The folder holding the public dataset's files as published.
    dest
        The dataset folder to write (Parquet); replaced only when every table is written.

    Returns
    -------
    ImportReport
        Rows read per file, written per table, skipped per reason.

    Raises
    ------
    UsageError
        An unknown format, a `src` that is no folder, or a `dest` that holds anything but
        the dataset tables' files.
    DataError
        A missing or unreadable source file, named in the message; nothing is written.
    """
    importer = IMPORTERS.get(fmt)
    if importer is None:
        raise UsageError(f"unknown import format {fmt!r}; choose one of {', '.join(FORMATS)}")
    src, dest = Path(src), Path(dest)
    check_dest(dest)  # before the reading, which can take a while
    _require_files(fmt, src, REQUIRED_FILES[fmt])
    report = ImportReport(fmt=fmt, src=src, dest=dest)
    tables = {table: _conform(table, frame) for table, frame in importer(src, report).items()}
    write_dataset(tables, dest)
    report.written = {table: frame.height for table, frame in tables.items()}
    kinds = tables[s.EVENTS].group_by(s.KIND).len().sort(s.KIND)
    report.kinds = {str(kind): n for kind, n in kinds.iter_rows()}
    log.debug("%s: imported %s into %s: %s", fmt, src, dest, report.written)
    return report


# --- reading ---------------------------------------------------------------------------------


def _require_files(fmt: str, src: Path, names: Sequence[str]) -> None:
    """Raise UsageError if `src` is no folder, DataError naming every required file missing
    from it."""
    if not src.is_dir():
        problem = " is a file, not a folder" if src.exists() else ": no such folder"
        raise UsageError(f"{src}{problem}; the {fmt} importer reads {', '.join(names)} from "
                         "a folder")
    missing = [str(src / name) for name in names if not (src / name).is_file()]
    if missing:
        raise DataError(
            f"{', '.join(missing)}: no such file; the {fmt} importer needs {', '.join(names)}"
        )


def _decode(path: Path, encoding: str) -> str:
    """The text of `path`; DataError naming the first line that is not valid `encoding`."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not valid {encoding}") from exc


def _read_table(
    path: Path,
    columns: dict[str, pl.DataType],
    *,
    separator: str = "\t",
    quote_char: str | None = None,
    encoding: str = "utf-8",
    nullable: Sequence[str] = (),
) -> pl.DataFrame:
    """Read the named `columns` of a delimited file with a header, cast to their types.

    Everything is read as text first (so ids keep their spelling and a stray quote is just a
    character when `quote_char` is None), then cast; an empty required value or a value of the
    wrong type raises one DataError naming the file, the column and a few rows.
    """
    text = _decode(path, encoding)
    try:
        frame = pl.read_csv(
            text.encode(), separator=separator, quote_char=quote_char, infer_schema=False
        )
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: cannot be read as a delimited table: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; the file has "
            f"{', '.join(frame.columns)}"
        )
    frame = frame.select(list(columns)).with_row_index(ROW, offset=1)
    cast = frame.select(pl.col(ROW), *(_cast_text(c, t) for c, t in columns.items()))
    problems = [
        _column_problem(frame, cast, column, dtype, nullable=column in nullable)
        for column, dtype in columns.items()
    ]
    problems = [p for p in problems if p]
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))
    return cast.drop(ROW)


def _cast_text(column: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(column)
    if dtype == pl.String():
        return col
    return col.str.strip_chars().cast(dtype, strict=False).alias(column)


def _column_problem(
    raw: pl.DataFrame, cast: pl.DataFrame, column: str, dtype: pl.DataType, *, nullable: bool
) -> str:
    """A sentence on the rows of `column` that are empty (when required) or of the wrong type."""
    lost = raw[column].is_not_null() & cast[column].is_null()
    empty = raw[column].is_null() if not nullable else pl.repeat(False, raw.height, eager=True)
    parts = []
    for rule, mask in ((f"not {dtype}", lost), ("empty", empty)):
        rows = raw.filter(mask)
        if rows.height:
            shown = ", ".join(str(r) for r in rows[ROW].head(5))
            parts.append(f"column {column!r}: {rows.height:,} rows {rule} (data rows {shown})")
    return "; ".join(parts)


def _skip(
    frame: pl.DataFrame,
    report: ImportReport,
    rules: Sequence[tuple[str, pl.Expr]],
    *,
    line: str | None = None,
) -> pl.DataFrame:
    """Drop the rows each rule marks, in order, counting them under the rule's reason.

    A row is counted under the first rule that marks it. With `line`, the line numbers held in
    that column are kept in the report as well.
    """
    for reason, bad in rules:
        mask = frame.select(bad.fill_null(False)).to_series()
        dropped = frame.filter(mask)
        report.skipped[reason] = report.skipped.get(reason, 0) + dropped.height
        if line is not None and dropped.height:
            report.skipped_lines.setdefault(reason, []).extend(dropped[line].to_list())
        frame = frame.filter(~mask)
    return frame


def _conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with exactly the columns of `table`, typed; absent columns are null."""
    columns = s.TABLE_COLUMNS[table]
    return frame.select(
        (pl.col(c) if c in frame.columns else pl.lit(None)).cast(t).alias(c)
        for c, t in columns.items()
    )


def _users(*ids: pl.Series) -> pl.DataFrame:
    """The users table from id columns, in order of first appearance, with no names."""
    user_ids = pl.concat([i.alias(s.USER_ID) for i in ids]).unique(maintain_order=True)
    return user_ids.to_frame()


# --- HetRec 2011 Last.fm 2K ------------------------------------------------------------------

STR, INT = pl.String(), pl.Int64()
SKIP_MISSING_ARTIST_TAG = "tag rows on artists missing from artists.dat"
SKIP_BAD_MONTH_TAG = "tag rows with a month outside 1-12"
SKIP_EARLY_TAG = f"tag rows dated before {HETREC_FIRST_YEAR}"
SKIP_MISSING_ARTIST_PLAY = "play rows on artists missing from artists.dat"
SKIP_NEGATIVE_WEIGHT = "play rows with a negative weight"
SKIP_DUPLICATE_ARTIST = "artists.dat rows repeating an artist id"


def _import_hetrec(src: Path, report: ImportReport) -> dict[str, pl.DataFrame]:
    """Read the HetRec files and build the four tables."""
    artists = _read_table(src / "artists.dat", {"id": STR, "name": STR}, nullable=["name"])
    tags = _read_table(src / "tags.dat", {"tagID": INT, "tagValue": STR}, encoding="latin-1")
    plays = _read_table(
        src / "user_artists.dat", {"userID": STR, "artistID": STR, "weight": INT}
    )
    friends = _read_table(src / "user_friends.dat", {"userID": STR, "friendID": STR})
    tagged = _read_table(
        src / "user_taggedartists.dat",
        {"userID": STR, "artistID": STR, "tagID": INT, "month": INT, "year": INT},
    )
    for name, frame in zip(HETREC_FILES, (artists, tags, plays, friends, tagged), strict=True):
        report.read[name] = frame.height

    artists = _skip(artists, report, [(SKIP_DUPLICATE_ARTIST, ~pl.col("id").is_first_distinct())])
    snapshot = _hetrec_snapshot(tagged, src / "user_taggedartists.dat")
    report.notes.append(
        f"plays are each user's play count per artist over the whole collection, one event "
        f"per (user, artist) dated {snapshot:%Y-%m-%dT%H:%M:%SZ}: the first instant after the "
        f"latest tagging month"
    )
    known = pl.col("artistID").is_in(artists["id"].implode())
    tagged = _skip(tagged, report, _hetrec_tag_rules(known))
    plays = _skip(
        plays,
        report,
        [(SKIP_MISSING_ARTIST_PLAY, ~known), (SKIP_NEGATIVE_WEIGHT, pl.col("weight") < 0)],
    )
    parts = (_hetrec_plays(plays, snapshot), _hetrec_likes(tagged))
    events = pl.concat([_conform(s.EVENTS, part) for part in parts])
    return {
        s.EVENTS: events,
        s.TRACKS: _hetrec_tracks(artists, _hetrec_genres(tagged, tags)),
        s.USERS: _users(plays["userID"], friends["userID"], friends["friendID"],
                        tagged["userID"]),
        s.FOLLOWS: friends.select(
            pl.col("userID").alias(s.FOLLOWER_ID), pl.col("friendID").alias(s.FOLLOWEE_ID)
        ),
    }


def _hetrec_tag_rules(known: pl.Expr) -> list[tuple[str, pl.Expr]]:
    return [
        (SKIP_MISSING_ARTIST_TAG, ~known),
        (SKIP_BAD_MONTH_TAG, ~pl.col("month").is_between(1, 12)),
        (SKIP_EARLY_TAG, pl.col("year") < HETREC_FIRST_YEAR),
    ]


def _hetrec_snapshot(tagged: pl.DataFrame, path: Path) -> datetime:
    """The first instant of the month after the latest valid tagging month.

    HetRec's play counts are a snapshot with no date; the tag assignments, collected at the
    same time, date the collection. Rows with an impossible year or month do not count.
    """
    valid = tagged.filter(
        (pl.col("year") >= HETREC_FIRST_YEAR) & pl.col("month").is_between(1, 12)
    )
    if not valid.height:
        raise DataError(
            f"{path}: no tag row dated {HETREC_FIRST_YEAR} or later, so the play counts "
            "cannot be dated"
        )
    months = valid.select(pl.col("year") * 12 + pl.col("month") - 1).to_series().max()
    year, month = divmod(int(months) + 1, 12)
    return datetime(year, month + 1, 1, tzinfo=UTC)


def _hetrec_plays(plays: pl.DataFrame, snapshot: datetime) -> pl.DataFrame:
    return plays.select(
        pl.col("userID").alias(s.USER_ID),
        pl.col("artistID").alias(s.TRACK_ID),
        pl.lit(s.PLAY).alias(s.KIND),
        pl.lit(snapshot).alias(s.TS),
        pl.col("weight").alias(s.COUNT),
    )


def _hetrec_likes(tagged: pl.DataFrame) -> pl.DataFrame:
    """One like per (user, artist, month) with tags, at 00:00 UTC on the 1st of the month."""
    return tagged.unique(["userID", "artistID", "year", "month"], maintain_order=True).select(
        pl.col("userID").alias(s.USER_ID),
        pl.col("artistID").alias(s.TRACK_ID),
        pl.lit(s.LIKE).alias(s.KIND),
        pl.datetime("year", "month", 1, time_zone="UTC").alias(s.TS),
        pl.lit(1).alias(s.COUNT),
    )


def _hetrec_genres(tagged: pl.DataFrame, tags: pl.DataFrame) -> pl.DataFrame:
    """Per artist, the tag most users gave it (ties: the lower tag id), as its text."""
    counts = (
        tagged.join(tags, on="tagID", how="semi")
        .group_by("artistID", "tagID")
        .agg(pl.col("userID").n_unique().alias("users"))
    )
    top = counts.sort(["users", "tagID"], descending=[True, False]).unique(
        "artistID", keep="first"
    )
    return top.join(tags, on="tagID").select(
        pl.col("artistID").alias("id"), pl.col("tagValue").alias(s.GENRE)
    )


def _hetrec_tracks(artists: pl.DataFrame, genres: pl.DataFrame) -> pl.DataFrame:
    return artists.join(genres, on="id", how="left", maintain_order="left").select(
        pl.col("id").alias(s.TRACK_ID),
        pl.col("name").alias(s.TITLE),
        ("artist:" + pl.col("id")).alias(s.CREATOR_ID),
        pl.col(s.GENRE),
    )


# --- MovieLens ml-latest-small ---------------------------------------------------------------

SKIP_UNKNOWN_MOVIE = "ratings on movies missing from movies.csv"
SKIP_DUPLICATE_MOVIE = "movies.csv rows repeating a movie id"


def _import_movielens(src: Path, report: ImportReport) -> dict[str, pl.DataFrame]:
    """Read movies.csv and ratings.csv and build the tables (no follows)."""
    csv = {"separator": ",", "quote_char": '"'}
    movies = _read_table(
        src / "movies.csv",
        {"movieId": STR, "title": STR, "genres": STR},
        nullable=["title", "genres"],
        **csv,
    )
    ratings = _read_table(
        src / "ratings.csv",
        {"userId": STR, "movieId": STR, "rating": pl.Float64(), "timestamp": INT},
        **csv,
    )
    report.read.update({"movies.csv": movies.height, "ratings.csv": ratings.height})
    repeated = ~pl.col("movieId").is_first_distinct()
    movies = _skip(movies, report, [(SKIP_DUPLICATE_MOVIE, repeated)])
    known = pl.col("movieId").is_in(movies["movieId"].implode())
    ratings = _skip(ratings, report, [(SKIP_UNKNOWN_MOVIE, ~known)])
    report.notes.append(
        f"rating >= {LIKE_MIN_RATING:g} is a like, <= {SKIP_MAX_RATING:g} a skip, the rest a play"
    )
    return {
        s.EVENTS: _movielens_events(ratings),
        s.TRACKS: _movielens_tracks(movies),
        s.USERS: _users(ratings["userId"]),
        s.FOLLOWS: s.empty_frame(s.FOLLOWS),
    }


def _movielens_events(ratings: pl.DataFrame) -> pl.DataFrame:
    rating = pl.col("rating")
    kind = (
        pl.when(rating >= LIKE_MIN_RATING)
        .then(pl.lit(s.LIKE))
        .when(rating <= SKIP_MAX_RATING)
        .then(pl.lit(s.SKIP))
        .otherwise(pl.lit(s.PLAY))
    )
    return ratings.select(
        pl.col("userId").alias(s.USER_ID),
        pl.col("movieId").alias(s.TRACK_ID),
        kind.alias(s.KIND),
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC").alias(s.TS),
        pl.lit(1).alias(s.COUNT),
    )


def _movielens_tracks(movies: pl.DataFrame) -> pl.DataFrame:
    first = pl.col("genres").str.split("|").list.first().str.strip_chars()
    genre = pl.when(first.is_in([NO_GENRE, ""])).then(None).otherwise(first)
    return movies.select(
        pl.col("movieId").alias(s.TRACK_ID),
        pl.col("title").alias(s.TITLE),
        genre.alias(s.GENRE),
    )


# --- Last.fm 1K ------------------------------------------------------------------------------

SKIP_NOT_UTF8 = "lines that are not valid UTF-8"
SKIP_FIELDS = f"lines without exactly {LASTFM_1K_FIELDS} tab-separated fields"
SKIP_TIMESTAMP = "lines with a timestamp that cannot be parsed (expected 2009-05-04T23:08:57Z)"
SKIP_NO_USER = "lines with an empty user id"
SKIP_NO_TRACK = "lines with neither a track MBID nor a track name"
LOG_FIELDS = ("user", "ts_text", "artist_mbid", "artist", "track_mbid", "track")


def _import_lastfm1k(src: Path, report: ImportReport) -> dict[str, pl.DataFrame]:
    """Read the scrobble log (and the profile file if present) and build the tables."""
    lines = _read_lines(src / LASTFM_1K_LOG)
    report.read[LASTFM_1K_LOG] = lines.height
    profile_ids = _profile_ids(src / LASTFM_1K_PROFILE, report)
    scrobbles = _skip(_split_scrobbles(lines), report, _scrobble_rules(), line=LINE)
    if report.bad_lines:
        log.warning("%s: skipped %s malformed lines", LASTFM_1K_LOG, f"{len(report.bad_lines):,}")
    scrobbles = scrobbles.with_columns(
        _track_key().alias(s.TRACK_ID), _creator_key().alias(s.CREATOR_ID)
    )
    report.notes.append(
        "a track without MBID is 'name:<artist>|<track>' from the normalized names "
        "(NFKC, lower case, whitespace collapsed; '\\' and '|' escaped with '\\')"
    )
    return {
        s.EVENTS: scrobbles.select(
            pl.col("user").alias(s.USER_ID), s.TRACK_ID, pl.lit(s.PLAY).alias(s.KIND),
            pl.col("ts").alias(s.TS), pl.lit(1).alias(s.COUNT),
        ),
        s.TRACKS: scrobbles.select(
            s.TRACK_ID, _blank_as_null("track").alias(s.TITLE), s.CREATOR_ID
        ).unique(s.TRACK_ID, keep="first", maintain_order=True),
        s.USERS: _users(profile_ids, scrobbles["user"]),
        s.FOLLOWS: s.empty_frame(s.FOLLOWS),
    }


def _profile_ids(path: Path, report: ImportReport) -> pl.Series:
    """The user ids of the profile file (the first column, headed `#id`), none if absent."""
    if not path.is_file():
        report.notes.append(f"no {path.name}: the users are those seen in the log")
        return pl.Series(s.USER_ID, [], pl.String)
    ids = _read_table(path, {"#id": STR})["#id"]
    report.read[path.name] = ids.len()
    report.notes.append(f"users: the {path.name} ids, then any others seen in the log")
    return ids


def _read_lines(path: Path) -> pl.DataFrame:
    """The lines of `path` with their 1-based numbers; a line that is not UTF-8 is null.

    A final newline does not start an extra line, and a trailing carriage return is dropped.
    """
    data = path.read_bytes()
    try:
        texts: list[str | None] = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        texts = [_utf8_or_none(chunk) for chunk in data.split(b"\n")]
    if texts and texts[-1] == "":
        texts.pop()
    return pl.DataFrame(
        {"text": pl.Series(texts, dtype=pl.String).str.strip_suffix("\r")}
    ).with_row_index(LINE, offset=1)


def _utf8_or_none(chunk: bytes) -> str | None:
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _split_scrobbles(lines: pl.DataFrame) -> pl.DataFrame:
    """Split each line on tabs into the log's named fields (null when the count is wrong)."""
    fields = pl.col("text").str.split("\t")
    split = lines.with_columns(fields.alias("fields")).with_columns(
        pl.col("fields").list.len().alias("n_fields")
    )
    right = pl.col("n_fields") == LASTFM_1K_FIELDS
    split = split.with_columns(
        pl.when(right).then(pl.col("fields").list.get(i, null_on_oob=True)).alias(name)
        for i, name in enumerate(LOG_FIELDS)
    )
    ids = [pl.col(c).str.strip_chars() for c in ("user", "artist_mbid", "track_mbid")]
    return split.with_columns(
        *ids,
        pl.col("ts_text").str.strip_chars().str.strptime(
            s.UTC_DATETIME, LASTFM_1K_TS_FORMAT, strict=False
        ).alias("ts"),
    )


def _scrobble_rules() -> list[tuple[str, pl.Expr]]:
    empty = _is_empty
    return [
        (SKIP_NOT_UTF8, pl.col("text").is_null()),
        (SKIP_FIELDS, pl.col("n_fields") != LASTFM_1K_FIELDS),
        (SKIP_TIMESTAMP, pl.col("ts").is_null()),
        (SKIP_NO_USER, empty("user")),
        (SKIP_NO_TRACK, empty("track_mbid") & empty("track")),
    ]


def _is_empty(column: str) -> pl.Expr:
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")


def _blank_as_null(column: str) -> pl.Expr:
    return pl.when(_is_empty(column)).then(None).otherwise(pl.col(column))


def normalize_name(name: pl.Expr) -> pl.Expr:
    """A name for matching: NFKC, lower case, runs of whitespace as one space, trimmed."""
    folded = name.str.normalize("NFKC").str.to_lowercase()
    return folded.str.replace_all(r"\s+", " ").str.strip_chars()


def _escape(key: pl.Expr) -> pl.Expr:
    return key.str.replace_all("\\", "\\\\", literal=True).str.replace_all(
        "|", "\\|", literal=True
    )


def _track_key() -> pl.Expr:
    """The track MBID, else `name:<artist>|<track>` from the escaped normalized names."""
    by_name = pl.concat_str(
        pl.lit("name:"),
        _escape(normalize_name(pl.col("artist").fill_null(""))),
        pl.lit("|"),
        _escape(normalize_name(pl.col("track").fill_null(""))),
    )
    return pl.when(_is_empty("track_mbid")).then(by_name).otherwise(pl.col("track_mbid"))


def _creator_key() -> pl.Expr:
    """`artist:<MBID>`, else `artist:name:<normalized name>`, else null (no artist at all)."""
    name = normalize_name(pl.col("artist").fill_null(""))
    return (
        pl.when(~_is_empty("artist_mbid"))
        .then("artist:" + pl.col("artist_mbid"))
        .when(name != "")
        .then("artist:name:" + name)
        .otherwise(None)
    )


Importer = Callable[[Path, ImportReport], dict[str, pl.DataFrame]]
IMPORTERS: dict[str, Importer] = {
    HETREC: _import_hetrec,
    MOVIELENS: _import_movielens,
    LASTFM_1K: _import_lastfm1k,
}
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    HETREC: HETREC_FILES,
    MOVIELENS: MOVIELENS_FILES,
    LASTFM_1K: (LASTFM_1K_LOG,),
}
