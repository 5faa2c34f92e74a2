"""Baselines for the offline evaluation: single-source recommenders with one contract.

Every baseline sees the feedback before one moment (a `Train`) and gives each requested user
their best `k` unheard tracks as (user_id, track_id, rank); a track the user heard before the
moment (a skip included) is never listed, as in the batch. A user the model knows nothing
about gets no list. The models:

- `most_popular`: the tracks with the most positive listeners;
- `ease`: EASE (Steck 2019), the closed form B = I - P diag(1 / diag P) with P = (X'X +
  lambda I)^-1 over the binary positive matrix X; dense in the tracks, so tracks with fewer
  than `evaluation.ease_min_listeners` listeners are left out of it, and EASE is skipped when
  more than `evaluation.ease_max_tracks` remain;
- `als`: implicit's alternating least squares on the positive pairs, weighted by strength;
- `walks`: the walk candidate source alone (`stages/walks.py`), best walk score first;
- `similarity:<measure>`: the similarity expansion of the user's seeds alone
  (`stages/candidates.py`), by the sum of the seeds' similarities.

`grid` lists each model's settings, tuned by the caller on a validation window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
import scipy.linalg
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys import schema as s
from recsys.config import Config
from recsys.ids import IdMap
from recsys.stages import candidates as cand
from recsys.stages import walks
from recsys.stages.feedback import POSITIVE, STRENGTH
from recsys.stages.similarity import MEASURES, RANK as NEIGHBOUR_RANK, similar_tracks

log = logging.getLogger(__name__)

RANK = "rank"
MOST_POPULAR, EASE, ALS, WALKS, HYBRID = "most_popular", "ease", "als", "walks", "hybrid"
SIMILARITY = "similarity"
LIST_SCHEMA = {s.USER_ID: pl.String, s.TRACK_ID: pl.String, RANK: pl.Int64}
USER_CHUNK = 1024  # users scored at once from a dense (users x tracks) block


class ModelSkipped(Exception):
    """A model that cannot run on this data; the message says why and what to change."""


@dataclass
class Train:
    """The feedback before `moment`: what a baseline learns from. `cache` keeps what several
    settings of one model share (neighbours, the Gram matrix)."""

    moment: datetime
    feedback: pl.DataFrame
    cache: dict = field(default_factory=dict)

    def heard(self) -> pl.DataFrame:
        return self.feedback.select(s.USER_ID, s.TRACK_ID)

    def positive(self) -> pl.DataFrame:
        return self.feedback.filter(pl.col(POSITIVE))


def similarity_model(measure: str) -> str:
    return f"{SIMILARITY}:{measure}"


def model_names(cfg: Config) -> list[str]:
    """The models `cfg.evaluation.models` asks for, once each, "similarity" expanded per
    measure."""
    names = []
    for model in cfg.evaluation.models:
        names += [similarity_model(m) for m in MEASURES] if model == SIMILARITY else [model]
    return list(dict.fromkeys(names))


def grid(model: str, cfg: Config) -> list[dict]:
    """The settings of `model` tried on the validation window, in order (the first wins ties)."""
    ev = cfg.evaluation
    if model == EASE:
        return [{"lambda": lam} for lam in ev.ease_lambdas]
    if model == ALS:
        return [{"factors": f, "regularization": r}
                for f in ev.als_factors for r in ev.als_regularization]
    if model == WALKS:
        return [{"restart": r} for r in ev.walks_restart]
    if model.startswith(f"{SIMILARITY}:"):
        return [{"k": k} for k in ev.similarity_k]
    return [{}]


def recommend(
    model: str, train: Train, users: pl.Series, k: int, params: dict, cfg: Config
) -> pl.DataFrame:
    """user_id, track_id, rank (from 1): the top `k` unheard tracks of `users` under `model`."""
    if model.startswith(f"{SIMILARITY}:"):
        lists = _similarity(train, users, k, model.split(":", 1)[1], params["k"], cfg)
    else:
        lists = RECOMMENDERS[model](train, users, k, params, cfg)
    return lists.cast(LIST_SCHEMA).sort(s.USER_ID, RANK)


def _most_popular(train: Train, users: pl.Series, k: int, params: dict, cfg: Config):
    matrix, user_map, track_map = _positive_matrix(train, binary=True)
    popularity = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
    return _dense_top_k(train, users, k, user_map, track_map, lambda rows: np.broadcast_to(
        popularity, (len(rows), popularity.size)).copy())


def _ease(train: Train, users: pl.Series, k: int, params: dict, cfg: Config):
    ev = cfg.evaluation
    if "gram" not in train.cache:
        train.cache["gram"] = _ease_gram(train, ev.ease_min_listeners, ev.ease_max_tracks)
    gram, matrix, user_map, track_map = train.cache["gram"]
    weights = _ease_weights(gram, params["lambda"])
    return _dense_top_k(train, users, k, user_map, track_map,
                        lambda rows: (matrix[rows] @ weights).astype(np.float32))


def _ease_gram(train: Train, min_listeners: int, max_tracks: int):
    """X'X over the tracks with at least `min_listeners` listeners, with X and its id maps."""
    listeners = train.positive().group_by(s.TRACK_ID).len()
    kept = listeners.filter(pl.col("len") >= min_listeners)
    if kept.height > max_tracks:
        gigabytes = 3 * 4 * kept.height**2 / 1e9
        raise ModelSkipped(
            f"{kept.height:,} tracks have at least {min_listeners} listeners, more than "
            f"evaluation.ease_max_tracks = {max_tracks:,} (EASE would need about "
            f"{gigabytes:.1f} GB); raise evaluation.ease_max_tracks if memory allows, or "
            "evaluation.ease_min_listeners to keep fewer tracks"
        )
    pairs = train.positive().join(kept, on=s.TRACK_ID, how="semi")
    matrix, user_map, track_map = _matrix(pairs, binary=True)
    matrix = matrix.astype(np.float32)
    gram = (matrix.T @ matrix).toarray()
    return gram, matrix, user_map, track_map


def _ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's item-item weights for a Gram matrix and a regularization lambda."""
    regularized = gram + lam * np.eye(gram.shape[0], dtype=gram.dtype)
    inverse = scipy.linalg.inv(regularized, overwrite_a=True, check_finite=False)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


def _als(train: Train, users: pl.Series, k: int, params: dict, cfg: Config):
    from implicit.cpu.als import AlternatingLeastSquares

    ev = cfg.evaluation
    matrix, user_map, track_map = _positive_matrix(train, binary=False)
    # One BLAS thread: implicit's solver runs its own, and warns (rightly) otherwise.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params["factors"], regularization=params["regularization"],
            alpha=ev.als_alpha, iterations=ev.als_iterations, random_state=ev.seed,
            num_threads=1,
        )
        model.fit(matrix.astype(np.float32), show_progress=False)
    rows, known = _rows_of(users, user_map)
    if len(rows) == 0:
        return pl.DataFrame(schema=LIST_SCHEMA)
    heard = _heard_matrix(train, user_map, track_map)[rows]
    ids, scores = model.recommend(rows, heard, N=min(k, len(track_map)),
                                  filter_already_liked_items=True)
    return _from_arrays(known, ids, scores, track_map)


def _walks(train: Train, users: pl.Series, k: int, params: dict, cfg: Config):
    walks_cfg = cfg.walks.model_copy(update={"restart": params["restart"], "max_tracks": k})
    fb = train.feedback
    seeds = cand.seeds(fb, cfg.candidates).join(users.to_frame(s.USER_ID), on=s.USER_ID,
                                                 how="semi")
    if "graph" not in train.cache:
        train.cache["graph"] = walks.listener_graph(fb)
    walked = walks.walk_candidates(train.cache["graph"], seeds, train.heard(), walks_cfg)
    return walked.select(s.USER_ID, s.TRACK_ID, pl.col(walks.WALK_RANK).alias(RANK))


def _similarity(train: Train, users: pl.Series, k: int, measure: str, neighbours: int,
                cfg: Config) -> pl.DataFrame:
    """The similarity expansion alone: each unheard neighbour of the user's seeds, by the sum of
    their similarities, from the `neighbours` nearest of each seed."""
    most = max(cfg.evaluation.similarity_k + (neighbours,))
    sim_cfg = cfg.similarity.model_copy(update={"measure": measure, "k": most})
    key = (SIMILARITY, sim_cfg.model_dump_json())
    if key not in train.cache:
        train.cache[key] = similar_tracks(train.feedback, sim_cfg, moment=train.moment)
    similar = train.cache[key].filter(pl.col(NEIGHBOUR_RANK) <= neighbours)
    seeds = cand.seeds(train.feedback, cfg.candidates).join(users.to_frame(s.USER_ID),
                                                             on=s.USER_ID, how="semi")
    # Summed in a fixed order: the join's row order varies between runs, and float sums in
    # another order can break a tie the other way.
    steps = cand.similar_candidates(seeds, similar, train.heard()).sort(
        s.USER_ID, s.TRACK_ID, cand.SEED_TRACK_ID)
    scored = steps.group_by(s.USER_ID, s.TRACK_ID, maintain_order=True).agg(
        pl.col(cand.CONTRIBUTION).sum())
    return _top(scored, cand.CONTRIBUTION, k)


RECOMMENDERS: dict[str, Callable[..., pl.DataFrame]] = {
    MOST_POPULAR: _most_popular, EASE: _ease, ALS: _als, WALKS: _walks,
}


def _top(scored: pl.DataFrame, score: str, k: int) -> pl.DataFrame:
    """Each user's k best rows by `score`, ties by track id, ranked from 1."""
    return (
        scored.sort([s.USER_ID, score, s.TRACK_ID], descending=[False, True, False])
        .group_by(s.USER_ID, maintain_order=True)
        .head(k)
        .with_columns(pl.int_range(1, pl.len() + 1).over(s.USER_ID).alias(RANK))
        .select(s.USER_ID, s.TRACK_ID, RANK)
    )


def _matrix(pairs: pl.DataFrame, *, binary: bool) -> tuple[sp.csr_matrix, IdMap, IdMap]:
    """users x tracks of (user_id, track_id[, strength]) pairs, with the id maps."""
    user_map, track_map = IdMap(pairs[s.USER_ID]), IdMap(pairs[s.TRACK_ID])
    indexed = track_map.to_index(user_map.to_index(pairs, s.USER_ID, alias="u"), s.TRACK_ID,
                                 alias="t")
    values = np.ones(indexed.height) if binary else indexed[STRENGTH].to_numpy()
    matrix = sp.csr_matrix((values, (indexed["u"].to_numpy(), indexed["t"].to_numpy())),
                           shape=(len(user_map), len(track_map)))
    return matrix, user_map, track_map


def _positive_matrix(train: Train, *, binary: bool) -> tuple[sp.csr_matrix, IdMap, IdMap]:
    key = ("positive", binary)
    if key not in train.cache:
        train.cache[key] = _matrix(train.positive(), binary=binary)
    return train.cache[key]


def _heard_matrix(train: Train, user_map: IdMap, track_map: IdMap) -> sp.csr_matrix:
    """users x tracks: 1 where the user heard the track (in the maps' indices)."""
    pairs = track_map.to_index(user_map.to_index(train.heard(), s.USER_ID, alias="u"),
                               s.TRACK_ID, alias="t").drop_nulls(["u", "t"])
    return sp.csr_matrix((np.ones(pairs.height, dtype=np.float32),
                          (pairs["u"].to_numpy(), pairs["t"].to_numpy())),
                         shape=(len(user_map), len(track_map)))


def _rows_of(users: pl.Series, user_map: IdMap) -> tuple[np.ndarray, pl.Series]:
    """The matrix rows of the `users` the map knows, and those users' ids in the same order."""
    indexed = user_map.to_index(users.unique().sort().to_frame(s.USER_ID), s.USER_ID, alias="u")
    indexed = indexed.drop_nulls("u")
    return indexed["u"].to_numpy().astype(np.int64), indexed[s.USER_ID]


def _dense_top_k(train: Train, users: pl.Series, k: int, user_map: IdMap, track_map: IdMap,
                 scores_of: Callable[[np.ndarray], np.ndarray]) -> pl.DataFrame:
    """Top k per user from dense score rows (`scores_of(matrix rows)`), heard tracks masked."""
    rows, known = _rows_of(users, user_map)
    heard = _heard_matrix(train, user_map, track_map)
    frames = []
    for start in range(0, len(rows), USER_CHUNK):
        chunk = rows[start:start + USER_CHUNK]
        scores = np.asarray(scores_of(chunk), dtype=np.float32)
        mask = heard[chunk].tocoo()
        scores[mask.row, mask.col] = -np.inf
        ids, picked = _top_k_rows(scores, k)
        frames.append(_from_arrays(known[start:start + USER_CHUNK], ids, picked, track_map))
    return pl.concat(frames) if frames else pl.DataFrame(schema=LIST_SCHEMA)


def _top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The column indices and scores of each row's k largest, best first, ties by column."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -picked), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(picked, order, axis=1)


def _from_arrays(users: pl.Series, ids: np.ndarray, scores: np.ndarray,
                 track_map: IdMap) -> pl.DataFrame:
    """Rows of (users x k) track indices and scores as a list frame, unusable slots dropped."""
    n, k = ids.shape
    keep = np.isfinite(scores) & (ids >= 0)
    ranks = np.broadcast_to(np.arange(1, k + 1), (n, k))
    frame = pl.DataFrame({
        s.USER_ID: np.repeat(users.to_numpy(), k)[keep.ravel()],
        s.TRACK_ID: track_map.to_ids(np.where(keep, ids, 0)[keep]),
        RANK: ranks[keep],
    })
    # A dropped slot inside a list would leave a gap: number the kept ones again.
    return frame.with_columns(pl.int_range(1, pl.len() + 1).over(s.USER_ID).alias(RANK))
