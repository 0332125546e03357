"""Training rows of token ids: the data contract between the corpus builders and the training loop."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DataError", "TokenRows"]


class DataError(ValueError):
    """TokenRows that break the data contract; the message names the field and the values."""


@dataclass(frozen=True, eq=False)
class TokenRows:
    """Training rows: ``tokens`` int [n_rows, n_ctx] (padding id 0) and ``loss_mask`` bool
    [n_rows, n_ctx], True where token j (j >= 1) is a prediction target. Row r trains the model to
    predict ``tokens[r, j]`` from ``tokens[r, :j]`` wherever ``loss_mask[r, j]``.

    Raises DataError on a wrong shape or dtype, a target at position 0, or no target at all.
    """

    tokens: np.ndarray
    loss_mask: np.ndarray

    def __post_init__(self):
        t, m = self.tokens, self.loss_mask
        if not isinstance(t, np.ndarray) or t.ndim != 2 or not np.issubdtype(t.dtype, np.integer):
            raise DataError(f"tokens: expected an integer array [n_rows, n_ctx], got "
                            f"{getattr(t, 'dtype', type(t).__name__)} {getattr(t, 'shape', '')}")
        if not isinstance(m, np.ndarray) or m.dtype != np.bool_ or m.shape != t.shape:
            raise DataError(f"loss_mask: expected a bool array of shape {t.shape}, got "
                            f"{getattr(m, 'dtype', type(m).__name__)} {getattr(m, 'shape', '')}")
        if t.shape[0] < 1 or t.shape[1] < 2:
            raise DataError(f"tokens: shape {t.shape}: need at least 1 row of at least 2 tokens")
        if t.min() < 0:
            raise DataError(f"tokens: negative token id {int(t.min())}")
        if m[:, 0].any():
            raise DataError(f"loss_mask[:, 0] is True in rows {np.flatnonzero(m[:, 0])[:5].tolist()}: "
                            "position 0 has no prefix to predict it from")
        if not m.any():
            raise DataError("loss_mask selects no position at all")

    @property
    def n_rows(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_ctx(self) -> int:
        return self.tokens.shape[1]

    @classmethod
    def from_stream(cls, stream: np.ndarray, n_ctx: int) -> "TokenRows":
        """A token stream (documents already joined, no id 0 inside) cut into rows of `n_ctx`
        tokens, the tail padded with id 0; every non-pad position after the first is a target."""
        n_rows = -(-len(stream) // n_ctx)
        tokens = np.zeros(n_rows * n_ctx, np.int64)
        tokens[: len(stream)] = stream
        tokens = tokens.reshape(n_rows, n_ctx)                      # [n_rows, n_ctx]
        mask = tokens != 0
        mask[:, 0] = False                                          # the first token has no prefix
        return cls(tokens, mask)
