"""``sat.tl.autotune``: the search of an AnnData's hyperparameters."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from .. import __version__
from .._results import build_results, write_results
from .._search._backends import LocalPool, cpu_devices, gpu_devices
from .._search._context import TrialContext
from .._search._journal import Journal
from .._search._pruner import make_pruner
from .._search._runner import run_search
from .._search._space import build_space
from .._search._space import default_space as _default_space
from .._search._tpe import AskTellTPE
from .._vae import HYPERPARAMETERS, Model, default_hyperparameters
from .._vae._data import DeviceCounts, Split, extract_counts, make_split

__all__ = ["autotune", "default_space", "default_max_epochs"]

logger = logging.getLogger("scanpy_autotune")

VALIDATION_SIZE = 0.1
_BACKENDS = ("local", "dask")


def default_space() -> dict[str, Any]:
    """The 2019 scVI autotune space as hyperopt expressions.

    ``n_latent`` 5..15 and ``n_layers`` 1..5 (ordinal integers), ``n_hidden``
    {64, 128, 256}, ``dropout_rate`` {0.1, 0.3, 0.5, 0.7, 0.9},
    ``reconstruction_loss`` {zinb, nb}, ``lr`` {1e-2, 5e-3, 1e-3, 5e-4, 1e-4}.
    Edit the returned dict to make your own space.
    """
    return _default_space()


def default_max_epochs(n_cells: int) -> int:
    """The epoch cap used when ``max_epochs=None``: ``min(400, round(400 * 20000 / n_cells))``.

    About 8 million cell-passes per trial (scvi-tools' rule), so small data
    trains up to 400 epochs and a million cells a handful.
    """
    return int(max(1, min(400, round(400 * 20000 / max(n_cells, 1)))))


def _check_int(name: str, value: Any, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}.")


def _devices(n_workers, gpus, trials_per_gpu) -> tuple[list[str], int]:
    """Slots and threads per CPU worker."""
    _check_int("trials_per_gpu", trials_per_gpu, 1)
    _check_int("n_workers", n_workers, 1, allow_none=True)
    cores = os.cpu_count() or 1
    if gpus not in (None, False, 0, "none"):
        devices = gpu_devices(gpus, trials_per_gpu)
        if devices:
            if n_workers is not None:
                devices = devices[:n_workers]
            return devices, max(1, cores // len(devices))
    n = n_workers if n_workers is not None else cores
    return cpu_devices(n), max(1, cores // n)


def _settings(space, data, split, max_epochs, n_mc, seed, objective, pruner, test_size, train_size):
    """What must match for a journal to be resumed."""
    return {
        "space": space.to_text(),
        "seed": int(seed),
        "train_size": float(train_size),
        "test_size": float(test_size),
        "validation_size": VALIDATION_SIZE,
        "max_epochs": int(max_epochs),
        "n_mc": int(n_mc),
        "objective": "marginal_nll" if objective is None else getattr(objective, "__qualname__", "custom"),
        "pruner": pruner.describe() if pruner is not None else "none",
        "data": data.fingerprint(),
        "n_cells": int(data.n_obs),
        "n_genes": int(data.n_vars),
    }


def autotune(
    adata: AnnData,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    space: Mapping[str, Any] | None = None,
    max_evals: int = 100,
    max_epochs: int | None = None,
    train_size: float = 0.75,
    test_size: float = 0.0,
    include_default: bool = True,
    objective: Callable[[Model, AnnData], float] | None = None,
    n_workers: int | None = None,
    gpus: str | int | list[int] | None = "all",
    trials_per_gpu: int = 1,
    seed: int = 0,
    journal: str | os.PathLike | None = None,
    timeout: float | None = None,
    refit: bool = False,
    save_dir: str | os.PathLike | None = None,
    key_added: str = "autotune",
    copy: bool = False,
    progress: bool = True,
    n_mc: int = 100,
    pruner: str | None = None,
    pruner_kwargs: Mapping[str, Any] | None = None,
    backend: str = "local",
    client: Any = None,
    scheduler: str | None = None,
    data_path: str | os.PathLike | None = None,
) -> AnnData | None:
    """Search hyperparameters of the scVI model with asynchronous TPE.

    Every trial trains one configuration on the same training cells and is
    scored by the held-out negative marginal log-likelihood per cell
    (importance sampling, lower is better). Trials run in parallel on every
    GPU (``trials_per_gpu`` each) or on CPU worker processes; TPE is asked for
    a new configuration whenever a slot frees up, with the running trials
    mocked as finished at the mean loss.

    Parameters
    ----------
    adata
        Cells x genes with raw counts. A backed AnnData (``read_h5ad(path,
        backed="r")``) has its counts read from the file once; results go to
        the object in memory, as with any scanpy tool (``adata.write()`` keeps them).
    layer
        Layer with the counts (``None``: ``adata.X``).
    batch_key
        Column of ``adata.obs`` with a batch covariate.
    space
        ``None`` for :func:`default_space`; a dict of hyperopt ``hp.*``
        expressions, or the shorthand ``{"n_hidden": [64, 128], "lr": ("log", 1e-4, 1e-2),
        "n_layers": ("int", 1, 3), "dispersion": "gene"}`` (a bare value is fixed).
    max_evals
        Number of trials in total (those resumed from ``journal`` included).
    max_epochs
        Epoch cap per trial; ``None``: :func:`default_max_epochs`. Trials stop early
        when their validation ELBO stalls.
    train_size, test_size
        Fractions of cells for training (10% of which are the validation slice
        for early stopping and pruning) and for an untouched test split; the rest
        is held out for the loss.
    include_default
        Run the scVI default configuration first (trial 0), so the result shows the gain.
    objective
        ``objective(model, adata_heldout) -> float`` to minimise instead of the
        held-out marginal NLL (serialized with cloudpickle for the workers).
    n_workers
        Parallel trials; default one per GPU slot, or one per CPU core.
    gpus
        ``"all"`` visible GPUs, a number, a list of indices, or ``None`` for CPU only.
    trials_per_gpu
        Trials sharing each GPU.
    seed
        Seed of the split, of TPE and of each trial's training.
    journal
        JSON-lines file; every finished trial is appended before it counts, and
        calling again with the same journal resumes.
    timeout
        Seconds after which no new trial starts and running ones are abandoned.
    refit
        Refit the best configuration on all cells but the test cells, for its best
        epoch count, and use that model for ``obsm`` and ``save_dir``.
    save_dir
        Save the best model there (``sat.Model.load``).
    key_added
        Key in ``adata.uns``; also ``obsm[f"X_{key_added}"]`` and ``obs[f"{key_added}_split"]``.
    copy
        Return a modified copy instead of writing into ``adata`` (in memory,
        also for a backed ``adata``).
    progress
        Show a progress bar (a widget in Jupyter).
    n_mc
        Importance samples per cell for the loss.
    pruner, pruner_kwargs
        ``"asha"``, ``"median"`` or ``None`` (default): stop unpromising trials
        early. ASHA suits long searches (100 trials of 400 epochs: 3-4x faster,
        best loss within 0.2%); in a short one an early rung can stop the
        eventual winner, hence off by default.
    backend, client, scheduler, data_path
        ``"local"`` (this machine) or ``"dask"`` (a ``distributed.Client`` or a
        scheduler address; ``data_path`` for data the workers read themselves).

    Returns
    -------
    ``None``, or the modified copy with ``copy=True``. Writes
    ``adata.uns[key_added]`` (trials, histories, best, default, settings),
    ``adata.obsm[f"X_{key_added}"]`` (latent of the best model) and
    ``adata.obs[f"{key_added}_split"]``.

    Raises
    ------
    ValueError
        For bad input or arguments, before any training.
    KeyboardInterrupt
        After Ctrl-C, once the finished trials are written into ``adata``.
    TimeoutError
        When ``timeout`` passed before any trial finished (``adata`` unchanged).
    """
    # -- validate everything before any work ---------------------------------
    data = extract_counts(adata, layer=layer, batch_key=batch_key)
    search_space = build_space(space, HYPERPARAMETERS)
    _check_int("max_evals", max_evals, 1)
    _check_int("max_epochs", max_epochs, 1, allow_none=True)
    _check_int("seed", seed, 0)
    _check_int("n_mc", n_mc, 1)
    if objective is not None and not callable(objective):
        raise ValueError("objective must be a callable objective(model, adata_heldout) -> float.")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added={key_added!r} must be a non-empty string.")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout={timeout!r} must be a positive number of seconds.")
    if backend not in _BACKENDS:
        raise ValueError(f"backend={backend!r}: use one of {list(_BACKENDS)}.")
    split = make_split(
        data.n_obs, train_size=train_size, test_size=test_size,
        validation_size=VALIDATION_SIZE, seed=seed,
    )
    max_epochs = default_max_epochs(data.n_obs) if max_epochs is None else int(max_epochs)
    search_pruner = make_pruner(pruner, max_epochs, **dict(pruner_kwargs or {}))
    if backend == "local":
        devices, threads = _devices(n_workers, gpus, trials_per_gpu)
        pool = LocalPool(devices, threads)
    else:
        from .._search._dask import DaskBackend

        pool = DaskBackend.create(
            client=client, scheduler=scheduler, data_path=data_path, n_workers=n_workers,
        )
    settings = _settings(
        search_space, data, split, max_epochs, n_mc, seed, objective, search_pruner, test_size, train_size
    )
    journal_obj, resumed = (None, [])
    if journal is not None:
        journal_obj, resumed = Journal.open(
            journal, settings, nan_keys=("loss", "elbo_train", "elbo_heldout")
        )
        if resumed:
            logger.info("resuming from %s: %d trial(s) already finished", journal, len(resumed))
    if copy:
        # A backed AnnData copies only to a file; the copy of one is read into memory.
        adata = adata.to_memory() if adata.isbacked else adata.copy()

    # -- search ---------------------------------------------------------------
    objective_blob = None
    if objective is not None:
        import cloudpickle

        objective_blob = cloudpickle.dumps(objective)
    context = TrialContext(
        data=data, split=split, max_epochs=max_epochs, n_mc=n_mc, seed=seed,
        objective=objective_blob, layer=layer, batch_key=batch_key,
    )
    defaults = default_hyperparameters()
    default_params = None
    if include_default:
        default_params = {name: defaults[name] for name in search_space.names}
        default_params.update(search_space.fixed)
    tuner = AskTellTPE(search_space, seed=seed)
    logger.info(
        "autotune: %d trials on %d cells x %d genes, %d slot(s) (%s), max %d epochs",
        max_evals, data.n_obs, data.n_vars, pool.n_slots, pool.name, max_epochs,
    )
    outcome = run_search(
        pool, tuner, context, max_evals=max_evals, resumed=resumed, journal=journal_obj,
        default_params=default_params, pruner=search_pruner, timeout=timeout, progress=progress,
    )

    # -- results ---------------------------------------------------------------
    if not outcome.records:  # nothing finished: adata stays as it was
        if outcome.interrupted is not None:
            raise outcome.interrupted
        raise TimeoutError(
            f"timeout={timeout} s passed before any trial finished, so there is nothing to store and adata is "
            "unchanged; allow more time or a smaller max_epochs."
        )
    params = dict(settings)
    params.update(
        max_evals=int(max_evals), backend=pool.name, n_workers=int(pool.n_slots),
        version=__version__, include_default=bool(include_default),
        journal=str(journal) if journal is not None else "",
    )
    params.pop("data", None)
    uns = build_results(
        list(outcome.records.values()), settings=params, searched=search_space.searched_kinds()
    )
    adata.obs[f"{key_added}_split"] = split.labels(data.n_obs)
    best_record = outcome.best_record()
    if best_record is not None and outcome.interrupted is None:
        model = _best_model(outcome, best_record, context, journal)
        if test_size > 0:  # scored once, by the model the search chose, before any refit
            uns["best"]["test_loss"] = float(model.marginal_nll(adata, n_mc=n_mc, cells="test"))
        if journal is not None:
            _keep_best(model, best_record["trial_id"], journal)
        if refit:
            model = _refit(model, data, split, best_record, seed)
        adata.obsm[f"X_{key_added}"] = model.latent(adata)
        if save_dir is not None:
            model.save(save_dir, overwrite=True)
    write_results(adata, key_added, uns)
    _log_summary(uns)
    if outcome.interrupted is not None:
        raise outcome.interrupted
    return adata if copy else None


def _best_weights_dir(journal: str | os.PathLike) -> Path:
    return Path(f"{journal}.best_model")


def _keep_best(model: Model, trial_id: int, journal) -> None:
    """Keep the best model beside the journal so a resumed search need not retrain it."""
    folder = _best_weights_dir(journal)
    model.save(folder, overwrite=True)
    (folder / "trial.json").write_text(json.dumps({"trial_id": int(trial_id)}))


def _best_model(outcome, best_record: dict, context: TrialContext, journal) -> Model:
    """The best trial's trained model: from this run, from beside the journal, or retrained."""
    if outcome.best_model is not None and outcome.best_model_trial == best_record["trial_id"]:
        return Model.from_dict(outcome.best_model)
    if journal is not None:
        folder = _best_weights_dir(journal)
        try:
            kept = json.loads((folder / "trial.json").read_text())["trial_id"]
            if kept == best_record["trial_id"]:
                return Model.load(folder)
        except (OSError, ValueError, KeyError):
            pass
    logger.info("retraining the best trial %d (its weights were not kept)", best_record["trial_id"])
    from .._vae import resolve_hyperparameters

    counts = DeviceCounts(context.data, "cuda" if _cuda() else "cpu")
    return Model.fit_prepared(
        context.data, counts, context.split, resolve_hyperparameters(best_record["params"]),
        seed=context.seed + int(best_record["trial_id"]), max_epochs=context.max_epochs,
        layer=context.layer, batch_key=context.batch_key,
    )


def _refit(model: Model, data, split: Split, best_record: dict, seed: int) -> Model:
    """The best configuration retrained for its best epoch count on every cell but the test cells."""
    config = dict(model.hyperparameters, early_stopping=False)
    everything = Split(
        train=np.sort(np.concatenate([split.train, split.validation, split.heldout])),
        validation=np.zeros(0, dtype=np.int64),
        heldout=np.zeros(0, dtype=np.int64),
        test=split.test,
    )
    counts = DeviceCounts(data, model.device)
    return Model.fit_prepared(
        data, counts, everything, config, seed=seed, max_epochs=max(1, best_record["best_epoch"] + 1),
        layer=model.layer, batch_key=model.batch_key,
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _log_summary(uns: dict) -> None:
    best, default = uns["best"], uns.get("default")
    if best["trial_id"] < 0:
        logger.warning("no trial succeeded; see adata.uns[key]['trials']['error']")
        return
    message = f"best trial {best['trial_id']}: loss {best['loss']:.3f}"
    if default is not None and math.isfinite(default["loss"]):
        gain = 100 * (best["loss"] - default["loss"]) / abs(default["loss"])
        message += f" (default {default['loss']:.3f}, {gain:+.2f}%)"
    logger.info(message)
