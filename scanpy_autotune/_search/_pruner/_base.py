"""What the runner needs from a pruner, and the rung tables the pruners share."""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..._validation import check_int

if TYPE_CHECKING:
    from ..._record import TrialRecord

__all__ = ["Pruner", "RungTablePruner"]

logger = logging.getLogger("scanpy_autotune")


@runtime_checkable
class Pruner(Protocol):
    """What the runner needs from a pruner."""

    name: str

    def rungs(self) -> list[int]:
        """Epoch counts (1-based) at which a running trial reports and waits; sorted, all < max_epochs."""
        ...

    def report(self, trial_id: int, n_epochs: int, value: float) -> bool:
        """Record ``value`` (best validation ELBO so far) at rung ``n_epochs``; True means stop the trial."""
        ...

    def restore(self, records: list[TrialRecord]) -> None:
        """Rebuild the rung tables from the values finished trials reported (``rung_values``)."""
        ...

    def describe(self) -> dict:
        """JSON-able settings for ``adata.uns`` and the journal header."""
        ...


class RungTablePruner:
    """Rung tables (rung -> trial id -> value), with a sorted copy of each rung's values."""

    name = "base"

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = check_int("max_epochs", max_epochs, low=1)
        self._rungs: list[int] = []
        self._values: dict[int, dict[int, float]] = {}
        self._sorted: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def _set_rungs(self, rungs: Iterable[int]) -> None:
        self._rungs = sorted({int(r) for r in rungs if 1 <= int(r) < self.max_epochs})
        self._values = {r: {} for r in self._rungs}
        self._sorted = {r: [] for r in self._rungs}

    # -- public -------------------------------------------------------------------

    def rungs(self) -> list[int]:
        """Epoch counts at which a running trial reports and waits for a decision.

        Returns
        -------
        list of int
            Sorted, 1-based ("after this many epochs"), all below ``max_epochs``.
        """
        return list(self._rungs)

    def rung_table(self) -> dict[int, dict[int, float]]:
        """A copy of the recorded values: ``{rung: {trial_id: value}}``.

        Returns
        -------
        dict
            Non-finite reports are stored as ``-inf``.
        """
        with self._lock:
            return {r: dict(table) for r, table in self._values.items()}

    def report(self, trial_id: int, n_epochs: int, value: float) -> bool:
        """Record a trial's value at a rung and decide whether it stops.

        Parameters
        ----------
        trial_id
            The reporting trial. A second report of the same trial at the same
            rung replaces the first.
        n_epochs
            The rung reached (one of :meth:`rungs`).
        value
            The trial's best validation ELBO so far,
            higher is better. NaN or infinite (a diverging trial) is recorded as
            ``-inf`` and always stops the trial.

        Returns
        -------
        bool
            ``True`` to stop (prune) the trial, ``False`` to let it continue.

        Raises
        ------
        ValueError
            If ``n_epochs`` is not a rung.
        """
        rung = int(n_epochs)
        if rung not in self._values:
            raise ValueError(
                f"{self.name} pruner: trial {trial_id} reported at epoch {n_epochs}, "
                f"which is not a rung {self._rungs}."
            )
        value = float(value)
        finite = math.isfinite(value)
        with self._lock:
            self._record(rung, int(trial_id), value if finite else -math.inf)
            if not finite:
                logger.debug(
                    "%s pruner: trial %d pruned at epoch %d: value %r is not finite.",
                    self.name,
                    trial_id,
                    rung,
                    value,
                )
                return True
            return self._decide(rung, int(trial_id), value)

    def restore(self, records: Iterable[TrialRecord]) -> None:
        """Rebuild the rung tables from finished trial records (after a resume).

        Parameters
        ----------
        records
            The journal's records. Each replays the values it reported at the
            rungs (``record.rung_values``), as the runner stored them; rungs
            this pruner does not have are ignored. The previous tables are
            discarded.

        Notes
        -----
        Only finished trials are in a journal: values reported live by trials
        that were still running when the search stopped, or whose worker died,
        are not restored. With the same finished records the restored tables
        equal the live ones, so later reports get the same answers.
        """
        with self._lock:
            self._values = {r: {} for r in self._rungs}
            self._sorted = {r: [] for r in self._rungs}
            n_restored = 0
            for record in records:
                for rung, value in sorted(record.rung_values.items()):
                    if rung in self._values:
                        finite = math.isfinite(value)
                        self._record(rung, int(record.trial_id), value if finite else -math.inf)
                        n_restored += 1
        logger.debug("%s pruner: restored %d rung value(s).", self.name, n_restored)

    # -- internals ----------------------------------------------------------------

    def _record(self, rung: int, trial_id: int, value: float) -> None:
        table, ordered = self._values[rung], self._sorted[rung]
        old = table.get(trial_id)
        if old is not None:
            del ordered[bisect.bisect_left(ordered, old)]
        table[trial_id] = value
        bisect.insort(ordered, value)

    def _decide(self, rung: int, trial_id: int, value: float) -> bool:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({settings})"

    def describe(self) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError
