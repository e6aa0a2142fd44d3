"""Asynchronous successive halving (ASHA), in its stopping form."""

from __future__ import annotations

import bisect
import logging

from ..._validation import check_int
from ._base import RungTablePruner

__all__ = ["ASHAPruner", "MAX_DEFAULT_MIN_EPOCHS", "default_min_epochs"]

logger = logging.getLogger("scanpy_autotune")

#: Largest default first rung of :class:`ASHAPruner`, in epochs.
MAX_DEFAULT_MIN_EPOCHS = 25


def default_min_epochs(max_epochs: int) -> int:
    """The default first rung of :class:`ASHAPruner`: ``min(25, max(1, max_epochs // 10))``.

    Parameters
    ----------
    max_epochs
        The epoch cap of every trial.

    Returns
    -------
    int
        25 epochs for ``max_epochs >= 250`` (the scVI default of 400 gives rungs
        25, 75, 225 with ``eta = 3``), a tenth of the budget below that.
    """
    return min(MAX_DEFAULT_MIN_EPOCHS, max(1, int(max_epochs) // 10))


class ASHAPruner(RungTablePruner):
    """Asynchronous successive halving, stopping form.

    Rungs lie at ``min_epochs * eta**k`` epochs (``k = 0, 1, ...``), strictly
    below ``max_epochs``. When a trial reaches a rung, its value joins the
    ``n`` values recorded there so far (its own included) and the trial
    continues iff it is among the top ``floor(n / eta)`` of them (ties
    continue); if that quota is zero, iff it is the best so far (Optuna's
    rule). Until ``min_trials_per_rung`` trials have reached a rung, every
    trial with a finite value continues there. A NaN or infinite value stops
    the trial. Each report costs ``O(n)`` (a sorted insertion) and is
    deterministic: the same reports in the same order give the same answers.

    Parameters
    ----------
    max_epochs
        The epoch cap of every trial.
    min_epochs
        The first rung. Default :func:`default_min_epochs`:
        ``min(25, max(1, max_epochs // 10))``, i.e. 25 epochs (rungs 25, 75,
        225 for 400 epochs and ``eta = 3``). Why: a VAE's validation ELBO in
        its first epochs mostly reflects the initialisation and the learning
        rate (fast learners look best), and with KL warm-up (400 epochs by
        default) the KL weight is still small, so an earlier rung prunes good
        configurations that start slowly. Much later than 25 epochs saves
        little: with the default early-stopping patience of 45 even a hopeless
        trial trains at least 46 epochs, so a rung at 25 still saves over half
        of the cheapest bad trial and about 94% of a full 400-epoch one. For
        short searches the first rung is a tenth of the budget.
    eta
        Reduction factor (at least 2): about ``1/eta`` of the trials pass each rung.
    min_trials_per_rung
        Grace: the ``n``-th trial to reach a rung is judged only when
        ``n >= min_trials_per_rung``. Default ``eta``. Why: below ``eta``
        values the top-``1/eta`` quota is zero and the only rule left is "best
        so far", which with one or two earlier values is a coin toss against
        the noise of whichever trials happened to arrive first (the second
        trial of a search would be stopped half the time). With the default
        the first ``eta - 1`` trials at a rung are not judged; the first judged
        one must be the best of ``eta`` (the quota rule proper), so a
        deliberately bad configuration that reaches the first rung after at
        least ``eta - 1`` others is pruned there. ``1`` gives Optuna's
        behaviour.
    startup_trials
        Trials whose id is below this (TPE's random start-up draws) report
        at the first rung but are judged only from the second on. Default 0;
        the ``"auto"`` pruner passes TPE's start-up count. Why: the first rung
        ranks some datasets' trials poorly (on Cortex the validation ELBO at 25
        epochs ranks the finished trials at Spearman 0.50-0.55 against their
        final loss, on PBMC4k and CBMC at 0.80-0.84), and a start-up draw
        stopped there is a slow starter lost from the few trials TPE's first
        model is built on. Replayed on the unpruned 100-trial journals, the
        best after a third of the trials came within 0.36% of the final best on
        Cortex instead of 0.69%, for 32% of the epochs instead of 24%
        (``benchmarks/results/pruning_replay.md``).
    startup_rungs
        How many rungs, from the first, do not judge a start-up trial.
        Default 1: judged from the second rung on. 2 judges them from the third
        (225 epochs of 400), which on Cortex seed 1 keeps the two best start-up
        configurations that the second rung stopped, for more epochs
        (``benchmarks/results/pruning.md``).

    Notes
    -----
    What TPE learns from a pruned trial: it is told as a failure-like trial
    (no loss, status ``"pruned"``), which hyperopt's TPE puts in its *bad*
    group. TPE splits trials into good and bad only by rank (good = the best
    ``ceil(gamma * sqrt(n))``), and a trial that the rung placed below
    ``1 - 1/eta`` of its peers belongs with the bad ones; its early validation
    ELBO is not on the scale of the final loss (held-out marginal NLL), so it
    is not told as a loss. See the module docstring for the full reasoning.

    Hyperband brackets are not implemented: one bracket (rungs from
    ``min_epochs``) is used for every trial.
    """

    name = "asha"

    def __init__(
        self,
        max_epochs: int,
        min_epochs: int | None = None,
        eta: int = 3,
        min_trials_per_rung: int | None = None,
        startup_trials: int = 0,
        startup_rungs: int = 1,
    ) -> None:
        super().__init__(max_epochs)
        self.eta = check_int("eta", eta, low=2)
        self.startup_trials = check_int("startup_trials", startup_trials, low=0)
        self.startup_rungs = check_int("startup_rungs", startup_rungs, low=1)
        if min_epochs is None:
            self.min_epochs = default_min_epochs(self.max_epochs)
        else:
            self.min_epochs = check_int("min_epochs", min_epochs, low=1)
            if self.min_epochs >= self.max_epochs:
                raise ValueError(
                    f"min_epochs={min_epochs!r} must be below max_epochs={self.max_epochs} "
                    "(no rung would be left)."
                )
        if min_trials_per_rung is None:
            self.min_trials_per_rung = self.eta
        else:
            self.min_trials_per_rung = check_int("min_trials_per_rung", min_trials_per_rung, low=1)
        rungs = []
        rung = self.min_epochs
        while rung < self.max_epochs:
            rungs.append(rung)
            rung *= self.eta
        self._set_rungs(rungs)
        if not self._rungs:
            logger.warning(
                "asha pruner: no rung below max_epochs=%d; no trial will be pruned.",
                self.max_epochs,
            )

    def _decide(self, rung: int, trial_id: int, value: float) -> bool:
        if trial_id < self.startup_trials and rung in self._rungs[: self.startup_rungs]:
            return False
        ordered = self._sorted[rung]
        n = len(ordered)
        if n < self.min_trials_per_rung:
            return False
        keep = max(n // self.eta, 1)
        n_better = n - bisect.bisect_right(ordered, value)  # strictly better values
        stop = n_better >= keep
        if stop:
            logger.debug(
                "asha pruner: trial %d pruned at epoch %d: value %.4g has %d better of %d "
                "(top %d continue).",
                trial_id,
                rung,
                value,
                n_better,
                n,
                keep,
            )
        return stop

    def describe(self) -> dict:
        """The settings, JSON-able.

        Returns
        -------
        dict
            ``name``, ``max_epochs``, ``min_epochs``, ``eta``,
            ``min_trials_per_rung``, ``startup_trials`` (only when not 0, so
            journals written before it existed read the same), ``startup_rungs``
            (only when not 1) and ``rungs``;
            all but ``name``, ``max_epochs`` and ``rungs`` are
            :func:`make_pruner` keyword arguments.
        """
        described = {
            "name": self.name,
            "max_epochs": self.max_epochs,
            "min_epochs": self.min_epochs,
            "eta": self.eta,
            "min_trials_per_rung": self.min_trials_per_rung,
        }
        if self.startup_trials:
            described["startup_trials"] = self.startup_trials
        if self.startup_rungs != 1:
            described["startup_rungs"] = self.startup_rungs
        return {**described, "rungs": self.rungs()}
