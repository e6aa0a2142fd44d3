"""The search: spaces, ask/tell TPE, pruning, the trial journal, the runner, the backends.

:func:`search` is the one front door (:mod:`._search`), loaded on first use so
that a worker process, which imports :mod:`._worker` and :mod:`._objective`
from this package, does not import the driver's modules (TPE, hyperopt). The
modules the driver uses (``_search``, ``_runner``, ``_tpe``, ``_space``,
``_pruner``, ``_journal``, ``_slots``, ``_backends``, ``_local_pool``,
``_context``, ``_best``) import no torch: the valid hyperparameters and the
model come in at call time. Torch is imported by the modules that train and
score models, in the workers (``_objective``, ``_worker``) and, for the best
model, in the driver (``_best``, when it runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._search import VALIDATION_SIZE, SearchOutcome, objective_identity, search

__all__ = ["VALIDATION_SIZE", "SearchOutcome", "objective_identity", "search"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _search

        return getattr(_search, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
