"""The ``adata.uns[key]`` schema of a search: build, write, read and validate.

:func:`build_results` turns the runner's trial records into the dictionary stored
in ``adata.uns[key]``; :func:`write_results` stores it; :func:`read_results`
reads it back (from memory or after an ``.h5ad`` round trip), checks it and
restores its types. Everything stored here is writable by
:meth:`anndata.AnnData.write_h5ad`: no ``None``, no mixed-type columns.

This module imports neither torch nor the model nor the search.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._record import COLUMN_KINDS, COLUMNS, STATUSES, TrialRecord, best_of, columns_of
from ._scib import SCORE_NAMES

logger = logging.getLogger("scanpy_autotune")


class NoTrialSucceededError(RuntimeError):
    """No trial of a search succeeded, so there is no result to store: ``adata`` is as it was.

    Every trial failed (or was pruned); the message gives the most common error.

    Attributes
    ----------
    trials
        The trials that ran, as :func:`scanpy_autotune.tl.autotune` would have
        stored them in ``adata.uns[key_added]["trials"]`` (their errors in the
        ``error`` column); a ``journal=`` keeps them too.
    """

    def __init__(self, message: str, trials: Any, summary: str = "") -> None:
        super().__init__(message)
        self.trials = trials
        #: The trials' outcome and most common error, without the Python advice.
        self.summary = summary or message


DEFAULT_KEY = "autotune"

#: Columns of ``trials`` before the hyperparameter columns, in this order (the record's).
FIXED_COLUMNS: tuple[str, ...] = COLUMNS
#: Columns a search that scored integration adds after them: the held-out NLL and the
#: scIB scores (absent from results of other searches).
SCORE_COLUMNS: tuple[str, ...] = ("marginal_nll", *SCORE_NAMES)
HISTORY_KEYS: tuple[str, ...] = ("train_elbo", "validation_elbo")
#: ``history[HISTORY_IDS]``: the trial id of each history row (absent before session 23,
#: when rows were paired with the trials by position).
HISTORY_IDS = "trial_id"
SEARCHED_KINDS: tuple[str, ...] = ("categorical", "numeric", "log")

_MISSING_STR = "None"
#: Columns that results written by earlier versions lack, with the value they read as.
_ADDED_LATER: dict[str, Any] = {"startup": "", "finished_at": math.nan}


# ----------------------------------------------------------------------------- scalars


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return value is pd.NA


def is_missing_param(value: Any) -> bool:
    """Whether a hyperparameter column's value stands for none: NaN, ``pd.NA``, ``None``,
    or ``"None"`` (how a column of strings stores it, since ``.h5ad`` files cannot)."""
    return value == _MISSING_STR if isinstance(value, str) else _is_missing(value)


def _to_float(value: Any) -> float:
    if _is_missing(value):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _to_py(value: Any) -> Any:
    """Turn a numpy scalar (or 0-d array) into the matching Python scalar."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (np.str_, bytes)):
        return value.decode() if isinstance(value, bytes) else str(value)
    return value


def _sanitize_setting(value: Any) -> Any:
    """Make one settings value writable to ``.h5ad`` (str/int/float/bool, lists, dicts)."""
    value = _to_py(value)
    if value is None:
        return _MISSING_STR
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _sanitize_setting(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        items = [
            _to_py(v)
            for v in (sorted(value, key=str) if isinstance(value, (set, frozenset)) else value)
        ]
        if items and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            return np.asarray(
                items, dtype=float if any(isinstance(v, float) for v in items) else np.int64
            )
        if items and all(isinstance(v, bool) for v in items):
            return np.asarray(items, dtype=bool)
        return [_MISSING_STR if v is None else str(v) for v in items]
    return str(value)


def _plain_settings(value: Any) -> Any:
    """Undo what a round trip did to a settings value (numpy scalars, string arrays)."""
    value = _to_py(value)
    if isinstance(value, Mapping):
        return {str(k): _plain_settings(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUS":
            return [str(_to_py(v)) for v in value.tolist()]
        return value
    if isinstance(value, (list, tuple)):
        return [_plain_settings(v) for v in value]
    return value


def _param_value(value: Any) -> Any:
    """One hyperparameter value as a writable Python scalar (``None`` -> ``"None"``)."""
    value = _to_py(value)
    if value is None:
        return _MISSING_STR
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ----------------------------------------------------------------------------- columns


def _param_column(values: Sequence[Any]) -> pd.Series | np.ndarray:
    """One hyperparameter column with a single dtype.

    Rules: all bool -> ``bool`` (``boolean`` when some are missing); all
    integers -> ``int64`` (``float64`` with NaN when some are missing); numbers
    -> ``float64``; anything else (strings, mixtures) -> ``str`` objects with
    missing values as ``"None"``.
    """
    vals = [_to_py(v) for v in values]
    present = [v for v in vals if not _is_missing(v)]
    missing = len(present) < len(vals)
    if present and all(isinstance(v, bool) for v in present):
        if missing:
            return pd.array([None if _is_missing(v) else v for v in vals], dtype="boolean")
        return np.asarray(vals, dtype=bool)
    is_num = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in present]
    if present and all(is_num):
        if all(isinstance(v, int) for v in present) and not missing:
            return np.asarray(vals, dtype=np.int64)
        return np.asarray([_to_float(v) for v in vals], dtype=float)
    if not present:
        return np.full(len(vals), np.nan)
    return np.asarray([_MISSING_STR if _is_missing(v) else str(v) for v in vals], dtype=object)


def _count_column(values: Sequence[Any]) -> np.ndarray:
    """``int64`` when every value is a finite whole number, else ``float64`` with NaN."""
    floats = np.asarray([_to_float(v) for v in values], dtype=float)
    if floats.size and np.all(np.isfinite(floats)) and np.all(floats == np.round(floats)):
        return floats.astype(np.int64)
    return floats


def _param_names(records: Sequence[Mapping[str, Any]], searched: Mapping[str, str]) -> list[str]:
    """Searched names first (in ``searched`` order), then other keys in first-seen order."""
    names = [name for name in searched if any(name in (r.get("params") or {}) for r in records)]
    for record in records:
        for name in record.get("params") or {}:
            if name not in names:
                names.append(str(name))
    clash = sorted(set(names) & (set(FIXED_COLUMNS) | set(SCORE_COLUMNS)))
    if clash:
        raise ValueError(
            f"Hyperparameter name(s) {clash} clash with trial columns "
            f"{list(FIXED_COLUMNS) + list(SCORE_COLUMNS)}."
        )
    return names


def _trials_frame(records: Sequence[Mapping[str, Any]], param_names: Sequence[str]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name, kind in COLUMN_KINDS.items():
        values = [r.get(name) for r in records]
        if name == "completion_order":
            data[name] = _completion_order(records)
        elif kind == "id":
            data[name] = np.asarray([int(v) for v in values], dtype=np.int64)
        elif kind == "count":
            data[name] = _count_column(values)
        elif kind == "float":
            data[name] = np.asarray([_to_float(v) for v in values], dtype=float)
        elif kind == "str":
            data[name] = _str_column(values)
        else:
            data[name] = np.asarray([bool(v) for v in values], dtype=bool)
    if any(r.get("scores") for r in records):
        data["marginal_nll"] = np.asarray([_to_float(r.get("marginal_nll")) for r in records], dtype=float)
        for name in SCORE_NAMES:
            data[name] = np.asarray([_to_float((r.get("scores") or {}).get(name)) for r in records], dtype=float)
    for name in param_names:
        data[name] = _param_column([(r.get("params") or {}).get(name) for r in records])
    return pd.DataFrame(data, index=pd.RangeIndex(len(records)))


def _str_column(values: Iterable[Any]) -> np.ndarray:
    """A column of the record's strings: ``""`` where a trial has none."""
    return np.asarray(["" if _is_missing(v) else str(v) for v in values], dtype=object)


def _completion_order(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    order = [r.get("completion_order") for r in records]
    if any(_is_missing(v) for v in order):
        logger.warning("Some trial records lack completion_order; using trial-id order for them.")
        known = [int(v) for v in order if not _is_missing(v)]
        start = max(known, default=-1) + 1
        filled = []
        for v in order:
            if _is_missing(v):
                filled.append(start)
                start += 1
            else:
                filled.append(int(v))
        order = filled
    return np.asarray(order, dtype=np.int64)


def _history_arrays(records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    curves: dict[str, list[np.ndarray]] = {k: [] for k in HISTORY_KEYS}
    for record in records:
        history = dict(record.get("history") or {})
        for name in HISTORY_KEYS:
            values = history.get(name)
            values = [] if values is None else values
            curves[name].append(np.asarray([_to_float(v) for v in values], dtype=float))
    width = max((c.size for cs in curves.values() for c in cs), default=0)
    arrays = {}
    for name, cs in curves.items():
        arr = np.full((len(records), width), np.nan)
        for i, c in enumerate(cs):
            arr[i, : c.size] = c
        arrays[name] = arr
    # the rows' trials, so that a hand-sorted trials table keeps its curves
    arrays[HISTORY_IDS] = np.asarray([int(r["trial_id"]) for r in records], dtype=np.int64)
    return arrays


def _best(trials: pd.DataFrame, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    best = best_of(trials.itertuples())
    if best is None:
        logger.warning(
            "No trial finished with status 'ok' and a finite loss; there is no best trial."
        )
        return {"trial_id": -1, "loss": math.nan, "params": {}}
    params = records[best.Index].get("params") or {}
    return {
        "trial_id": int(best.trial_id),
        "loss": float(best.loss),
        "params": {str(k): _param_value(v) for k, v in params.items()},
    }


def _default(trials: pd.DataFrame) -> dict[str, Any] | None:
    rows = trials[trials["is_default"]]
    if rows.empty:
        return None
    if len(rows) > 1:
        logger.warning(
            "%d trials are marked is_default; keeping trial %d.",
            len(rows),
            rows["trial_id"].iloc[0],
        )
    return {"trial_id": int(rows["trial_id"].iloc[0]), "loss": float(rows["loss"].iloc[0])}


# ----------------------------------------------------------------------------- public: build


def _check_kind(name: str, kind: Any) -> str:
    if kind not in SEARCHED_KINDS:
        raise ValueError(
            f"searched[{name!r}]={kind!r} is not a known kind; use one of {list(SEARCHED_KINDS)}."
        )
    return str(kind)


def build_results(
    records: Iterable[TrialRecord | Mapping[str, Any]],
    *,
    settings: Mapping[str, Any],
    searched: Mapping[str, str],
) -> dict[str, Any]:
    """Build the ``adata.uns[key]`` dictionary from the runner's trial records.

    Parameters
    ----------
    records
        One :class:`~scanpy_autotune._record.TrialRecord` per trial (any order),
        or a dict with its fields (``TrialRecord.to_json``). Missing numbers may
        be NaN or ``None``.
    settings
        The search settings (space as text, ``max_evals``, ``seed``, ...).
        ``None`` values are stored as the string ``"None"``; other objects as
        their ``str``.
    searched
        Searched hyperparameter name -> ``"categorical"``, ``"numeric"`` or
        ``"log"`` (the axis type plots use). Stored as ``params["searched"]``.

    Returns
    -------
    dict
        ``trials`` (DataFrame, trial-id order), ``history`` (``train_elbo``,
        ``validation_elbo``: ``n_trials x max_epochs`` float arrays, NaN-padded,
        and ``trial_id``: each row's trial),
        ``best`` (``trial_id``, ``loss``, ``params``; ``trial_id=-1`` and NaN
        loss when no trial succeeded), ``default`` (``trial_id``, ``loss``; only
        when a record has ``is_default``) and ``params`` (settings plus
        ``searched``).

    Raises
    ------
    ValueError
        With no records, duplicate trial ids, an unknown status or searched kind,
        or a hyperparameter named like a trial column.
    """
    records = sorted(
        (r.to_json() if isinstance(r, TrialRecord) else dict(r) for r in records),
        key=lambda r: int(r["trial_id"]),
    )
    if not records:
        raise ValueError("No trial records to store; the search produced no trials.")
    ids = [int(r["trial_id"]) for r in records]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"Duplicate trial_id(s) {dupes} among the trial records.")
    bad = sorted({str(r.get("status")) for r in records} - set(STATUSES))
    if bad:
        raise ValueError(f"Unknown trial status(es) {bad}; expected one of {list(STATUSES)}.")
    searched_kinds = {str(k): _check_kind(str(k), v) for k, v in searched.items()}
    trials = _trials_frame(records, _param_names(records, searched_kinds))
    params = {str(k): _sanitize_setting(v) for k, v in settings.items() if k != "searched"}
    params["searched"] = searched_kinds
    uns: dict[str, Any] = {
        "trials": trials,
        "history": _history_arrays(records),
        "best": _best(trials, records),
        "params": params,
    }
    default = _default(trials)
    if default is not None:
        uns["default"] = default
    return uns


# ----------------------------------------------------------------------------- public: read / write


def axis_kind(values: Any) -> str:
    """The axis a hyperparameter's values are drawn on, inferred from the values alone.

    Bools and anything not a number are ``"categorical"``; positive numbers
    spanning at least a factor of 10 (largest / smallest >= 10) are ``"log"``;
    other numbers ``"numeric"``. Missing values are ignored. The name plays no
    part; a kind recorded for a searched hyperparameter (``"log"`` for a
    log-uniform prior) takes precedence in :meth:`Results.param_kinds`.

    Parameters
    ----------
    values
        One hyperparameter column (a :class:`pandas.Series`, array or list).

    Returns
    -------
    str
        ``"categorical"``, ``"log"`` or ``"numeric"``.
    """
    col = values if isinstance(values, pd.Series) else pd.Series(values)
    if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
        return "categorical"
    numbers = col.to_numpy(dtype=float, na_value=np.nan)
    numbers = numbers[np.isfinite(numbers)]
    if numbers.size and numbers.min() > 0 and numbers.max() >= 10 * numbers.min():
        return "log"
    return "numeric"


@dataclass(frozen=True)
class Results:
    """A checked, typed view of ``adata.uns[key]`` (copies; editing it changes nothing).

    Attributes
    ----------
    key
        The ``adata.uns`` key it was read from.
    trials
        One row per trial in trial-id order, ``RangeIndex``.
    history
        ``train_elbo`` and ``validation_elbo``: ``n_trials x max_epochs`` float arrays.
    best
        ``trial_id`` (int, ``-1`` if none), ``loss`` (float), ``params`` (dict).
    default
        ``trial_id`` and ``loss`` of the default configuration, or ``None``.
    params
        The search settings; ``params["searched"]`` maps name -> kind.
    """

    key: str
    trials: pd.DataFrame
    history: dict[str, np.ndarray]
    best: dict[str, Any]
    default: dict[str, Any] | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def searched(self) -> dict[str, str]:
        """Searched hyperparameter name -> ``"categorical"``, ``"numeric"`` or ``"log"``."""
        return dict(self.params.get("searched", {}))

    @property
    def hyperparameters(self) -> list[str]:
        """Every hyperparameter column of :attr:`trials`, in stored order."""
        return [c for c in self.trials.columns if c not in FIXED_COLUMNS and c not in SCORE_COLUMNS]

    @property
    def scored(self) -> bool:
        """Whether the search scored integration (the trials have scIB score columns)."""
        return "total" in self.trials.columns

    def param_kinds(self, params: str | Sequence[str] | None = None) -> dict[str, str]:
        """Name -> axis kind (``"categorical"``, ``"numeric"`` or ``"log"``) of hyperparameters.

        A searched hyperparameter has the kind recorded for it; any other column
        (or every one, when nothing was recorded as searched) has the
        :func:`axis_kind` of its values.

        Parameters
        ----------
        params
            Hyperparameter name(s); default the searched ones, or every
            hyperparameter column when nothing was recorded as searched.

        Returns
        -------
        dict
            Name -> kind, in the order of ``params`` (default: stored order).

        Raises
        ------
        ValueError
            For an unknown name or an empty ``params`` (the message lists the valid names).
        """
        searched = {k: v for k, v in self.searched.items() if k in self.trials.columns}
        if params is None:
            names = list(searched) or self.hyperparameters
        else:
            names = [params] if isinstance(params, str) else list(params)
            valid = list(searched) + [h for h in self.hyperparameters if h not in searched]
            unknown = [n for n in names if n not in valid]
            if unknown:
                raise ValueError(f"Unknown hyperparameter(s) {unknown}; valid names are {valid}.")
            if not names:
                raise ValueError(f"params is empty; valid names are {valid}.")
        return {name: searched.get(name) or axis_kind(self.trials[name]) for name in names}

    def curves(self, which: str = "validation") -> np.ndarray:
        """The ``n_trials x max_epochs`` history for ``which`` (``"validation"`` or ``"train"``)."""
        names = {"validation": "validation_elbo", "train": "train_elbo"}
        if which not in names and which not in self.history:
            raise ValueError(f"which={which!r} is not valid; use 'validation' or 'train'.")
        return self.history[names.get(which, which)]


def _not_found(key: str, uns: Mapping) -> KeyError:
    """The error for a missing ``key``, naming the keys of ``uns`` that do hold a search's results."""
    searches = sorted(str(k) for k, v in uns.items() if is_search_result(v))
    where = f"; adata.uns holds search results under key={searches[0]!r}" if len(searches) == 1 else (
        f"; adata.uns holds search results under the keys {searches}" if searches else ""
    )
    return KeyError(
        f"adata.uns[{key!r}] not found; run sat.tl.autotune(adata) first (or pass key=...){where}."
    )


#: The entries of ``adata.uns[key]`` that make it a search's result.
RESULT_KEYS: tuple[str, ...] = ("trials", "history", "best", "params")


def is_search_result(entry: Any) -> bool:
    """Whether an ``adata.uns`` entry is a search's result (it has every one of :data:`RESULT_KEYS`)."""
    return isinstance(entry, Mapping) and all(k in entry for k in RESULT_KEYS)


def _check_uns(uns: Any, key: str) -> None:
    if not isinstance(uns, Mapping):
        raise ValueError(f"adata.uns[{key!r}] is a {type(uns).__name__}, not an autotune result.")
    missing = [k for k in RESULT_KEYS if k not in uns]
    if missing:
        raise ValueError(f"adata.uns[{key!r}] is not an autotune result: missing {missing}.")
    if not isinstance(uns["trials"], pd.DataFrame):
        raise ValueError(f"adata.uns[{key!r}]['trials'] is not a DataFrame.")
    absent = [c for c in FIXED_COLUMNS if c not in uns["trials"].columns and c not in _ADDED_LATER]
    if absent:
        raise ValueError(f"adata.uns[{key!r}]['trials'] lacks column(s) {absent}.")


def _restore_trials(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The trials in trial-id order, and that order as positions of the stored rows
    (the history's rows are the stored trials' and must follow them)."""
    df = df.copy().reset_index(drop=True)
    for name, value in _ADDED_LATER.items():
        if name not in df.columns:
            df[name] = value
    for name in columns_of("id"):
        df[name] = df[name].astype(np.int64)
    for name in columns_of("str"):
        df[name] = _str_column(df[name])
    for name in columns_of("float"):
        df[name] = df[name].astype(float)
    for name in columns_of("count"):
        df[name] = _count_column(df[name].to_numpy(dtype=float, na_value=np.nan))
    for name in columns_of("bool"):
        flags = df[name]
        if not pd.api.types.is_bool_dtype(flags) or flags.dtype.name == "boolean":
            df[name] = np.asarray([str(v).lower() in ("true", "1", "1.0") for v in flags], dtype=bool)
    for name in SCORE_COLUMNS:
        if name in df.columns:
            df[name] = df[name].astype(float)
    for name in df.columns:
        if name in FIXED_COLUMNS or name in SCORE_COLUMNS:
            continue
        col = df[name]
        if isinstance(col.dtype, (pd.CategoricalDtype, pd.StringDtype)) or col.dtype.kind in "US":
            df[name] = np.asarray(
                [_MISSING_STR if _is_missing(v) else str(v) for v in col], dtype=object
            )
    order = np.argsort(df["trial_id"].to_numpy(), kind="stable")
    return df.iloc[order].reset_index(drop=True), order


def _restore_history(history: Any, n_trials: int, key: str) -> dict[str, np.ndarray]:
    if not isinstance(history, Mapping):
        raise ValueError(f"adata.uns[{key!r}]['history'] is not a dict of arrays.")
    history = dict(history)
    out = {}
    for name in HISTORY_KEYS:
        if name not in history:
            raise ValueError(f"adata.uns[{key!r}]['history'] lacks {name!r}.")
        arr = np.asarray(history[name], dtype=float)
        if arr.ndim == 1 and arr.size == 0:
            arr = arr.reshape(n_trials, 0)
        if arr.ndim != 2 or arr.shape[0] != n_trials:
            raise ValueError(
                f"adata.uns[{key!r}]['history'][{name!r}] has shape {arr.shape}; "
                f"expected ({n_trials}, max_epochs)."
            )
        out[name] = arr.copy()
    return out


def _history_of(stored: Any, trial_ids: np.ndarray, order: np.ndarray, key: str) -> dict[str, np.ndarray]:
    """The history's rows in the order of ``trial_ids``: matched by the rows' trial ids
    where stored, else by position (the stored trials' rows, put in ``order``)."""
    history = _restore_history(stored, len(trial_ids), key)
    if HISTORY_IDS in stored:
        row_ids = np.asarray(stored[HISTORY_IDS]).astype(np.int64).ravel()
        if len(row_ids) != len(trial_ids) or set(row_ids.tolist()) != set(trial_ids.tolist()):
            raise ValueError(
                f"adata.uns[{key!r}]['history']['trial_id'] does not list the trials of "
                f"adata.uns[{key!r}]['trials'] (edit both together, or neither)."
            )
        order = pd.Index(row_ids).get_indexer(trial_ids)
    return {name: values[order] for name, values in history.items()}


def _restore_small(d: Any, *, with_params: bool) -> dict[str, Any]:
    d = dict(d)
    out: dict[str, Any] = {
        "trial_id": int(_to_py(d.get("trial_id", -1))),
        "loss": _to_float(_to_py(d.get("loss", math.nan))),
    }
    if with_params:
        out["params"] = {str(k): _to_py(v) for k, v in dict(d.get("params") or {}).items()}
    return out


def read_results(adata: Any, key: str = DEFAULT_KEY) -> Results:
    """Read, check and type ``adata.uns[key]`` (in memory or after an ``.h5ad`` round trip).

    Parameters
    ----------
    adata
        An :class:`~anndata.AnnData` after :func:`scanpy_autotune.tl.autotune`.
    key
        Where the results are stored.

    Returns
    -------
    Results
        Copies of the stored entries, with the trials' ``RangeIndex``, integer
        ids, ``bool`` ``is_default``, ``str`` text columns, float NaN for missing
        numbers and 2-D float histories restored.

    Raises
    ------
    TypeError
        When ``adata`` is not an AnnData (``adata.uns`` itself, for one).
    KeyError
        When ``adata.uns`` has no ``key``.
    ValueError
        When the entry does not follow the schema.
    """
    if not hasattr(adata, "uns") or not hasattr(adata, "obs_names"):
        raise TypeError(
            f"expected the AnnData the search ran on, got {type(adata).__name__}"
            + (" (pass adata, not adata.uns)" if isinstance(adata, Mapping) else "") + "."
        )
    if key not in adata.uns:
        raise _not_found(key, adata.uns)
    uns = adata.uns[key]
    _check_uns(uns, key)
    trials, order = _restore_trials(uns["trials"])
    bad = sorted(set(trials["status"]) - set(STATUSES))
    if bad:
        raise ValueError(f"adata.uns[{key!r}]['trials'] has unknown status(es) {bad}.")
    history = _history_of(uns["history"], trials["trial_id"].to_numpy(), order, key)
    default = _restore_small(uns["default"], with_params=False) if "default" in uns else None
    # .h5ad stores dict entries in alphabetical order: restore the trials' column order
    order = {name: i for i, name in enumerate(trials.columns)}
    params = _plain_settings(dict(uns["params"]))
    searched = {str(k): str(_to_py(v)) for k, v in dict(params.get("searched") or {}).items()}
    params["searched"] = _ordered(searched, order)
    best = _restore_small(uns["best"], with_params=True)
    best["params"] = _ordered(best["params"], order)
    return Results(
        key=key, trials=trials, history=history, best=best, default=default, params=params
    )


def _ordered(d: dict[str, Any], order: Mapping[str, int]) -> dict[str, Any]:
    """``d`` with the keys in ``order`` first, in that order, then the others as they come."""
    return dict(sorted(d.items(), key=lambda kv: order.get(kv[0], len(order))))


def write_results(adata: Any, key: str, uns_dict: Mapping[str, Any]) -> None:
    """Store ``uns_dict`` (from :func:`build_results`) as ``adata.uns[key]``.

    Parameters
    ----------
    adata
        The :class:`~anndata.AnnData` to write into.
    key
        The ``adata.uns`` key (``"autotune"`` by default elsewhere).
    uns_dict
        The dictionary built by :func:`build_results`; it is checked first.

    Raises
    ------
    ValueError
        When ``uns_dict`` does not follow the schema.
    """
    _check_uns(uns_dict, key)
    _restore_history(uns_dict["history"], len(uns_dict["trials"]), key)
    adata.uns[key] = dict(uns_dict)
    logger.debug("Wrote %d trials to adata.uns[%r].", len(uns_dict["trials"]), key)
