""":func:`search`: the one front door of the search.

Given counts already checked and a split already made, it checks its own
arguments, sizes the slots, opens (and locks) the journal, runs the trials,
and recovers, keeps, scores and refits the best model, on the counts in hand.
It writes nothing into an AnnData: :func:`scanpy_autotune.tl.autotune` does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from .._errors import BestModelFailed
from .._record import TrialRecord, best_of
from .._signals import interrupts_held
from .._stop_reason import then_interrupted
from .._validation import MAX_BUDGET, MAX_SEED, check_choice, check_int, check_number
from ._backends import Backend
from ._context import TrialContext
from ._convergence import make_convergence_stop
from ._gpu_sizing import trial_device_bytes
from ._journal import Journal
from ._pruner import Pruner, is_auto, make_pruner
from ._resume import (
    VALIDATION_SIZE,
    check_resumed,
    mark_default_of_old_journal,
    pruner_of_resumed_journal,
    resume_settings,
)
from ._runner import RunResult, run_trials
from ._scoring import SCORE_CELLS, scoring_settings, warn_of_metrics_never_computed
from ._slots import make_backend
from ._space import SearchSpace, build_space
from ._startup import startup_configs
from ._tpe import AskTellTPE, startup_trials

if TYPE_CHECKING:
    import pandas as pd

    from .._vae import Model
    from .._vae._data import CountData, Split

__all__ = ["VALIDATION_SIZE", "SearchOutcome", "search"]

logger = logging.getLogger("scanpy_autotune")



@dataclass
class SearchOutcome:
    """What a search produced.

    Attributes
    ----------
    records
        Every finished trial (resumed ones included), in trial-id order.
    settings
        The search's settings, as ``adata.uns[key]["params"]`` records them
        (``settings["stop_reason"]``: why the search ended).
    searched
        Searched hyperparameter -> axis kind (``"categorical"``, ``"numeric"``, ``"log"``).
    best
        The best successful trial, or ``None``.
    model, latent, test_loss, refit_test_loss
        The best configuration's model (refit when asked), the posterior mean
        latent of every cell, the held-out ``-log p(x)`` on the test cells of
        the chosen trial's model and of the refit one; ``None`` when no trial
        succeeded, there are no test cells or (the last) no refit. A search
        cut short has only the latent, and only when the best trial's model
        was at hand (trained in this run or kept beside the journal) and no
        refit was asked for.
    interrupted
        What stopped the search or its end (a ``KeyboardInterrupt``, a
        ``JournalWriteError``, a ``BackendFailed``, a ``BestModelFailed``),
        to re-raise once the results are written.
    """

    records: list[TrialRecord]
    settings: dict[str, Any]
    searched: dict[str, str]
    best: TrialRecord | None = None
    model: Model | None = None
    latent: np.ndarray | None = None
    test_loss: float | None = None
    refit_test_loss: float | None = None
    interrupted: BaseException | None = None


def _make_search_pruner(
    pruner: str | None,
    objective: Callable | str | None,
    max_epochs: int,
    max_evals: int,
    kwargs: dict[str, Any],
) -> Pruner | None:
    """The search's pruner; ``"auto"`` prunes only searches that minimise the held-out ``-log p(x)``.

    The rungs compare validation ELBOs, which rank configurations the way the
    held-out likelihood does, not the way an integration score or a custom
    objective does: in the integration tutorial the default pruner stopped
    the trial with the best Total at its first rung. Such searches are
    pruned only when asked (``pruner="asha"`` or ``"median"``).
    """
    # checks the name and the settings
    built = make_pruner(pruner, max_epochs, max_evals, tpe_startup=startup_trials(max_evals), **kwargs)
    if built is None or objective is None or not is_auto(pruner):
        return built
    what = "integration" if objective == "integration" else "a custom objective"
    logger.info(
        "pruner 'auto': no pruning, since the rungs compare validation ELBOs and this search "
        "optimises %s; pass pruner='asha' to prune anyway", what,
    )
    return None


def _trial_device_bytes(data: CountData, space: SearchSpace) -> int:
    """What one trial of ``space`` holds on its GPU at most (its largest network and minibatch)."""
    from .._vae import default_hyperparameters

    defaults = default_hyperparameters()

    def largest(name: str) -> int:
        if name in space.fixed:
            return int(space.fixed[name])
        if name in space.names:
            return int(space.dimensions[name].largest())
        return int(defaults[name])

    return trial_device_bytes(
        data.n_obs, data.n_vars, data.X.nnz,
        n_hidden=largest("n_hidden"), n_layers=largest("n_layers"), batch_size=largest("batch_size"),
    )


def _startup_setting(startup: Any, chosen: list) -> str:
    """How ``uns[key]["params"]`` records the start-up configurations."""
    if startup is None:
        return "none"
    if isinstance(startup, str):
        return f"{startup} ({len(chosen)} in the space)"
    return f"{len(chosen)} given"


def _default_in_space(space: SearchSpace, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The scVI default configuration as a trial of ``space``.

    The space's fixed values replace the defaults, as does the one value of a
    one-value choice. A default outside a searched range or choice still runs,
    as the reference of the gain, and a warning says so: it may win the
    search, and its latent then ends in ``obsm``.
    """
    params = {name: defaults[name] for name in space.names}
    outside = []
    for name, dimension in space.dimensions.items():
        if dimension.kind == "choice" and len(dimension.options) == 1:
            params[name] = dimension.options[0]
        elif dimension.encode(params[name]) is None:
            outside.append(f"{name}={params[name]!r}")
    params.update(space.fixed)
    if outside:
        logger.warning(
            "the scVI default configuration lies outside the search space (%s); it runs as the "
            "reference of the gain and may be the best trial (include_default=False searches "
            "only the space).",
            ", ".join(outside),
        )
    return params


def search(
    data: CountData,
    split: Split,
    *,
    space: Mapping[str, Any] | None = None,
    max_evals: int = 100,
    max_epochs: int = 400,
    n_mc: int = 100,
    seed: int = 0,
    objective: Callable | str | None = None,
    include_default: bool = True,
    pruner: str | None = "auto",
    pruner_kwargs: Mapping[str, Any] | None = None,
    journal: str | os.PathLike | None = None,
    timeout: float | None = None,
    progress: bool = True,
    refit: bool = False,
    train_size: float = 0.75,
    test_size: float = 0.0,
    layer: str | None = None,
    batch_key: str | None = None,
    backend: str | Backend = "local",
    n_workers: int | None = None,
    gpus: Any = "all",
    trials_per_gpu: int | str = "auto",
    client: Any = None,
    scheduler: str | None = None,
    data_path: str | os.PathLike | None = None,
    labels: np.ndarray | None = None,
    labels_key: str | None = None,
    score_cells: str = "heldout",
    patience: int | str | None = "auto",
    startup: str | Sequence[Mapping[str, Any]] | None = None,
    obs: pd.DataFrame | None = None,
) -> SearchOutcome:
    """Search hyperparameters on counts already checked, with a split already made.

    Parameters are those of :func:`scanpy_autotune.tl.autotune` (which
    documents them), less the AnnData: ``data`` and ``split`` come from
    :func:`scanpy_autotune._vae._data.extract_counts` and ``make_split``
    (``train_size`` and ``test_size`` are recorded, not used). ``backend`` may
    also be an object implementing :class:`._backends.Backend`. ``labels`` (one
    per cell, from ``adata.obs[labels_key]``) turns on integration scoring.
    ``obs`` (``adata.obs``, one row per cell of ``data``) gives a callable
    objective's ``adata_heldout`` the held-out cells' annotations.

    Returns
    -------
    SearchOutcome

    Raises
    ------
    ValueError
        For a bad argument, before any trial runs.
    JournalLockedError
        When another search uses ``journal``.
    KeyboardInterrupt
        After Ctrl-C, when no trial had finished yet.
    TimeoutError
        When ``timeout`` passed before any trial finished.
    """
    from .._vae import HYPERPARAMETERS, default_hyperparameters

    max_evals = check_int("max_evals", max_evals, low=1, high=MAX_BUDGET)
    max_epochs = check_int("max_epochs", max_epochs, low=1, high=MAX_BUDGET)
    n_mc = check_int("n_mc", n_mc, low=1)
    seed = check_int("seed", seed, low=0, high=MAX_SEED)
    timeout = check_number("timeout", timeout, low=0.0, low_open=True, allow_none=True)
    check_choice("score_cells", score_cells, SCORE_CELLS)  # also without labels_key: a typo is a typo
    if score_cells != "heldout" and labels is None:
        raise ValueError(
            f"score_cells={score_cells!r} chooses the cells whose latent is scored with labels_key=; "
            "pass labels_key= (the cell types) too."
        )
    pruner = _checked_pruner(pruner, pruner_kwargs)
    objective = _checked_objective(objective, labelled=labels is not None, batch_key=batch_key)
    search_space = build_space(space, HYPERPARAMETERS)
    _check_space_for_objective(search_space, objective)
    startup_list = startup_configs(startup, search_space, default_hyperparameters())
    objective_blob = _pickled_objective(objective)
    scoring = None
    if labels is not None:
        from ._scoring import make_scoring_plan

        scoring = make_scoring_plan(
            data, split, labels, labels_key=labels_key, batch_key=batch_key, score_cells=score_cells
        )
    # The backend's arguments are checked before the pruner is chosen, which is logged.
    pool = make_backend(
        backend, n_workers=n_workers, gpus=gpus, trials_per_gpu=trials_per_gpu,
        client=client, scheduler=scheduler, data_path=data_path, passive_threads=scoring is not None,
        bytes_per_trial=_trial_device_bytes(data, search_space), max_trials=max_evals,
    )
    journal_obj, resumed = None, []
    try:
        search_pruner = _make_search_pruner(pruner, objective, max_epochs, max_evals, dict(pruner_kwargs or {}))
        search_pruner = pruner_of_resumed_journal(journal, pruner, search_pruner, max_epochs)
        stopper = make_convergence_stop(patience, max_evals, max_epochs)
        tpe_startup = startup_trials(max_evals)
        settings = resume_settings(
            search_space, data, max_epochs=max_epochs, n_mc=n_mc, seed=seed,
            objective=objective, pruner=search_pruner, train_size=train_size, test_size=test_size,
        )
        settings.update(scoring_settings(scoring, labels_key, score_cells))
        default_params = _default_in_space(search_space, default_hyperparameters()) if include_default else None
        if journal is not None:
            journal_obj, resumed = Journal.open(
                journal, settings, decode=TrialRecord.from_json, lock=True
            )
        mark_default_of_old_journal(resumed, default_params)
        check_resumed(resumed, search_space, journal)
        context = TrialContext(
            data=data, split=split, max_epochs=max_epochs, n_mc=n_mc, seed=seed,
            objective=objective_blob, layer=layer, batch_key=batch_key,
            heldout_obs=obs.iloc[split.heldout].copy() if callable(objective) and obs is not None else None,
            scoring=scoring, maximize_total=objective == "integration",
        )
    except BaseException:
        _close_journal(journal_obj)
        try:
            pool.shutdown()  # a Dask client the backend opened is closed again
        except Exception:  # the error that brought us here is the one to show
            logger.debug("the backend did not shut down cleanly", exc_info=True)
        raise
    try:
        logger.info(
            "autotune: %d trials%s on %d cells x %d genes, %d slot(s) (%s), max %d epochs",
            max_evals, f" ({len(resumed)} of them from the journal)" if resumed else "",
            data.n_obs, data.n_vars, pool.n_slots, pool.name, max_epochs,
        )
        run = run_trials(
            pool, AskTellTPE(search_space, seed=seed, n_startup_jobs=tpe_startup), context, max_evals=max_evals,
            resumed=resumed, journal=journal_obj, default_params=default_params, startup=startup_list,
            pruner=search_pruner, timeout=timeout, progress=progress, stopper=stopper,
        )
        if run.records:
            params = dict(settings)  # "data", the fingerprint, lets sat.tl.retrain check it has the same data
            params.update(
                layer=layer, batch_key=batch_key,
                max_evals=max_evals, backend=pool.name, n_workers=int(pool.n_slots),
                trials_per_gpu=getattr(pool, "trials_per_gpu", None) or 0,
                convergence=stopper.describe() if stopper is not None else "none", stop_reason=run.stop_reason,
                converged_after=run.converged_after, n_resumed=len(resumed),
                version=__version__, tpe_startup_trials=tpe_startup,
                # a resumed journal may hold the default although this call left it out
                include_default=bool(include_default) or any(r.is_default for r in run.records.values()),
                startup=_startup_setting(startup, startup_list),
                journal=os.fspath(journal) if journal is not None else "",
            )
            records = [run.records[t] for t in sorted(run.records)]
            if scoring is not None:
                warn_of_metrics_never_computed(records, scoring)
            outcome = SearchOutcome(
                records=records, settings=params, searched=search_space.searched_kinds(),
                best=best_of(records), interrupted=run.interrupted,
            )
            # With the journal still locked: no other search replaces the model kept beside it meanwhile.
            if outcome.best is not None and run.interrupted is None:
                _add_best_model(outcome, run, context, journal=journal, refit=refit)
            elif outcome.best is not None and not refit:  # refit: the latent would be of a model still to train
                _add_latent_of_cut_short(outcome, run, context, journal)
    finally:
        late_close = _close_journal(journal_obj)
    if not run.records:  # nothing finished: nothing to return
        if run.interrupted is not None or late_close is not None:
            raise run.interrupted or late_close
        raise TimeoutError(
            f"timeout={timeout:g} s passed before any trial finished, so there is nothing to store and adata is "
            "unchanged; allow more time or a smaller max_epochs."
        )
    if late_close is not None and outcome.interrupted is None:
        outcome.interrupted = late_close
        outcome.settings["stop_reason"] = then_interrupted(
            outcome.settings["stop_reason"], late_close, "while the journal was closed"
        )
    return outcome


def _add_latent_of_cut_short(outcome: SearchOutcome, run: RunResult, context: TrialContext, journal: Any) -> None:
    """Give a search cut short its best trial's latent, when that model is at hand (nothing is trained).

    Only the latent: no test loss, no model beside the journal or in
    ``save_dir``, so what was asked to stop stops soon. A failure here (a
    damaged kept model, a device error) costs the latent only; the trials are
    written and the interrupt re-raised as without it.
    """
    from ._best import latent_without_training

    try:
        latent = latent_without_training(outcome.best, run.best_model, run.best_model_trial, context, journal)
    except KeyboardInterrupt:  # asked again to stop: it stops, as the first time asked
        logger.warning("interrupted again: the finished trials are kept without the best trial's latent")
        return
    except Exception as error:
        logger.warning(
            "could not compute the best trial's latent (%s: %s); the finished trials are kept without it",
            type(error).__name__, error,
        )
        return
    if latent is not None:
        logger.warning("storing the latent of the best trial so far (trial %d)", outcome.best.trial_id)
        outcome.latent = latent


def _checked_pruner(pruner: str | None, pruner_kwargs: Any) -> str | None:
    """``pruner`` with ``"none"`` (as ``uns[key]["params"]`` records it) read as ``None``."""
    if pruner_kwargs is not None and not isinstance(pruner_kwargs, Mapping):
        raise ValueError(
            f"pruner_kwargs={pruner_kwargs!r} must be a dict of the pruner's settings, e.g. "
            "{'min_epochs': 10} for pruner='asha'."
        )
    if isinstance(pruner, str) and pruner.lower() == "none":
        return None
    return pruner


def _checked_objective(objective: Any, *, labelled: bool, batch_key: str | None) -> Callable | str | None:
    """``objective`` with ``"marginal_nll"`` (as ``uns[key]["params"]`` records it) and ``"nll"`` (the
    command line's name) read as ``None``."""
    if isinstance(objective, str) and objective in ("marginal_nll", "nll"):
        return None
    if objective is not None and not callable(objective) and objective != "integration":
        raise ValueError(
            f"objective={objective!r}: use None (or 'marginal_nll': the held-out -log p(x)), 'integration' (the scIB "
            "Total, with labels_key and batch_key), or a callable objective(model, adata_heldout) -> float."
        )
    if objective == "integration" and (not labelled or batch_key is None):
        raise ValueError(
            "objective='integration' maximises the scIB Total of batch correction and bio "
            "conservation: pass labels_key= (cell types) and batch_key= (the batches to integrate)."
        )
    return objective


def _check_space_for_objective(space: SearchSpace, objective: Callable | str | None) -> None:
    """Refuse to search what makes the default objective's losses incomparable."""
    if objective is None and "use_observed_lib_size" in space.names:
        raise ValueError(
            "use_observed_lib_size cannot be searched with the default objective: with the observed "
            "library size the held-out loss is -log p(x | library), which leaves out the likelihood "
            "of the library itself (about 2% of the loss), so the two settings' losses are not "
            "comparable. Fix it in the space (e.g. 'use_observed_lib_size': True), or search it "
            "with objective='integration' or your own objective."
        )


def _pickled_objective(objective: Any) -> bytes | None:
    """A callable objective as the workers receive it (cloudpickle); ``None`` for a named one."""
    if not callable(objective):
        return None
    import cloudpickle

    try:
        return cloudpickle.dumps(objective)
    except Exception as err:  # what cannot be pickled raises TypeError, PicklingError, AttributeError...
        raise ValueError(
            f"objective={objective!r} cannot be sent to the worker processes that run the trials "
            f"({type(err).__name__}: {err}); define it so that it pickles (no open locks, files or "
            "connections among the names it uses)."
        ) from err


def _close_journal(journal: Journal | None) -> KeyboardInterrupt | None:
    """Close the journal whole, holding a Ctrl-C until it is closed; return that Ctrl-C."""
    if journal is None:
        return None
    try:
        with interrupts_held():
            journal.close()
    except KeyboardInterrupt as interrupt:
        return interrupt
    return None


def _add_best_model(
    outcome: SearchOutcome, run: RunResult, context: TrialContext, *, journal: Any, refit: bool
) -> None:
    """Put the best configuration's model, latent and test loss into ``outcome``.

    A Ctrl-C, or an error (a GPU out of memory), while the best model is
    prepared keeps the trials: ``outcome`` then has no model, its stop reason
    says what happened, and ``outcome.interrupted`` (the Ctrl-C, or a
    :class:`BestModelFailed`) is raised once the trials are written.
    """
    from ._best import finish_best_model

    try:
        best = finish_best_model(
            outcome.best, run.best_model, run.best_model_trial, context, journal=journal, refit=refit,
        )
    except KeyboardInterrupt as interrupt:
        logger.warning(
            "interrupted while the best model was prepared: the %d finished trials are kept, "
            "without the best model's latent", len(outcome.records),
        )
        outcome.interrupted = interrupt
        outcome.settings["stop_reason"] = then_interrupted(
            run.stop_reason, interrupt, "while the best model was prepared"
        )
        return
    except Exception as error:
        failed = BestModelFailed(
            f"the {len(outcome.records)} finished trials are kept, but the best trial {outcome.best.trial_id}'s "
            f"model could not be prepared ({type(error).__name__}: {error}); sat.tl.retrain(adata, "
            f"{outcome.best.trial_id}) trains it again from the stored results"
        )
        failed.__cause__ = error
        logger.error("%s", failed)
        outcome.interrupted = failed
        outcome.settings["stop_reason"] = (
            f"{run.stop_reason}; then the best model failed: {type(error).__name__}: {error}"
        )
        return
    outcome.model, outcome.latent = best.model, best.latent
    outcome.test_loss, outcome.refit_test_loss = best.test_loss, best.refit_test_loss
