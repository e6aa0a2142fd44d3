"""The search: spaces, ask/tell TPE, pruning, the trial journal, the runner, the backends.

:func:`search` is the one front door (:mod:`._search`), loaded on first use so
that a worker process, which imports :mod:`._worker` and :mod:`._objective`
from this package, does not import the driver's modules (TPE, hyperopt). No
module here imports torch when it is imported: the valid hyperparameters and
the model come in at call time. Torch is imported when a model is trained or
scored, in the workers (``_objective``, when a trial runs) and, for the best
model, in the driver (``_best``, when it runs); ``tests/test_layout.py``
checks every module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._context import training_seed
    from ._resume import VALIDATION_SIZE, objective_identity
    from ._search import SearchOutcome, search

__all__ = ["VALIDATION_SIZE", "SearchOutcome", "objective_identity", "search", "training_seed"]

#: The module of each public name.
_HOMES = {
    "VALIDATION_SIZE": "_resume", "objective_identity": "_resume", "training_seed": "_context",
    "SearchOutcome": "_search", "search": "_search",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
