"""The errors a search raises that a user may catch (``sat.tl`` exports them).

They live outside the search so that the command line, which handles them,
imports neither the search nor torch. :class:`NoTrialSucceededError` carries
the trials it found and lives with them in :mod:`scanpy_autotune._results`.
"""

from __future__ import annotations

__all__ = ["BackendFailed", "BestModelFailed", "JournalLockedError", "JournalWriteError"]


class JournalLockedError(RuntimeError):
    """Another search (process) is using the journal."""


class JournalWriteError(OSError):
    """A line could not be appended to the journal (a full disk, a lost mount): the search stops."""


class BackendFailed(RuntimeError):
    """The backend failed during the search (a Dask client closed, a cluster gone); the finished trials are kept."""


class BestModelFailed(RuntimeError):
    """Every trial finished and is kept, but the best trial's model could not be prepared (retrained,
    scored on the test cells or refit: a GPU out of memory, say); :func:`scanpy_autotune.tl.retrain` trains it."""
