"""Who to follow by matrix factorization: implicit's ALS on user-to-creator affinity.

Affinity (config `follow.affinity`), per (user, creator) over the creator's tracks:

- `weighted`: log(1 + w_play plays + w_like likes + w_repost reposts), entries above 0 only;
- `classification`: 1 where the signed sum (skips weighted by `follow.skip_weight`, a
  negative number) is above 0, no entry otherwise.

ALS (`follow.als_alpha` confidence per unit of affinity) scores every creator for a user; the
source keeps the best creators the user has no affinity with yet ("listeners like you play
them"). The factor count is not set by hand: each of `follow.factor_choices` is fitted on the
affinity before a validation window and scored (NDCG@10) on the creators users took to in it,
and the best is kept. Every fit checks that its factors are finite and that it has one row per
user and per creator.

"Musical bays" (`follow.bays`): instead of one global model, one model per community of users,
grouped by their dominant genre or by a Louvain community of the (undirected) follow graph;
communities smaller than `follow.min_bay_users` share one model. The validation scores the
global model and the bays side by side.
"""

from __future__ import annotations

import logging

import networkx as nx
import numpy as np
import polars as pl
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from recsys import schema as s
from recsys.config import FollowConfig
from recsys.errors import RunError
from recsys.ids import IdMap
from recsys.stages.feedback import LIKES, PLAYS, POSITIVE, REPOSTS, SKIPS, STRENGTH
from recsys.stages.follow import (
    RANK, SCORE, empty_scored, excluded, top_per_user,
)
from recsys.stages.follow_eval import NDCG, RECALL, USERS, ranking_metrics

log = logging.getLogger(__name__)

AFFINITY = "affinity"
BAY = "bay"
GLOBAL, BAYS = "global", "bays"
OTHER_BAY = "(small bays)"
UNKNOWN_GENRE = "(unknown genre)"
NO_COMMUNITY = "(no follows)"
VALIDATION_SCHEMA = {"protocol": pl.String, "model": pl.String, "factors": pl.Int64,
                     RECALL: pl.Float64, NDCG: pl.Float64, USERS: pl.Int64,
                     "chosen": pl.Boolean}


def creator_affinity(
    feedback: pl.DataFrame, tracks: pl.DataFrame, cfg: FollowConfig
) -> pl.DataFrame:
    """user_id, creator_id, affinity under `follow.affinity` (see the module's docstring)."""
    signed = (cfg.play_weight * pl.col(PLAYS) + cfg.like_weight * pl.col(LIKES)
              + cfg.repost_weight * pl.col(REPOSTS))
    if cfg.affinity == "classification":
        signed = signed + cfg.skip_weight * pl.col(SKIPS)
    summed = (
        feedback.join(tracks.select(s.TRACK_ID, s.CREATOR_ID), on=s.TRACK_ID)
        .filter(pl.col(s.CREATOR_ID).is_not_null())
        .group_by(s.USER_ID, s.CREATOR_ID)
        .agg(signed.sum().cast(pl.Float64).alias("sum"))
        .filter(pl.col("sum") > 0)
    )
    value = pl.lit(1.0) if cfg.affinity == "classification" else pl.col("sum").log1p()
    return summed.select(s.USER_ID, s.CREATOR_ID, value.alias(AFFINITY)).sort(
        s.USER_ID, s.CREATOR_ID
    )


def affinity_matrix(affinity: pl.DataFrame) -> tuple[sp.csr_matrix, IdMap, IdMap]:
    """The users x creators matrix of `affinity`, with its id maps."""
    users, creators = IdMap(affinity[s.USER_ID]), IdMap(affinity[s.CREATOR_ID])
    indexed = creators.to_index(users.to_index(affinity, s.USER_ID, alias="u"), s.CREATOR_ID,
                                alias="c")
    matrix = sp.csr_matrix(
        (indexed[AFFINITY].to_numpy(), (indexed["u"].to_numpy(), indexed["c"].to_numpy())),
        shape=(len(users), len(creators)),
    )
    return matrix, users, creators


def fit_als(matrix: sp.csr_matrix, factors: int, cfg: FollowConfig) -> AlternatingLeastSquares:
    """ALS fitted on a users x creators affinity matrix, its factors checked."""
    # implicit's threads and BLAS's own would compete (implicit warns): one BLAS thread here.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors, regularization=cfg.als_regularization, alpha=cfg.als_alpha,
            iterations=cfg.als_iterations, random_state=cfg.seed, num_threads=cfg.num_threads,
        )
        model.fit(sp.csr_matrix(matrix, dtype=np.float32), show_progress=False)
    check_factors(model.user_factors, model.item_factors, matrix.shape)
    return model


def check_factors(user_factors: np.ndarray, creator_factors: np.ndarray, shape) -> None:
    """Raise RunError unless there is one finite row per user and per creator."""
    users, creators = shape
    if user_factors.shape[0] != users or creator_factors.shape[0] != creators:
        raise RunError(
            f"als: {user_factors.shape[0]:,} user and {creator_factors.shape[0]:,} creator factor "
            f"rows for {users:,} users and {creators:,} creators"
        )
    if not (np.isfinite(user_factors).all() and np.isfinite(creator_factors).all()):
        raise RunError("als: the fit gave non-finite factors; lower follow.als_alpha or raise "
                       "follow.als_regularization")


def genre_bays(feedback: pl.DataFrame, tracks: pl.DataFrame) -> pl.DataFrame:
    """user_id, bay: the genre holding most of the user's positive strength."""
    by_genre = (
        feedback.filter(pl.col(POSITIVE))
        .join(tracks.select(s.TRACK_ID, s.GENRE), on=s.TRACK_ID)
        .with_columns(pl.col(s.GENRE).fill_null(UNKNOWN_GENRE))
        .group_by(s.USER_ID, s.GENRE)
        .agg(pl.col(STRENGTH).sum())
    )
    return (
        by_genre.sort([s.USER_ID, STRENGTH, s.GENRE], descending=[False, True, False])
        .unique(s.USER_ID, keep="first", maintain_order=True)
        .select(s.USER_ID, pl.col(s.GENRE).alias(BAY))
    )


def graph_bays(follows: pl.DataFrame, seed: int) -> pl.DataFrame:
    """user_id, bay: Louvain communities of the follow graph, edges taken as undirected."""
    graph = nx.Graph()
    graph.add_edges_from(follows.select(s.FOLLOWER_ID, s.FOLLOWEE_ID).iter_rows())
    found = nx.community.louvain_communities(graph, seed=seed)
    # Number the communities by size, then by their first member, so names are stable.
    ordered = sorted((sorted(c) for c in found), key=lambda c: (-len(c), c[0]))
    rows = [(member, f"community {i + 1}") for i, c in enumerate(ordered) for member in c]
    return pl.DataFrame(rows, schema={s.USER_ID: pl.String, BAY: pl.String}, orient="row")


def assign_bays(
    users: pl.Series, feedback: pl.DataFrame, tracks: pl.DataFrame, follows: pl.DataFrame,
    cfg: FollowConfig,
) -> pl.DataFrame:
    """user_id, bay for every user of `users` under `follow.bays`; small bays merged."""
    found = genre_bays(feedback, tracks) if cfg.bays == "genre" else graph_bays(follows, cfg.seed)
    missing = UNKNOWN_GENRE if cfg.bays == "genre" else NO_COMMUNITY
    bays = users.unique().to_frame(s.USER_ID).join(found, on=s.USER_ID, how="left")
    bays = bays.with_columns(pl.col(BAY).fill_null(missing))
    small = pl.len().over(BAY) < cfg.min_bay_users
    return bays.with_columns(pl.when(small).then(pl.lit(OTHER_BAY)).otherwise(pl.col(BAY))
                             .alias(BAY)).sort(s.USER_ID)


def als_candidates(
    affinity: pl.DataFrame, users: pl.Series, follows: pl.DataFrame, factors: int,
    cfg: FollowConfig, *, bays: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """user_id, followee_id, score, rank: for each user of `users` with affinity, the creators
    ALS scores highest among those they have no affinity with, do not follow and are not; one
    global model, or one per bay of `bays` (user_id, bay)."""
    if affinity.height == 0:
        return empty_scored()
    groups = {GLOBAL: affinity} if bays is None else dict(
        affinity.join(bays, on=s.USER_ID).partition_by(BAY, as_dict=True, include_key=False)
    )
    banned = excluded(users, follows).rename({s.FOLLOWEE_ID: s.CREATOR_ID})
    creators = IdMap(affinity[s.CREATOR_ID])
    parts = [
        _scored(part, creators, users, banned, factors, cfg)
        for _, part in sorted(groups.items(), key=lambda item: str(item[0]))
    ]
    scored = pl.concat(parts) if parts else empty_scored()
    log.debug("als: %s factors, %s models, %s rows", factors, len(parts), scored.height)
    return top_per_user(scored, cfg.per_source, excluded(users, follows))


def _scored(
    affinity: pl.DataFrame, creators: IdMap, users: pl.Series, banned: pl.DataFrame,
    factors: int, cfg: FollowConfig,
) -> pl.DataFrame:
    """One model fitted on `affinity` (every creator of `creators` a column), scoring its
    users that are in `users`."""
    owners = IdMap(affinity[s.USER_ID])
    indexed = creators.to_index(owners.to_index(affinity, s.USER_ID, alias="u"), s.CREATOR_ID,
                                alias="c")
    matrix = sp.csr_matrix(
        (indexed[AFFINITY].to_numpy(), (indexed["u"].to_numpy(), indexed["c"].to_numpy())),
        shape=(len(owners), len(creators)),
    )
    model = fit_als(matrix, factors, cfg)

    scope = owners.to_index(users.unique().sort().to_frame(s.USER_ID), s.USER_ID, alias="u")
    rows = scope["u"].drop_nulls().to_numpy().astype(np.int64)
    if rows.size == 0:
        return empty_scored()
    # implicit leaves out of a user's list every creator stored in their row: here the ones
    # they have affinity with, follow, or are.
    pairs = creators.to_index(owners.to_index(banned, s.USER_ID, alias="u"), s.CREATOR_ID,
                              alias="c").drop_nulls(["u", "c"])
    known = (matrix + sp.csr_matrix(
        (np.ones(pairs.height), (pairs["u"].to_numpy(), pairs["c"].to_numpy())),
        shape=matrix.shape,
    )).tocsr()
    with threadpool_limits(1, "blas"):
        ids, scores = model.recommend(rows, known[rows], N=min(cfg.per_source, len(creators)),
                                      filter_already_liked_items=True)
    user = np.repeat(rows, ids.shape[1])
    ids, scores = ids.ravel(), scores.ravel()
    found = (ids >= 0) & np.isfinite(scores) & (scores > 0)
    return pl.DataFrame({
        s.USER_ID: owners.to_ids(user[found]), s.FOLLOWEE_ID: creators.to_ids(ids[found]),
        SCORE: scores[found].astype(np.float64), RANK: np.zeros(int(found.sum()), dtype=np.int64),
    })


def choose_factors(
    train: pl.DataFrame, targets: pl.DataFrame, cfg: FollowConfig, *, protocol: str,
    bays: pl.DataFrame | None = None,
) -> tuple[int, int, pl.DataFrame]:
    """Fit each of `follow.factor_choices` on the affinity `train` and score it on `targets`
    (user_id, creator_id: creators new to the user). Returns the best count for the global
    model and for the bays (the global one when `bays` is None), and the validation table:
    protocol, model, factors, recall, ndcg, users, chosen."""
    users = targets[s.USER_ID].unique()
    wanted = targets.select(s.USER_ID, pl.col(s.CREATOR_ID).alias(s.FOLLOWEE_ID))
    no_follows = pl.DataFrame(schema={s.FOLLOWER_ID: pl.String, s.FOLLOWEE_ID: pl.String})
    rows = []
    models = {GLOBAL: None} if bays is None else {GLOBAL: None, BAYS: bays}
    for model, groups in models.items():
        for factors in cfg.factor_choices:
            ranked = als_candidates(train, users, no_follows, factors, cfg, bays=groups)
            scored = ranking_metrics(ranked, wanted)
            rows.append({"protocol": protocol, "model": model, "factors": factors, **scored})
    table = pl.DataFrame(rows, schema={k: v for k, v in VALIDATION_SCHEMA.items()
                                       if k != "chosen"})
    best = {model: _best_factors(table, model, cfg) for model in models}
    chosen = pl.struct("model", "factors").is_in(
        [{"model": m, "factors": f} for m, f in best.items()]
    )
    table = table.with_columns(chosen.alias("chosen"))
    for model, factors in best.items():
        log.info("als (%s): %s factors chosen on %s validation users", model, factors,
                 f"{table['users'][0]:,}")
    return best[GLOBAL], best.get(BAYS, best[GLOBAL]), table


def _best_factors(table: pl.DataFrame, model: str, cfg: FollowConfig) -> int:
    """The factor count with the best NDCG@10 (ties: fewer factors); the first choice when no
    user could be scored."""
    rows = table.filter((pl.col("model") == model) & pl.col(NDCG).is_not_null())
    if rows.height == 0:
        return cfg.factor_choices[0]
    return int(rows.sort([NDCG, "factors"], descending=[True, False])["factors"][0])
