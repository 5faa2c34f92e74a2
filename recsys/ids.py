"""External ids (strings from the data) and internal indices (dense integers for matrices)."""

from __future__ import annotations

import numpy as np
import polars as pl


class IdMap:
    """A fixed, sorted mapping between external string ids and indices 0..n-1."""

    def __init__(self, ids: pl.Series | list[str]):
        self.ids = pl.Series("id", ids, dtype=pl.String).unique().sort()
        self._frame = self.ids.to_frame().with_row_index("index")

    def __len__(self) -> int:
        return self.ids.len()

    def to_index(
        self, frame: pl.DataFrame, column: str, *, alias: str | None = None
    ) -> pl.DataFrame:
        """Add the index of `column` as `alias` (default `<column>_index`); unknown ids are
        null."""
        mapping = self._frame.rename({"id": column, "index": alias or f"{column}_index"})
        return frame.join(mapping, on=column, how="left", maintain_order="left")

    def to_ids(self, indices: np.ndarray) -> pl.Series:
        """The external ids at `indices`."""
        return self.ids.gather(pl.Series(indices.astype(np.int64, copy=False)))
