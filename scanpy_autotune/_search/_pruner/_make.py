"""The pruner a search asks for by name, and the default ``"auto"`` rule."""

from __future__ import annotations

import logging
from typing import Any

from ..._validation import check_int
from ._asha import MAX_DEFAULT_MIN_EPOCHS, ASHAPruner
from ._base import Pruner, RungTablePruner
from ._median import MedianPruner

__all__ = ["AUTO_KWARGS", "AUTO_MIN_FIRST_RUNG", "AUTO_MIN_TRIALS", "PRUNERS", "auto_min_epochs", "is_auto", "make_pruner"]

logger = logging.getLogger("scanpy_autotune")

#: The ``"auto"`` pruner's first rung is never earlier than this (and below it, nothing is pruned).
AUTO_MIN_FIRST_RUNG = 5
#: The ``"auto"`` pruner prunes only searches of at least this many trials: in the 12-trial demo
#: its rungs stopped the eventual winner on 2 of 3 seeds, and 20-trial Cortex searches ended over
#: 1% worse on 2 of 3 (``benchmarks/results/pruning.md``); at 100 trials it kept the best within 0.2%.
AUTO_MIN_TRIALS = 30


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


#: The one setting the ``"auto"`` pruner takes (it chooses the others).
AUTO_KWARGS = ("startup_rungs",)

#: Pruner names accepted by :func:`make_pruner`, with their keyword arguments.
PRUNERS: dict[str, tuple[type[RungTablePruner], tuple[str, ...]]] = {
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
                f"choose one of {['auto', *sorted(PRUNERS)]}."
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
        raise ValueError(f"Unknown pruner {name!r}; valid are {['auto', *sorted(PRUNERS)]}, or None (also 'none') for no pruning.")
    cls, valid = PRUNERS[key]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown argument(s) {unknown} for the {key!r} pruner; valid are {list(valid)}."
        )
    return cls(max_epochs, **kwargs)
