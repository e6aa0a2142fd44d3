"""What a journal must match to be resumed, and what a resumed search keeps.

A journal records the settings of the search that wrote it (:func:`resume_settings`);
a search resumes it only when they match, so the trials of two searches are
never mixed. :func:`objective_identity` tells objectives apart by their code,
:func:`pruner_of_resumed_journal` keeps the pruning a journal started with, and
:func:`check_resumed` refuses trials this search could not have run.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._record import TrialRecord
from ._journal import Journal
from ._pruner import Pruner, is_auto, make_pruner
from ._space import SearchSpace

if TYPE_CHECKING:
    from .._vae._data import CountData

__all__ = [
    "VALIDATION_SIZE", "check_resumed", "mark_default_of_old_journal", "objective_identity",
    "pruner_of_resumed_journal", "resume_settings",
]

logger = logging.getLogger("scanpy_autotune")

#: Fraction of the training cells set aside for early stopping and pruning.
VALIDATION_SIZE = 0.1


def objective_identity(objective: Callable | str | None) -> str:
    """How the journal recognises an objective: its name and a hash of its source.

    Two functions with the same name but different code get different
    identities, so a resume never mixes the losses of two objectives. Where
    the source cannot be read (a function typed into a plain interpreter), the
    hash covers its compiled code and constants instead. An ``objective.version``
    attribute, when set, is part of the identity too.
    """
    if objective is None:
        return "marginal_nll"
    if isinstance(objective, str):
        return objective
    name = getattr(objective, "__qualname__", type(objective).__qualname__)
    try:
        material = inspect.getsource(objective).encode()
    except (OSError, TypeError):
        code = getattr(objective, "__code__", None) or getattr(type(objective).__call__, "__code__", None)
        material = b"" if code is None else code.co_code + repr(code.co_consts).encode()
    version = getattr(objective, "version", None)
    digest = hashlib.sha256(material).hexdigest()[:16]
    return f"{name} sha256:{digest}" + (f" version:{version}" if version is not None else "")


def resume_settings(
    space: SearchSpace, data: CountData, *, max_epochs: int, n_mc: int, seed: int,
    objective: Callable | str | None, pruner: Pruner | None, train_size: float, test_size: float,
) -> dict[str, Any]:
    """What must match for a journal to be resumed."""
    return {
        "space": space.to_text(),
        "seed": int(seed),
        "train_size": float(train_size),
        "test_size": float(test_size),
        "validation_size": VALIDATION_SIZE,
        "max_epochs": int(max_epochs),
        "n_mc": int(n_mc),
        "objective": objective_identity(objective),
        "pruner": pruner.describe() if pruner is not None else "none",
        "data": data.fingerprint(),
        "n_cells": int(data.n_obs),
        "n_genes": int(data.n_vars),
    }


def pruner_of_resumed_journal(
    journal: str | os.PathLike | None, pruner: str | None, built: Pruner | None, max_epochs: int
) -> Pruner | None:
    """With ``pruner="auto"``, a resumed search keeps the pruning it started with.

    ``"auto"`` depends on ``max_evals`` (no pruning under ``AUTO_MIN_TRIALS``
    trials, TPE's start-up trials judged from the second rung on) and on the
    package's version (journals written before the start-up rule prune every
    trial from the first rung), so resuming with another budget or version
    would otherwise change the pruning halfway, and the journal's settings
    would no longer match.
    """
    if journal is None or not is_auto(pruner):
        return built
    stored = (Journal.stored_settings(journal) or {}).get("pruner")
    if stored == "none" and built is not None:
        logger.info("pruner 'auto': the resumed journal %s was searched without pruning; so is the rest", journal)
        return None
    if isinstance(stored, dict) and stored.get("max_epochs") == max_epochs and (
        built is None or built.describe() != stored
    ):
        logger.info("pruner 'auto': the resumed journal %s was pruned by %s; so is the rest", journal, stored)
        kwargs = {k: v for k, v in stored.items() if k not in ("name", "max_epochs", "rungs")}
        return make_pruner(stored.get("name"), max_epochs, **kwargs)
    return built


def mark_default_of_old_journal(records: list[TrialRecord], default_params: dict | None) -> None:
    """Mark trial 0 as the default when it has the default's parameters and no trial says it is the default.

    Journals written before trial records said which trial was the default
    (``is_default``) began with it all the same; marked, it is not run again,
    and the results compare the search with it.
    """
    if default_params is None or any(record.is_default for record in records):
        return
    for record in records:
        if record.trial_id == 0 and record.params == default_params:
            record.is_default = True


def check_resumed(records: list[TrialRecord], space: SearchSpace, journal: Any) -> None:
    """Refuse journal trials that this search could not have run (a hand-edited journal)."""
    known = set(space.names) | set(space.fixed)
    for record in records:
        unknown = sorted(set(record.params) - known)
        if unknown or (not record.is_default and space.encode(record.params) is None):
            what = f"unknown hyperparameter(s) {unknown}" if unknown else f"{record.params} outside the space"
            raise ValueError(
                f"{journal}: trial {record.trial_id} has {what} (space: {space.to_text()}); the journal was edited "
                "or written by other code. Remove that trial's line, or start a new journal."
            )
