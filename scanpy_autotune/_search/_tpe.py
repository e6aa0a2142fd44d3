"""Ask/tell TPE on hyperopt's pieces, with pending trials mocked by the mean loss.

hyperopt's ``tpe.suggest`` gives every trial without a loss (new, running,
failed) an infinite loss. For asynchronous parallel search this module instead
shows TPE every pending trial as finished with the mean loss of the finished
trials (the "constant liar" of Bergstra et al. 2011), on a throw-away
``Trials`` built for each ask; the real records are never touched by the mock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from hyperopt import JOB_STATE_DONE, JOB_STATE_RUNNING, STATUS_FAIL, STATUS_OK, Domain, Trials, tpe

from .._record import STATUSES
from ._space import SearchSpace

__all__ = ["AskTellTPE", "startup_trials", "trial_seed"]

logger = logging.getLogger("scanpy_autotune")

_TPE_KWARGS = ("prior_weight", "n_EI_candidates", "gamma")
#: hyperopt's own number of random start-up trials, kept for searches of 58 trials or more.
MAX_STARTUP_TRIALS = 20


def trial_seed(seed: int, trial_id: int) -> int:
    """The random seed of one suggestion, derived from the search seed and the trial id.

    Parameters
    ----------
    seed
        The search's seed.
    trial_id
        The trial being suggested.

    Returns
    -------
    int
        A seed in ``[0, 2**32)``.
    """
    entropy = [int(seed) % 2**64, int(trial_id)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def _no_objective(params: Any) -> float:  # pragma: no cover - never evaluated here
    raise RuntimeError("AskTellTPE does not evaluate trials; the runner does.")


#: The fewest random start-up trials: TPE's densities from fewer observations are mostly its prior.
MIN_STARTUP_TRIALS = 4


def startup_trials(max_evals: int) -> int:
    """How many trials TPE draws at random before it models: a third of the budget, 4 to 20.

    Parameters
    ----------
    max_evals
        The search's budget of trials.

    Returns
    -------
    int
        ``ceil(max_evals / 3)`` clipped to ``[4, 20]``; the default configuration
        (trial 0) counts as one of them. 20 (hyperopt's default) from 58 trials on.

    Notes
    -----
    With hyperopt's fixed 20, a search of fewer than 21 trials never models:
    the README demo (12 trials) was a random search, and on two of three seeds
    no draw beat the default configuration. With 4 start-up trials the same
    demo, unpruned, gained 8.7%, 8.4% and 5.7% over the default on seeds 0, 1
    and 2 (``benchmarks/results/demo_pruning.md``).
    """
    return max(MIN_STARTUP_TRIALS, min(MAX_STARTUP_TRIALS, math.ceil(int(max_evals) / 3)))


class AskTellTPE:
    """Asynchronous TPE with an ask/tell interface.

    Parameters
    ----------
    space
        The search space.
    seed
        The search's seed; suggestion ``i`` uses :func:`trial_seed` ``(seed, i)``,
        so the same seed and the same sequence of calls give the same suggestions.
    n_startup_jobs
        Trials drawn at random before TPE starts modelling (asked or known
        trials count); a search passes :func:`startup_trials` of its budget.
    **tpe_kwargs
        Passed to ``hyperopt.tpe.suggest``: ``prior_weight``, ``n_EI_candidates``, ``gamma``.

    Notes
    -----
    What TPE sees of each trial:

    - ``ok`` with a finite loss: that loss.
    - ``fail``, ``pruned`` (its early validation ELBO is not on the loss's
      scale), or ``ok`` without a finite loss: a hyperopt ``STATUS_FAIL``
      trial, which ``tpe.suggest`` ranks below every trial with a loss. It
      does not enter the mean.
    - pending (asked, not told): the mean of the losses above while at least one
      exists; left out before that.
    """

    def __init__(
        self, space: SearchSpace, seed: int, n_startup_jobs: int = MAX_STARTUP_TRIALS, **tpe_kwargs: Any
    ) -> None:
        unknown = sorted(set(tpe_kwargs) - set(_TPE_KWARGS))
        if unknown:
            raise TypeError(f"Unknown TPE argument(s) {unknown}; valid are {list(_TPE_KWARGS)}.")
        self.space = space
        self.seed = int(seed)
        self.n_startup_jobs = int(n_startup_jobs)
        self.tpe_kwargs = dict(tpe_kwargs)
        self._domain = Domain(_no_objective, space.hyperopt_space)
        self._trials = Trials()
        self._docs: dict[int, dict] = {}  # learnable trials (params inside the space), by id
        self._used: set[int] = set()
        self._pending: dict[int, dict[str, Any]] = {}  # id -> params, in ask order
        self._told: dict[int, tuple[str, float]] = {}
        self._next_id = 0
        self._loss_sum = 0.0
        self._loss_count = 0

    # -- state ------------------------------------------------------------------

    @property
    def pending(self) -> list[int]:
        """Ids of trials asked (or added with :meth:`ask_known`) and not yet told."""
        return list(self._pending)

    @property
    def n_finished(self) -> int:
        """Number of trials told, learned by TPE or not."""
        return len(self._told)

    @property
    def trials(self) -> Trials:
        """The real hyperopt records (pending trials are in ``JOB_STATE_RUNNING``)."""
        return self._trials

    @property
    def mean_loss(self) -> float | None:
        """Mean loss of the trials that TPE learned a loss from, or ``None``."""
        return self._loss_sum / self._loss_count if self._loss_count else None

    # -- ask ----------------------------------------------------------------------

    def ask(self) -> tuple[int, dict[str, Any]]:
        """Suggest the next trial.

        Returns
        -------
        trial_id
            The next unused id (0, 1, 2, ... skipping ids reserved by
            :meth:`tell_known` or :meth:`ask_known`).
        params
            The suggested hyperparameters, plain Python values, fixed ones included.
        """
        trial_id = self._reserve(None)
        docs = tpe.suggest(
            [trial_id],
            self._domain,
            self.model_trials(),
            trial_seed(self.seed, trial_id),
            n_startup_jobs=self.n_startup_jobs,
            verbose=False,
            **self.tpe_kwargs,
        )
        vals = {name: values[0] for name, values in docs[0]["misc"]["vals"].items()}
        vals = self._native_vals(vals)
        params = self.space.decode(vals)
        self._add_pending(trial_id, vals, params)
        return trial_id, params

    def ask_known(self, params: Mapping[str, Any], trial_id: int | None = None) -> int:
        """Register a trial with given hyperparameters as pending (the default configuration).

        It is mocked like any pending trial until :meth:`tell` is called. If the
        hyperparameters are not in the space, the id is reserved but TPE never
        learns from the trial.

        Parameters
        ----------
        params
            Hyperparameters; names outside the space are ignored.
        trial_id
            The id to use; default the next unused one.

        Returns
        -------
        int
            The trial id.
        """
        trial_id = self._reserve(trial_id)
        vals = self.space.encode(params)
        if vals is None:
            logger.info(
                "Trial %d is outside the search space; it is kept but TPE does not learn from it.",
                trial_id,
            )
        self._add_pending(trial_id, vals, dict(params))
        return trial_id

    # -- tell ---------------------------------------------------------------------

    def tell(self, trial_id: int, loss: float | None, status: str) -> None:
        """Report a pending trial's outcome.

        Parameters
        ----------
        trial_id
            A pending trial.
        loss
            The loss (lower is better); ``None`` or NaN when there is none.
        status
            ``"ok"``, ``"fail"`` or ``"pruned"``. Only an ok trial with a finite
            loss is learned with its loss (``TrialRecord.tpe_loss``); a failed
            or pruned one goes to TPE's "bad" group without a number (a pruned
            trial's early validation ELBO is not on the loss's scale). An ok trial
            with a non-finite loss is learned as failed, with a warning.
        """
        trial_id = int(trial_id)
        if status not in STATUSES:
            raise ValueError(f"status must be one of {list(STATUSES)}, got {status!r}.")
        if trial_id not in self._pending:
            state = "already told" if trial_id in self._told else "not pending"
            raise ValueError(f"Trial {trial_id} is {state}.")
        loss = float("nan") if loss is None else float(loss)
        learned = status == "ok" and math.isfinite(loss)
        if status == "ok" and not learned:
            logger.warning(
                "Trial %d is ok but its loss is %r; TPE treats it as failed.", trial_id, loss
            )
        del self._pending[trial_id]
        self._told[trial_id] = (status, loss)
        doc = self._docs.get(trial_id)
        if doc is None:
            return
        doc["state"] = JOB_STATE_DONE
        if learned:
            doc["result"] = {"status": STATUS_OK, "loss": loss}
            self._loss_sum += loss
            self._loss_count += 1
        else:
            doc["result"] = {"status": STATUS_FAIL}

    def tell_known(
        self, trial_id: int, params: Mapping[str, Any], loss: float | None, status: str
    ) -> None:
        """Add a trial evaluated outside :meth:`ask` (the default configuration, resumed trials).

        Parameters
        ----------
        trial_id
            Its id; it must not be in use. Later asks skip it.
        params
            Its hyperparameters. If :meth:`SearchSpace.encode` cannot represent
            them, the id is still reserved but TPE does not learn from the trial.
        loss, status
            As in :meth:`tell`.
        """
        self.ask_known(params, trial_id=trial_id)
        self.tell(trial_id, loss, status)

    # -- what TPE sees ------------------------------------------------------------

    def model_trials(self) -> Trials:
        """The ``Trials`` passed to ``tpe.suggest``: finished trials, pending ones mocked.

        Returns
        -------
        hyperopt.Trials
            A new object: finished docs as recorded, and for each learnable
            pending trial a copy marked ``ok`` with :attr:`mean_loss` (left out
            while no loss is known).
        """
        mean = self.mean_loss
        docs = []
        for trial_id, doc in self._docs.items():
            if trial_id not in self._pending:
                docs.append(doc)
            elif mean is not None:
                mock = dict(doc, state=JOB_STATE_DONE, result={"status": STATUS_OK, "loss": mean})
                docs.append(mock)
        trials = Trials()
        trials._insert_trial_docs(docs)
        trials.refresh()
        return trials

    # -- helpers --------------------------------------------------------------------

    def _reserve(self, trial_id: int | None) -> int:
        if trial_id is None:
            while self._next_id in self._used:
                self._next_id += 1
            trial_id = self._next_id
        trial_id = int(trial_id)
        if trial_id < 0:
            raise ValueError(f"Trial ids are non-negative, got {trial_id}.")
        if trial_id in self._used:
            raise ValueError(f"Trial id {trial_id} is already in use.")
        self._used.add(trial_id)
        return trial_id

    def _native_vals(self, vals: Mapping[str, Any]) -> dict[str, int | float]:
        """Raw values as Python ints (choice indices, randint) or floats."""
        dims = self.space.dimensions
        out: dict[str, int | float] = {}
        for name, value in vals.items():
            kind = dims[name].kind
            out[name] = int(value) if kind in ("choice", "randint") else float(value)
        return out

    def _add_pending(
        self, trial_id: int, vals: Mapping[str, Any] | None, params: dict[str, Any]
    ) -> None:
        self._pending[trial_id] = params
        if vals is None:
            return
        vals = self._native_vals(vals)
        misc = {
            "tid": trial_id,
            "cmd": self._domain.cmd,
            "workdir": self._domain.workdir,
            "idxs": {name: [trial_id] for name in vals},
            "vals": {name: [value] for name, value in vals.items()},
        }
        (doc,) = self._trials.new_trial_docs([trial_id], [None], [{"status": "new"}], [misc])
        doc["state"] = JOB_STATE_RUNNING
        self._docs[trial_id] = doc
        self._trials._insert_trial_docs([doc])
        self._trials.refresh()
