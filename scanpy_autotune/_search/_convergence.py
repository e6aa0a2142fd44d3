"""The convergence stop: end a search when further trials are unlikely to help.

The rule: once at least ``min_trials`` trials have finished (20 by default,
TPE's random start-up in a search of 58 trials or more, so the model of the
space has data), the search
stops starting trials when ``patience`` trials' worth of training in a row has
not lowered the best loss by more than ``tolerance`` (relative). A trial that
ran to the end counts as one; a pruned or failed trial, whose loss is unknown,
counts as the share of ``max_epochs`` it trained (1/16 for a trial stopped at
25 of 400 epochs; nothing for one that diverged at its first epoch, which
counted as a whole trial in the first CBMC search with every default).
Counted as whole trials, the cheap pruned ones
filled the window: the first Cortex search with every default stopped after
30 trials, 7 of which had run to the end, its best 0.53% above the unpruned
search's; not counted at all, a pruned search never stopped (Cortex: all 100
trials). Replayed on the 100-trial ASHA journals with a patience of 12, the share rule stops
Cortex after 66 and 86 trials (best +0.32%, +0.45% against the unpruned
search's), PBMC4k after 56 (+0.19%), CBMC after 66
(``benchmarks/results/convergence_replay.md``). Trials that are running when
the search converges finish and count.

Why this rule, and these numbers: replaying the unpruned 100-trial journals
(``benchmarks/convergence_replay.py``), a stop after 8 trials without a gain
of 0.2%, after at least 20 trials, ends the Cortex searches after 23 and 24
trials and PBMC4k's and CBMC's after 20, with the best within 0.36%, 0.32%,
0.19% and 0.19% of the best of all 100 trials. With the default pruning
(TPE's start-up trials judged from the second rung on), replayed on the same
journals (``benchmarks/pruning_replay.py``), it stops after 44, 34, 24 and 26
trials within 0.36%; in real searches with every default after 36 trials on
Cortex, 24 on PBMC4k and 24 on CBMC (``benchmarks/results/convergence.md``).
A patience of 12 (the default until session 16) stopped the same real searches
after 87, 50 and 65 trials: the window then needed more trials run to the end.
For another budget the patience scales (``max(8, round(0.08 * max_evals))``).
A stopped search resumed with a larger ``max_evals`` goes on: the count starts again.
This module imports no torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .._record import TrialRecord
from .._validation import check_int

__all__ = ["ConvergenceStop", "make_convergence_stop"]

logger = logging.getLogger("scanpy_autotune")

DEFAULT_TOLERANCE = 0.002
DEFAULT_MIN_TRIALS = 20


@dataclass
class ConvergenceStop:
    """Stop after ``patience`` trials' worth of training without a gain of more than ``tolerance``.

    Parameters
    ----------
    patience
        Trials in a row without such a gain; a pruned or failed trial counts
        as the share of ``max_epochs`` it trained.
    tolerance
        Relative gain of the best loss that counts as progress.
    min_trials
        Never stop before this many trials have finished (resumed ones included).
    max_epochs
        The trials' epoch cap, against which a pruned or failed trial's epochs are counted.
    """

    patience: int
    tolerance: float = DEFAULT_TOLERANCE
    min_trials: int = DEFAULT_MIN_TRIALS
    max_epochs: int = 400
    best: float = math.inf
    since: float = 0.0
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
        if not record.succeeded:  # pruned or failed: no loss, counted by the training it got
            self.since += min(1.0, max(record.n_epochs, 0) / self.max_epochs)
        else:
            progress = (
                record.loss < self.best - self.tolerance * abs(self.best)
                if math.isfinite(self.best) else record.loss < self.best
            )
            self.since = 0.0 if progress else self.since + 1
            self.best = min(self.best, record.loss)
        # A small epsilon: sixteen pruned trials at 25 of 400 epochs are one trial's worth.
        return self.finished >= self.min_trials and self.since >= self.patience - 1e-9

    def reason(self) -> str:
        """Why the search stopped, in words."""
        return (
            f"converged: {self.patience} trials' worth of training in a row (pruned and failed trials counted "
            f"by the share of their epochs) without lowering the best loss by more than {100 * self.tolerance:g}% "
            f"(after {self.finished} trials)"
        )

    def describe(self) -> dict:
        """The settings, JSON-able."""
        return {
            "patience": self.patience, "tolerance": self.tolerance, "min_trials": self.min_trials,
            "max_epochs": self.max_epochs,
        }


def make_convergence_stop(
    patience: int | str | None, max_evals: int, max_epochs: int = 400
) -> ConvergenceStop | None:
    """The convergence stop of a search of ``max_evals`` trials of at most ``max_epochs`` epochs.

    Parameters
    ----------
    patience
        ``"auto"``: ``max(8, round(0.08 * max_evals))`` trials; an integer; or
        ``None`` to run all ``max_evals`` trials.
    max_evals
        The search's budget.
    max_epochs
        The trials' epoch cap (a pruned trial counts by its share of it).
    """
    if patience is None:
        return None
    if patience == "auto":
        return ConvergenceStop(max(8, round(0.08 * max_evals)), max_epochs=max_epochs)
    if isinstance(patience, str):
        raise ValueError(f"patience={patience!r}: use 'auto', a number of trials, or None.")
    stop = ConvergenceStop(check_int("patience", patience, low=1), max_epochs=max_epochs)
    if max_evals <= stop.min_trials:
        logger.warning(
            "patience=%d cannot end this search early: the convergence stop looks at a search once %d "
            "trials have finished, and max_evals=%d", stop.patience, stop.min_trials, max_evals,
        )
    return stop

