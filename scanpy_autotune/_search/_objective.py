"""One trial in a worker: data -> fit -> metrics -> record.

The worker holds a :class:`._context.TrialContext` (the counts, the split and
the search's settings), received once, and turns ``(trial_id, params)`` into a
:class:`scanpy_autotune._record.TrialRecord` and, for finished trials, the
trained model as a blob for the driver to keep if it is the best.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._record import TrialRecord
from ._context import TrialContext, training_seed

if TYPE_CHECKING:  # the model (torch) is imported when a trial runs, as _search's modules do
    from .._vae import Model
    from .._vae._data import DeviceCounts

logger = logging.getLogger("scanpy_autotune")

# Called by the trial at each epoch with (epoch, train_elbo, validation_elbo); True stops it.
Reporter = Callable[[int, float, float], bool]


def _heldout_adata(context: TrialContext):
    """The held-out cells as an AnnData: counts in ``X`` (and in the search's layer), their ``obs``."""
    import pandas as pd
    from anndata import AnnData

    data, cells = context.data, context.split.heldout
    if context.heldout_obs is not None:
        obs = context.heldout_obs.copy()  # an objective that changes it changes no later trial
    else:
        obs = pd.DataFrame(index=data.obs_names[cells])
        if context.batch_key is not None:
            obs[context.batch_key] = pd.Categorical(
                np.asarray(data.batch_categories)[data.batch[cells]], categories=data.batch_categories
            )
    counts = data.X[cells]
    layers = {context.layer: counts} if context.layer is not None else None
    return AnnData(X=counts, obs=obs, var=pd.DataFrame(index=data.var_names), layers=layers)


def _heldout_nll(model: Model, context: TrialContext, counts: DeviceCounts) -> float:
    from .._vae._metrics import marginal_nll

    # drawn as Model.marginal_nll draws (SCORE_SEED): a saved model scores exactly this loss
    return float(np.mean(marginal_nll(model.module, counts, context.split.heldout, n_mc=context.n_mc)))


def _custom_loss(model: Model, context: TrialContext) -> float:
    import cloudpickle

    objective = cloudpickle.loads(context.objective)
    heldout = _heldout_adata(context)
    try:
        value = objective(model, heldout)
    except (SystemExit, KeyboardInterrupt) as stop:  # in the objective: its trial fails, the worker lives
        raise RuntimeError(f"the objective raised {type(stop).__name__}({stop})") from None
    return _one_number(value)


def _one_number(value: Any) -> float:
    """The objective's loss: one real number (a Python or numpy scalar, or a one-element array)."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):  # numpy's reals count
        shown = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:57]}..."
        raise TypeError(
            f"the objective must return one number (the loss, lower is better), got "
            f"{type(value).__name__} {shown}"
        )
    return float(value)


def _score(model: Model, context: TrialContext, counts: DeviceCounts) -> dict[str, float]:
    """The scIB scores of the trial's latent on the scored cells."""
    from .._scib import integration_scores
    from .._vae._metrics import latent_mean

    plan = context.scoring
    start = time.perf_counter()
    latent = latent_mean(model.module, counts, plan.cells)
    scores = integration_scores(latent, plan.labels, plan.batch, plan.unintegrated)
    scores["scoring_s"] = time.perf_counter() - start  # what scoring adds to the trial (journal only)
    return scores


def _loss_and_scores(model: Model, context: TrialContext, counts: DeviceCounts, record: TrialRecord) -> float:
    """The trial's loss; with integration scoring, also its held-out NLL and scores in ``record``."""
    nll = None
    if context.objective is None or context.scoring is not None:
        nll = _heldout_nll(model, context, counts)
    if context.scoring is not None:
        record.marginal_nll = nll
        record.scores = _score(model, context, counts)
    if context.maximize_total:
        total = record.scores["total"]
        if not math.isfinite(total):
            raise FloatingPointError(f"the integration Total is not finite ({total})")
        return -total
    if context.objective is not None:
        return _custom_loss(model, context)
    return nll


def evaluate_trial(
    context: TrialContext,
    trial_id: int,
    params: dict[str, Any],
    device: str = "cpu",
    reporter: Reporter | None = None,
) -> tuple[TrialRecord, dict | None]:
    """Train and score one configuration; never raises for a failing trial.

    Returns
    -------
    record, model
        The trial's record (``status`` ``ok``, ``fail`` or ``pruned``) and, unless
        it failed or was pruned, the model as :meth:`Model.to_dict` for the driver.
    """
    from .._vae import Model, resolve_hyperparameters
    from .._vae._metrics import elbo

    start = time.perf_counter()
    record = TrialRecord(int(trial_id), dict(params), device=device)
    pruned = {"at": -1}

    def callback(epoch: int, train_elbo: float, validation_elbo: float) -> bool:
        if reporter is not None and reporter(epoch, train_elbo, validation_elbo):
            pruned["at"] = epoch
            return True
        return False

    try:
        if context.scoring is not None:  # an install that does not import fails the trial before it trains
            from .._scib import require_scib_metrics

            require_scib_metrics()
        config = resolve_hyperparameters(params)
        counts = context.counts(device)
        model = Model.fit_prepared(
            context.data,
            counts,
            context.split,
            config,
            seed=training_seed(context.seed, trial_id),
            max_epochs=context.max_epochs,
            callback=callback,
            layer=context.layer,
            batch_key=context.batch_key,
        )
        result = model.train_result
        record.n_epochs, record.best_epoch = result.n_epochs, result.best_epoch
        record.n_params = model.n_params
        record.history = {"train_elbo": result.train_elbo, "validation_elbo": result.validation_elbo}
        if pruned["at"] >= 0:
            record.status, record.pruned_at = "pruned", pruned["at"]
            record.duration_s = time.perf_counter() - start
            return record, None
        if result.stopped_by == "diverged" and result.best_epoch == result.n_epochs - 1:
            # no earlier epoch to fall back to: the kept weights are the diverged ones (a latent from
            # them can still score, so an integration objective alone would not notice)
            raise FloatingPointError(
                f"training diverged (non-finite ELBO) at epoch {result.n_epochs} with no finite epoch before it"
            )
        loss = _loss_and_scores(model, context, counts, record)
        record.elbo_train = float(np.mean(elbo(model.module, counts, context.split.train)))
        record.elbo_heldout = float(np.mean(elbo(model.module, counts, context.split.heldout)))
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss is not finite ({loss})")
        record.status, record.loss = "ok", loss
        record.duration_s = time.perf_counter() - start
        return record, model.to_dict()
    except Exception as error:  # a failing trial is a result, not a crash
        record.status, record.loss, record.scores = "fail", math.nan, {}
        record.error = f"{type(error).__name__}: {error}"
        logger.debug("trial %d failed:\n%s", trial_id, traceback.format_exc())
        record.duration_s = time.perf_counter() - start
        return record, None
