"""Where trials run: the contract every backend keeps, and the events it reports.

A backend runs trials in *slots* and tells the runner what happened through
:class:`Event` objects. Two implement it: the local pool of fresh interpreters
(:mod:`._local_pool`) and the Dask cluster (:mod:`._dask`); the tests add an
in-process one that plays scripted events. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._record import TrialRecord
    from ._context import TrialContext

__all__ = ["TRIAL_ATTEMPTS", "Backend", "Event"]

#: Runs of a trial whose worker dies during it (killed from outside, out of memory) before
#: it counts as failed, on every backend: the first run and one retry.
TRIAL_ATTEMPTS = 2


@dataclass
class Event:
    """Something a backend tells the runner.

    Attributes
    ----------
    kind
        ``"done"`` (the trial ended and has a record), ``"report"`` (the trial
        reached a pruning rung and waits for :meth:`Backend.answer`) or
        ``"died"`` (the trial was lost with its worker; no record).
    trial_id
        The trial concerned.
    record, model
        For ``done``: the trial's record and, when it succeeded, its model as
        ``Model.to_dict()`` (``None`` otherwise).
    n_epochs, value
        For ``report``: the rung (epochs trained) and the best validation
        ELBO so far.
    error
        For ``died``: what happened to the worker.
    device
        Where the trial ran.
    """

    kind: str
    trial_id: int
    record: TrialRecord | None = None
    model: dict | None = None
    n_epochs: int = 0
    value: float = float("nan")
    error: str = ""
    device: str = ""


@runtime_checkable
class Backend(Protocol):
    """What the runner needs from a place that runs trials.

    The contract:

    - :meth:`start` is called once, before any :meth:`submit`, with the
      context every trial needs; a backend sends it to each worker once.
    - :meth:`submit` is only called while :meth:`free_slots` is positive and
      starts the trial at once or as soon as the backend can.
    - Every submitted trial ends in exactly one ``done`` or ``died`` event, and
      none after it. Before that it may send ``report`` events, one per rung
      in the ``rungs`` it was given, and waits at each until :meth:`answer`.
    - :meth:`poll` returns the events that arrived within ``timeout`` seconds
      (an empty list when none did); it never raises for a failing trial.
    - After :meth:`shutdown` nothing runs; ``kill=True`` abandons running trials.

    Attributes
    ----------
    name
        ``"local"``, ``"dask"``...: recorded in ``adata.uns[key]["params"]``.
    n_slots
        Trials that run at once.
    """

    name: str

    @property
    def n_slots(self) -> int: ...

    def start(self, context: TrialContext) -> None:
        """Prepare the workers and send each the trial context once."""
        ...

    def free_slots(self) -> int:
        """How many trials could start now."""
        ...

    def submit(self, trial_id: int, params: dict[str, Any], rungs: list[int]) -> str:
        """Start a trial; returns the device it runs on."""
        ...

    def answer(self, trial_id: int, stop: bool) -> None:
        """Tell the trial waiting at a rung whether to stop."""
        ...

    def poll(self, timeout: float) -> list[Event]:
        """The events of the running trials, waiting at most ``timeout`` seconds."""
        ...

    def shutdown(self, kill: bool = False) -> None:
        """Stop every worker (``kill``: at once, abandoning running trials)."""
        ...
