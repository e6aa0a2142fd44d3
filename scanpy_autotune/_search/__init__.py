"""The search: spaces, ask/tell TPE, pruning, the trial journal, the runner, the backends.

:func:`search` is the one front door (:mod:`._search`). The modules the driver
uses (``_search``, ``_runner``, ``_tpe``, ``_space``, ``_pruner``, ``_journal``,
``_slots``, ``_backends``, ``_local_pool``, ``_context``) import no torch: the
valid hyperparameters and the model come in at call time. Torch is imported by
the modules that train and score models, in the workers (``_objective``,
``_worker``) and for the best model in the driver (``_best``), when they run.
"""

from ._search import VALIDATION_SIZE, SearchOutcome, objective_identity, search

__all__ = ["VALIDATION_SIZE", "SearchOutcome", "objective_identity", "search"]
