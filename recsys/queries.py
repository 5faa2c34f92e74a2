"""The queries the pages read through: small functions over a read-only run connection.

Every function takes a DuckDB connection to one run file (see `recsys.store`) and returns a
polars frame. Values from the user (a search text, a user or track id) are always bound as
parameters, never written into the SQL text. Tables that a run writes only when its ranker was
fitted (`shap_values`, `feature_importance`) read as empty frames when they are absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import polars as pl

from recsys import schema as s
from recsys.store import CURRENT, current_run_id, list_runs, read_registry, run_path

USER_MATCHES = 50
HISTORY_ROWS = 10
RUNNING = "running"


def read(con: duckdb.DuckDBPyConnection, sql: str, **params: object) -> pl.DataFrame:
    """The result of `sql` as a polars frame, with `$name` placeholders bound from `params`."""
    return con.sql(sql, params=params or None).pl()


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = read(con, "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = $name",
                 name=name)
    return found["n"][0] > 0


def current_run(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The run's one summary row (id, as_of, input, counts, ranker figures, timings)."""
    return read(con, "SELECT * FROM runs")


def stage_timings(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """stage, seconds, rows: one row per stage, in the order they ran."""
    return read(con, "SELECT stage, seconds, rows FROM stages")


def ranker_evaluation(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """window_start, order, metric, value, users: the ranker against the candidate order."""
    return read(con, 'SELECT window_start, "order", metric, value, users FROM ranker_evaluation')


def feature_importance(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """feature, gain, splits, mean_abs_shap, largest mean |SHAP| first; empty without a ranker."""
    if not has_table(con, "feature_importance"):
        return pl.DataFrame(schema={"feature": pl.String, "gain": pl.Float64,
                                    "splits": pl.Int64, "mean_abs_shap": pl.Float64})
    return read(con, "SELECT * FROM feature_importance ORDER BY mean_abs_shap DESC, feature")


def find_users(
    con: duckdb.DuckDBPyConnection, text: str, *, limit: int = USER_MATCHES
) -> pl.DataFrame:
    """Users whose id or name contains `text` (case-insensitive), an exact id first.

    An empty `text` matches everyone; at most `limit` rows, most active users first after the
    exact and prefix matches.
    """
    sql = """
        SELECT user_id, name, tracks_heard, positive_tracks FROM users
        WHERE contains(lower(user_id), lower($text))
           OR contains(lower(coalesce(name, '')), lower($text))
        ORDER BY user_id = $text DESC, starts_with(lower(user_id), lower($text)) DESC,
                 tracks_heard DESC, user_id
        LIMIT $limit
    """
    return read(con, sql, text=text.strip(), limit=limit)


def user(con: duckdb.DuckDBPyConnection, user_id: str) -> pl.DataFrame:
    """The user's row (user_id, name, tracks_heard, positive_tracks), empty when unknown."""
    sql = "SELECT user_id, name, tracks_heard, positive_tracks FROM users WHERE user_id = $user_id"
    return read(con, sql, user_id=user_id)


def user_history(con: duckdb.DuckDBPyConnection, user_id: str) -> pl.DataFrame:
    """Every track the user interacted with before as_of, with its title and what they did.

    `kinds` says it in words ("3 plays, liked, 1 skip"); `last_ts` is the latest interaction.
    """
    sql = """
        SELECT f.track_id, t.title, t.creator_id, t.genre, f.plays, f.likes, f.reposts,
               f.skips, f.listen_ms, f.first_ts, f.last_ts, f.strength, f.positive
        FROM feedback f LEFT JOIN tracks t USING (track_id)
        WHERE f.user_id = $user_id
    """
    return read(con, sql, user_id=user_id).with_columns(_kinds())


def _kinds() -> pl.Expr:
    def counted(column: str, one: str, many: str) -> pl.Expr:
        n = pl.col(column)
        words = pl.when(n == 1).then(pl.lit(f"1 {one}")).otherwise(n.cast(pl.String) + f" {many}")
        return pl.when(n > 0).then(words)

    def flag(column: str, word: str) -> pl.Expr:
        return pl.when(pl.col(column) > 0).then(pl.lit(word))

    parts = [counted("plays", "play", "plays"), flag("likes", "liked"),
             flag("reposts", "reposted"), counted("skips", "skip", "skips")]
    return pl.concat_str(parts, separator=", ", ignore_nulls=True).alias("kinds")


def most_played(history: pl.DataFrame, n: int = HISTORY_ROWS) -> pl.DataFrame:
    """The `n` tracks with the most plays, then the strongest feedback."""
    return history.sort(["plays", "strength", s.TRACK_ID], descending=[True, True, False]).head(n)


def most_recent(history: pl.DataFrame, n: int = HISTORY_ROWS) -> pl.DataFrame:
    """The `n` tracks heard most recently."""
    return history.sort(["last_ts", s.TRACK_ID], descending=[True, False]).head(n)


def user_recommendations(con: duckdb.DuckDBPyConnection, user_id: str) -> pl.DataFrame:
    """rank, track_id, title, creator_id, genre, score, reason_kind and `because`: the seed
    titles with their shares ("Title (40%), ..."), null for a fallback recommendation."""
    sql = """
        WITH seeds AS (
            SELECT r.track_id,
                   string_agg(coalesce(t.title, r.seed_track_id) || ' ('
                              || CAST(round(100 * r.share) AS INTEGER) || '%)', ', '
                              ORDER BY r.share DESC, r.seed_track_id) AS because
            FROM recommendation_reasons r LEFT JOIN tracks t ON t.track_id = r.seed_track_id
            WHERE r.user_id = $user_id
            GROUP BY r.track_id
        )
        SELECT r.rank, r.track_id, t.title, t.creator_id, t.genre, r.score, r.reason_kind,
               seeds.because
        FROM recommendations r
        LEFT JOIN tracks t USING (track_id)
        LEFT JOIN seeds USING (track_id)
        WHERE r.user_id = $user_id
        ORDER BY r.rank
    """
    return read(con, sql, user_id=user_id)


def reasons(con: duckdb.DuckDBPyConnection, user_id: str) -> pl.DataFrame:
    """track_id, seed_track_id, seed_title, share: the history tracks behind each
    recommendation of the user, largest share first."""
    sql = """
        SELECT r.track_id, r.seed_track_id, t.title AS seed_title, r.share
        FROM recommendation_reasons r LEFT JOIN tracks t ON t.track_id = r.seed_track_id
        WHERE r.user_id = $user_id
        ORDER BY r.track_id, r.share DESC, r.seed_track_id
    """
    return read(con, sql, user_id=user_id)


def candidate_sources(
    con: duckdb.DuckDBPyConnection, user_id: str, track_id: str
) -> pl.DataFrame:
    """source, score, rank: each candidate source that proposed one recommendation, with its
    score and rank in that source's list for the user; best rank first."""
    sql = """
        SELECT * FROM (
            SELECT 'similar' AS source, similar_score AS score, similar_rank AS rank
            FROM candidates WHERE user_id = $user_id AND track_id = $track_id
            UNION ALL
            SELECT 'walk', walk_score, walk_rank
            FROM candidates WHERE user_id = $user_id AND track_id = $track_id
            UNION ALL
            SELECT 'als', als_score, als_rank
            FROM candidates WHERE user_id = $user_id AND track_id = $track_id
            UNION ALL
            SELECT 'popular_in_genre', popular_in_genre_score, popular_in_genre_rank
            FROM candidates WHERE user_id = $user_id AND track_id = $track_id
            UNION ALL
            SELECT 'popular', popular_score, popular_rank
            FROM candidates WHERE user_id = $user_id AND track_id = $track_id
        ) WHERE score IS NOT NULL
        ORDER BY rank, source
    """
    return read(con, sql, user_id=user_id, track_id=track_id)


LEDGER_SHAP = 3


def has_ledger(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the run's recommendations carry their ledger (runs before it do not)."""
    sql = """
        SELECT count(*) AS n FROM duckdb_columns()
        WHERE table_name = 'recommendations' AND column_name = 'rank_before'
    """
    return read(con, sql)["n"][0] > 0


def ledger(
    con: duckdb.DuckDBPyConnection, user_id: str, *, top: int = LEDGER_SHAP
) -> pl.DataFrame:
    """What the ranker did to one user's list: rank, track_id, title, rank_before (the rank in
    the plain candidate order), moved (rank_before - rank: places gained), sources (the
    candidate sources that proposed it, as text) and top_shap (its `top` largest stored SHAP
    contributions, "feature +0.123, ..."; null without a ranker); by rank."""
    sql = """
        WITH ranked AS (
            SELECT track_id, feature, value,
                   row_number() OVER (PARTITION BY track_id
                                      ORDER BY abs(value) DESC, feature) AS k
            FROM shap_values
            WHERE user_id = $user_id AND feature <> '(other features)'
        ), top_shap AS (
            SELECT track_id,
                   string_agg(feature || ' ' || printf('%+.3f', value), ', ' ORDER BY k)
                       AS top_shap
            FROM ranked WHERE k <= $top GROUP BY track_id
        )
        SELECT r.rank, r.track_id, t.title, r.rank_before, r.rank_before - r.rank AS moved,
               array_to_string(r.sources, ', ') AS sources, top_shap.top_shap
        FROM recommendations r
        LEFT JOIN tracks t USING (track_id)
        LEFT JOIN top_shap USING (track_id)
        WHERE r.user_id = $user_id
        ORDER BY r.rank
    """
    return read(con, sql, user_id=user_id, top=top)


def walk_paths_for(
    con: duckdb.DuckDBPyConnection, user_id: str, track_id: str
) -> pl.DataFrame:
    """The top walk paths into one recommendation: seed_track_id, seed_title, via_track_id,
    via_title, listener_id, listener_name, followed_id, path_visits, path_rank."""
    if not has_table(con, "walk_paths"):
        return pl.DataFrame(schema={c: pl.String for c in (
            "seed_track_id", "seed_title", "via_track_id", "via_title", "listener_id",
            "listener_name", "followed_id")} | {"path_visits": pl.Int64, "path_rank": pl.Int64})
    sql = """
        SELECT p.seed_track_id, st.title AS seed_title, p.via_track_id, vt.title AS via_title,
               p.listener_id, u.name AS listener_name, p.followed_id, p.path_visits,
               p.path_rank
        FROM walk_paths p
        LEFT JOIN tracks st ON st.track_id = p.seed_track_id
        LEFT JOIN tracks vt ON vt.track_id = p.via_track_id
        LEFT JOIN users u ON u.user_id = p.listener_id
        WHERE p.user_id = $user_id AND p.track_id = $track_id
        ORDER BY p.path_rank
    """
    return read(con, sql, user_id=user_id, track_id=track_id)


def shap_for(con: duckdb.DuckDBPyConnection, user_id: str, track_id: str) -> pl.DataFrame:
    """feature, value (its SHAP contribution) and feature_value (the input the ranker saw) for
    one recommendation: largest |value| first, the "(other features)" remainder last.

    The expected value (`expected_value`) plus the values is the recommendation's score.
    """
    if not has_table(con, "shap_values"):
        return pl.DataFrame(schema={"feature": pl.String, "value": pl.Float64,
                                    "feature_value": pl.Float64})
    where = "WHERE user_id = $user_id AND track_id = $track_id"
    shap = read(con, f"SELECT feature, value FROM shap_values {where}",
                user_id=user_id, track_id=track_id)
    inputs = read(con, f"SELECT * EXCLUDE (user_id, track_id) FROM recommendation_features "
                       f"{where}", user_id=user_id, track_id=track_id)
    inputs = inputs.unpivot(variable_name="feature", value_name="feature_value")
    return (
        shap.join(inputs, on="feature", how="left")
        .with_columns(pl.col("feature").str.starts_with("(").alias("_remainder"))
        .sort(["_remainder", pl.col("value").abs()], descending=[False, True])
        .drop("_remainder")
    )


def recommendation_features(con: duckdb.DuckDBPyConnection, user_id: str) -> pl.DataFrame:
    """track_id and the ranker's input features of each of the user's recommendations, in
    rank order (empty for a run without them)."""
    if not has_table(con, "recommendation_features"):
        return pl.DataFrame(schema={s.TRACK_ID: pl.String})
    sql = """
        SELECT f.* EXCLUDE (user_id) FROM recommendation_features f
        JOIN recommendations r USING (user_id, track_id)
        WHERE f.user_id = $user_id ORDER BY r.rank
    """
    return read(con, sql, user_id=user_id)


def run_config(con: duckdb.DuckDBPyConnection) -> dict:
    """The config the run was made with, as a dict of sections (`runs.config`)."""
    return json.loads(read(con, "SELECT config FROM runs")["config"][0])


def expected_value(con: duckdb.DuckDBPyConnection) -> float | None:
    """The ranker's expected raw score (the base of every SHAP explanation), None without one."""
    return read(con, "SELECT expected_value FROM runs")["expected_value"][0]


def current_run_file(store: str | Path) -> Path | None:
    """The run file that `current.duckdb` points at, resolved, or None when there is none."""
    link = Path(store) / CURRENT
    return link.resolve() if link.exists() else None


def run_in_progress(store: str | Path) -> dict | None:
    """The newest registry entry still "running" that is newer than the current run and whose
    process is alive on this machine, or None."""
    current = current_run_id(store) or ""
    running = [
        entry for entry in read_registry(store)["runs"]
        if entry.get("status") == RUNNING and entry["id"] > current and _alive(entry.get("pid"))
    ]
    return max(running, key=lambda entry: entry["id"], default=None)


RUN_COLUMNS = {
    "id": pl.String, "as_of": pl.String, "status": pl.String, "started_at": pl.String,
    "seconds": pl.Float64, "recommendations": pl.Int64, "fingerprint": pl.String,
    "code_version": pl.String, "current": pl.Boolean, "kept": pl.Boolean, "error": pl.String,
}


def registry_runs(store: str | Path) -> pl.DataFrame:
    """Every run of the store's registry, newest first: id, as_of, status, started_at,
    seconds, recommendations, fingerprint (its start), code_version, current, kept (its file
    is still in runs/), error."""
    rows = [{k: row[k] for k in RUN_COLUMNS} for row in list_runs(store)]
    return pl.DataFrame(rows, schema=RUN_COLUMNS)


def kept_runs(store: str | Path) -> pl.DataFrame:
    """The runs one can open (their files are kept), newest first; see `registry_runs`."""
    return registry_runs(store).filter(pl.col("kept"))


def run_file(store: str | Path, run_id: str) -> Path | None:
    """The file of kept run `run_id`, or None when it is not (or no longer) in runs/."""
    if "/" in run_id or run_id.startswith("."):
        return None
    path = run_path(store, run_id)
    return path.resolve() if path.exists() else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The curator's pages: super nodes, routes and the track explorer.

LEADERBOARD_ROWS = 20
ROUTE_ROWS = 20
TRACK_MATCHES = 50
ENTITIES = ("track", "creator")


def leaderboard(
    con: duckdb.DuckDBPyConnection, entity: str, *, limit: int = LEADERBOARD_ROWS
) -> pl.DataFrame:
    """The `limit` most recommended tracks or creators (`entity`): entity_id, name (a track's
    title, a creator's user name where the creator is a user), slots, users_reached,
    listening_share, recommendation_share, amplification, in_degree; most slots first."""
    sql = """
        SELECT e.entity_id, CASE WHEN e.entity = 'track' THEN t.title ELSE u.name END AS name,
               e.slots, e.users_reached, e.listening_share, e.recommendation_share,
               e.amplification, e.in_degree
        FROM exposure e
        LEFT JOIN tracks t ON e.entity = 'track' AND t.track_id = e.entity_id
        LEFT JOIN users u ON e.entity = 'creator' AND u.user_id = e.entity_id
        WHERE e.entity = $entity AND e.slots > 0
        ORDER BY e.slots DESC, e.entity_id
        LIMIT $limit
    """
    return read(con, sql, entity=entity, limit=limit)


def exposure_of(con: duckdb.DuckDBPyConnection, entity: str, entity_id: str) -> pl.DataFrame:
    """One track's or creator's row of `exposure`; empty when it is not in the catalogue."""
    sql = "SELECT * FROM exposure WHERE entity = $entity AND entity_id = $entity_id"
    return read(con, sql, entity=entity, entity_id=entity_id)


def bias_measures(con: duckdb.DuckDBPyConnection, entity: str) -> pl.DataFrame:
    """metric, value: the run's popularity-bias measures for tracks or creators."""
    sql = "SELECT metric, value FROM popularity_bias WHERE entity = $entity"
    return read(con, sql, entity=entity)


def lorenz_curve(con: duckdb.DuckDBPyConnection, entity: str) -> pl.DataFrame:
    """population_share, exposure_share: the Lorenz curve of exposure, from (0, 0)."""
    sql = """
        SELECT population_share, exposure_share FROM lorenz
        WHERE entity = $entity ORDER BY population_share
    """
    return read(con, sql, entity=entity)


_OF_ENTITY = """
    (($entity = 'track' AND r.track_id = $entity_id)
     OR ($entity = 'creator' AND rt.creator_id = $entity_id))
"""


def routes(
    con: duckdb.DuckDBPyConnection, entity: str, entity_id: str, *, limit: int = ROUTE_ROWS
) -> pl.DataFrame:
    """The history tracks that lead users to a track (or to a creator's tracks): seed_track_id,
    seed_title, seed_creator_id, users (how many users it leads there), mean_share; most users
    first. Counted over the seeds each recommendation names (`recommendation_reasons`)."""
    sql = f"""
        SELECT r.seed_track_id, st.title AS seed_title, st.creator_id AS seed_creator_id,
               count(DISTINCT r.user_id) AS users, avg(r.share) AS mean_share
        FROM recommendation_reasons r
        JOIN tracks rt ON rt.track_id = r.track_id
        LEFT JOIN tracks st ON st.track_id = r.seed_track_id
        WHERE {_OF_ENTITY}
        GROUP BY ALL
        ORDER BY users DESC, r.seed_track_id
        LIMIT $limit
    """
    return read(con, sql, entity=entity, entity_id=entity_id, limit=limit)


def reason_kinds(con: duckdb.DuckDBPyConnection, entity: str, entity_id: str) -> pl.DataFrame:
    """reason_kind, users: how the lists that hold a track (or a creator's tracks) came to it
    (`similar`, `popular_in_genre`, `popular`), most users first."""
    sql = f"""
        SELECT r.reason_kind, count(DISTINCT r.user_id) AS users
        FROM recommendations r JOIN tracks rt ON rt.track_id = r.track_id
        WHERE {_OF_ENTITY}
        GROUP BY ALL
        ORDER BY users DESC, r.reason_kind
    """
    return read(con, sql, entity=entity, entity_id=entity_id)


def find_tracks(
    con: duckdb.DuckDBPyConnection, text: str, *, limit: int = TRACK_MATCHES
) -> pl.DataFrame:
    """Tracks whose id or title contains `text` (case-insensitive): track_id, title, creator_id,
    genre, popularity, slots; an exact id first, then the most recommended, then the most
    listened. An empty `text` matches every track."""
    sql = """
        SELECT t.track_id, t.title, t.creator_id, t.genre, t.popularity,
               coalesce(e.slots, 0) AS slots
        FROM tracks t
        LEFT JOIN exposure e ON e.entity = 'track' AND e.entity_id = t.track_id
        WHERE contains(lower(t.track_id), lower($text))
           OR contains(lower(coalesce(t.title, '')), lower($text))
        ORDER BY t.track_id = $text DESC, slots DESC, t.popularity DESC, t.track_id
        LIMIT $limit
    """
    return read(con, sql, text=text.strip(), limit=limit)


# What-if inputs: the run's interactions, catalogue, neighbours, lists and model.


def _utc(frame: pl.DataFrame) -> pl.DataFrame:
    """Timestamps in the engine's UTC type (DuckDB hands them over in its session zone)."""
    return frame.with_columns(pl.col(pl.Datetime("us", "*")).dt.convert_time_zone("UTC"))


def feedback(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The whole `feedback` table: every (user, track) interaction before as_of."""
    return _utc(read(con, "SELECT * FROM feedback ORDER BY user_id, track_id"))


def catalogue(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The tracks as the input gave them (without the run's `popularity`)."""
    return _utc(read(con, "SELECT * EXCLUDE (popularity) FROM tracks ORDER BY track_id"))


def neighbour_pairs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The whole `similar_tracks` table."""
    return read(con, "SELECT * FROM similar_tracks ORDER BY track_id, rank")


def all_recommendations(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every list of the run: user_id, rank, track_id, score, reason_kind."""
    sql = "SELECT user_id, rank, track_id, score, reason_kind FROM recommendations"
    return read(con, f"{sql} ORDER BY user_id, rank")


def ranker_model(con: duckdb.DuckDBPyConnection) -> str | None:
    """The run's LightGBM model as text, None for a run without a ranker."""
    found = read(con, "SELECT content FROM models WHERE name = 'ranker'")
    return found["content"][0] if found.height else None


# --- Who to follow ---------------------------------------------------------------------------
# Runs written before who-to-follow existed have none of its tables: they read as empty frames.

FOLLOW_COLUMNS = {"rank": pl.Int64, "followee_id": pl.String, "name": pl.String,
                  "score": pl.Float64, "sources": pl.List(pl.String), "reason": pl.String}


def follow_recommendations(con: duckdb.DuckDBPyConnection, user_id: str) -> pl.DataFrame:
    """rank, followee_id, name (null where the account has none), score, sources, reason: the
    accounts suggested to the user, best first."""
    if not has_table(con, "follow_recommendations"):
        return pl.DataFrame(schema=FOLLOW_COLUMNS)
    sql = """
        SELECT r.rank, r.followee_id, u.name, r.score, r.sources, r.reason
        FROM follow_recommendations r LEFT JOIN users u ON u.user_id = r.followee_id
        WHERE r.user_id = $user_id
        ORDER BY r.rank
    """
    return read(con, sql, user_id=user_id)


def user_follows(con: duckdb.DuckDBPyConnection, user_id: str) -> pl.DataFrame:
    """followee_id, name, ts, followers: the accounts the user follows at as_of, most recent
    first (undated follows last), with how many follow each."""
    if not has_table(con, "follows"):
        return pl.DataFrame(schema={"followee_id": pl.String, "name": pl.String,
                                    "ts": pl.Datetime("us", "UTC"), "followers": pl.Int64})
    sql = """
        SELECT f.followee_id, u.name, f.ts,
               (SELECT count(*) FROM follows g WHERE g.followee_id = f.followee_id) AS followers
        FROM follows f LEFT JOIN users u ON u.user_id = f.followee_id
        WHERE f.follower_id = $user_id
        ORDER BY f.ts DESC NULLS LAST, f.followee_id
    """
    return _utc(read(con, sql, user_id=user_id))


def follow_sources(
    con: duckdb.DuckDBPyConnection, user_id: str, followee_id: str
) -> pl.DataFrame:
    """source, score, rank: the sources that proposed the account to the user."""
    if not has_table(con, "follow_sources"):
        return pl.DataFrame(schema={"source": pl.String, "score": pl.Float64, "rank": pl.Int64})
    sql = """
        SELECT source, score, rank FROM follow_sources
        WHERE user_id = $user_id AND followee_id = $followee_id
        ORDER BY rank, source
    """
    return read(con, sql, user_id=user_id, followee_id=followee_id)


def follow_evaluation(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """protocol, window_start, list, metric, value, users: each source, the merged list and the
    baseline against the follows of the evaluation."""
    if not has_table(con, "follow_evaluation"):
        return pl.DataFrame(schema={"protocol": pl.String,
                                    "window_start": pl.Datetime("us", "UTC"), "list": pl.String,
                                    "metric": pl.String, "value": pl.Float64, "users": pl.Int64})
    return _utc(read(con, "SELECT * FROM follow_evaluation ORDER BY metric, list"))


def follow_als_validation(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """protocol, model, factors, recall, ndcg, users, chosen: ALS's factor counts tried."""
    if not has_table(con, "follow_als_validation"):
        return pl.DataFrame(schema={"protocol": pl.String, "model": pl.String,
                                    "factors": pl.Int64, "recall": pl.Float64,
                                    "ndcg": pl.Float64, "users": pl.Int64, "chosen": pl.Boolean})
    return read(con, "SELECT * FROM follow_als_validation ORDER BY model, factors")


def follow_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """suggestions and users: the size of the run's who-to-follow lists (0 for a run without)."""
    if not has_table(con, "follow_recommendations"):
        return {"suggestions": 0, "users": 0}
    found = read(con, "SELECT count(*) AS suggestions, count(DISTINCT user_id) AS users "
                      "FROM follow_recommendations")
    return found.row(0, named=True)
# The global SHAP summary of the Evaluation page.

SHAP_POINTS_PER_FEATURE = 400


def shap_points(
    con: duckdb.DuckDBPyConnection, *, per_feature: int = SHAP_POINTS_PER_FEATURE
) -> pl.DataFrame:
    """feature, value (its SHAP contribution), feature_value (the ranker's input), for the stored
    contributions of the served recommendations (each keeps its largest; the remainder row is
    left out), at most `per_feature` per feature, picked by a hash of the recommendation so the
    same ones come back every time. Empty without a ranker."""
    if not has_table(con, "shap_values") or not has_table(con, "recommendation_features"):
        return pl.DataFrame(schema={"feature": pl.String, "value": pl.Float64,
                                    "feature_value": pl.Float64})
    sql = """
        WITH inputs AS (
            UNPIVOT recommendation_features ON COLUMNS(* EXCLUDE (user_id, track_id))
            INTO NAME feature VALUE feature_value
        )
        SELECT v.feature, v.value, CAST(i.feature_value AS DOUBLE) AS feature_value
        FROM shap_values v
        JOIN inputs i USING (user_id, track_id, feature)
        QUALIFY row_number() OVER (PARTITION BY v.feature
                                   ORDER BY hash(v.user_id, v.track_id), v.user_id,
                                            v.track_id) <= $per_feature
        ORDER BY v.feature
    """
    return read(con, sql, per_feature=per_feature)
