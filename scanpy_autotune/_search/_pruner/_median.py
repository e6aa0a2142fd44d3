"""The median stopping rule."""

from __future__ import annotations

import bisect
import logging

import numpy as np

from ..._validation import check_int
from ._base import RungTablePruner

__all__ = ["MedianPruner"]

logger = logging.getLogger("scanpy_autotune")


class MedianPruner(RungTablePruner):
    """Stop a trial whose value is below the median of the other trials at the same rung.

    Rungs lie every ``interval`` epochs from ``n_warmup_epochs`` on (an
    epoch count of 0 is skipped), strictly below ``max_epochs``. A trial at a
    rung is compared with the values that the *other* trials (running,
    finished or pruned) recorded at that rung; once there are at least
    ``n_startup_trials`` of them it stops iff its value is below their median
    (ties continue). A NaN or infinite value stops the trial.

    Parameters
    ----------
    max_epochs
        The epoch cap of every trial.
    n_startup_trials
        Other trials needed at a rung before anyone is pruned there (default 5).
    n_warmup_epochs
        The first rung (default 20, or ``max_epochs // 2`` when that is
        smaller): no trial is judged before this many epochs.
    interval
        Epochs between rungs (default 10).
    """

    name = "median"

    def __init__(
        self,
        max_epochs: int,
        n_startup_trials: int = 5,
        n_warmup_epochs: int | None = None,
        interval: int = 10,
    ) -> None:
        super().__init__(max_epochs)
        self.n_startup_trials = check_int("n_startup_trials", n_startup_trials, low=0)
        self.interval = check_int("interval", interval, low=1)
        if n_warmup_epochs is None:
            self.n_warmup_epochs = min(20, self.max_epochs // 2)
        else:
            self.n_warmup_epochs = check_int("n_warmup_epochs", n_warmup_epochs, low=0)
            if self.n_warmup_epochs >= self.max_epochs:
                raise ValueError(
                    f"n_warmup_epochs={n_warmup_epochs!r} must be below "
                    f"max_epochs={self.max_epochs} (no rung would be left)."
                )
        self._set_rungs(range(self.n_warmup_epochs, self.max_epochs, self.interval))
        if not self._rungs:
            logger.warning(
                "median pruner: no rung below max_epochs=%d; no trial will be pruned.",
                self.max_epochs,
            )

    def _decide(self, rung: int, trial_id: int, value: float) -> bool:
        others = list(self._sorted[rung])
        del others[bisect.bisect_left(others, value)]  # this trial's own value
        if len(others) < max(self.n_startup_trials, 1):
            return False
        median = float(np.median(others))
        stop = value < median
        if stop:
            logger.debug(
                "median pruner: trial %d pruned at epoch %d: value %.4g below the median "
                "%.4g of %d other trial(s).",
                trial_id,
                rung,
                value,
                median,
                len(others),
            )
        return stop

    def describe(self) -> dict:
        """The settings, JSON-able.

        Returns
        -------
        dict
            ``name``, ``max_epochs``, ``n_startup_trials``, ``n_warmup_epochs``,
            ``interval`` and ``rungs``; all but ``name``, ``max_epochs`` and
            ``rungs`` are :func:`make_pruner` keyword arguments.
        """
        return {
            "name": self.name,
            "max_epochs": self.max_epochs,
            "n_startup_trials": self.n_startup_trials,
            "n_warmup_epochs": self.n_warmup_epochs,
            "interval": self.interval,
            "rungs": self.rungs(),
        }
