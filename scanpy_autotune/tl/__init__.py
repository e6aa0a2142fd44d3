"""``sat.tl``: the search and the small public helpers around it."""

from .._errors import BackendFailed, BestModelFailed, JournalLockedError, JournalWriteError
from .._importances import importances
from .._logging import follow_scanpy_verbosity as _follow_scanpy_verbosity
from .._results import NoTrialSucceededError
from ._autotune import autotune, default_max_epochs, default_space, integration_space
from ._retrain import retrain
from ._scvi_kwargs import scvi_kwargs
from ._trials_table import trials_table

__all__ = [
    "BackendFailed", "BestModelFailed", "JournalLockedError", "JournalWriteError", "NoTrialSucceededError", "autotune", "default_max_epochs", "default_space", "importances", "integration_space", "retrain", "scvi_kwargs",
    "trials_table",
]

_follow_scanpy_verbosity()  # the package's messages follow sc.settings.verbosity
