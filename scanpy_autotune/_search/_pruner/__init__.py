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

from ._asha import MAX_DEFAULT_MIN_EPOCHS, ASHAPruner, default_min_epochs
from ._base import Pruner, RungTablePruner
from ._make import (
    AUTO_KWARGS,
    AUTO_MIN_FIRST_RUNG,
    AUTO_MIN_TRIALS,
    PRUNERS,
    auto_min_epochs,
    is_auto,
    make_pruner,
)
from ._median import MedianPruner

__all__ = [
    "ASHAPruner",
    "AUTO_KWARGS",
    "AUTO_MIN_FIRST_RUNG",
    "AUTO_MIN_TRIALS",
    "MAX_DEFAULT_MIN_EPOCHS",
    "MedianPruner",
    "PRUNERS",
    "Pruner",
    "RungTablePruner",
    "auto_min_epochs",
    "default_min_epochs",
    "is_auto",
    "make_pruner",
]
