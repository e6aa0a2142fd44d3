"""Which cells a model's method reads: ``cells=`` resolved against the data and the model's split.

A model keeps its split by cell name. Names alone do not say that the data is
the data the model was trained on: anndata names cells ``'0'``, ``'1'``, ...
unless told otherwise, so the "held-out" cells of another dataset would be
whatever cells happen to carry those names. A model therefore also keeps a
digest of each part's per-cell total counts (:func:`split_digests`), and a
split's name applied to cells whose counts differ is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._data import SPLIT_NAMES, CountData, Split

__all__ = ["Cells", "check_split_cells", "select_cells", "split_digests"]

#: What ``cells=`` takes: ``"all"``, a split's name, one cell's name, obs names, or a True/False mask.
Cells = str | Sequence[str] | np.ndarray | pd.Series

_HOW = "cells= takes 'all', one of {splits}, a True/False mask or obs names"


def _cell_totals(data: CountData) -> np.ndarray:
    """Every cell's total count, as whole numbers (one pass over the matrix, no copy of its rows)."""
    return np.rint(np.asarray(data.X.sum(axis=1, dtype=np.float64)).ravel()).astype(np.int64)


def _digest(totals: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(totals).tobytes()).hexdigest()[:16]


def _parts(split: Split) -> dict[str, np.ndarray]:
    """The non-empty parts of ``split`` by name."""
    return {name: getattr(split, name) for name in SPLIT_NAMES if len(getattr(split, name))}


def split_digests(data: CountData, split: Split) -> dict[str, str]:
    """A digest of each non-empty part of ``split``: its cells' total counts, in the split's order."""
    totals = _cell_totals(data)
    return {name: _digest(totals[rows]) for name, rows in _parts(split).items()}


def _check_parts(data: CountData, parts: Mapping[str, np.ndarray], digests: Mapping[str, str]) -> None:
    """Refuse the model's split parts (rows in ``data`` by name) whose cells hold other counts than in training."""
    totals = _cell_totals(data)
    for name, rows in parts.items():
        expected = digests.get(name)  # None: a model saved before digests were kept
        if expected is not None and _digest(totals[rows]) != expected:
            raise ValueError(
                f"adata's cells named as the model's {name!r} cells hold other counts than those cells held "
                "when the model was trained: adata is other data, whose cell names match the model's by chance "
                "(e.g. anndata's default names '0', '1', ...). To score these cells, pass cells='all', a "
                "True/False mask or obs names."
            )


def check_split_cells(data: CountData, split: Split, digests: Mapping[str, str]) -> None:
    """Refuse ``split`` (the model's, by name) when its cells in ``data`` hold other counts than in training."""
    _check_parts(data, _parts(split), digests)


def _describe(cells: Any) -> str:
    """``cells=`` as a message names it: short, whatever its size."""
    if isinstance(cells, (str, list, tuple)) and len(repr(cells)) <= 60:
        return f"cells={cells!r}"
    try:
        size = len(cells)
    except TypeError:
        return f"cells={cells!r}"
    return f"cells= (a {type(cells).__name__} of {size} value(s))"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, complex, np.number)) and not isinstance(value, (bool, np.bool_))


def _refuse_a_mask_with_missing_values(cells: Any) -> None:
    """A mask of True/False with NaN or NA in it is a mask gone wrong, not a list of cell names."""
    if not isinstance(cells, (pd.Series, np.ndarray, list, tuple)):
        return
    values = pd.Series(np.asarray(cells, dtype=object).ravel()) if not isinstance(cells, pd.Series) else cells
    missing = values.isna()
    if missing.any() and values[~missing].map(lambda v: isinstance(v, (bool, np.bool_))).all():
        raise ValueError(
            f"cells= is a True/False mask with {int(missing.sum())} missing value(s); fill them "
            "(e.g. mask.fillna(False)) so that every cell is selected or not."
        )


def _mask_by_name(data: CountData, mask: pd.Series) -> np.ndarray:
    """A boolean Series as a mask in adata's cell order: matched by its index, the cells' names."""
    names = mask.index.astype(str)
    if names.is_unique and len(names) == data.n_obs and data.obs_names.is_unique and names.isin(data.obs_names).all():
        return mask.to_numpy()[names.get_indexer(data.obs_names)]
    raise ValueError(
        "a boolean Series for cells= is matched to the cells by its index, which must hold "
        "adata.obs_names once each (e.g. adata.obs['cell_type'] == 'B'); pass a numpy mask "
        "to select by position."
    )


def _by_name(data: CountData, names: list[str], what: str) -> np.ndarray:
    if not data.obs_names.is_unique:
        raise ValueError(
            "adata.obs_names has duplicates, so cells cannot be selected by name; pass cells='all', "
            "a boolean mask, or call adata.obs_names_make_unique()."
        )
    repeated = pd.Index(names)[pd.Index(names).duplicated()]
    if len(repeated):
        raise ValueError(
            f"cells= names {len(repeated)} cell(s) more than once, e.g. {repeated[0]!r}; each cell is "
            "scored once: give each name once (e.g. list(dict.fromkeys(names)))."
        )
    position = data.obs_names.get_indexer(names)
    missing = [name for name, at in zip(names, position, strict=True) if at < 0]
    if missing:
        raise ValueError(f"adata does not contain {what} ({len(missing)} missing, e.g. {missing[0]!r}).")
    return position.astype(np.int64)


def _selected(
    data: CountData, cells: Cells, split: Mapping[str, list[str]], digests: Mapping[str, str]
) -> np.ndarray:
    how = _HOW.format(splits=list(SPLIT_NAMES))
    if isinstance(cells, str):
        if cells == "all":
            return np.arange(data.n_obs)
        if cells not in SPLIT_NAMES:
            if cells in data.obs_names:  # one cell, by name
                return _by_name(data, [cells], "that cell")
            raise ValueError(f"cells={cells!r} is neither 'all', one of {list(SPLIT_NAMES)}, nor a cell of adata ({how}).")
        names = split.get(cells, [])
        if not names:
            refit = " (a model refit on every cell but the test cells holds out none)" if cells == "heldout" else ""
            raise ValueError(
                f"The model's split has no {cells!r} cells{refit}; pass cells='all', a True/False mask "
                "or obs names (e.g. cells=adata.obs['autotune_split'] == 'heldout')."
            )
        rows = _by_name(data, list(names), f"the model's {cells!r} cells; pass cells='all'")
        _check_parts(data, {cells: rows}, digests)
        return rows
    if cells is None or isinstance(cells, (bool, np.bool_)) or _is_number(cells):
        raise ValueError(f"cells={cells!r}: {how}.")
    if isinstance(cells, (set, frozenset)):  # no order of its own: adata's
        _refuse_numbers(list(cells), how)
        return np.sort(_by_name(data, [str(c) for c in cells], "those cells (cells= takes obs names)"))
    _refuse_a_mask_with_missing_values(cells)
    if isinstance(cells, pd.Series) and (pd.api.types.is_bool_dtype(cells.dtype) or _all_bools(cells)):
        cells = _mask_by_name(data, cells.astype(bool))
    if isinstance(cells, (list, tuple)):  # before numpy turns ["a", 1] into strings
        _refuse_numbers(cells, how)
    values = np.asarray(cells)
    if values.dtype == object and _all_bools(values.ravel()):  # e.g. a mask from an object column
        values = values.astype(bool)
    if values.dtype == bool:
        if values.shape != (data.n_obs,):
            raise ValueError(f"A boolean cells mask needs one entry per cell ({data.n_obs}), not {values.shape}.")
        return np.flatnonzero(values)
    if values.dtype.kind in "iufc" and values.size:  # (an empty list is an array of floats)
        _refuse_numbers([values.ravel()[0]], how, values.dtype)
    if values.dtype == object:
        _refuse_numbers(values.ravel(), how)
    return _by_name(data, [str(c) for c in values.ravel()], "those cells (cells= takes obs names)")


def _all_bools(values: Any) -> bool:
    return len(values) > 0 and all(isinstance(v, (bool, np.bool_)) for v in values)


def _refuse_numbers(values: Any, how: str, dtype: Any = None) -> None:
    """Cell names are strings: a number in ``cells=`` is a position or a 0/1 mask gone wrong."""
    number = next((v for v in values if _is_number(v)), None)
    if number is not None:
        held = f"{dtype}" if dtype is not None else f"e.g. {number!r}"
        raise ValueError(
            f"cells= holds numbers ({held}), but {how}: for positions pass adata.obs_names[positions], "
            "for a 0/1 mask mask.astype(bool)."
        )


def select_cells(
    data: CountData, cells: Cells, split: Mapping[str, list[str]], digests: Mapping[str, str]
) -> np.ndarray:
    """The positions in ``data`` of the cells ``cells=`` selects (at least one).

    Parameters
    ----------
    data
        The counts the model reads.
    cells
        What the user passed as ``cells=``.
    split, digests
        The model's split (obs names per part) and its digests
        (:func:`split_digests`; empty for a model saved before they were kept).

    Returns
    -------
    numpy.ndarray
        Positions, in the order the names were given (adata's for a mask or a set).
    """
    selected = _selected(data, cells, split, digests)
    if selected.size == 0:
        raise ValueError(f"{_describe(cells)} selects no cell of adata.")
    return selected
