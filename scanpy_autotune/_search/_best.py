"""The search's best model: recovered, kept beside the journal, scored on the test cells, refit.

These steps run in the driver once the trials are over, on the counts the
search already holds (put on the device once here), so the data is never
extracted again. This module imports the model (torch) when its functions run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._paths import check_model_dir, replace_dir
from .._record import TrialRecord
from ._context import training_seed
from ._journal import to_json_safe

if TYPE_CHECKING:
    import torch

    from .._vae import Model
    from .._vae._data import DeviceCounts
    from ._context import TrialContext

__all__ = ["BestModel", "best_model_dir", "finish_best_model", "latent_without_training"]

logger = logging.getLogger("scanpy_autotune")


@dataclass
class BestModel:
    """The best configuration's model and what it says about the cells.

    Attributes
    ----------
    model
        The trained model (refit when asked).
    latent
        Posterior mean latent of every cell (``cells x n_latent``).
    test_loss
        The held-out ``-log p(x)`` of the model the search chose on the
        untouched test cells (``None`` without test cells).
    refit_test_loss
        The same for the refit model (``None`` without a refit or test cells).
    """

    model: Model
    latent: np.ndarray
    test_loss: float | None
    refit_test_loss: float | None = None


def best_model_dir(journal: str | os.PathLike) -> Path:
    """Where the best model is kept beside a journal, so a resumed search need not retrain it."""
    return Path(f"{journal}.best_model")


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _kept_model(
    best: TrialRecord, blob: dict | None, blob_trial: int, context: TrialContext,
    journal: str | os.PathLike | None, device: str | torch.device,
) -> Model | None:
    """The best trial's trained model from this run or from beside the journal, or ``None``.

    The folder beside the journal only spares a retraining: one that cannot be
    read (a damaged file) is passed over, and replaced once the model is retrained.
    """
    from .._vae import Model

    if blob is not None and blob_trial == best.trial_id:
        return Model.from_dict(blob, device)
    if journal is not None and _kept_beside_journal(best, context, journal):
        try:
            return Model.load(best_model_dir(journal), device)
        except (OSError, ValueError) as error:
            logger.warning("the best model kept beside the journal cannot be read (%s); it is not used", error)
    return None


def _recover(
    best: TrialRecord, blob: dict | None, blob_trial: int, context: TrialContext,
    counts: DeviceCounts, journal: str | os.PathLike | None,
) -> Model:
    """The best trial's trained model: from this run, from beside the journal, or retrained."""
    from .._vae import Model, resolve_hyperparameters

    model = _kept_model(best, blob, blob_trial, context, journal, counts.device)
    if model is not None:
        return model
    logger.info("retraining the best trial %d (its weights were not kept)", best.trial_id)
    return Model.fit_prepared(
        context.data, counts, context.split, resolve_hyperparameters(best.params),
        seed=training_seed(context.seed, best.trial_id), max_epochs=context.max_epochs,
        layer=context.layer, batch_key=context.batch_key,
    )


def latent_without_training(
    best: TrialRecord, blob: dict | None, blob_trial: int, context: TrialContext,
    journal: str | os.PathLike | None,
) -> np.ndarray | None:
    """The best trial's latent of every cell when its model is at hand, else ``None`` (nothing is trained).

    For a search cut short: the model is this run's (``blob``) or the one
    kept beside the journal; nothing is scored, saved or refit.
    """
    from .._vae._metrics import latent_mean

    model = _kept_model(best, blob, blob_trial, context, journal, _device())
    if model is None:
        return None
    counts = context.counts(model.device)
    return latent_mean(model.module, counts, np.arange(context.data.n_obs))


def _kept_beside_journal(best: TrialRecord, context: TrialContext, journal: str | os.PathLike) -> bool:
    """Whether the folder beside ``journal`` holds the best trial's model (and not another search's)."""
    folder = best_model_dir(journal)
    try:
        kept = json.loads((folder / "trial.json").read_text())
    except (OSError, ValueError):
        return False
    if kept != _kept_identity(best, context):
        logger.info("%s holds another search's model; it is not used", folder)
        return False
    return True


def _kept_identity(best: TrialRecord, context: TrialContext) -> dict:
    """What ``trial.json`` records of the model kept beside a journal: its trial, data, split and settings.

    A folder left by an earlier search on the same journal path (other data,
    another seed) then never passes for this search's best model.
    """
    split = context.split
    digest = hashlib.sha1()
    for part in (split.train, split.validation, split.heldout, split.test):
        digest.update(np.asarray(part, dtype=np.int64).tobytes() + b"|")
    return {
        "trial_id": int(best.trial_id),
        "params": to_json_safe(best.params),
        "data": context.data.fingerprint(),
        "split": digest.hexdigest()[:16],
        "seed": int(context.seed),
        "max_epochs": int(context.max_epochs),
        "layer": context.layer,
        "batch_key": context.batch_key,
    }


def _keep_beside_journal(model: Model, best: TrialRecord, context: TrialContext, journal: str | os.PathLike) -> None:
    """Save the best model beside the journal; a folder that cannot be written costs a retraining later, no more."""
    folder = best_model_dir(journal)
    identity = _kept_identity(best, context)

    def write(temporary: Path) -> None:
        model.save(temporary / "model")
        for name in ("config.json", "weights.pt"):
            os.replace(temporary / "model" / name, temporary / name)
        (temporary / "model").rmdir()
        (temporary / "trial.json").write_text(json.dumps(identity))

    try:
        check_model_dir(folder, "the best model's folder")
        replace_dir(folder, write)
    except (OSError, ValueError) as error:
        logger.warning(
            "could not keep the best model beside the journal (%s); the results are complete, and "
            "a resumed search retrains it", error,
        )


def _refit(model: Model, best: TrialRecord, context: TrialContext, counts: DeviceCounts) -> Model:
    """The best configuration retrained for its best epoch count on every cell but the test cells."""
    from .._vae import Model
    from .._vae._data import Split

    split = context.split
    everything = Split(
        train=np.sort(np.concatenate([split.train, split.validation, split.heldout])),
        validation=np.zeros(0, dtype=np.int64),
        heldout=np.zeros(0, dtype=np.int64),
        test=split.test,
    )
    config = dict(model.hyperparameters, early_stopping=False)
    return Model.fit_prepared(
        context.data, counts, everything, config, seed=context.seed,
        max_epochs=max(1, best.best_epoch + 1), layer=context.layer, batch_key=context.batch_key,
    )


def finish_best_model(
    best: TrialRecord,
    blob: dict | None,
    blob_trial: int,
    context: TrialContext,
    *,
    journal: str | os.PathLike | None = None,
    refit: bool = False,
) -> BestModel:
    """Recover the best trial's model, keep it beside the journal, score the test cells, refit.

    Parameters
    ----------
    best
        The best trial.
    blob, blob_trial
        The best model of this run as ``Model.to_dict()`` and its trial id
        (``None`` / ``-1`` when the best trial came from the journal).
    context
        The search's counts, split and settings.
    journal
        The search's journal; the best model is kept beside it.
    refit
        Retrain the configuration on every cell but the test cells, for its
        best epoch count, and return that model; both models are scored on
        the test cells.

    Returns
    -------
    BestModel
    """
    from .._vae._metrics import latent_mean, marginal_nll

    counts = context.counts(_device())
    model = _recover(best, blob, blob_trial, context, counts, journal)
    def test_loss_of(scored: Model) -> float | None:
        if not len(context.split.test):
            return None
        return float(np.mean(marginal_nll(scored.module, counts, context.split.test, n_mc=context.n_mc)))

    test_loss = test_loss_of(model)
    if journal is not None:
        _keep_beside_journal(model, best, context, journal)
    refit_test_loss = None
    if refit:
        model = _refit(model, best, context, counts)
        refit_test_loss = test_loss_of(model)
    latent = latent_mean(model.module, counts, np.arange(context.data.n_obs))
    return BestModel(model=model, latent=latent, test_loss=test_loss, refit_test_loss=refit_test_loss)

