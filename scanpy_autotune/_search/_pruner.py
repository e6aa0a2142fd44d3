"""Pruning: stop a running trial early when it is clearly worse than its peers.

The runner (driver process) owns one pruner. A trial reports at every *rung*
(an epoch count given by :meth:`Pruner.rungs`) its best validation ELBO so far
(higher is better; computed in the worker by
:class:`scanpy_autotune._search._worker.RungReporter`) and waits;
:meth:`Pruner.report` records the value in the rung table and answers whether
the trial stops. Workers never see the table, so the same pruner serves the
local pool and the Dask backend. The runner keeps every value a trial
reported in its record (``rung_values``); after a resume, :meth:`Pruner.restore`
replays them, so the tables hold exactly what the pruner was told.

Three rules are offered (:func:`make_pruner`):

``"auto"`` (the default of :func:`scanpy_autotune.tl.autotune`)
    ASHA with its first rung at ``min(25, max_epochs // 4)`` epochs instead of
    ``min(25, max_epochs // 10)``, TPE's random start-up trials judged only
    from the second rung on, no pruning below 20 epochs nor in searches
    of fewer than :data:`AUTO_MIN_TRIALS` trials. See :func:`auto_min_epochs`,
    :class:`ASHAPruner` and :data:`AUTO_MIN_TRIALS` for the measurements behind it.
``"asha"``
    Asynchronous successive halving (Li et al. 2020, "A System for Massively
    Parallel Hyperparameter Tuning", in its stopping form as in Optuna's
    ``SuccessiveHalvingPruner``): rungs at ``min_epochs * eta**k``; a trial
    continues at a rung only if it is among the top ``floor(n / eta)`` of the
    ``n`` trials that have reached that rung so far. See :class:`ASHAPruner`.
``"median"``
    Stop a trial that is below the median of the other trials at the same
    epoch (Optuna's ``MedianPruner``, Google Vizier's median stopping rule).
    See :class:`MedianPruner`.

What TPE learns from a pruned trial
-----------------------------------
A pruned trial has no loss: the loss of the search is the held-out negative
marginal log-likelihood of a *trained* model, and a pruned trial was never
trained to the end. Its validation ELBO at the rung is not a substitute: it is
measured at an early epoch, on other cells, with one posterior sample instead
of importance sampling, and (during KL warm-up) on a model trained under a
different objective, so it is not on the scale of the final losses; telling
it as a loss would put a pruned trial, ranked by an unrelated number, among
the finished ones.

The project's decision is therefore that a pruned trial is told to TPE like a
failure (``loss = NaN``, status ``"pruned"``): hyperopt's ``tpe.suggest``
gives such a trial an infinite loss, which places it in the *bad* group. This
is what the rung predicted. hyperopt's TPE uses the losses only through their
ranks, to split the trials at the ``gamma`` quantile into a good group (the
best ``ceil(gamma * sqrt(n))`` trials, 3 of 100 with the default
``gamma = 0.25``) and a bad group, and fits one density to each. A trial the
rung placed below at least ``1 - 1/eta`` of its peers is, barring a slow
start, not among the best few trials of the search, so it belongs to the bad
group, and an infinite loss puts it there without pretending to know how bad
it is. TPE thus learns "this region produced a trial that was stopped", which
steers suggestions away from it as much as a finished poor trial would, and
the good group, which drives the proposals, is made of finished trials only.
The cost of a wrong prune (a slow starter that would have ended well) is one
configuration mislabelled as bad, the same error ASHA accepts when it stops
the trial.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .._validation import check_int

if TYPE_CHECKING:
    from .._record import TrialRecord

__all__ = [
    "ASHAPruner",
    "MedianPruner",
    "PRUNERS",
    "Pruner",
    "AUTO_MIN_TRIALS",
    "auto_min_epochs",
    "default_min_epochs",
    "make_pruner",
]

logger = logging.getLogger("scanpy_autotune")

#: Largest default first rung of :class:`ASHAPruner`, in epochs.
MAX_DEFAULT_MIN_EPOCHS = 25
#: The ``"auto"`` pruner's first rung is never earlier than this (and below it, nothing is pruned).
AUTO_MIN_FIRST_RUNG = 5
#: The ``"auto"`` pruner prunes only searches of at least this many trials: in the 12-trial demo
#: its rungs stopped the eventual winner on 2 of 3 seeds, and 20-trial Cortex searches ended over
#: 1% worse on 2 of 3 (``benchmarks/results/pruning.md``); at 100 trials it kept the best within 0.2%.
AUTO_MIN_TRIALS = 30


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


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


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


def is_auto(name: str | None) -> bool:
    """Whether ``name`` asks for the default pruner, ``"auto"`` (any case)."""
    return isinstance(name, str) and name.lower() == "auto"


def auto_min_epochs(max_epochs: int) -> int | None:
    """The first rung of the ``"auto"`` pruner: ``min(25, max_epochs // 4)``, or ``None`` below 5.

    Parameters
    ----------
    max_epochs
        The epoch cap of every trial.

    Returns
    -------
    int or None
        25 epochs from ``max_epochs = 100`` on (rungs 25, 75, 225 for 400
        epochs, as ASHA's own default), a quarter of the budget below that,
        and ``None`` (no pruning) when that quarter is under 5 epochs
        (``max_epochs < 20``).

    Notes
    -----
    Why a quarter and not ASHA's tenth: in the README demo (12 trials of 40
    epochs) a first rung at 4 epochs stopped the best trial of seed 0, which
    starts slowly (4 layers of 256 units), and the search ended on the default
    configuration; at 10 epochs it survives. Replayed on the unpruned
    journals (``benchmarks/results/pruning_replay.md``) this rule kept the
    best configuration on all three demo seeds (saving 46-58% of the epochs),
    and on the 100-trial, 400-epoch searches it is ASHA's default (3.6-4.1x
    fewer epochs, best within 0.2%, with every trial judged from the first
    rung; 3.1-3.5x now that "auto" spares TPE's start-up trials one rung). A validation ELBO after fewer than 5
    epochs mostly reflects the initialisation and the learning rate, so
    shorter trials are not pruned at all.
    """
    first = min(MAX_DEFAULT_MIN_EPOCHS, int(max_epochs) // 4)
    return first if first >= AUTO_MIN_FIRST_RUNG else None


# ---------------------------------------------------------------------------
# shared rung-table machinery
# ---------------------------------------------------------------------------


class _RungTablePruner:
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


# ---------------------------------------------------------------------------
# ASHA
# ---------------------------------------------------------------------------


class ASHAPruner(_RungTablePruner):
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


# ---------------------------------------------------------------------------
# median
# ---------------------------------------------------------------------------


class MedianPruner(_RungTablePruner):
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


# ---------------------------------------------------------------------------
# factory
# ---------------------------------------------------------------------------

#: The one setting the ``"auto"`` pruner takes (it chooses the others).
AUTO_KWARGS = ("startup_rungs",)

#: Pruner names accepted by :func:`make_pruner`, with their keyword arguments.
PRUNERS: dict[str, tuple[type[_RungTablePruner], tuple[str, ...]]] = {
    "asha": (ASHAPruner, ("min_epochs", "eta", "min_trials_per_rung", "startup_trials", "startup_rungs")),
    "median": (MedianPruner, ("n_startup_trials", "n_warmup_epochs", "interval")),
}


def make_pruner(
    name: str | None, max_epochs: int, max_evals: int | None = None, tpe_startup: int = 0, **kwargs: Any
) -> Pruner | None:
    """Build the pruner named ``name`` for trials of at most ``max_epochs`` epochs.

    Parameters
    ----------
    name
        ``"auto"`` (:class:`ASHAPruner` with ``min_epochs`` from
        :func:`auto_min_epochs`; no pruner below 20 epochs, nor for a
        ``max_evals`` under :data:`AUTO_MIN_TRIALS`), ``"asha"``
        (:class:`ASHAPruner`), ``"median"`` (:class:`MedianPruner`) or
        ``None`` (no pruning). Case-insensitive.
    max_epochs
        The epoch cap of every trial; every rung lies below it.
    max_evals
        The search's budget of trials, if known; only ``"auto"`` reads it.
    tpe_startup
        TPE's random start-up trials; ``"auto"`` judges them only from its
        second rung on (it passes them as :class:`ASHAPruner`'s ``startup_trials``).
    **kwargs
        The pruner's settings (``pruner_kwargs``): for ``"auto"`` only
        ``startup_rungs`` (at how many rungs TPE's start-up trials are spared;
        default 1); for ``"asha"``
        ``min_epochs``, ``eta``, ``min_trials_per_rung``, ``startup_trials``, ``startup_rungs``; for ``"median"``
        ``n_startup_trials``, ``n_warmup_epochs``, ``interval``.

    Returns
    -------
    Pruner or None
        ``None`` when ``name`` is ``None``.

    Raises
    ------
    ValueError
        For an unknown name or keyword (the message lists the valid ones), or
        a bad value (the message names the parameter).
    """
    if name is None:
        if kwargs:
            raise ValueError(
                f"pruner_kwargs {sorted(kwargs)} were given without a pruner; "
                f"choose one of {sorted(PRUNERS)}."
            )
        return None
    if is_auto(name):
        others = sorted(set(kwargs) - set(AUTO_KWARGS))
        if others:
            raise ValueError(
                f"pruner_kwargs {others} were given with pruner='auto', which sets its own; "
                f"it takes only {list(AUTO_KWARGS)}; pass pruner='asha' (or 'median') with them."
            )
        startup_rungs = check_int("startup_rungs", kwargs.get("startup_rungs", 1), low=1)
        first = auto_min_epochs(check_int("max_epochs", max_epochs, low=1))
        if first is None:
            logger.info("pruner 'auto': no pruning, trials of %d epochs are too short to judge early", max_epochs)
            return None
        if max_evals is not None and check_int("max_evals", max_evals, low=1) < AUTO_MIN_TRIALS:
            logger.info(
                "pruner 'auto': no pruning in a search of %d trials (it prunes from %d): a rung "
                "judges a trial against too few peers to spare a slow starter", max_evals, AUTO_MIN_TRIALS,
            )
            return None
        return ASHAPruner(max_epochs, min_epochs=first, startup_trials=tpe_startup, startup_rungs=startup_rungs)
    key = name.lower() if isinstance(name, str) else name
    if key not in PRUNERS:
        raise ValueError(f"Unknown pruner {name!r}; valid are {['auto', *sorted(PRUNERS)]} or None.")
    cls, valid = PRUNERS[key]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown argument(s) {unknown} for the {key!r} pruner; valid are {list(valid)}."
        )
    return cls(max_epochs, **kwargs)
