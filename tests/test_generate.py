"""The synthetic generator: each shape it promises, measured here on a small generated set."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys import schema as s
from recsys.cli import app
from recsys.config import GeneratorConfig
from recsys.errors import UsageError
from recsys.io.dataset import Dataset, read_dataset
from recsys.io.generate import END, generate, generate_tables

USERS, TRACKS, SEED = 500, 1000, 7
CONFIG = GeneratorConfig()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, dict[str, object]]:
    dest = tmp_path_factory.mktemp("generated") / "data"
    summary = generate(dest, users=USERS, tracks=TRACKS, seed=SEED, config=CONFIG)
    return read_dataset(dest), summary


@pytest.fixture(scope="module")
def data(written: tuple[Dataset, dict[str, object]]) -> Dataset:
    return written[0]


@pytest.fixture(scope="module")
def plays(data: Dataset) -> pl.DataFrame:
    """Plays with their track's genre, creator and release."""
    return data.events.filter(pl.col(s.KIND) == s.PLAY).join(data.tracks, on=s.TRACK_ID)


def zipf_fit(counts: np.ndarray, skip_top: int) -> float:
    """Minus the slope of the least-squares line through (log rank, log plays).

    Under Zipf's law plays at rank r are proportional to r^-a, a straight line of slope -a on
    log-log axes. The super nodes (the top ranks) are left out, their plays being set by their
    reach; so are ranks with fewer than 10 plays, where Poisson noise and ties bend the line.
    """
    ranked = np.sort(counts)[::-1].astype(float)
    rank = np.arange(1, ranked.size + 1)
    fit = (rank > skip_top) & (ranked >= 10)
    assert fit.sum() > 100, "too few ranks to fit"
    return -np.polyfit(np.log(rank[fit]), np.log(ranked[fit]), 1)[0]


def plays_per_track(events: pl.DataFrame) -> np.ndarray:
    return events.filter(pl.col(s.KIND) == s.PLAY).group_by(s.TRACK_ID).len()["len"].to_numpy()


def test_output_reads_back_with_the_normalized_columns(written):
    data, summary = written
    for table, columns in s.TABLE_COLUMNS.items():
        assert data.table(table).schema == pl.Schema(columns), table
    assert data.duplicates_dropped == 0
    assert summary["events"] == data.events.height > 20 * USERS
    assert (summary["tracks"], summary["users"]) == (TRACKS, USERS)
    assert summary["follows"] == data.follows.height
    assert data.users[s.USER_ID].n_unique() == USERS
    assert data.users[s.NAME].null_count() == 0
    assert data.tracks[s.TITLE].null_count() == 0


def test_events_have_the_four_kinds_and_count_one(data):
    kinds = set(data.events[s.KIND].cast(pl.String).unique())
    assert kinds == set(s.EVENT_KINDS)
    assert (data.events[s.COUNT] == 1).all()


def test_popularity_follows_zipf_at_the_configured_exponent(data):
    fitted = zipf_fit(plays_per_track(data.events), CONFIG.super_nodes)
    assert fitted == pytest.approx(CONFIG.popularity_exponent, abs=0.1)


def test_a_steeper_exponent_gives_a_steeper_curve():
    config = CONFIG.model_copy(update={"popularity_exponent": 1.3})
    tables = generate_tables(users=USERS, tracks=TRACKS, seed=SEED, config=config)
    assert zipf_fit(plays_per_track(tables[s.EVENTS]), config.super_nodes) == pytest.approx(
        1.3, abs=0.1)


def test_super_nodes_reach_the_configured_share_of_users(plays):
    reach = (plays.group_by(s.TRACK_ID).agg(pl.col(s.USER_ID).n_unique() / USERS)
             .sort(s.USER_ID, descending=True)[s.USER_ID])
    super_reach = reach.head(CONFIG.super_nodes)
    assert super_reach.mean() == pytest.approx(CONFIG.super_node_reach, abs=0.04)
    assert super_reach.min() > CONFIG.super_node_reach - 0.08
    # The next most-reached track, the top of the ordinary head, reaches clearly fewer.
    assert reach[CONFIG.super_nodes] < CONFIG.super_node_reach - 0.05


def test_users_mostly_stay_in_their_top_genre(plays):
    per_genre = plays.drop_nulls(s.GENRE).group_by(s.USER_ID, s.GENRE).len()
    share = per_genre.group_by(s.USER_ID).agg(
        pl.col("len").max() / pl.col("len").sum(), pl.col("len").sum().alias("plays"))
    # Users with few plays have a noisy share; the median is over users with 20 or more.
    median = share.filter(pl.col("plays") >= 20)["len"].median()
    assert median == pytest.approx(CONFIG.top_genre_share, abs=0.04)


def test_genres_are_named_and_a_few_tracks_have_none(data):
    genres = data.tracks[s.GENRE]
    assert genres.drop_nulls().n_unique() == CONFIG.genres
    assert {"ambient", "techno"} <= set(genres.drop_nulls())
    assert 0.5 * CONFIG.unknown_genre_share < genres.null_count() / TRACKS < 0.1


def test_creators_are_users_with_several_tracks(data):
    creators = data.tracks[s.CREATOR_ID]
    assert 0 < creators.null_count() < 0.05 * TRACKS
    assert set(creators.drop_nulls()) <= set(data.users[s.USER_ID])
    per_creator = creators.drop_nulls().value_counts()["count"]
    assert per_creator.mean() == pytest.approx(CONFIG.tracks_per_creator, rel=0.15)
    assert (per_creator >= 2).mean() > 0.7


def test_follows_are_biased_toward_popular_creators(data, plays):
    per_creator = plays.group_by(s.CREATOR_ID).len().drop_nulls(s.CREATOR_ID)
    everyone = data.tracks.select(s.CREATOR_ID).drop_nulls().unique().join(
        per_creator, on=s.CREATOR_ID, how="left").fill_null(0)
    followed = data.follows.join(everyone, left_on=s.FOLLOWEE_ID, right_on=s.CREATOR_ID)
    # A creator followed at random would have the mean plays of all creators.
    assert followed["len"].mean() > 2 * everyone["len"].mean()
    assert followed.height > 0.5 * data.follows.height


def test_follows_are_dated_unique_and_never_of_oneself(data):
    follows = data.follows
    assert follows.height / USERS == pytest.approx(CONFIG.follows_per_user, rel=0.15)
    assert (follows[s.FOLLOWER_ID] != follows[s.FOLLOWEE_ID]).all()
    assert not follows.select(s.FOLLOWER_ID, s.FOLLOWEE_ID).is_duplicated().any()
    assert follows[s.TS].min() >= END - timedelta(days=CONFIG.days)
    assert follows[s.TS].max() < END


def test_skips_are_short_and_plays_long(data):
    events = data.events.join(data.tracks.select(s.TRACK_ID, s.DURATION_MS), on=s.TRACK_ID)
    skips = events.filter(pl.col(s.KIND) == s.SKIP)[s.MS_PLAYED]
    played = events.filter(pl.col(s.KIND) == s.PLAY)[s.MS_PLAYED]
    assert skips.max() <= 30_000 and skips.median() < 10_000
    assert played.median() > 10 * skips.median()
    listens = events.filter(pl.col(s.KIND).is_in([s.PLAY, s.SKIP]))
    assert listens[s.MS_PLAYED].null_count() == 0
    assert (listens[s.MS_PLAYED] <= listens[s.DURATION_MS]).all()
    reactions = events.filter(pl.col(s.KIND).is_in([s.LIKE, s.REPOST]))
    assert reactions[s.MS_PLAYED].null_count() == reactions.height


def test_skip_like_and_repost_rates_are_the_configured_ones(data):
    kinds = dict(data.events.group_by(s.KIND).len().iter_rows())
    listens = kinds[s.PLAY] + kinds[s.SKIP]
    assert kinds[s.SKIP] / listens == pytest.approx(CONFIG.skip_rate, abs=0.02)
    assert kinds[s.LIKE] / kinds[s.PLAY] == pytest.approx(CONFIG.like_rate, abs=0.01)
    assert kinds[s.REPOST] / kinds[s.PLAY] == pytest.approx(CONFIG.repost_rate, abs=0.004)
    once = data.events.filter(pl.col(s.KIND).is_in([s.LIKE, s.REPOST]))
    assert not once.select(s.USER_ID, s.TRACK_ID, s.KIND).is_duplicated().any()


def test_no_event_before_its_track_is_released(data):
    events = data.events.join(data.tracks.select(s.TRACK_ID, s.CREATED_AT), on=s.TRACK_ID)
    assert events.height == data.events.height
    assert (events[s.TS] >= events[s.CREATED_AT]).all()
    assert events[s.TS].min() >= END - timedelta(days=CONFIG.days)
    assert events[s.TS].max() < END


def test_a_users_listens_follow_each_other_without_overlap(data):
    listens = data.events.filter(pl.col(s.KIND).is_in([s.PLAY, s.SKIP])).sort(s.USER_ID, s.TS)
    ends = pl.col(s.TS) + pl.duration(milliseconds=pl.col(s.MS_PLAYED))
    overlaps = listens.with_columns(ends.shift().over(s.USER_ID).alias("previous_end")).filter(
        pl.col(s.TS) < pl.col("previous_end"))
    assert overlaps.height == 0


def test_activity_is_spread_over_the_span(data):
    start = END - timedelta(days=CONFIG.days)
    quarter = (data.events[s.TS] - start).dt.total_seconds() // (CONFIG.days * 86_400 / 4)
    shares = quarter.value_counts(normalize=True).sort(s.TS)["proportion"]
    assert shares.len() == 4 and shares.min() > 0.1


def test_a_later_window_differs_from_an_earlier_one(plays):
    start = END - timedelta(days=CONFIG.days)
    early = plays.filter(pl.col(s.TS) < start + timedelta(days=28))
    late = plays.filter(pl.col(s.TS) >= END - timedelta(days=28))

    def top(window: pl.DataFrame) -> set[str]:
        counts = window.group_by(s.TRACK_ID).len()
        return set(counts.sort(["len", s.TRACK_ID], descending=[True, False]).head(100)[
            s.TRACK_ID])

    assert len(top(early) & top(late)) < 70
    # Tracks released during the span take a larger share of the later plays.
    def new_share(window: pl.DataFrame) -> float:
        return (window[s.CREATED_AT] >= start).mean()

    assert new_share(late) > new_share(early) + 0.05


def test_the_same_seed_gives_the_same_bytes(tmp_path):
    config = GeneratorConfig(days=30)
    for name in ("a", "b"):
        generate(tmp_path / name, users=200, tracks=300, seed=3, config=config)
    for table in s.TABLE_COLUMNS:
        first = (tmp_path / "a" / f"{table}.parquet").read_bytes()
        assert first == (tmp_path / "b" / f"{table}.parquet").read_bytes(), table


def test_another_seed_gives_other_data():
    config = GeneratorConfig(days=30)
    one = generate_tables(users=200, tracks=300, seed=3, config=config)
    other = generate_tables(users=200, tracks=300, seed=4, config=config)
    for table in (s.EVENTS, s.TRACKS, s.FOLLOWS):
        assert not one[table].equals(other[table]), table


@pytest.mark.parametrize(("users", "tracks"), [(1, 1), (3, 2), (2, 50)])
def test_tiny_sets_are_still_valid(tmp_path, users, tracks):
    generate(tmp_path / "tiny", users=users, tracks=tracks, seed=0, config=CONFIG)
    data = read_dataset(tmp_path / "tiny")
    assert data.users.height == users and data.tracks.height == tracks
    assert data.events.height > 0


def test_no_users_is_a_usage_error():
    with pytest.raises(UsageError, match="at least one user"):
        generate_tables(users=0, tracks=10, seed=0, config=CONFIG)


def test_cli_generate_writes_a_dataset_that_validates(tmp_path):
    dest = tmp_path / "cli"
    runner = CliRunner()
    result = runner.invoke(app, ["generate", str(dest), "--users", "150", "--tracks", "200",
                                 "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "popularity_exponent:" in result.output
    assert read_dataset(dest).users.height == 150
    checked = runner.invoke(app, ["validate", str(dest)])
    assert checked.exit_code == 0, checked.output


def test_generate_never_deletes_what_is_not_its_own(tmp_path):
    dest = tmp_path / "data"
    (dest / "users").mkdir(parents=True)
    (dest / "events.2023-backup.csv").write_text("keep me")
    args = ["generate", str(dest), "--users", "20", "--tracks", "30"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert (f"{dest}: holds events.2023-backup.csv, users, which are not dataset tables; "
            "choose a new or empty folder") in result.output
    assert (dest / "events.2023-backup.csv").read_text() == "keep me"
    assert (dest / "users").is_dir()

    # A folder of dataset files only is rewritten, and a CSV that would clash is removed.
    (dest / "users").rmdir()
    (dest / "events.2023-backup.csv").unlink()
    (dest / "events.csv").write_text("user_id\nold\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dest.iterdir()) == [
        "events.parquet", "follows.parquet", "tracks.parquet", "users.parquet"
    ]
    assert read_dataset(dest).users.height == 20
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary folder left behind
