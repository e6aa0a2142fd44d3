"""Argument checks shared by every public entry point.

Each check returns the value in its canonical Python type or raises a
``ValueError`` that names the argument, what it got and what it takes. Bools
are never numbers here (``n_layers=True`` is refused, not read as 1), and
strings are never parsed into numbers (``train_size="0.5"`` is refused).
Nothing heavy is imported: the search and the plots use these too.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any

import numpy as np

#: Largest seed: numpy's legacy generators and every seed derived from it (seed + trial id) take it.
MAX_SEED = 2**32 - 1
#: Largest trial or epoch budget: stored as a 32-bit integer anywhere (``.h5ad``, JSON, hyperopt).
MAX_BUDGET = 2**31 - 1

__all__ = ["check_choice", "check_fraction", "check_int", "check_number", "check_uns_key"]


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """An integer argument (Python or numpy), within ``[low, high]``.

    Parameters
    ----------
    name
        The argument's name, for the message.
    value
        What was passed.
    low, high
        Inclusive bounds (``None``: unbounded).
    allow_none
        Whether ``None`` is accepted (and returned).

    Returns
    -------
    int or None
        ``value`` as a Python ``int``.

    Raises
    ------
    ValueError
        For a bool, a float (even ``4.0``), a string, or a value out of bounds.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}={value!r} must be an integer{_bounds_text(low, high)}.")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}={value!r} must be an integer{_bounds_text(low, high)}.")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """A finite real number (not a bool, not a string) within the given bounds.

    Parameters
    ----------
    name
        The argument's name, for the message.
    value
        What was passed.
    low, high
        Bounds (``None``: unbounded).
    low_open, high_open
        Whether a bound itself is excluded.
    allow_none
        Whether ``None`` is accepted (and returned).

    Returns
    -------
    float or None
        ``value`` as a Python ``float``.

    Raises
    ------
    ValueError
        For anything else, with the accepted range in the message.
    """
    if value is None and allow_none:
        return None
    accepted = _range_text(low, high, low_open, high_open)
    if not _is_real(value) or not math.isfinite(float(value)):
        raise ValueError(f"{name}={value!r} must be a number{accepted}.")
    number = float(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        raise ValueError(f"{name}={value!r} must be a number{accepted}.")
    return number


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` (numpy's too); nothing else is taken for one (``"no"`` is truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}={value!r} must be True or False.")
    return bool(value)


def check_fraction(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A fraction of cells: a number in ``(0, 1)`` (``[0, 1)`` with ``allow_zero``)."""
    return check_number(name, value, low=0.0, high=1.0, low_open=not allow_zero, high_open=True)


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """One of ``choices``, of the same type (so bools and numbers are kept apart); a numpy
    scalar is taken as its Python value (``np.str_("all")`` as ``"all"``)."""
    value = value.item() if isinstance(value, np.generic) else value
    for choice in choices:
        if type(choice) is type(value) and choice == value:
            return value
    raise ValueError(f"{name}={value!r} is not valid; use one of {list(choices)}.")


def check_uns_key(name: str, value: Any) -> str:
    """A key that names an entry of ``adata.uns`` (and ``obsm``/``obs``) and survives ``.h5ad``.

    ``.h5ad`` stores each entry as an HDF5 group named by the key: a ``/`` makes
    a nested group that ``read_h5ad`` cannot read back, ``.`` and ``..`` name
    the enclosing group, and HDF5 names hold no NUL, so these are refused here.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}={value!r} must be a non-empty string.")
    if "/" in value:
        raise ValueError(
            f"{name}={value!r} contains '/', which .h5ad files cannot store in a key "
            "(read_h5ad would fail on the written file); use another name, e.g. "
            f"{value.replace('/', '_')!r}."
        )
    if value in (".", ".."):
        raise ValueError(
            f"{name}={value!r} names the enclosing group in an .h5ad file (HDF5 paths), so the "
            "results would be written over the rest of adata.uns; use another name, e.g. 'autotune'."
        )
    if "\x00" in value:
        raise ValueError(f"{name}={value!r} contains a NUL character, which .h5ad files cannot store.")
    return value


def _bounds_text(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is None and high is None:
        return " (finite)"
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f" in {left}{lo}, {hi}{right}"
