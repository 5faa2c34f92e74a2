"""Importers of public datasets: exact counts and values worked out from the raw files here.

The expected figures are computed in this file with the `csv` module and plain line reading,
independently of the importer's code, then compared with what the importer wrote.
"""

from __future__ import annotations

import csv
import unicodedata
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys import schema as s
from recsys.cli import app
from recsys.errors import DataError, UsageError
from recsys.io.dataset import Dataset, read_dataset
from recsys.io.importers import ImportReport, import_dataset

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
HETREC = DATASETS / "hetrec2011-lastfm-2k"
MOVIELENS = DATASETS / "ml-latest-small"
LASTFM_1K = DATASETS / "lastfm-1k-sample"
LOG = "userid-timestamp-artid-artname-traid-traname.tsv"


def _need(folder: Path) -> Path:
    if not folder.is_dir():
        pytest.skip(f"public dataset {folder.name} not found at {folder}")
    return folder


def _import(fmt: str, src: Path, tmp_path_factory) -> tuple[ImportReport, Dataset]:
    dest = tmp_path_factory.mktemp(fmt) / "data"
    report = import_dataset(fmt, _need(src), dest)
    return report, read_dataset(dest)  # the output passes the project's validation


@pytest.fixture(scope="module")
def hetrec(tmp_path_factory):
    return _import("lastfm-hetrec", HETREC, tmp_path_factory)


@pytest.fixture(scope="module")
def movielens(tmp_path_factory):
    return _import("movielens", MOVIELENS, tmp_path_factory)


@pytest.fixture(scope="module")
def lastfm1k(tmp_path_factory):
    return _import("lastfm-1k", LASTFM_1K, tmp_path_factory)


def _tsv(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    """The data rows of a tab-separated file with a header, quotes being plain characters."""
    with path.open(encoding=encoding, newline="") as f:
        rows = [[c.rstrip("\r") for c in r] for r in csv.reader(f, delimiter="\t",
                                                                quoting=csv.QUOTE_NONE)]
    return rows[1:]


def _rows(frame: pl.DataFrame) -> dict[str, dict]:
    return {r[s.TRACK_ID]: r for r in frame.iter_rows(named=True)}


# --- HetRec 2011 Last.fm 2K ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hetrec_raw():
    """Expected figures worked out from the raw HetRec files."""
    _need(HETREC)
    artists = {r[0]: r[1] for r in _tsv(HETREC / "artists.dat")}
    tags = {int(r[0]): r[1] for r in _tsv(HETREC / "tags.dat", "latin-1")}
    tagged = _tsv(HETREC / "user_taggedartists.dat")
    missing = [r for r in tagged if r[1] not in artists]
    early = [r for r in tagged if r[1] in artists and int(r[5]) < 2005]
    kept = [r for r in tagged if r[1] in artists and int(r[5]) >= 2005]
    last = max((int(r[5]), int(r[4])) for r in tagged if int(r[5]) >= 2005)
    users_per_tag: dict[str, dict[int, set]] = defaultdict(lambda: defaultdict(set))
    for user, artist, tag, *_ in kept:
        users_per_tag[artist][int(tag)].add(user)
    genres = {
        artist: tags[min(by_tag, key=lambda t: (-len(by_tag[t]), t))]
        for artist, by_tag in users_per_tag.items()
    }
    plays = _tsv(HETREC / "user_artists.dat")
    friends = _tsv(HETREC / "user_friends.dat")
    users = {r[0] for r in plays} | {u for r in friends for u in r} | {r[0] for r in tagged}
    return {
        "artists": artists,
        "likes": len({(r[0], r[1], r[5], r[4]) for r in kept}),
        "missing": len(missing),
        "early": len(early),
        "snapshot": datetime(last[0] + last[1] // 12, last[1] % 12 + 1, 1, tzinfo=UTC),
        "genres": genres,
        "plays": plays,
        "friends": len(friends),
        "users": users,
    }


def test_hetrec_counts(hetrec, hetrec_raw):
    report, data = hetrec
    raw = hetrec_raw
    assert report.read == {
        "artists.dat": 17_632,
        "tags.dat": 11_946,
        "user_artists.dat": 92_834,
        "user_friends.dat": 25_434,
        "user_taggedartists.dat": 186_479,
    }
    assert report.kinds == {"play": 92_834, "like": raw["likes"]}
    assert raw["likes"] == 84_170
    skipped = report.skipped
    assert skipped["tag rows on artists missing from artists.dat"] == raw["missing"] == 1_538
    assert skipped["tag rows dated before 2005"] == raw["early"] == 5
    assert data.events.height == 92_834 + raw["likes"]
    assert data.follows.height == raw["friends"] == 25_434
    assert data.tracks.height == len(raw["artists"]) == 17_632
    assert set(data.users[s.USER_ID]) == raw["users"] and data.users.height == 1_892
    assert report.written == {"events": data.events.height, "tracks": 17_632, "users": 1_892,
                              "follows": 25_434}


def test_hetrec_values(hetrec, hetrec_raw):
    _, data = hetrec
    raw = hetrec_raw
    plays = data.events.filter(pl.col(s.KIND) == "play")
    assert raw["snapshot"] == datetime(2011, 6, 1, tzinfo=UTC)  # latest tags: May 2011
    assert plays[s.TS].unique().to_list() == [raw["snapshot"]]
    assert plays[s.MS_PLAYED].null_count() == plays.height
    weights = {(u, a): int(w) for u, a, w in raw["plays"]}
    got = {(u, t): c for u, t, c in plays.select(s.USER_ID, s.TRACK_ID, s.COUNT).iter_rows()}
    assert got == weights
    like = data.events.filter((pl.col(s.USER_ID) == "2") & (pl.col(s.TRACK_ID) == "52")
                              & (pl.col(s.KIND) == "like"))
    assert like.select(s.TS, s.COUNT).rows() == [(datetime(2009, 4, 1, tzinfo=UTC), 1)]
    assert data.events.filter(pl.col(s.KIND) == "like")[s.TS].min() >= datetime(2005, 1, 1,
                                                                                  tzinfo=UTC)

    tracks = _rows(data.tracks)
    genres = {t: r[s.GENRE] for t, r in tracks.items() if r[s.GENRE] is not None}
    assert genres == raw["genres"]  # every artist's genre, ties to the lower tag id included
    assert tracks["289"][s.TITLE] == "Britney Spears" and tracks["289"][s.GENRE] == "pop"
    weird = tracks["1686"]
    assert weird[s.TITLE] == '"Weird Al" Yankovic' and weird[s.GENRE] == "comedy"
    assert weird[s.CREATOR_ID] == "artist:1686"
    assert tracks["1583"][s.TITLE] == "Баста"  # UTF-8 artists.dat


def _write(path: Path, lines: list[str], encoding: str = "utf-8", eol: str = "\r\n") -> None:
    path.write_bytes("".join(line + eol for line in lines).encode(encoding))


def test_hetrec_small_rules(tmp_path):
    """Latin-1 tags, CRLF, ties to the lower tag id, skipped rows and the derived date."""
    src = tmp_path / "src"
    src.mkdir()
    _write(src / "artists.dat", ["id\tname\turl\tpictureURL", '1\tThe "Band"\tu\tp', "2\tB\tu\t"],
           eol="\n")
    _write(src / "tags.dat", ["tagID\ttagValue", "5\tfußball", "9\trock", "3\tpop"], "latin-1")
    _write(src / "user_artists.dat", ["userID\tartistID\tweight", "10\t1\t7", "11\t2\t0"])
    _write(src / "user_friends.dat", ["userID\tfriendID", "10\t12", "12\t10"])
    _write(src / "user_taggedartists.dat", [
        "userID\tartistID\ttagID\tday\tmonth\tyear",
        "10\t1\t9\t1\t3\t2009", "10\t1\t5\t1\t3\t2009", "11\t1\t9\t1\t2\t2010",
        "11\t1\t5\t1\t2\t2010",  # artist 1: 2 users on 5 and on 9 -> tag 5 (lower id)
        "13\t2\t3\t1\t12\t2010",  # the latest month: December 2010
        "10\t2\t9\t1\t1\t1956", "11\t2\t9\t1\t1\t1957",  # before 2005: else rock would win
        "10\t99\t9\t1\t6\t2010",  # unknown artist
    ])
    report = import_dataset("lastfm-hetrec", src, tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    tracks = _rows(data.tracks)
    assert tracks["1"][s.GENRE] == "fußball" and tracks["1"][s.TITLE] == 'The "Band"'
    assert tracks["2"][s.GENRE] == "pop"
    assert report.skipped["tag rows dated before 2005"] == 2
    assert report.skipped["tag rows on artists missing from artists.dat"] == 1
    assert report.kinds == {"play": 2, "like": 3}
    plays = data.events.filter(pl.col(s.KIND) == "play")
    assert plays[s.TS].unique().to_list() == [datetime(2011, 1, 1, tzinfo=UTC)]
    assert sorted(data.users[s.USER_ID]) == ["10", "11", "12", "13"]
    assert any("2011-01-01T00:00:00Z" in line for line in report.lines())


# --- MovieLens ml-latest-small ---------------------------------------------------------------


def test_movielens(movielens):
    report, data = movielens
    with (MOVIELENS / "ratings.csv").open(newline="") as f:
        ratings = list(csv.DictReader(f))
    with (MOVIELENS / "movies.csv").open(encoding="utf-8", newline="") as f:
        movies = {r["movieId"]: r for r in csv.DictReader(f)}
    kinds = Counter(
        "like" if float(r["rating"]) >= 4 else "skip" if float(r["rating"]) <= 2 else "play"
        for r in ratings
    )
    assert report.kinds == dict(kinds)
    assert report.read == {"movies.csv": 9_742, "ratings.csv": 100_836}
    assert data.tracks.height == len(movies) == 9_742
    assert data.users.height == len({r["userId"] for r in ratings}) == 610
    assert data.follows.height == 0
    assert not any(report.skipped.values())

    tracks = _rows(data.tracks)
    assert tracks["1"][s.GENRE] == "Adventure"  # Adventure|Animation|Children|Comedy|Fantasy
    assert tracks["11"][s.TITLE] == "American President, The (1995)"
    assert all(tracks[m][s.TITLE] == r["title"] for m, r in movies.items())
    no_genre = {m for m, r in movies.items() if r["genres"] == "(no genres listed)"}
    assert {t for t, r in tracks.items() if r[s.GENRE] is None} == no_genre
    assert len(no_genre) == 34
    assert data.tracks[s.CREATOR_ID].null_count() == 9_742

    first = ratings[0]  # user 1, movie 1, 4.0 -> like
    row = data.events.filter((pl.col(s.USER_ID) == first["userId"])
                             & (pl.col(s.TRACK_ID) == first["movieId"]))
    when = datetime.fromtimestamp(int(first["timestamp"]), tz=UTC)
    assert row.select(s.KIND, s.TS, s.COUNT).rows() == [("like", when, 1)]


# --- Last.fm 1K ------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).lower().split())


def _key(artist: str, track: str) -> str:
    def esc(x: str) -> str:
        return _norm(x).replace("\\", "\\\\").replace("|", "\\|")

    return f"name:{esc(artist)}|{esc(track)}"


def test_lastfm1k(lastfm1k):
    report, data = lastfm1k
    lines = (LASTFM_1K / LOG).read_text(encoding="utf-8").splitlines()
    good = []
    for line in lines:
        fields = line.split("\t")
        try:
            datetime.strptime(fields[1], "%Y-%m-%dT%H:%M:%SZ")
        except (IndexError, ValueError):
            continue
        if len(fields) == 6:
            good.append(fields)
    assert len(lines) == len(good) == 5_000  # the sample holds no malformed line
    assert report.bad_lines == [] and report.kinds == {"play": 5_000}
    assert report.read == {LOG: 5_000, "userid-profile.tsv": 992}

    profile = [r[0] for r in _tsv(LASTFM_1K / "userid-profile.tsv")]
    extra = {f[0] for f in good} - set(profile)
    assert data.users.height == len(profile) + len(extra) == 992
    tracks = {f[4] or _key(f[3], f[5]) for f in good}
    assert data.tracks.height == len(tracks) == 1_192
    assert data.events[s.MS_PLAYED].null_count() == 5_000

    quoted = [f for f in good if '"' in f[3]]
    assert [f[3] for f in quoted] == ['Johnny "Hammond" Smith']
    user, ts, artist_mbid, _, track_mbid, title = quoted[0]
    row = data.tracks.filter(pl.col(s.TRACK_ID) == track_mbid)
    assert row.select(s.TITLE, s.CREATOR_ID).rows() == [(title, f"artist:{artist_mbid}")]
    when = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    event = data.events.filter((pl.col(s.TRACK_ID) == track_mbid) & (pl.col(s.TS) == when))
    assert event[s.USER_ID].to_list() == [user]


def test_lastfm1k_malformed_lines_and_keys(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ok = "2009-05-04T23:08:57Z"
    lines = [
        f'u1\t{ok}\t\tJohnny "Hammond"  Smith\t\t"Quoted" Song',  # 1
        f"u1\t{ok}\t\ta\tb",  # 2: five fields
        "u1\t2009-13-04T23:08:57Z\t\ta\t\tb",  # 3: month 13
        f"u1\t{ok}\t\ta\t\tb\textra",  # 4: seven fields
        "",  # 5: blank
        f"\t{ok}\t\ta\t\tb",  # 6: no user
        f'u2\t{ok}\tmbid-a\tＪＯＨＮＮＹ "Hammond" Smith\t\t"quoted"   song',  # 7: same key
        f"u2\t{ok}\t\ta|b\t\tc",  # 8
        f"u2\t{ok}\t\ta\t\tb|c",  # 9: must not collide with line 8
        f"u3\t{ok}\t\ta\ttrack-mbid\t",  # 10: MBID, no name
    ]
    data = "\n".join(lines).encode() + b"\nu4\t" + ok.encode() + b"\t\t\xff\t\tx\n"  # 11: bad
    (src / LOG).write_bytes(data)
    report = import_dataset("lastfm-1k", src, tmp_path / "out")
    out = read_dataset(tmp_path / "out")

    assert report.bad_lines == [2, 3, 4, 5, 6, 11]
    assert report.skipped_lines == {
        "lines without exactly 6 tab-separated fields": [2, 4, 5],
        "lines with a timestamp that cannot be parsed (expected 2009-05-04T23:08:57Z)": [3],
        "lines with an empty user id": [6],
        "lines that are not valid UTF-8": [11],
    }
    assert report.read == {LOG: 11} and report.kinds == {"play": 5}
    assert any("lines 2, 4, 5" in line for line in report.lines())

    tracks = _rows(out.tracks)
    key = 'name:johnny "hammond" smith|"quoted" song'
    assert set(tracks) == {key, "name:a\\|b|c", "name:a|b\\|c", "track-mbid"}
    assert tracks[key][s.TITLE] == '"Quoted" Song'  # the first spelling seen
    assert tracks[key][s.CREATOR_ID] == 'artist:name:johnny "hammond" smith'
    assert out.events.filter(pl.col(s.TRACK_ID) == key)[s.USER_ID].to_list() == ["u1", "u2"]
    assert tracks["track-mbid"][s.TITLE] is None
    assert out.users[s.USER_ID].to_list() == ["u1", "u2", "u3"]  # no profile: from the log


# --- errors ----------------------------------------------------------------------------------


def test_unknown_format_exits_2(tmp_path):
    dest = tmp_path / "out"
    result = CliRunner().invoke(app, ["import", "spotify", str(tmp_path), str(dest)])
    assert result.exit_code == 2
    assert "lastfm-hetrec, movielens, lastfm-1k" in result.output
    assert not dest.exists()
    with pytest.raises(UsageError, match="movielens"):
        import_dataset("nope", tmp_path, dest)


def test_missing_file_names_it_and_writes_nothing(tmp_path):
    src = tmp_path / "ml"
    src.mkdir()
    (src / "movies.csv").write_text("movieId,title,genres\n1,A (1999),Drama\n")
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=r"ratings\.csv"):
        import_dataset("movielens", src, dest)
    assert not dest.exists()
    result = CliRunner().invoke(app, ["import", "movielens", str(src), str(dest)])
    assert result.exit_code == 3 and "ratings.csv" in result.output
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ml"]


def test_import_never_deletes_what_is_not_its_own(tmp_path):
    src = tmp_path / "ml"
    src.mkdir()
    (src / "movies.csv").write_text("movieId,title,genres\n1,A (1999),Drama\n")
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    dest = tmp_path / "out"
    (dest / "follows").mkdir(parents=True)
    (dest / "tracks.old.parquet").write_text("keep me")
    result = CliRunner().invoke(app, ["import", "movielens", str(src), str(dest)])
    assert result.exit_code == 2
    expected = f"{dest}: holds follows, tracks.old.parquet, which are not dataset tables"
    assert expected in result.output
    assert (dest / "tracks.old.parquet").read_text() == "keep me" and (dest / "follows").is_dir()

    (dest / "follows").rmdir()
    (dest / "tracks.old.parquet").unlink()
    (dest / "tracks.csv").write_text("track_id\nold\n")
    import_dataset("movielens", src, dest)
    assert sorted(p.name for p in dest.iterdir()) == [
        "events.parquet", "follows.parquet", "tracks.parquet", "users.parquet"
    ]
    assert read_dataset(dest).tracks["track_id"].to_list() == ["1"]


def test_unreadable_file_writes_nothing(tmp_path):
    src = tmp_path / "ml"
    src.mkdir()
    (src / "movies.csv").write_text("movieId,title,genres\n1,A (1999),Drama\n")
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,four,964982703\n")
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=r"ratings\.csv.*'rating'"):
        import_dataset("movielens", src, dest)
    assert not dest.exists()
