"""The ``config.json`` of a saved model: checked in full before anything is built.

A saved model is a folder a user can edit, copy between versions or receive
from someone else; :meth:`scanpy_autotune.Model.load` must refuse a config it
does not understand with a message that names the entry, before it allocates a
network (a mistyped ``n_hidden: 1000000`` would otherwise build a huge model
first). This module imports no torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from ._config import HYPERPARAMETERS, resolve_hyperparameters
from ._names import SPLIT_NAMES, STOPPED_BY

__all__ = ["ADDED_LATER", "CONFIG_KEYS", "OPTIONAL_KEYS", "check_saved_config"]

#: The entries of a saved model's ``config.json``.
CONFIG_KEYS = (
    "version", "hyperparameters", "var_names", "batch_categories", "layer", "batch_key", "split",
    "history",
)
#: Entries added after models were first saved, which an older save lacks:
#: ``split_digest`` (each split part's digest of per-cell totals; see ``_cells``).
OPTIONAL_KEYS = ("split_digest",)
#: Hyperparameters added after models were first saved: a config without one was
#: trained with its default (scVI's), so it is filled in rather than refused.
ADDED_LATER = ("max_kl_weight",)


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{where}: {message}")


def _names(where: str, key: str, value: Any, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, f"{key!r} must be a list of names (strings), got {type(value).__name__}")
    if not value and not allow_empty:
        raise _fail(where, f"{key!r} is empty")
    return list(value)


def _optional_name(where: str, key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _fail(where, f"{key!r} must be a string or null, got {value!r}")
    return value


def _whole(where: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise _fail(where, f"{key!r} must be an integer >= {low}, got {value!r}")
    return int(value)


def _curve(where: str, key: str, value: Any) -> list[float]:
    if not isinstance(value, list):
        raise _fail(where, f"history {key!r} must be a list of numbers")
    out = []
    for v in value:
        if v is None:
            out.append(math.nan)
        elif isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise _fail(where, f"history {key!r} holds {v!r}, not a number")
        else:
            out.append(float(v))
    return out


def check_saved_config(config: Any, where: str = "config.json") -> dict[str, Any]:
    """Check a saved model's config and return it with its values in their proper types.

    Parameters
    ----------
    config
        The parsed ``config.json``.
    where
        How to name the file in messages.

    Returns
    -------
    dict
        The config, hyperparameters resolved (every one present and valid;
        one of :data:`ADDED_LATER` that an older save lacks takes its default).

    Raises
    ------
    ValueError
        For a missing or unknown entry, a value of the wrong type or out of
        range; the message names the entry.
    """
    if not isinstance(config, Mapping):
        raise _fail(where, f"must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONFIG_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise _fail(
            where, f"unknown entr{'y' if len(unknown) == 1 else 'ies'} {unknown}; a saved model has "
            f"{list(CONFIG_KEYS)} (and, saved by newer versions, {list(OPTIONAL_KEYS)})"
        )
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise _fail(where, f"missing {missing}")
    hyper = config["hyperparameters"]
    if not isinstance(hyper, Mapping):
        raise _fail(where, "'hyperparameters' must be an object")
    absent = sorted(set(HYPERPARAMETERS) - set(hyper) - set(ADDED_LATER))
    if absent:
        raise _fail(where, f"'hyperparameters' lacks {absent}")
    try:
        hyperparameters = resolve_hyperparameters(hyper)
    except ValueError as err:
        raise _fail(where, f"hyperparameters: {err}") from None
    split = config["split"]
    if not isinstance(split, Mapping) or set(split) - set(SPLIT_NAMES):
        raise _fail(where, f"'split' must map some of {list(SPLIT_NAMES)} to lists of cell names, got {split!r}")
    history = config["history"]
    if not isinstance(history, Mapping):
        raise _fail(where, "'history' must be an object")
    for key in ("train_elbo", "validation_elbo", "best_epoch", "n_epochs", "stopped_by"):
        if key not in history:
            raise _fail(where, f"'history' lacks {key!r}")
    if history["stopped_by"] not in STOPPED_BY:
        raise _fail(where, f"history 'stopped_by' must be one of {list(STOPPED_BY)}, got {history['stopped_by']!r}")
    digest = config.get("split_digest", {})
    if not isinstance(digest, Mapping) or set(digest) - set(split) or not all(
        isinstance(v, str) and len(v) == 16 and all(c in "0123456789abcdef" for c in v) for v in digest.values()
    ):
        raise _fail(where, f"'split_digest' must map parts of 'split' to 16 hexadecimal digits, got {digest!r}")
    if not isinstance(config["version"], str):
        raise _fail(where, f"'version' must be a string, got {config['version']!r}")
    return {
        "version": config["version"],
        "hyperparameters": hyperparameters,
        "var_names": _names(where, "var_names", config["var_names"]),
        "batch_categories": _names(where, "batch_categories", config["batch_categories"]),
        "layer": _optional_name(where, "layer", config["layer"]),
        "batch_key": _optional_name(where, "batch_key", config["batch_key"]),
        "split": {
            name: _names(where, f"split[{name!r}]", cells, allow_empty=True)
            for name, cells in split.items()
        },
        "split_digest": dict(digest),
        "history": {
            "train_elbo": _curve(where, "train_elbo", history["train_elbo"]),
            "validation_elbo": _curve(where, "validation_elbo", history["validation_elbo"]),
            "best_epoch": _whole(where, "history best_epoch", history["best_epoch"], -1),
            "n_epochs": _whole(where, "history n_epochs", history["n_epochs"], 0),
            "stopped_by": history["stopped_by"],
        },
    }
