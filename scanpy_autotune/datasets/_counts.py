"""Validation of raw counts read from a dataset file."""

from __future__ import annotations

import numpy as np


def check_counts(data: np.ndarray, what: str, tol: float = 1e-6) -> np.ndarray:
    """Round ``data`` to integers after checking it is finite, non-negative and integral.

    Parameters
    ----------
    data
        Count values (any shape).
    what
        Name of the source, used in error messages.
    tol
        Largest accepted distance from an integer.

    Returns
    -------
    The rounded values, ``float64``.

    Raises
    ------
    ValueError
        When a value is NaN, infinite, negative or farther than ``tol`` from an integer.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.size == 0:
        return data
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{what}: counts contain NaN or infinite values.")
    if data.min() < 0:
        raise ValueError(f"{what}: counts contain negative values (min {data.min()}).")
    rounded = np.rint(data)
    dev = float(np.abs(data - rounded).max())
    if dev > tol:
        raise ValueError(f"{what}: counts are not integers (max distance to an integer {dev:.3g}).")
    return rounded
