"""The trial record: what one trial of a search produced.

One :class:`TrialRecord` per trial travels from the worker that evaluated it to
the runner, into the journal (one JSON line, :meth:`TrialRecord.to_json`) and
into ``adata.uns[key]["trials"]`` (one row). This module is the only place
that says which fields a trial has, which of them may be missing numbers
(NaN), what loss TPE learns from a trial, which trials count as successful and
how they are ranked. It imports neither torch nor the search.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

__all__ = [
    "COLUMNS",
    "COLUMN_KINDS",
    "NAN_FIELDS",
    "STATUSES",
    "TrialRecord",
    "best_of",
    "columns_of",
    "gain_over_default",
    "ranked",
]

#: The outcomes of a trial: trained and scored, stopped with an error, stopped by the pruner.
STATUSES: tuple[str, ...] = ("ok", "fail", "pruned")

#: Fields that are numbers which a trial may not have (NaN, ``null`` in the journal).
NAN_FIELDS: tuple[str, ...] = ("loss", "elbo_train", "elbo_heldout", "marginal_nll")

#: Columns of ``adata.uns[key]["trials"]`` taken from the record, in this order, before the
#: hyperparameter columns, and how each is stored: ``"id"`` (an integer every trial has),
#: ``"count"`` (a whole number, NaN where a trial has none), ``"float"``, ``"str"`` (``""``
#: where none) or ``"bool"``.
COLUMN_KINDS: dict[str, str] = {
    "trial_id": "id",
    "status": "str",
    "loss": "float",
    "elbo_train": "float",
    "elbo_heldout": "float",
    "n_epochs": "count",
    "best_epoch": "count",
    "n_params": "count",
    "duration_s": "float",
    "device": "str",
    "error": "str",
    "completion_order": "id",
    "is_default": "bool",
    "startup": "str",
    "finished_at": "float",
}
COLUMNS: tuple[str, ...] = tuple(COLUMN_KINDS)


def columns_of(*kinds: str) -> tuple[str, ...]:
    """The columns of :data:`COLUMNS` stored as one of ``kinds``, in order."""
    return tuple(name for name, kind in COLUMN_KINDS.items() if kind in kinds)


# The record's fields by JSON type: its columns, and the fields the journal keeps beside them.
_INT_FIELDS = (*columns_of("id", "count"), "pruned_at")
_FLOAT_FIELDS = (*columns_of("float"), "marginal_nll")
_STR_FIELDS = columns_of("str")


def _empty_history() -> dict[str, list[float]]:
    return {"train_elbo": [], "validation_elbo": []}


@dataclass
class TrialRecord:
    """One trial of a search.

    Attributes
    ----------
    trial_id
        The trial's id (0 is the default configuration when it is run).
    params
        The hyperparameters it trained with (plain Python values).
    status
        ``"ok"``, ``"fail"`` or ``"pruned"``.
    loss
        The objective (held-out ``-log p(x)`` per cell unless replaced); NaN
        unless ``ok``.
    elbo_train, elbo_heldout
        Mean ELBO per cell of the training and the held-out cells (NaN when
        not computed).
    n_epochs, best_epoch
        Epochs trained and the epoch (0-based) whose weights were kept.
    n_params
        Trained parameters of the model.
    duration_s
        Seconds the trial took in its worker.
    device
        Where it ran (``"cpu"``, ``"cuda:0"``...).
    error
        What went wrong, for a failed trial.
    history
        Per-epoch ``train_elbo`` and ``validation_elbo``.
    pruned_at
        The epoch at which the pruner stopped it (``-1``: not pruned).
    rung_values
        Rung (epochs trained) -> the value the trial reported to the pruner
        there; the pruner's tables are rebuilt from these after a resume.
    completion_order
        Position among the finished trials of the search (``-1``: not yet counted).
    is_default
        Whether this is the scVI default configuration (the reference of the gain).
    startup
        For a start-up configuration (``autotune(startup=...)``), where it comes
        from (e.g. ``"winner on cortex_zeisel_3005x200"``); empty for the default
        configuration and TPE's suggestions.
    finished_at
        When the search counted the trial (Unix time, seconds); NaN in
        journals written before it was recorded.
    marginal_nll
        The held-out ``-log p(x)`` per cell, when the search scored integration
        (then ``loss`` may be another objective); NaN otherwise.
    scores
        The scIB scores of its latent (:data:`scanpy_autotune._scib.SCORE_NAMES`),
        when the search scored integration; empty otherwise (and for failed or
        pruned trials).
    """

    trial_id: int
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "fail"
    loss: float = math.nan
    elbo_train: float = math.nan
    elbo_heldout: float = math.nan
    n_epochs: int = 0
    best_epoch: int = -1
    n_params: int = 0
    duration_s: float = 0.0
    device: str = ""
    error: str = ""
    history: dict[str, list[float]] = field(default_factory=_empty_history)
    pruned_at: int = -1
    rung_values: dict[int, float] = field(default_factory=dict)
    completion_order: int = -1
    is_default: bool = False
    startup: str = ""
    finished_at: float = math.nan
    marginal_nll: float = math.nan
    scores: dict[str, float] = field(default_factory=dict)

    # -- what the search makes of it ---------------------------------------------

    @property
    def succeeded(self) -> bool:
        """Whether the trial finished with a usable loss (``ok`` and finite)."""
        return _succeeded(self)

    @property
    def tpe_loss(self) -> float | None:
        """The loss TPE learns: the trial's loss when it succeeded, else ``None``.

        ``None`` puts the trial in TPE's "bad" group without a number: a failed
        trial has none, and a pruned trial's early validation ELBO is not on the
        scale of the loss (see :mod:`scanpy_autotune._search._pruner`).
        """
        return self.loss if self.succeeded else None

    # -- JSON (the journal's line) -----------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON types (NaN stays a float; the journal writes it as ``null``)."""
        out = asdict(self)
        out["rung_values"] = {str(rung): value for rung, value in self.rung_values.items()}
        return out

    @classmethod
    def from_json(cls, line: Mapping[str, Any]) -> TrialRecord:
        """Read a record written by :meth:`to_json` (a journal line), checking every field.

        Parameters
        ----------
        line
            The decoded JSON object. ``null`` numbers read as NaN; fields that
            older versions did not write take their defaults; unknown keys
            (such as the journal's ``kind``) are ignored.

        Returns
        -------
        TrialRecord

        Raises
        ------
        ValueError
            When a field is missing (``trial_id``, ``params``, ``status``) or
            has the wrong type; the message names the field and the value.
        """
        if not isinstance(line, Mapping):
            raise ValueError(f"a trial record must be a JSON object, got {type(line).__name__}")
        for required in ("trial_id", "status", "params"):
            if required not in line:
                raise ValueError(f"the trial record has no {required!r}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in line.items() if k in known}
        for name in _INT_FIELDS:
            if name in values:
                values[name] = _read_int(name, values[name])
        if values["trial_id"] < 0:
            raise ValueError(f"trial_id={values['trial_id']} must not be negative")
        for name in _FLOAT_FIELDS:
            if name in values:
                values[name] = _read_float(name, values[name])
        for name in _STR_FIELDS:
            if name in values and not isinstance(values[name], str):
                raise ValueError(f"{name}={values[name]!r} must be a string")
        if values["status"] not in STATUSES:
            raise ValueError(f"status={values['status']!r} is not one of {list(STATUSES)}")
        if not isinstance(values["params"], Mapping):
            raise ValueError(f"params={values['params']!r} must be an object of hyperparameters")
        values["params"] = dict(values["params"])
        if "history" in values:
            values["history"] = _read_history(values["history"])
        if "rung_values" in values:
            values["rung_values"] = _read_rung_values(values["rung_values"])
        if "scores" in values:
            values["scores"] = _read_scores(values["scores"])
        if "is_default" in values and not isinstance(values["is_default"], bool):
            raise ValueError(f"is_default={values['is_default']!r} must be true or false")
        return cls(**values)


def _read_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} must be an integer")
    if not math.isfinite(float(value)) or float(value) != int(value):
        raise ValueError(f"{name}={value!r} must be an integer")
    return int(value)


def _read_float(name: str, value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} must be a number or null")
    return float(value)


def _read_history(history: Any) -> dict[str, list[float]]:
    if not isinstance(history, Mapping):
        raise ValueError(f"history={history!r} must be an object of per-epoch lists")
    out = _empty_history()
    for name, values in history.items():
        if not isinstance(values, list):
            raise ValueError(f"history[{name!r}] must be a list of numbers")
        out[str(name)] = [_read_float(f"history[{name!r}]", v) for v in values]
    return out


def _read_rung_values(rung_values: Any) -> dict[int, float]:
    if not isinstance(rung_values, Mapping):
        raise ValueError(f"rung_values={rung_values!r} must be an object of rung -> value")
    out = {}
    for rung, value in rung_values.items():
        try:
            epochs = int(rung)
        except (TypeError, ValueError):
            raise ValueError(f"rung_values has a rung {rung!r} that is not an epoch count") from None
        out[epochs] = _read_float(f"rung_values[{rung!r}]", value)
    return out


def _read_scores(scores: Any) -> dict[str, float]:
    if not isinstance(scores, Mapping):
        raise ValueError(f"scores={scores!r} must be an object of metric -> value")
    return {str(name): _read_float(f"scores[{name!r}]", value) for name, value in scores.items()}


class _Rankable(Protocol):
    trial_id: Any
    status: Any
    loss: Any


def ranked(trials: Iterable[_Rankable]) -> list[Any]:
    """The successful trials, best first: status ``ok``, a finite loss, lowest loss first.

    Ties go to the lower trial id, so the same trials always rank the same way.

    Parameters
    ----------
    trials
        Anything with ``trial_id``, ``status`` and ``loss`` attributes:
        :class:`TrialRecord` objects or the rows of a trials DataFrame
        (``DataFrame.itertuples()``).

    Returns
    -------
    list
        The successful trials, sorted.
    """
    ok = [t for t in trials if _succeeded(t)]
    return sorted(ok, key=lambda t: (float(t.loss), int(t.trial_id)))


def _succeeded(trial: _Rankable) -> bool:
    """A record or a trials-table row: ``ok`` with a finite loss."""
    return trial.status == "ok" and math.isfinite(float(trial.loss))


def best_of(trials: Iterable[_Rankable]) -> Any | None:
    """The best successful trial (see :func:`ranked`), or ``None`` when none succeeded."""
    order = ranked(trials)
    return order[0] if order else None


def gain_over_default(best_loss: float, default_loss: float) -> float:
    """How much lower the best loss is than the default configuration's, in percent.

    Positive means the search found a better configuration than the default
    (losses are lower-is-better); NaN when either loss is not finite.
    """
    if not (math.isfinite(best_loss) and math.isfinite(default_loss)) or default_loss == 0:
        return math.nan
    return 100.0 * (default_loss - best_loss) / abs(default_loss)
