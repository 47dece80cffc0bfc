"""Triton-shaped tensors into a graph's inputs, the same for every runner."""
from __future__ import annotations

import numpy as np

__all__ = ["conform"]


def conform(value: np.ndarray, rank: int, dtype: type | None) -> np.ndarray:
    """`value` as the graph input of `rank` and `dtype` wants it, contiguous.

    Triton gives batch-only inputs (graph shape `(B,)`, e.g. `table_scale`) the shape `(B, 1)`
    (config dims [1]); such inputs are squeezed to the graph's rank. `dtype` None: as is.
    """
    value = np.asarray(value)
    if rank == value.ndim - 1 and value.shape[-1] == 1:
        value = value.reshape(value.shape[:-1])
    if dtype is not None and value.dtype != dtype:
        value = value.astype(dtype)
    return np.ascontiguousarray(value)
