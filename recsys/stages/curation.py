"""Curator rules applied to the ranked candidates before the lists are cut to N.

- a block list of tracks and of creators: their tracks are never served;
- at most `max_per_creator` tracks by one (known) creator per list.

Each rule's effect is counted against the list the user would have had without it: how many
recommendations it removed (and so replaced by the next best candidate) and for how many users.
"""

from __future__ import annotations

import polars as pl

from recsys import schema as s
from recsys.config import CurationConfig
from recsys.stages.ranker import SCORE

RULE = "rule"
REMOVED = "recommendations_removed"
USERS_AFFECTED = "users_affected"


def _ordered(scored: pl.DataFrame) -> pl.DataFrame:
    return scored.sort([s.USER_ID, SCORE, s.TRACK_ID], descending=[False, True, False])


def _effect(rule: str, before: pl.DataFrame, after: pl.DataFrame, n: int) -> dict:
    """What `rule` took out of each user's top n."""
    top = _ordered(before).group_by(s.USER_ID, maintain_order=True).head(n)
    gone = top.join(after.select(s.USER_ID, s.TRACK_ID), on=[s.USER_ID, s.TRACK_ID], how="anti")
    return {RULE: rule, REMOVED: gone.height, USERS_AFFECTED: gone[s.USER_ID].n_unique()}


def apply_rules(
    scored: pl.DataFrame, tracks: pl.DataFrame, cfg: CurationConfig, *, n: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The candidates that pass the rules, and one row per rule with its effect."""
    creators = tracks.select(s.TRACK_ID, s.CREATOR_ID)
    frame = scored.join(creators, on=s.TRACK_ID, how="left")
    effects = []

    blocked = pl.col(s.TRACK_ID).is_in(list(cfg.block_tracks)) | pl.col(s.CREATOR_ID).is_in(
        list(cfg.block_creators)
    ).fill_null(False)
    kept = frame.filter(~blocked)
    effects.append(_effect("block_list", frame, kept, n))

    if cfg.max_per_creator is not None:
        # Count each creator's tracks down the user's ranked list; unknown creators are exempt.
        ranked = _ordered(kept).with_columns(
            pl.int_range(1, pl.len() + 1).over(s.USER_ID, s.CREATOR_ID).alias("_nth")
        )
        capped = ranked.filter(
            pl.col(s.CREATOR_ID).is_null() | (pl.col("_nth") <= cfg.max_per_creator)
        ).drop("_nth")
        effects.append(_effect("max_per_creator", kept, capped, n))
        kept = capped

    effect_frame = pl.DataFrame(
        effects, schema={RULE: pl.String, REMOVED: pl.Int64, USERS_AFFECTED: pl.Int64}
    )
    return kept.drop(s.CREATOR_ID), effect_frame
