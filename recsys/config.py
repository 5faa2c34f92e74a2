"""One typed config for every stage, loaded from TOML, with defaults that work.

A TOML file holds any of the sections below; a section or key left out keeps its default, and
an unknown key is an error that names it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt,
    ValidationError,
)

from recsys.errors import ConfigError


class _Section(BaseModel):
    # Strict: a TOML string, boolean or float where another type is due is an error, not a
    # value converted in silence (`n = true` is not 1); an integer may stand for a float.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FeedbackConfig(_Section):
    """How events become one (user, track) strength and a positive or negative class."""

    play_weight: float = 1.0
    like_weight: float = 4.0
    repost_weight: float = 6.0
    skip_weight: float = -3.0
    # Listening time adds this much strength per minute played.
    minute_weight: float = 0.1


SimilarityMeasure = Literal["cooccurrence", "cosine", "jaccard", "lift", "bm25", "rp3beta"]


class SimilarityConfig(_Section):
    """Item/item similarity from co-interactions of positive (user, track) pairs."""

    measure: SimilarityMeasure = "rp3beta"
    k: int = Field(50, ge=1, description="neighbours kept per track")
    min_co_count: int = Field(2, ge=1, description="users two tracks must share")
    # RP3beta divides by the target track's popularity to this power: 0 is no damping.
    beta: float = Field(0.5, ge=0.0, le=2.0)
    bm25_k1: float = Field(1.2, ge=0.0)
    bm25_b: float = Field(0.75, ge=0.0, le=1.0)
    max_user_tracks: int | None = Field(
        None, ge=1, description="most recent positive tracks a user contributes (None: all)"
    )
    half_life_days: float | None = Field(
        None, gt=0, description="age at which an interaction weighs half (None: no decay)"
    )


class CandidatesConfig(_Section):
    """How a user's history becomes candidate tracks."""

    history_size: int = Field(50, ge=1, description="most recent positive tracks used as seeds")
    max_candidates: int = Field(200, ge=1, description="candidates kept per user")
    fallback_size: int = Field(50, ge=1, description="popular tracks offered to a cold user")


class WalksConfig(_Section):
    """Random walks with restart over the listener graph (personalized PageRank by Monte
    Carlo): a hop goes from a track to one of its listeners and on to one of their tracks."""

    walks_per_user: int = Field(1600, ge=1, description="walks started from a user's seeds")
    # The teleport: before every hop a walk ends with this chance and the next one starts
    # from a seed. 0.3 makes a walk 2.3 hops (4.7 steps) long on average.
    restart: float = Field(0.3, gt=0, le=1)
    max_length: int = Field(20, ge=1, description="hops after which a walk ends in any case")
    # A seed's share of the walks grows with its listeners to this power: 0 gives every seed
    # the same share, 1 a share proportional to its listeners.
    seed_degree_exponent: float = Field(0.5, ge=0, le=1)
    # Multi-hit boosting: a track's score is the square of the sum over seeds of the root of
    # its visits from that seed, so a track reached from several seeds ranks above one
    # reached as often from a single seed. Off: the score is the visit share (the PageRank).
    boost: bool = True
    # Hubs are the tracks and the listeners with the most edges, this share of each side
    # (None: no hubs). A walk passes through one hub at most `hub_cap` times the user's
    # walks; a walk arriving at a hub whose cap is used up ends there.
    hub_share: float | None = Field(0.001, gt=0, lt=1)
    hub_cap: float = Field(0.02, gt=0, le=1)
    weighted: bool = Field(False, description="pick neighbours in proportion to strength")
    # At a listener, the chance of moving on to an account they follow before picking a track
    # (used only when follows are given).
    follow_probability: float = Field(0.0, ge=0, le=1)
    max_tracks: int = Field(200, ge=1, description="visited tracks kept per user, best first")
    paths_per_track: int = Field(3, ge=1, description="explanation paths kept per track")
    seed: int = Field(0, ge=0, description="seed of the random walks")


class FactorsConfig(_Section):
    """implicit's ALS on the weighted feedback: a candidate source (`als`) beside similarity
    and walks. The confidence of a positive (user, track) pair is `alpha` times its strength
    (`log1p` of it with `log_strength`, so that a few heavy listeners do not dominate)."""

    enabled: bool = True
    factors: int = Field(32, ge=1, description="latent factors per user and track")
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(2.0, gt=0, description="confidence per unit of (scaled) strength")
    log_strength: bool = True
    iterations: int = Field(15, ge=1)
    max_tracks: int = Field(100, ge=1, description="unheard tracks kept per user, best first")
    seed: int = Field(0, ge=0, description="seed of the initial factors")
    # One thread by default, like the ranker: reproducible and quiet on a busy machine.
    num_threads: int = Field(1, ge=1)


class FeaturesConfig(_Section):
    """Knobs of the ranker's features (see `recsys/stages/affinity.py`)."""

    half_life_days: float = Field(
        30.0, gt=0, description="age at which an interaction counts half in the affinities"
    )
    trend_recent_days: float = Field(7.0, gt=0, description="recent window of the trend")
    trend_base_days: float = Field(28.0, gt=0, description="the window before it")


Kpi = Literal["plays", "listening_time", "likes", "reposts", "likes_or_reposts", "engagement"]


class LabelsConfig(_Section):
    """Labels from the window after the training cut (see `recsys/stages/labels.py`)."""

    kpi: Kpi = "engagement"
    window_days: float = Field(28.0, gt=0)
    # `engagement` grades a play 2 ("listened") when it lasts this share of the track's
    # duration, or, for a track of unknown duration (or with the share None), this many seconds.
    listened_share: float | None = Field(0.5, gt=0, le=1)
    listened_seconds: float = Field(60.0, gt=0)


RankerObjective = Literal["lambdarank", "binary"]


class RankerConfig(_Section):
    """The LightGBM ranker: lambdarank on the graded labels, or a binary classifier whose
    positive class is a positive sum of the window's signals (skips count against)."""

    objective: RankerObjective = "lambdarank"
    num_trees: int = Field(200, ge=1)
    num_leaves: int = Field(15, ge=2)
    learning_rate: float = Field(0.05, gt=0)
    min_data_in_leaf: int = Field(50, ge=1)
    # Two measured best on the sample data (see the README's Time section): a third window's cut
    # has too little history before it to look like serving.
    training_cuts: int = Field(2, ge=1, description="label windows stacked for training rows")
    negatives_per_user: int | None = Field(
        40, ge=1, description="label-0 candidates kept per user and cut in training (None: all)"
    )
    early_stopping_rounds: int = Field(20, ge=1)
    validation_share: float = Field(0.2, gt=0, lt=1, description="users held out for stopping")
    seed: int = 0
    # Per labelled window, at most this many users (a seeded sample of those with a positive
    # label in the window) give training and validation rows; None: every user with history.
    training_users: int | None = Field(None, ge=1)
    # LightGBM's OpenMP threads spin while they wait: on a busy machine two threads can run ten
    # times slower than one, so one is the default.
    num_threads: int = Field(1, ge=1)


class RecommendConfig(_Section):
    """The served lists and their explanations."""

    n: int = Field(10, ge=1, description="recommendations per user")
    seeds_per_reason: int = Field(3, ge=1, description="history tracks named per reason")
    shap_top: int = Field(6, ge=1, description="largest SHAP contributions kept per row")
    # SHAP is computed in the batch for the lists of this share of users, chosen by a hash of
    # `shap_seed` and the user id; the others' are computed on demand by the inspector (the
    # features of every served recommendation are stored). 1 is every user.
    shap_share: float = Field(1.0, ge=0, le=1)
    shap_seed: int = Field(0, ge=0, description="seed of the users whose SHAP the batch stores")


class GeneratorConfig(_Section):
    """The synthetic dataset of `recsys generate`: the shapes the engine must cope with."""

    popularity_exponent: float = Field(1.0, gt=0, description="Zipf exponent of track plays")
    super_nodes: int = Field(5, ge=0, description="tracks that a large share of users play")
    super_node_reach: float = Field(0.4, ge=0, le=1, description="share of users per super node")
    genres: int = Field(12, ge=1)
    top_genre_share: float = Field(0.7, ge=0, le=1, description="plays in a user's top genre")
    tracks_per_creator: float = Field(8.0, ge=1)
    events_per_user: float = Field(60.0, gt=0, description="mean events per user")
    days: int = Field(120, ge=1, description="span of the event log")
    skip_rate: float = Field(0.15, ge=0, le=1)
    like_rate: float = Field(0.05, ge=0, le=1)
    repost_rate: float = Field(0.01, ge=0, le=1)
    follows_per_user: float = Field(8.0, ge=0)
    follow_play_share: float = Field(
        0.2, ge=0, le=1, description="listens that go to creators the user follows"
    )
    styles_per_genre: int = Field(3, ge=1, description="latent scenes inside a genre")
    style_focus: float = Field(
        0.5, ge=0, le=1, description="top-genre listens that stay in the user's own scene"
    )
    new_track_share: float = Field(0.25, ge=0, le=1, description="tracks released in the span")
    new_user_share: float = Field(0.3, ge=0, le=1, description="users who join during the span")
    popularity_drift: float = Field(
        0.8, ge=0, le=1, description="how far a track's popularity rises or fades over the span"
    )
    unknown_genre_share: float = Field(0.05, ge=0, le=1, description="tracks with a null genre")
    unknown_creator_share: float = Field(0.01, ge=0, le=1, description="tracks, null creator")


class CurationConfig(_Section):
    """Curator rules applied in the batch before the lists are cut to N."""

    max_per_creator: int | None = Field(None, ge=1, description="tracks by one creator per list")
    block_tracks: tuple[str, ...] = ()
    block_creators: tuple[str, ...] = ()


class BatchConfig(_Section):
    """How the batch runs: the per-user stages (candidates, features, scoring, explanations)
    run over partitions of this many users, so that their memory depends on the partition
    size rather than on the number of users."""

    partition_users: int | None = Field(20_000, ge=1, description="users per partition")


AffinityForm = Literal["weighted", "classification"]
Bays = Literal["none", "genre", "graph"]
FollowProtocol = Literal["auto", "window", "holdout"]


class FollowConfig(_Section):
    """Who to follow: the sources, ALS on user-to-creator affinity, the merge, the evaluation."""

    n: int = Field(10, ge=1, description="suggestions per user")
    per_source: int = Field(50, ge=1, description="candidates kept per source and user")
    # Item-based CF on the follow graph (accounts co-followed) and creators co-listened use the
    # damping options of track similarity; a follower or a listener is the "user" side.
    similarity: SimilarityConfig = SimilarityConfig()
    # Circle of trust: personalized PageRank from the user; the chance of a jump back to them.
    trust_restart: float = Field(0.3, gt=0, lt=1)
    # Up to this many accounts the PageRank is exact (power iteration over dense blocks of
    # users, whose cost grows with accounts x users); a larger graph is walked (Monte Carlo,
    # `trust_walks` walks per user), whose cost grows with the users alone.
    trust_exact_accounts: int = Field(10_000, ge=0)
    trust_walks: int = Field(1000, ge=1, description="walks per user on a larger graph")
    # ALS's user-to-creator affinity: "weighted" sums the weighted listens, likes and reposts
    # of a creator's tracks (log-scaled); "classification" is 1 where the signed sum (skips
    # count against) is positive, and no entry otherwise.
    affinity: AffinityForm = "weighted"
    play_weight: float = Field(1.0, ge=0)
    like_weight: float = Field(4.0, ge=0)
    repost_weight: float = Field(6.0, ge=0)
    skip_weight: float = Field(-3.0, le=0, description="classification form only")
    factor_choices: tuple[PositiveInt, ...] = Field(
        (8, 16, 32, 64), min_length=1, description="ALS factor counts tried on validation"
    )
    als_iterations: int = Field(15, ge=1)
    als_regularization: float = Field(0.05, ge=0)
    als_alpha: float = Field(10.0, gt=0, description="ALS confidence per unit of affinity")
    # "Musical bays": one ALS per community of users (by dominant genre, or a Louvain
    # community of the follow graph) instead of one global model; bays smaller than
    # `min_bay_users` share one model.
    bays: Bays = "none"
    min_bay_users: int = Field(50, ge=1)
    # Evaluation: "window" scores the follows made in the last `window_days` (dated follows);
    # "holdout" a seeded `holdout_share` of the edges (undated follows; a friendship counts as
    # one edge); "auto" picks window when every follow has a date.
    protocol: FollowProtocol = "auto"
    window_days: float = Field(28.0, gt=0)
    holdout_share: float = Field(0.2, gt=0, lt=0.5)
    seed: int = Field(0, ge=0, description="seed of the hold-outs, ALS and the communities")
    num_threads: int = Field(1, ge=1, description="ALS threads")
# "similarity" stands for one model per measure; "similarity:<measure>" for one of them.
EvaluationModel = Literal[(
    "most_popular", "ease", "als", "walks", "similarity", "hybrid",
    *(f"similarity:{measure}" for measure in get_args(SimilarityMeasure)),
)]


class EvaluationConfig(_Section):
    """`recsys evaluate`: the models compared, the cuts, and each baseline's tuning grid."""

    ks: tuple[PositiveInt, ...] = Field((5, 10, 20), min_length=1,
                                        description="list lengths measured")
    models: tuple[EvaluationModel, ...] = (
        "most_popular", "ease", "als", "walks", "similarity", "hybrid",
    )
    min_users: int = Field(100, ge=1, description="users scored before no more cuts are stacked")
    max_cuts: int = Field(8, ge=1, description="rolling cuts stacked at most")
    # Tune each baseline on the window before every cut, or once before the earliest cut.
    tune_each_cut: bool = True
    # EASE inverts a dense tracks x tracks matrix: tracks with fewer positive listeners are
    # left out of it, and past `ease_max_tracks` EASE is skipped (4 bytes per cell, times 3).
    ease_min_listeners: int = Field(2, ge=1)
    ease_max_tracks: int = Field(12_000, ge=1)
    ease_lambdas: tuple[PositiveFloat, ...] = Field((10.0, 100.0, 500.0, 2000.0),
                                                    min_length=1)
    als_factors: tuple[PositiveInt, ...] = Field((16, 64), min_length=1)
    als_regularization: tuple[NonNegativeFloat, ...] = Field((0.01, 0.1, 1.0, 10.0),
                                                           min_length=1)
    als_iterations: int = Field(15, ge=1)
    als_alpha: float = Field(1.0, gt=0, description="confidence per unit of strength")
    similarity_k: tuple[PositiveInt, ...] = Field((20, 50, 100), min_length=1)
    walks_restart: tuple[Annotated[float, Field(gt=0, le=1)], ...] = Field(
        (0.15, 0.3, 0.5), min_length=1
    )
    faithfulness_sample: int = Field(100, ge=0, description="recommendations tested, 0: none")
    seed: int = 0


class SweepConfig(_Section):
    """`recsys sweep`: the damping settings tried on a sample of users."""

    users: int = Field(500, ge=1, description="users in the seeded sample")
    seed: int = 0
    betas: tuple[Annotated[float, Field(ge=0, le=2)], ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    bm25_b: tuple[Annotated[float, Field(ge=0, le=1)], ...] = (0.25, 0.5, 0.75, 1.0)


class StoreConfig(_Section):
    keep_runs: int = Field(7, ge=1, description="runs kept in the store's runs/ folder")


class Config(_Section):
    feedback: FeedbackConfig = FeedbackConfig()
    similarity: SimilarityConfig = SimilarityConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    walks: WalksConfig = WalksConfig()
    factors: FactorsConfig = FactorsConfig()
    features: FeaturesConfig = FeaturesConfig()
    labels: LabelsConfig = LabelsConfig()
    ranker: RankerConfig = RankerConfig()
    recommend: RecommendConfig = RecommendConfig()
    curation: CurationConfig = CurationConfig()
    follow: FollowConfig = FollowConfig()
    store: StoreConfig = StoreConfig()
    batch: BatchConfig = BatchConfig()
    generator: GeneratorConfig = GeneratorConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    sweep: SweepConfig = SweepConfig()


def load_config(path: str | Path | None = None) -> Config:
    """The config in the TOML file at `path`, or the defaults when `path` is None."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return config_from(data, path)


def config_from(data: dict, source: str | Path = "config") -> Config:
    """The config in `data` (sections of keys, as a TOML file holds them); a ConfigError
    naming `source`, the key and the rule when it breaks one."""
    try:
        return Config.model_validate(_tuples(data))
    except ValidationError as exc:
        raise ConfigError("\n".join(_problem(source, err) for err in exc.errors())) from exc


def _tuples(value):
    """The TOML document with its arrays as tuples, the type the config's lists have."""
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def _problem(path: str | Path, err: dict) -> str:
    """One line per broken rule: the file, the key, what is wrong and the value seen."""
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{path}: [{key}] unknown key; see the README's configuration for the known ones"
    if err["type"] == "model_type":
        return f"{path}: [{key}] must be a section of keys, not a value (seen: {err['input']!r})"
    return f"{path}: [{key}] {err['msg']} (seen: {err.get('input')!r})"
