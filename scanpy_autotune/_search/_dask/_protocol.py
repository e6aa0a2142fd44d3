"""What the driver and the Dask workers of one search share: the payload and the names.

A search is known on the cluster by a short random id. Everything it puts
there is named from that id (:class:`SearchRef`): the published payload, the
queue on which trials report at the pruning rungs, one reply queue per attempt
of a trial waiting at a rung, one attempts queue per trial, and the keys of its
tasks. Each task carries a :class:`SearchRef` only; the :class:`Payload` it
names reaches every worker process once (see :mod:`._worker`).

A trial's task returns one of:

``("done", trial_id, record, model, device)``
    The trial ran to its end (ok, failed or pruned) on ``device``.
``("exhausted", trial_id, attempt)``
    A start beyond :data:`.._backends.TRIAL_ATTEMPTS`: the earlier attempts died with their workers.
``("cancelled", trial_id)``
    The driver stopped the search while the trial ran.

This module imports neither ``distributed`` nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._context import TrialContext

# Seconds between two looks at the queues (rung decisions; they are rare).
QUEUE_POLL_S = 0.1
# Every name a search uses on the cluster starts with this.
NAME_PREFIX = "scanpy-autotune"
# After a search's prefix in its published payload's name, then the client id of its driver.
PAYLOAD_SUFFIX = "-payload"
PAYLOAD_DRIVER_SEPARATOR = "-by-"


def payload_owner(name: str) -> tuple[str, str] | None:
    """``(search_id, driver)`` of a published payload's name, or ``None`` for another name.

    Also ``None`` for a payload published without its driver's id (its owner is unknown).
    """
    head, separator, driver = name.partition(PAYLOAD_DRIVER_SEPARATOR)
    start = f"{NAME_PREFIX}-"
    if not (separator and driver and head.startswith(start) and head.endswith(PAYLOAD_SUFFIX)):
        return None
    return head[len(start) : -len(PAYLOAD_SUFFIX)], driver


@dataclass
class Payload:
    """What each worker process needs once per search (sent by Dask's ``scatter``)."""

    search_id: str
    context: TrialContext  # without data when the workers read ``data_path``
    data_path: str | None
    fingerprint: str


@dataclass(frozen=True)
class SearchRef:
    """What each task carries instead of the payload: the search, and its names on the cluster.

    Attributes
    ----------
    search_id
        The search's random id.
    driver
        The ``distributed`` client id of the driver; a later search removes
        what a driver that is gone left on the cluster (:func:`payload_owner`).
    payload_bytes
        The size of the payload's counts, which bounds how long a fetch may take.
    """

    search_id: str
    driver: str = ""
    payload_bytes: int = 0

    @property
    def prefix(self) -> str:
        return f"{NAME_PREFIX}-{self.search_id}"

    @property
    def dataset(self) -> str:
        """The name under which the driver publishes the scattered :class:`Payload`."""
        return f"{self.prefix}{PAYLOAD_SUFFIX}{PAYLOAD_DRIVER_SEPARATOR}{self.driver}"

    @property
    def reports(self) -> str:
        """The queue on which trials report at a rung (read by the driver)."""
        return f"{self.prefix}-reports"

    def reply(self, trial_id: int, attempt: int) -> str:
        """The queue on which one attempt of a trial waits for the driver's rung decision."""
        return f"{self.prefix}-reply-{trial_id}-{attempt}"

    def attempts(self, trial_id: int) -> str:
        """The queue that counts the starts of a trial (one item per start)."""
        return f"{self.prefix}-attempts-{trial_id}"

    def trial_key(self, trial_id: int, submission: int) -> str:
        """The task key of the driver's ``submission``-th submission of a trial."""
        return f"{self.prefix}-trial-{trial_id}-{submission}"

    def prepare_key(self, index: int) -> str:
        """The task key that has the ``index``-th worker read ``data_path`` at the start."""
        return f"{self.prefix}-prepare-{index}"
