"""One trial of a search's results, read back for the tools that act on it (scvi_kwargs, retrain)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .._results import Results, is_missing_param
from .._validation import check_int

__all__ = ["as_searched", "max_epochs_of", "trial_hyperparameters", "trial_row", "validation_size_of"]


def as_searched(res: Results, name: str, given: str | None) -> str | None:
    """``layer`` or ``batch_key`` as the search used it: recorded, else ``given``."""
    if given is not None and not isinstance(given, str):
        raise ValueError(f"{name}={given!r} must be a string or None.")
    if name not in res.params:  # results written before the search recorded it
        return given
    recorded = res.params[name]
    recorded = None if recorded == "None" else str(recorded)  # .h5ad stores None as "None"
    if given is not None and given != recorded:
        raise ValueError(
            f"{name}={given!r} contradicts the search, which used {name}={recorded!r} "
            f"(adata.uns[{res.key!r}]['params']); leave {name} out."
        )
    return recorded


def trial_row(res: Results, trial: int | None) -> pd.Series:
    """The trials row of ``trial``, or of the best trial when ``trial`` is ``None``."""
    if trial is None:
        trial_id = int(res.best["trial_id"])
        if trial_id < 0:
            raise ValueError(
                f"No trial in adata.uns[{res.key!r}] succeeded, so there is no best configuration "
                "(to hand off or retrain); pass trial= to pick one, or see the trials' 'error' column."
            )
    else:
        trial_id = check_int("trial", trial, low=0)
    rows = res.trials[res.trials["trial_id"] == trial_id]
    if rows.empty:
        ids = res.trials["trial_id"].tolist()
        what = (
            f"the best trial recorded in adata.uns[{res.key!r}]['best'] ({trial_id}) is not among its "
            "trials (were the results edited?)" if trial is None
            else f"trial={trial_id} is not a trial of adata.uns[{res.key!r}]"
        )
        raise ValueError(f"{what}; its trial ids run from {min(ids)} to {max(ids)} ({len(ids)} trials).")
    return rows.iloc[0]


def trial_hyperparameters(row: pd.Series, names: list[str], trial_id: int) -> dict[str, Any]:
    """The trial's recorded values over the defaults, checked, as plain Python values."""
    from .._vae._config import HYPERPARAMETERS, default_hyperparameters

    values = default_hyperparameters()
    for name in names:
        value = row[name]
        value = value.item() if isinstance(value, np.generic) else value
        if is_missing_param(value):  # a hyperparameter this trial did not record
            continue
        spec = HYPERPARAMETERS.get(name)
        if spec is None:  # not ours: kept so that the caller reports it
            values[name] = value
            continue
        try:
            values[name] = spec.check(name, value)
        except ValueError as error:
            raise ValueError(f"Trial {trial_id} stored an invalid value: {error}") from None
    return values


def max_epochs_of(res: Results) -> int:
    if "max_epochs" not in res.params:
        raise ValueError(
            f"adata.uns[{res.key!r}]['params'] does not record max_epochs, the search's epoch cap."
        )
    return check_int("max_epochs", res.params["max_epochs"], low=1)


def validation_size_of(res: Results) -> float:
    """The fraction of each trial's training cells kept for early stopping."""
    if "validation_size" in res.params:
        return float(res.params["validation_size"])
    from .._search import VALIDATION_SIZE

    return VALIDATION_SIZE
