"""The convergence stop: end a search when further trials are unlikely to help.

The rule: once at least ``min_trials`` trials have finished (TPE's 20 random
start-up trials by default, so the model of the space has data), the search
stops starting trials when ``patience`` trials in a row that ran to the end
(or failed) have not lowered the best loss by more than ``tolerance``
(relative). Pruned trials do not count towards the patience: their loss is
unknown, and a window full of cheap pruned trials ended the first Cortex run
with every default after only 7 trials had run to the end, its best 0.53%
above the full search's (``benchmarks/results/convergence.md``). Trials that
are running when the search converges finish and count.

Why this rule, and these numbers: replaying the unpruned 100-trial journals
(``benchmarks/convergence_replay.py``), a stop after 12 trials without a gain
of 0.2%, after at least 20 trials, ends the Cortex searches after 27 and 28
trials and PBMC4k's after 20, with the best within 0.36%, 0.28% and 0.19% of
the best of all 100 trials; the searches it was not chosen on (40 trials of
100 epochs) stop after 38 and 32 with their best within 0.27%. For another
budget the patience scales (``max(8, round(0.12 * max_evals))``). A stopped
search resumed with a larger ``max_evals`` goes on: the count starts again.
This module imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .._record import TrialRecord
from .._validation import check_int

__all__ = ["ConvergenceStop", "make_convergence_stop"]

DEFAULT_TOLERANCE = 0.002
DEFAULT_MIN_TRIALS = 20


@dataclass
class ConvergenceStop:
    """Stop after ``patience`` trials without a gain of more than ``tolerance``, pruned trials not counted.

    Parameters
    ----------
    patience
        Trials in a row that ran to the end (or failed) without such a gain.
    tolerance
        Relative gain of the best loss that counts as progress.
    min_trials
        Never stop before this many trials have finished (resumed ones included).
    """

    patience: int
    tolerance: float = DEFAULT_TOLERANCE
    min_trials: int = DEFAULT_MIN_TRIALS
    best: float = math.inf
    since: int = 0
    finished: int = 0

    def restore(self, records: Iterable[TrialRecord]) -> None:
        """Take the best of resumed trials; the count of trials without progress starts again."""
        records = list(records)
        self.finished = len(records)
        self.best = min((r.loss for r in records if r.succeeded), default=math.inf)
        self.since = 0

    def observe(self, record: TrialRecord) -> bool:
        """Count a finished trial; ``True`` when the search has converged."""
        self.finished += 1
        if record.status == "pruned":
            return self.finished >= self.min_trials and self.since >= self.patience
        loss = record.loss if record.succeeded else math.inf
        progress = loss < self.best - self.tolerance * abs(self.best) if math.isfinite(self.best) else loss < self.best
        self.since = 0 if progress else self.since + 1
        self.best = min(self.best, loss)
        return self.finished >= self.min_trials and self.since >= self.patience

    def reason(self) -> str:
        """Why the search stopped, in words."""
        return (
            f"converged: {self.since} trials in a row ran to the end without lowering the best loss by more "
            f"than {100 * self.tolerance:g}% (after {self.finished} trials)"
        )

    def describe(self) -> dict:
        """The settings, JSON-able."""
        return {"patience": self.patience, "tolerance": self.tolerance, "min_trials": self.min_trials}


def make_convergence_stop(patience: int | str | None, max_evals: int) -> ConvergenceStop | None:
    """The convergence stop of a search of ``max_evals`` trials.

    Parameters
    ----------
    patience
        ``"auto"``: ``max(8, round(0.12 * max_evals))`` trials; an integer; or
        ``None`` to run all ``max_evals`` trials.
    max_evals
        The search's budget.
    """
    if patience is None:
        return None
    if patience == "auto":
        return ConvergenceStop(max(8, round(0.12 * max_evals)))
    if isinstance(patience, str):
        raise ValueError(f"patience={patience!r}: use 'auto', a number of trials, or None.")
    return ConvergenceStop(check_int("patience", patience, low=1))

