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
    from ._resume import VALIDATION_SIZE, objective_identity
    from ._search import SearchOutcome, search

__all__ = ["VALIDATION_SIZE", "SearchOutcome", "objective_identity", "search"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _resume, _search

        return getattr(_resume if hasattr(_resume, name) else _search, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
