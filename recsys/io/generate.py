"""A synthetic dataset with the shapes a music recommender must cope with.

The generator draws a latent world and then the public tables that a platform would log about it:

- genres of unequal size, each split into a few latent *scenes* (styles) that no column names;
- creators, who are users, each with several tracks, mostly in their own genre and scene;
- track popularity on a Zipf curve (weight of rank r is r^-exponent), with the head tracks as
  *super nodes* that a large share of all users play whatever their taste;
- users who join or churn during the span, with heavy-tailed activity, a top genre that holds
  most of their plays, a scene inside it, and follows biased toward popular creators;
- listening sessions in the evening more than at night, each a run of plays and skips, with
  likes and reposts on some plays; skips are short and more likely off the user's taste;
- time: tracks released during the span are played only after their release, and each track's
  popularity rises or fades across the span, so a later window differs from an earlier one.

The span ends at a fixed instant (END), so a seed gives the same bytes on every machine.
Everything is vectorized over numpy arrays; polars builds the tables at the end.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys import schema as s
from recsys.config import GeneratorConfig
from recsys.errors import UsageError
from recsys.io.dataset import check_dest, write_dataset

log = logging.getLogger(__name__)

END = datetime(2026, 6, 30, tzinfo=UTC)
SECOND = 1_000_000  # timestamps are microseconds since the epoch
DAY = 86_400 * SECOND

# Genres in the order of their names; a duration factor says how long their tracks run.
GENRES = (
    ("ambient", 1.7), ("techno", 1.5), ("house", 1.4), ("hip hop", 0.95), ("jazz", 1.3),
    ("classical", 1.6), ("rock", 1.0), ("indie", 0.95), ("folk", 0.95), ("drum and bass", 1.2),
    ("dubstep", 1.0), ("soul", 1.0), ("r&b", 0.95), ("pop", 0.85), ("metal", 1.15),
    ("reggae", 1.05), ("trance", 1.5), ("lo-fi", 0.7), ("punk", 0.7), ("disco", 1.2),
    ("afrobeat", 1.3), ("country", 0.95), ("blues", 1.1), ("electro", 1.2),
)
FIRST_NAMES = (
    "Ada", "Aiko", "Amara", "Ana", "Arjun", "Astrid", "Ben", "Bilal", "Camille", "Carlos", "Chen",
    "Dara", "Diego", "Elif", "Emeka", "Emma", "Farah", "Finn", "Grace", "Hana", "Hugo", "Ines",
    "Ivan", "Jade", "Jonas", "Kai", "Kofi", "Lars", "Layla", "Leo", "Lina", "Luca", "Maya",
    "Mateo", "Mei", "Nadia", "Nia", "Noah", "Omar", "Priya", "Rafael", "Rosa", "Sami", "Sara",
    "Sofia", "Tariq", "Theo", "Uma", "Yara", "Yusuf", "Zoe",
)
LAST_NAMES = (
    "Abe", "Adeyemi", "Alvarez", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia",
    "Haddad", "Ito", "Jensen", "Kaur", "Kim", "Kowalski", "Larsen", "Lopez", "Mensah", "Moreau",
    "Nakamura", "Novak", "Okafor", "Olsen", "Park", "Petrov", "Quinn", "Rossi", "Santos",
    "Schmidt", "Silva", "Singh", "Tanaka", "Torres", "Varga", "Wagner", "Weber", "Wong", "Yilmaz",
    "Zhang", "Ziegler",
)
ADJECTIVES = (
    "Amber", "Blue", "Broken", "Crystal", "Distant", "Electric", "Endless", "Fading", "Golden",
    "Hidden", "Hollow", "Lost", "Lunar", "Midnight", "Neon", "Paper", "Quiet", "Restless",
    "Silent", "Silver", "Slow", "Solar", "Static", "Velvet", "Wild", "Winter", "Frozen", "Burning",
    "Early", "Late", "Open", "Secret", "Soft", "Bright", "Deep", "Empty", "Gentle", "Heavy",
    "Last", "Low",
)
NOUNS = (
    "Anthem", "Avenue", "Bloom", "Circuit", "Dawn", "Dream", "Echo", "Fire", "Garden", "Harbor",
    "Horizon", "Island", "Light", "Machine", "Memory", "Mirror", "Motion", "Ocean", "Orbit",
    "Pulse", "Rain", "River", "Road", "Shadow", "Signal", "Sky", "Skyline", "Smoke", "Spiral",
    "Stone", "Storm", "Summer", "Tide", "Valley", "Voice", "Wave", "Window", "Wire", "Wolf",
    "Youth",
)
TITLE_SUFFIXES = ("", "", "", "", "", "", " (Remix)", " (Live)", " (Edit)", " Pt. II")
# Relative chance of a session starting in each hour of the day (UTC).
HOURS = np.array([2.0, 1.2, 0.7, 0.5, 0.4, 0.5, 0.9, 1.5, 2.2, 2.5, 2.6, 2.8,
                  3.0, 3.0, 3.0, 3.2, 3.5, 4.0, 4.6, 5.2, 5.6, 5.4, 4.5, 3.2])

CREATOR_GENRE_LOYALTY = 0.9  # a creator's tracks in their own genre
CREATOR_STYLE_LOYALTY = 0.7  # ... and, of those, in their own scene
CATALOGUE_AGE_DAYS = 400.0  # mean age at the start of the span of tracks released before it
CHURN_SHARE = 0.1  # users who stop listening during the span
FRIEND_FOLLOW_SHARE = 0.15  # follows of a random user rather than a creator
SUPER_REPEATS = 4.0  # at most this many listens of a super node per user it reaches, on average
FAN_SPREAD = 1.5  # sigma of the lognormal that spreads a super node's repeats over its users
SESSION_LISTENS = 8.0  # mean listens per session
# Skip and like odds on and off the user's top genre.
SKIP_ON, SKIP_OFF = 0.6, 2.0
LIKE_ON, LIKE_OFF = 1.5, 0.5
FULL_LISTEN_ON, FULL_LISTEN_OFF = 0.7, 0.45
MIN_PLAY_MS = 30_000  # a play lasts at least this long (or the whole track)
# Rounds of rejection sampling before a listen falls back to a wider pool, and before it is
# dropped (a pool whose tracks were all released after the session).
WIDEN_AFTER, ANYWHERE_AFTER, DROP_AFTER = 12, 24, 40

# Listen sources: where a listen's track is drawn from.
SUPER, FOLLOWED, SCENE, GENRE, ANYWHERE = range(5)
REACHED = 1
PLAY, LIKE, REPOST, SKIP = (s.EVENT_KINDS.index(k) for k in (s.PLAY, s.LIKE, s.REPOST, s.SKIP))


def generate(
    dest: str | Path, *, users: int, tracks: int, seed: int, config: GeneratorConfig
) -> dict[str, object]:
    """Write a synthetic dataset into `dest` and return what it made, measured on the tables."""
    check_dest(dest)  # before the generating, which can take a while
    started = time.perf_counter()
    tables = generate_tables(users=users, tracks=tracks, seed=seed, config=config)
    write_dataset(tables, dest)
    seconds = time.perf_counter() - started

    summary = measure(tables, super_nodes=config.super_nodes)
    summary["seconds"] = round(seconds, 2)
    summary["events_per_second"] = round(tables[s.EVENTS].height / max(seconds, 1e-9))
    log.info("generate: %s events, %s tracks, %s users in %.1f s into %s",
             f"{tables[s.EVENTS].height:,}", f"{tracks:,}", f"{users:,}", seconds, dest)
    return summary


def generate_tables(
    *, users: int, tracks: int, seed: int, config: GeneratorConfig
) -> dict[str, pl.DataFrame]:
    """The four tables of a synthetic dataset, in their normalized columns and types."""
    if users < 1 or tracks < 1:
        raise UsageError(f"generate needs at least one user and one track (seen: users={users}, "
                         f"tracks={tracks})")
    rng = np.random.default_rng(seed)
    span = _Span(end=_micros(END), days=config.days)

    # The latent world: genres, people, the catalogue, tastes and the follow graph.
    genres = _genres(rng, config.genres)
    people = _people(rng, users, span, config)
    catalog = _catalog(rng, tracks, people, genres, span, config)
    _tastes(rng, people, catalog, config)
    follows = _follows(rng, people, catalog, span, config)

    # The log, made into a table at once so that its arrays are freed early.
    user_ids, track_ids = _ids("u", users), _ids("t", tracks)
    return {
        s.EVENTS: _events_frame(_listening_log(rng, people, catalog, follows, span, config),
                                user_ids, track_ids),
        s.TRACKS: _tracks_frame(rng, catalog, genres, user_ids, track_ids, config),
        s.USERS: _users_frame(rng, people, catalog, user_ids),
        s.FOLLOWS: _follows_frame(follows, user_ids),
    }


# --- the latent world -----------------------------------------------------------------------


@dataclass
class _Span:
    end: int
    days: int

    @property
    def length(self) -> int:
        return self.days * DAY

    @property
    def start(self) -> int:
        return self.end - self.length


@dataclass
class _Genres:
    names: list[str]
    size: np.ndarray  # relative number of creators per genre
    duration_factor: np.ndarray


@dataclass
class _People:
    join: np.ndarray
    leave: np.ndarray
    activity: np.ndarray  # relative listens
    top_genre: np.ndarray | None = None
    top_style: np.ndarray | None = None

    @property
    def count(self) -> int:
        return len(self.join)


@dataclass
class _Catalog:
    styles: int
    creator_user: np.ndarray  # per creator: the user they are
    creator_genre: np.ndarray
    creator_style: np.ndarray
    track_creator: np.ndarray  # per track: the creator index
    genre: np.ndarray
    style: np.ndarray
    weight: np.ndarray  # Zipf weight of the track's popularity rank
    regular: np.ndarray  # the weight with super nodes at zero: what taste-led listens draw from
    super_tracks: np.ndarray
    created: np.ndarray
    drift: np.ndarray  # -1..1: popularity fading (<0) or rising (>0) across the span
    duration_ms: np.ndarray
    quality: np.ndarray  # makes likes likelier and skips rarer

    @property
    def cluster(self) -> np.ndarray:
        return self.genre * self.styles + self.style


@dataclass
class _Follows:
    follower: np.ndarray
    followee: np.ndarray
    ts: np.ndarray
    # The followed creators, grouped by follower: creators[start[u] : start[u] + count[u]].
    creators: np.ndarray
    start: np.ndarray
    count: np.ndarray


@dataclass
class _Listens:
    user: np.ndarray
    source: np.ndarray
    # The scene or genre a taste-led listen draws from. On a super node's listens, REACHED marks
    # each user's first, which is never a skip: reaching a user means being played by them.
    group: np.ndarray
    track: np.ndarray  # -1 until drawn
    session: np.ndarray | None = None
    skip: np.ndarray | None = None
    ms_played: np.ndarray | None = None
    ts: np.ndarray | None = None
    on_taste: np.ndarray | None = None

    def keep(self, mask: np.ndarray) -> None:
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray):
                setattr(self, name, value[mask])


def _genres(rng: np.random.Generator, count: int) -> _Genres:
    known = dict(GENRES)
    names = [GENRES[i][0] if i < len(GENRES) else f"genre {i + 1}" for i in range(count)]
    size = rng.permutation(np.arange(1, count + 1) ** -0.7)
    factor = np.array([known.get(name, 1.0) for name in names])
    return _Genres(names, size, factor)


def _people(rng: np.random.Generator, count: int, span: _Span, config: GeneratorConfig) -> _People:
    joins_late = rng.random(count) < config.new_user_share
    late = np.where(joins_late, rng.random(count) * 0.9 * span.length, 0)
    join = span.start + late.astype(np.int64)
    churns = rng.random(count) < CHURN_SHARE
    stay = np.where(churns, 0.25 + 0.75 * rng.random(count), 1.0)
    leave = join + (stay * (span.end - join)).astype(np.int64)
    activity = rng.lognormal(0.0, 1.0, count) * (leave - join) / span.length
    return _People(join, leave, activity)


def _catalog(
    rng: np.random.Generator, count: int, people: _People, genres: _Genres, span: _Span,
    config: GeneratorConfig,
) -> _Catalog:
    creators = min(people.count, max(1, round(count / config.tracks_per_creator)))
    creator_user = rng.choice(people.count, creators, replace=False)
    creator_genre = _pick(rng, genres.size, creators)
    creator_style = rng.integers(0, config.styles_per_genre, creators)
    fame = rng.normal(0.0, 1.0, creators)

    # Every creator has a track; the rest go to prolific creators more than to others.
    productivity = rng.lognormal(0.0, 0.8, creators)
    extra = np.bincount(_pick(rng, productivity, count - creators), minlength=creators)
    track_creator = rng.permutation(np.repeat(np.arange(creators), 1 + extra))

    own_genre = rng.random(count) < CREATOR_GENRE_LOYALTY
    genre = np.where(own_genre, creator_genre[track_creator], _pick(rng, genres.size, count))
    own_style = own_genre & (rng.random(count) < CREATOR_STYLE_LOYALTY)
    style = np.where(own_style, creator_style[track_creator],
                     rng.integers(0, config.styles_per_genre, count))

    # Popularity ranks follow the creator's fame with noise; weight of rank r is r^-exponent.
    score = fame[track_creator] + rng.normal(0.0, 1.0, count)
    by_rank = np.argsort(-score, kind="stable")
    rank = np.empty(count, dtype=np.int64)
    rank[by_rank] = np.arange(1, count + 1)
    weight = rank.astype(np.float64) ** -config.popularity_exponent
    super_tracks = by_rank[: min(config.super_nodes, count // 2)]
    regular = weight.copy()
    regular[super_tracks] = 0.0

    created, drift = _release(rng, count, super_tracks, span, config)
    seconds = rng.lognormal(math.log(215.0), 0.3, count) * genres.duration_factor[genre]
    duration_ms = (np.clip(seconds, 40.0, 1200.0) * 1000).astype(np.int64)
    return _Catalog(
        styles=config.styles_per_genre, creator_user=creator_user, creator_genre=creator_genre,
        creator_style=creator_style, track_creator=track_creator, genre=genre, style=style,
        weight=weight, regular=regular, super_tracks=super_tracks, created=created, drift=drift,
        duration_ms=duration_ms, quality=rng.normal(0.0, 1.0, count),
    )


def _release(
    rng: np.random.Generator, count: int, super_tracks: np.ndarray, span: _Span,
    config: GeneratorConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Release times (whole seconds) and popularity drifts; super nodes are old and steady."""
    new = rng.random(count) < config.new_track_share
    new[super_tracks] = False
    latest = span.length - min(7 * DAY, span.length // 10)
    age = np.minimum(rng.exponential(CATALOGUE_AGE_DAYS, count), 15 * 365) * DAY + DAY
    created = np.where(new, span.start + rng.random(count) * latest, span.start - age)
    drift = rng.uniform(-config.popularity_drift, config.popularity_drift, count)
    drift[super_tracks] = 0.0
    return created.astype(np.int64) // SECOND * SECOND, drift


def _tastes(
    rng: np.random.Generator, people: _People, catalog: _Catalog, config: GeneratorConfig
) -> None:
    """Each user's top genre and scene, drawn in proportion to how much they are played.

    Drawing the top genre in proportion to the genre's total weight keeps every track's
    expected share of the listens at its Zipf weight, whatever the genres.
    """
    genres, styles = config.genres, config.styles_per_genre
    by_cluster = np.bincount(catalog.cluster, catalog.regular, minlength=genres * styles)
    people.top_genre = _pick(rng, by_cluster.reshape(-1, styles).sum(axis=1), people.count)
    scenes = _Pool(np.repeat(np.arange(genres), styles), by_cluster, genres)
    people.top_style = scenes.draw(rng, people.top_genre) - people.top_genre * styles


def _follows(
    rng: np.random.Generator, people: _People, catalog: _Catalog, span: _Span,
    config: GeneratorConfig,
) -> _Follows:
    """Follows of popular creators in the user's genre mostly, and of a few random users."""
    wanted = rng.poisson(config.follows_per_user * rng.gamma(1.5, 1 / 1.5, people.count))
    follower = np.repeat(np.arange(people.count), 2 * wanted + 2)

    # A creator in the user's top genre (or any genre), in proportion to popularity.
    popularity = np.bincount(catalog.track_creator, catalog.weight)
    by_genre = _Pool(catalog.creator_genre, popularity, config.genres)
    genre = np.where(rng.random(follower.size) < config.top_genre_share,
                     people.top_genre[follower], _pick(rng, by_genre.total, follower.size))
    genre = np.where(by_genre.total[genre] > 0, genre, _pick(rng, by_genre.total, follower.size))
    creator_user = catalog.creator_user[by_genre.draw(rng, genre)]
    friend = rng.random(follower.size) < FRIEND_FOLLOW_SHARE
    followee = np.where(friend, rng.integers(0, people.count, follower.size), creator_user)

    # Candidates are drawn twice over: drop self-follows and repeats, keep each user's first.
    keep = _first_of_pairs(follower, followee)
    keep = keep[follower[keep] != followee[keep]]
    keep = keep[_rank_within(follower[keep]) < wanted[follower[keep]]]
    follower, followee = follower[keep], followee[keep]
    since = people.join[follower]
    ts = since + (rng.random(follower.size) * (span.end - SECOND - since)).astype(np.int64)
    followed = _followed_creators(people, catalog, follower, followee)
    return _Follows(follower, followee, ts, *followed)


def _followed_creators(
    people: _People, catalog: _Catalog, follower: np.ndarray, followee: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    creator_of = np.full(people.count, -1)
    creator_of[catalog.creator_user] = np.arange(catalog.creator_user.size)
    creator = creator_of[followee]
    is_creator = creator >= 0
    count = np.bincount(follower[is_creator], minlength=people.count)
    return creator[is_creator], np.cumsum(count) - count, count


# --- the log ----------------------------------------------------------------------------------


def _listening_log(
    rng: np.random.Generator, people: _People, catalog: _Catalog, follows: _Follows,
    span: _Span, config: GeneratorConfig,
) -> _Events:
    """Who listens to what, when, and how each listen went."""
    listens = _plan_listens(rng, people, catalog, follows, config)
    sessions = _sessions(rng, listens, people, span)
    _draw_tracks(rng, listens, sessions, people, catalog, follows, span, config)
    _outcomes(rng, listens, people, catalog, config)
    _timestamps(rng, listens, sessions)
    return _events(rng, listens, catalog, span, config)


def _plan_listens(
    rng: np.random.Generator, people: _People, catalog: _Catalog, follows: _Follows,
    config: GeneratorConfig,
) -> _Listens:
    """How many listens each user makes and where each one's track will come from."""
    reactions = (1 - config.skip_rate) * (config.like_rate + config.repost_rate)
    total = people.count * config.events_per_user / (1 + reactions)
    hits = _super_listens(rng, people, catalog, total, config.super_node_reach)

    # The rest spread by activity; everybody listens at least once.
    hit_count = np.bincount(hits.user, minlength=people.count)
    rest = max(0.0, total - hits.user.size) * people.activity / people.activity.sum()
    regular = rng.poisson(rest)
    regular[(regular + hit_count) == 0] = 1
    followed = np.where(follows.count > 0, rng.binomial(regular, config.follow_play_share), 0)
    led = regular - followed

    in_top = _top_genre_chance(people, catalog, follows, hits, hit_count + regular, followed, led,
                               config)
    return _concat(hits, _followed_listens(followed),
                   _taste_listens(rng, people, catalog, led, in_top, config))


def _super_listens(
    rng: np.random.Generator, people: _People, catalog: _Catalog, total: float, reach: float
) -> _Listens:
    """Each super node reaches a share of all users, who play it a few times on average.

    A super node's listens follow its Zipf rank up to SUPER_REPEATS per user reached: past
    that, the head of a small catalogue would take so much of every user's time that nobody
    could keep to their genre. Most users reached play it a few times; a few fans, many.
    """
    users, tracks = [], []
    for track in catalog.super_tracks:
        reached = np.flatnonzero(rng.random(people.count) < reach)
        if not reached.size:
            continue
        zipf_share = total * catalog.weight[track] / catalog.weight.sum()
        wanted = round(min(zipf_share, SUPER_REPEATS * reached.size))
        fans = people.activity[reached] * rng.lognormal(0.0, FAN_SPREAD, reached.size)
        extra = _pick(rng, fans, max(0, wanted - reached.size))
        times = 1 + np.bincount(extra, minlength=reached.size)
        users.append(np.repeat(reached, times))
        tracks.append(np.full(times.sum(), track))
    user = np.concatenate(users) if users else np.zeros(0, dtype=np.int64)
    track = np.concatenate(tracks) if tracks else np.zeros(0, dtype=np.int64)
    first = np.r_[True, (user[1:] != user[:-1]) | (track[1:] != track[:-1])][: user.size]
    return _Listens(user, np.full(user.size, SUPER), np.where(first, REACHED, -1), track)


def _top_genre_chance(
    people: _People, catalog: _Catalog, follows: _Follows, hits: _Listens, listens: np.ndarray,
    followed: np.ndarray, led: np.ndarray, config: GeneratorConfig,
) -> np.ndarray:
    """Per user, the chance that a taste-led listen is in the top genre.

    Chosen so that the expected share of the user's plays in the top genre is the configured
    one, counting the super-node and followed-creator listens the user already has and the
    skips that fall more often off the top genre.
    """
    target = _listen_share(config)
    hit_top = np.bincount(hits.user, catalog.genre[hits.track] == people.top_genre[hits.user],
                          minlength=people.count)
    owner = np.repeat(np.arange(people.count), follows.count)
    same = catalog.creator_genre[follows.creators] == people.top_genre[owner]
    followed_top = np.bincount(owner, same, minlength=people.count) / np.maximum(follows.count, 1)
    expected = target * listens - hit_top - followed * CREATOR_GENRE_LOYALTY * followed_top
    return np.clip(expected / np.maximum(led, 1), 0.0, 1.0)


def _listen_share(config: GeneratorConfig) -> float:
    """The top-genre share of listens that leaves the configured share of plays after skips."""
    want = share = config.top_genre_share
    for _ in range(10):
        base = config.skip_rate / (share * SKIP_ON + (1 - share) * SKIP_OFF)
        kept_on, kept_off = 1 - min(0.95, base * SKIP_ON), 1 - min(0.95, base * SKIP_OFF)
        share = want * kept_off / (want * kept_off + (1 - want) * kept_on)
    return share


def _followed_listens(followed: np.ndarray) -> _Listens:
    user = np.repeat(np.arange(followed.size), followed)
    return _Listens(user, np.full(user.size, FOLLOWED), np.full(user.size, -1),
                    np.full(user.size, -1))


def _taste_listens(
    rng: np.random.Generator, people: _People, catalog: _Catalog, led: np.ndarray,
    in_top: np.ndarray, config: GeneratorConfig,
) -> _Listens:
    """Listens in the user's scene, elsewhere in their top genre, or in another genre."""
    user = np.repeat(np.arange(led.size), led)
    top = rng.random(user.size) < in_top[user]
    scene = top & (rng.random(user.size) < config.style_focus)
    genre_weight = np.bincount(catalog.genre, catalog.regular, minlength=config.genres)
    other = _pick_except(rng, genre_weight, people.top_genre[user])
    genre = np.where(top, people.top_genre[user], other)
    cluster = people.top_genre[user] * catalog.styles + people.top_style[user]
    group = np.where(scene, cluster, genre)
    return _Listens(user, np.where(scene, SCENE, GENRE), group, np.full(user.size, -1))


@dataclass
class _Sessions:
    user: np.ndarray
    start: np.ndarray


def _sessions(
    rng: np.random.Generator, listens: _Listens, people: _People, span: _Span
) -> _Sessions:
    """Listening sessions, mostly in the evening, within each user's active time."""
    per_user = np.bincount(listens.user, minlength=people.count)
    count = np.ceil(per_user / SESSION_LISTENS).astype(np.int64)
    first = np.cumsum(count) - count
    local = (rng.random(listens.user.size) * count[listens.user]).astype(np.int64)
    listens.session = (first[listens.user] + local).astype(np.int32)

    owner = np.repeat(np.arange(people.count), count)
    join, room = people.join[owner], np.maximum(people.leave[owner] - people.join[owner]
                                                - 4 * 3600 * SECOND, 0)
    start = join + (rng.random(owner.size) * room).astype(np.int64)
    hour = _pick(rng, HOURS, owner.size)
    evening = (start // DAY * DAY + hour * 3600 * SECOND
               + (rng.random(owner.size) * 3600 * SECOND).astype(np.int64))
    start = np.where((evening >= join) & (evening <= join + room), evening, start)
    return _Sessions(owner, start)


def _draw_tracks(
    rng: np.random.Generator, listens: _Listens, sessions: _Sessions, people: _People,
    catalog: _Catalog, follows: _Follows, span: _Span, config: GeneratorConfig,
) -> None:
    """Draw each listen's track from its pool, by rejection against release and drift.

    A proposed track is accepted with a chance that is zero before its release and otherwise
    moves linearly across the span with the track's drift, so that each track keeps its
    Zipf share on average while the popular tracks of the last weeks differ from the first.
    """
    genres, creators = config.genres, catalog.creator_user.size
    pools = {
        FOLLOWED: _Pool(catalog.track_creator, catalog.regular, creators),
        SCENE: _Pool(catalog.cluster, catalog.regular, genres * catalog.styles),
        GENRE: _Pool(catalog.genre, catalog.regular, genres),
        ANYWHERE: _Pool(np.zeros_like(catalog.genre), catalog.regular, 1),
    }
    pending = np.flatnonzero(listens.track < 0)
    for round_ in range(DROP_AFTER):
        if not pending.size:
            break
        _widen(listens, pending, people, round_)
        proposal = _propose(rng, listens, pending, follows, pools)
        at = sessions.start[listens.session[pending]]
        accepted = (proposal >= 0) & (rng.random(pending.size)
                                      < _acceptance(catalog, proposal, at, span, config))
        listens.track[pending[accepted]] = proposal[accepted]
        pending = pending[~accepted]
    if pending.size:
        log.debug("generate: %s listens found no released track and were dropped", pending.size)
    listens.keep(listens.track >= 0)


def _widen(listens: _Listens, pending: np.ndarray, people: _People, round_: int) -> None:
    """After many rejections, a listen draws from its top genre, then from everything."""
    if round_ == WIDEN_AFTER:
        narrow = np.isin(listens.source[pending], (FOLLOWED, SCENE))
        moved = pending[narrow]
        listens.source[moved] = GENRE
        listens.group[moved] = people.top_genre[listens.user[moved]]
    if round_ == ANYWHERE_AFTER:
        listens.source[pending] = ANYWHERE
        listens.group[pending] = 0


def _propose(
    rng: np.random.Generator, listens: _Listens, pending: np.ndarray, follows: _Follows,
    pools: dict[int, _Pool],
) -> np.ndarray:
    proposal = np.full(pending.size, -1)
    source = listens.source[pending]
    for kind, pool in pools.items():
        at = np.flatnonzero(source == kind)
        if not at.size:
            continue
        group = listens.group[pending[at]]
        if kind == FOLLOWED:
            user = listens.user[pending[at]]
            pick = follows.start[user] + (rng.random(at.size) * follows.count[user]).astype(int)
            group = follows.creators[pick]
        proposal[at] = pool.draw(rng, group)
    return proposal


def _acceptance(
    catalog: _Catalog, track: np.ndarray, at: np.ndarray, span: _Span, config: GeneratorConfig
) -> np.ndarray:
    progress = (at - span.start) / span.length
    chance = (1 + catalog.drift[track] * (2 * progress - 1)) / (1 + config.popularity_drift)
    return np.where(at >= catalog.created[track], chance, 0.0)


def _outcomes(
    rng: np.random.Generator, listens: _Listens, people: _People, catalog: _Catalog,
    config: GeneratorConfig,
) -> None:
    """Play or skip, and how long: skips last seconds, plays most or all of the track."""
    on = catalog.genre[listens.track] == people.top_genre[listens.user]
    listens.on_taste = on
    odds = np.where(listens.source == SUPER, 1.0, np.where(on, SKIP_ON, SKIP_OFF))
    odds = odds * np.exp(-0.5 * catalog.quality[listens.track])
    odds[(listens.source == SUPER) & (listens.group == REACHED)] = 0.0
    listens.skip = rng.random(on.size) < np.minimum(0.95, config.skip_rate * odds / odds.mean())

    duration = catalog.duration_ms[listens.track]
    skipped = np.clip(rng.lognormal(math.log(6000.0), 0.7, on.size), 1000, 30000)
    full = rng.random(on.size) < np.where(on, FULL_LISTEN_ON, FULL_LISTEN_OFF)
    part = np.where(full, 1.0, rng.uniform(0.3, 1.0, on.size)) * duration
    played = np.maximum(part, np.minimum(MIN_PLAY_MS, duration))
    listens.ms_played = np.minimum(np.where(listens.skip, skipped, played), duration).astype(
        np.int64)


def _timestamps(rng: np.random.Generator, listens: _Listens, sessions: _Sessions) -> None:
    """Listens of a session follow each other, each after the previous one's listening time.

    A session that would overlap the user's previous one starts when that one ends, so that
    a user's log is one sequence. Starting later never puts a listen before its release.
    """
    listens.keep(_argsort(listens.session, rng.random(listens.user.size)))
    step = listens.ms_played * 1000 + rng.integers(200_000, 20 * SECOND, listens.user.size)
    before = np.cumsum(step) - step
    first = np.r_[True, listens.session[1:] != listens.session[:-1]]
    session_first = np.maximum.accumulate(np.where(first, np.arange(first.size), 0))
    length = np.bincount(listens.session, step, minlength=sessions.start.size).astype(np.int64)
    start = _one_after_another(sessions.user, sessions.start, length)
    listens.ts = start[listens.session] + before - before[session_first]


def _one_after_another(user: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Session starts moved later where needed so that none overlaps the user's previous one.

    In start order, start'[s] = max(start[s], start'[s-1] + length[s-1]), which unrolls to
    D[s] + max over k <= s of (start[k] - D[k]), D being the user's lengths summed before s.
    """
    frame = pl.DataFrame({"user": user, "start": start, "length": length}).with_row_index()
    frame = frame.sort("user", "start", maintain_order=True).with_columns(
        before=(pl.col("length").cum_sum() - pl.col("length")).over("user"))
    moved = frame.select(
        "index", (pl.col("before") + (pl.col("start") - pl.col("before")).cum_max().over("user"))
        .alias("start"))
    result = np.empty_like(start)
    result[moved["index"].to_numpy()] = moved["start"].to_numpy()
    return result


@dataclass
class _Events:
    user: np.ndarray
    track: np.ndarray
    kind: np.ndarray
    ts: np.ndarray
    ms_played: np.ndarray  # -1 where the kind has no listening time


def _events(
    rng: np.random.Generator, listens: _Listens, catalog: _Catalog, span: _Span,
    config: GeneratorConfig,
) -> _Events:
    """Plays and skips, and likes and reposts on some plays, in time order within the span."""
    plays = np.flatnonzero(~listens.skip)
    quality = catalog.quality[listens.track[plays]]
    taste = np.where(listens.on_taste[plays], LIKE_ON, LIKE_OFF)
    pairs = _Pairs.of(listens.user[plays], listens.track[plays])
    like = _react(rng, pairs, taste * np.exp(0.6 * quality), config.like_rate)
    repost = _react(rng, pairs, taste * np.exp(0.8 * quality), config.repost_rate)
    listened = listens.ms_played[plays] * 1000
    like_ts = listens.ts[plays] + (rng.uniform(0.2, 1.0, plays.size) * listened).astype(np.int64)
    repost_ts = listens.ts[plays] + listened + rng.integers(SECOND, 60 * SECOND, plays.size)

    parts = [
        (np.arange(listens.user.size), np.where(listens.skip, SKIP, PLAY).astype(np.int8),
         listens.ts, listens.ms_played),
        (plays[like], np.full(like.size, LIKE, np.int8), like_ts[like], np.full(like.size, -1)),
        (plays[repost], np.full(repost.size, REPOST, np.int8), repost_ts[repost],
         np.full(repost.size, -1)),
    ]
    rows = np.concatenate([p[0] for p in parts])
    events = _Events(listens.user[rows], listens.track[rows],
                     *(np.concatenate([p[i] for p in parts]) for i in (1, 2, 3)))
    inside = np.flatnonzero(events.ts < span.end)
    order = _argsort(*(getattr(events, f)[inside] for f in ("ts", "user", "track", "kind")))
    return _Events(*(getattr(events, f)[inside[order]] for f in vars(events)))


def _react(rng: np.random.Generator, pairs: _Pairs, odds: np.ndarray, rate: float) -> np.ndarray:
    """The plays that get a reaction: at most one per user and track, `rate` per play on average.

    A (user, track) pair reacts with a chance that adds up the odds of its plays, so a track
    played often is likelier to be liked, and the reaction goes on one of those plays.
    """
    if not odds.size:
        return np.zeros(0, dtype=np.int64)
    summed = np.bincount(pairs.pair, odds[pairs.order])
    chance = _capped(rate * summed / odds.mean(), rate * odds.size)
    hit = np.flatnonzero(rng.random(chance.size) < chance)
    at = pairs.first[hit] + (rng.random(hit.size) * pairs.size[hit]).astype(np.int64)
    return pairs.order[at]


# --- tables -----------------------------------------------------------------------------------


def _events_frame(events: _Events, user_ids: pl.Series, track_ids: pl.Series) -> pl.DataFrame:
    listening = events.ms_played >= 0
    return pl.DataFrame({
        s.USER_ID: user_ids.gather(events.user),
        s.TRACK_ID: track_ids.gather(events.track),
        s.KIND: pl.Series(s.EVENT_KINDS, dtype=s.EVENT_KIND).gather(events.kind),
        s.TS: _datetimes(events.ts),
        s.MS_PLAYED: pl.Series(np.where(listening, events.ms_played, 0)).set(
            pl.Series(~listening), None),
        s.COUNT: pl.repeat(1, events.user.size, dtype=pl.Int64, eager=True),
    })


def _tracks_frame(
    rng: np.random.Generator, catalog: _Catalog, genres: _Genres, user_ids: pl.Series,
    track_ids: pl.Series, config: GeneratorConfig,
) -> pl.DataFrame:
    """The public tracks table: a few genres and creators are unknown (null)."""
    count = track_ids.len()
    no_genre = pl.Series(rng.random(count) < config.unknown_genre_share)
    no_creator = pl.Series(rng.random(count) < config.unknown_creator_share)
    creator = user_ids.gather(catalog.creator_user[catalog.track_creator])
    return pl.DataFrame({
        s.TRACK_ID: track_ids,
        s.TITLE: _titles(rng, count),
        s.CREATOR_ID: creator.set(no_creator, None),
        s.GENRE: pl.Series(genres.names, dtype=pl.String).gather(catalog.genre)
        .set(no_genre, None),
        s.CREATED_AT: _datetimes(catalog.created),
        s.DURATION_MS: pl.Series(catalog.duration_ms),
    })


def _users_frame(
    rng: np.random.Generator, people: _People, catalog: _Catalog, user_ids: pl.Series
) -> pl.DataFrame:
    """Listeners get a person's name; creators often a stage name."""
    count = people.count
    first, last = _words(rng, FIRST_NAMES, count), _words(rng, LAST_NAMES, count)
    adjective, noun = _words(rng, ADJECTIVES, count), _words(rng, NOUNS, count)
    stage = np.zeros(count, dtype=np.int64)
    stage[catalog.creator_user] = rng.integers(0, 5, catalog.creator_user.size)
    names = pl.DataFrame({"f": first, "l": last, "a": adjective, "n": noun,
                          "k": pl.Series(stage)}).select(
        pl.when(pl.col("k") == 1).then(pl.concat_str([pl.lit("DJ "), "f"]))
        .when(pl.col("k") == 2).then(pl.concat_str(["a", "n"], separator=" "))
        .when(pl.col("k") == 3).then(pl.concat_str([pl.lit("The "), "n", pl.lit(" Collective")]))
        .when(pl.col("k") == 4).then(pl.concat_str(["f", "l", pl.lit("Trio")], separator=" "))
        .otherwise(pl.concat_str(["f", "l"], separator=" "))
        .alias(s.NAME)
    )
    return pl.DataFrame({s.USER_ID: user_ids}).with_columns(names[s.NAME])


def _follows_frame(follows: _Follows, user_ids: pl.Series) -> pl.DataFrame:
    order = _argsort(follows.follower, follows.ts, follows.followee)
    return pl.DataFrame({
        s.FOLLOWER_ID: user_ids.gather(follows.follower[order]),
        s.FOLLOWEE_ID: user_ids.gather(follows.followee[order]),
        s.TS: _datetimes(follows.ts[order]),
    })


def _titles(rng: np.random.Generator, count: int) -> pl.Series:
    frame = pl.DataFrame({
        "a": _words(rng, ADJECTIVES, count), "n": _words(rng, NOUNS, count),
        "m": _words(rng, NOUNS, count), "x": _words(rng, TITLE_SUFFIXES, count),
        "k": pl.Series(rng.integers(0, 4, count)),
    })
    body = (
        pl.when(pl.col("k") == 0).then(pl.concat_str(["a", "n"], separator=" "))
        .when(pl.col("k") == 1).then(pl.col("n"))
        .when(pl.col("k") == 2).then(pl.concat_str([pl.lit("The "), "a", pl.lit(" "), "n"]))
        .otherwise(pl.concat_str(["n", pl.lit(" of "), "m"]))
    )
    return frame.select(pl.concat_str([body, "x"]).alias(s.TITLE)).to_series()


def _words(rng: np.random.Generator, words: tuple[str, ...], count: int) -> pl.Series:
    return pl.Series(list(words), dtype=pl.String).gather(rng.integers(0, len(words), count))


# --- helpers ----------------------------------------------------------------------------------


class _Pool:
    """Draws members in proportion to weight from within a group (genre, scene, creator)."""

    def __init__(self, group: np.ndarray, weight: np.ndarray, groups: int) -> None:
        self.order = np.argsort(group, kind="stable")
        self.cum = np.cumsum(weight[self.order])
        size = np.bincount(group, minlength=groups)
        self.stop = np.cumsum(size)
        self.begin = self.stop - size
        edges = np.r_[0.0, self.cum]
        self.low, self.total = edges[self.begin], edges[self.stop] - edges[self.begin]

    def draw(self, rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
        """One member per entry of `group`; -1 where the group holds no weight."""
        x = self.low[group] + rng.random(group.size) * self.total[group]
        at = np.clip(np.searchsorted(self.cum, x, side="right"), self.begin[group],
                     np.maximum(self.stop[group] - 1, 0))
        return np.where(self.total[group] > 0, self.order[at], -1)


def _pick(rng: np.random.Generator, weight: np.ndarray, count: int) -> np.ndarray:
    """`count` indices drawn in proportion to `weight`."""
    cum = np.cumsum(weight)
    at = np.searchsorted(cum, rng.random(count) * cum[-1], side="right")
    return np.minimum(at, len(weight) - 1)


def _pick_except(rng: np.random.Generator, weight: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Per entry, an index in proportion to `weight` other than `excluded` (when one exists)."""
    cum = np.r_[0.0, np.cumsum(weight)]
    room = cum[-1] - weight[excluded]
    x = rng.random(excluded.size) * room
    x = x + np.where(x >= cum[excluded], weight[excluded], 0.0)
    at = np.minimum(np.searchsorted(cum, x, side="right") - 1, len(weight) - 1)
    return np.where(room > 0, at, excluded)


def _capped(chance: np.ndarray, expected: float) -> np.ndarray:
    """`chance` scaled so that, capped at 1, it still adds up to `expected` (when it can)."""
    scale = 1.0
    for _ in range(20):
        total = np.minimum(1.0, scale * chance).sum()
        if total <= 0 or abs(total - expected) < 1e-6 * expected:
            break
        scale *= expected / total
    return np.minimum(1.0, scale * chance)


@dataclass
class _Pairs:
    """Rows grouped by (a, b): `order` runs through each pair's rows in turn, stably."""

    order: np.ndarray
    pair: np.ndarray  # per position in `order`, the pair's index
    first: np.ndarray  # per pair, its first position in `order`
    size: np.ndarray  # per pair, its rows

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray) -> _Pairs:
        order = _argsort(a, b)
        a, b = a[order], b[order]
        starts = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])][: a.size]
        pair = np.cumsum(starts) - 1
        return cls(order, pair, np.flatnonzero(starts), np.bincount(pair))


def _first_of_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Positions of the first row of each distinct (a, b) pair, in their order."""
    pairs = _Pairs.of(a, b)
    return np.sort(pairs.order[pairs.first])


def _argsort(*keys: np.ndarray) -> np.ndarray:
    """The stable order that sorts by the first key, then the next: np.lexsort's, but faster."""
    frame = pl.DataFrame({f"k{i}": key for i, key in enumerate(keys)})
    order = frame.select(pl.arg_sort_by(frame.columns, maintain_order=True)).to_series()
    return order.to_numpy().astype(np.int64)


def _rank_within(group: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... along each run of equal values of a sorted `group`."""
    if not group.size:
        return group
    position = np.arange(group.size)
    starts = np.r_[True, group[1:] != group[:-1]]
    return position - np.maximum.accumulate(np.where(starts, position, 0))


def _concat(*parts: _Listens) -> _Listens:
    """One set of listens from several, in compact integer types."""
    types = {"user": np.int32, "source": np.int8, "group": np.int32, "track": np.int32}
    return _Listens(*(np.concatenate([getattr(p, f) for p in parts]).astype(t)
                      for f, t in types.items()))


def _ids(prefix: str, count: int) -> pl.Series:
    width = len(str(count - 1))
    return pl.select(pl.concat_str([pl.lit(prefix), pl.int_range(count).cast(pl.String)
                                    .str.zfill(width)])).to_series()


def _micros(moment: datetime) -> int:
    return int(moment.timestamp()) * SECOND


def _datetimes(micros: np.ndarray) -> pl.Series:
    return pl.Series(micros, dtype=pl.Int64).cast(s.UTC_DATETIME)


# --- measuring ----------------------------------------------------------------------------------


def measure(tables: dict[str, pl.DataFrame], *, super_nodes: int) -> dict[str, object]:
    """The shapes of a dataset, measured on its tables: rows, and each generator target."""
    events, tracks, users, follows = (tables[t] for t in (s.EVENTS, s.TRACKS, s.USERS, s.FOLLOWS))
    kinds = dict(events.group_by(s.KIND).len().iter_rows())
    # The plays with their track's genre and creator, as a lazy query: each measure reads only
    # the columns it needs, and the joined table is never held whole (on a log of 50M events
    # it would double the generator's peak memory).
    plays = events.lazy().filter(pl.col(s.KIND) == s.PLAY).select(s.USER_ID, s.TRACK_ID, s.TS)
    plays = plays.join(tracks.lazy().select(s.TRACK_ID, s.GENRE, s.CREATOR_ID), on=s.TRACK_ID,
                       how="left")
    per_track = plays.group_by(s.TRACK_ID).agg(
        pl.len(), pl.col(s.USER_ID).n_unique().alias("n")).collect()
    creators = tracks[s.CREATOR_ID].drop_nulls()
    listens = kinds.get(s.PLAY, 0) + kinds.get(s.SKIP, 0)
    reach = per_track["n"].top_k(super_nodes).mean() if super_nodes and per_track.height else 0
    return {
        "users": users.height,
        "creators": creators.n_unique(),
        "tracks": tracks.height,
        "events": events.height,
        **{f"{kind}s": kinds.get(kind, 0) for kind in s.EVENT_KINDS},
        "follows": follows.height,
        "first_event": str(events[s.TS].min()),
        "last_event": str(events[s.TS].max()),
        "popularity_exponent": _round(zipf_exponent(per_track["len"].to_numpy(),
                                                    skip_top=super_nodes)),
        "super_node_reach": _round((reach or 0) / max(users.height, 1)),
        "top_genre_share": _round(_median_top_genre_share(plays)),
        "tracks_per_creator": _round(creators.len() / max(creators.n_unique(), 1)),
        "follows_per_user": _round(follows.height / max(users.height, 1)),
        "follow_popularity_lift": _round(_follow_popularity_lift(plays, creators, follows)),
        "skip_rate": _round(kinds.get(s.SKIP, 0) / max(listens, 1)),
        "like_rate": _round(kinds.get(s.LIKE, 0) / max(kinds.get(s.PLAY, 0), 1)),
        "repost_rate": _round(kinds.get(s.REPOST, 0) / max(kinds.get(s.PLAY, 0), 1)),
        "median_play_ms": _median_ms(events, s.PLAY),
        "median_skip_ms": _median_ms(events, s.SKIP),
        "unknown_genre_share": _round(tracks[s.GENRE].null_count() / max(tracks.height, 1)),
        "unknown_creator_share": _round(tracks[s.CREATOR_ID].null_count() / max(tracks.height, 1)),
        "top100_overlap_first_last_28d": _round(_top_overlap(plays, 100, 28)),
    }


def zipf_exponent(counts: np.ndarray, *, skip_top: int = 0, min_count: int = 10) -> float:
    """The Zipf exponent: minus the least-squares slope of log(count) on log(rank).

    The fit leaves out the `skip_top` highest ranks (super nodes, whose plays follow their reach)
    and the ranks below `min_count` plays, where Poisson noise and ties flatten the curve.
    """
    ranked = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    rank = np.arange(1, ranked.size + 1)
    fit = (rank > skip_top) & (ranked >= min_count)
    if fit.sum() < 3:
        return float("nan")
    return float(-np.polyfit(np.log(rank[fit]), np.log(ranked[fit]), 1)[0])


def _median_top_genre_share(plays: pl.LazyFrame) -> float:
    """The median, over users with 20 or more plays of a known genre, of the top genre's share."""
    per_genre = plays.drop_nulls(s.GENRE).group_by(s.USER_ID, s.GENRE).len()
    share = per_genre.group_by(s.USER_ID).agg(
        (pl.col("len").max() / pl.col("len").sum()).alias("share"), pl.col("len").sum())
    return float(share.filter(pl.col("len") >= 20).collect()["share"].median() or float("nan"))


def _follow_popularity_lift(
    plays: pl.LazyFrame, creators: pl.Series, follows: pl.DataFrame
) -> float:
    """Mean plays of a followed creator (per follow) over the mean plays of a creator."""
    per_creator = plays.drop_nulls(s.CREATOR_ID).group_by(s.CREATOR_ID).len().collect()
    every = creators.unique().to_frame().join(per_creator, on=s.CREATOR_ID, how="left")
    every = every.fill_null(0)
    followed = follows.join(every, left_on=s.FOLLOWEE_ID, right_on=s.CREATOR_ID)
    if not followed.height or not every["len"].sum():
        return float("nan")
    return float(followed["len"].mean() / every["len"].mean())


def _median_ms(events: pl.DataFrame, kind: str) -> float | None:
    return events.filter(pl.col(s.KIND) == kind)[s.MS_PLAYED].median()


def _top_overlap(plays: pl.LazyFrame, top: int, days: int) -> float:
    """Jaccard overlap of the `top` most-played tracks of the first and the last `days` days."""
    span = plays.select(pl.col(s.TS).min().alias("first"), pl.col(s.TS).max().alias("last"),
                        pl.len().alias("count")).collect()
    first, last, count = span.row(0)
    if not count:
        return float("nan")
    window = pl.duration(days=days)
    early = plays.filter(pl.col(s.TS) < pl.lit(first) + window)
    late = plays.filter(pl.col(s.TS) > pl.lit(last) - window)
    tops = [set(f.group_by(s.TRACK_ID).len().sort(["len", s.TRACK_ID], descending=[True, False])
                .head(top).collect()[s.TRACK_ID]) for f in (early, late)]
    return len(tops[0] & tops[1]) / max(len(tops[0] | tops[1]), 1)


def _round(value: float) -> float:
    return round(float(value), 3)
