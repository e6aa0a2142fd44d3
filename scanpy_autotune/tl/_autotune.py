"""``sat.tl.autotune``: check the input, extract the counts once, search, write the results."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import BestModelFailed
from .._logging import follow_scanpy_verbosity
from .._paths import check_model_dir, check_output_file
from .._record import gain_over_default
from .._results import NoTrialSucceededError, build_results, is_search_result, write_results
from .._search import VALIDATION_SIZE, SearchOutcome, search
from .._search._space import default_space as _default_space
from .._search._space import integration_space as _integration_space
from .._signals import interrupts_held
from .._vae._data import SPLIT_NAMES, Split, check_group_column, extract_counts, make_split
from .._validation import MAX_BUDGET, MAX_SEED, check_bool, check_fraction, check_int, check_uns_key

if TYPE_CHECKING:
    from .._vae import Model

__all__ = ["autotune", "default_max_epochs", "default_space", "integration_space"]

logger = logging.getLogger("scanpy_autotune")


def default_space() -> dict[str, Any]:
    """The 2019 scVI autotune space as hyperopt expressions.

    ``n_latent`` 5..15 and ``n_layers`` 1..5 (ordinal integers), ``n_hidden``
    {64, 128, 256}, ``dropout_rate`` {0.1, 0.3, 0.5, 0.7, 0.9},
    ``reconstruction_loss`` {zinb, nb}, ``lr`` {1e-2, 5e-3, 1e-3, 5e-4, 1e-4}.
    Edit the returned dict to make your own space.
    """
    return _default_space()


def integration_space() -> dict[str, Any]:
    """The 2019 space with the latent's KL weight searched too, for ``objective="integration"``.

    :func:`default_space` and ``max_kl_weight`` (the KL weight of the latent
    after scVI's 400-epoch warm-up; scVI's is 1) log-uniform in ``[1, 100]``.
    The 2019 space leaves the KL weight at 1. On CellBench (16,074 genes, 3
    plates) a weight of 100 raised the scIB Total of the default configuration
    from 0.717 to 0.782 (mean over 5 seeds), and of the best configuration of a
    50-trial integration search over the 2019 space from 0.828 to 0.846, with
    a lower held-out NLL too; a weight of 10 did not help, nor did the full
    weight of 1 from the first epoch (no warm-up), and 1000 lowered the
    default's Total to 0.656. The KL term is small beside the reconstruction
    of thousands of genes, so it takes a large weight to pull batches together
    (``benchmarks/results/integration_kl.md``). A 50-trial integration search
    over this space found a configuration with a weight of 68 that scored
    0.874 over 3 seeds, above the 2019 space's winner at either weight; its
    best after 30 trials was still below the 2019 search's, so give it a
    budget of about 50 trials or more (``benchmarks/results/integration.md``).
    Use ``sat.tl.autotune(adata, space=sat.tl.integration_space(),
    objective="integration", ...)``.
    """
    return _integration_space()


def default_max_epochs(n_cells: int) -> int:
    """The epoch cap used when ``max_epochs=None``: ``max(1, min(400, round(400 * 20000 / n_cells)))``.

    About 8 million cell-passes per trial (scvi-tools' rule), so small data
    trains up to 400 epochs and a million cells a handful.

    Parameters
    ----------
    n_cells
        The cells of the data (a positive integer).

    Returns
    -------
    int
        The epoch cap: 400 up to 20,000 cells, fewer above.
    """
    n_cells = check_int("n_cells", n_cells, low=1)
    return int(max(1, min(400, round(400 * 20000 / n_cells))))


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
    objective: Callable[[Model, AnnData], float] | str | None = None,
    n_workers: int | None = None,
    gpus: str | int | list[int] | None = "all",
    trials_per_gpu: int | str = "auto",
    seed: int = 0,
    journal: str | os.PathLike | None = None,
    timeout: float | None = None,
    refit: bool = False,
    save_dir: str | os.PathLike | None = None,
    key_added: str = "autotune",
    copy: bool = False,
    progress: bool = True,
    n_mc: int = 100,
    pruner: str | None = "auto",
    pruner_kwargs: Mapping[str, Any] | None = None,
    backend: str = "local",
    client: Any = None,
    scheduler: str | None = None,
    data_path: str | os.PathLike | None = None,
    labels_key: str | None = None,
    score_cells: str = "heldout",
    patience: int | str | None = "auto",
    startup: str | Sequence[Mapping[str, Any]] | None = None,
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
        With more than 5,000 genes the search warns once that scVI is usually
        trained on 2,000-4,000 highly variable genes and prints Scanpy's call
        that selects them (``flavor="seurat_v3"``, which needs scikit-misc); it
        goes on with every gene.
    layer
        Layer with the counts (``None``: ``adata.X``). Counts kept in
        ``adata.raw`` are searched once copied into a layer:
        ``adata.layers["counts"] = adata.raw[:, adata.var_names].X``.
    batch_key
        Column of ``adata.obs`` with a batch covariate.
    space
        ``None`` for :func:`default_space`; a dict of hyperopt ``hp.*``
        expressions, or the shorthand ``{"n_hidden": [64, 128], "lr": ("log", 1e-4, 1e-2),
        "n_layers": ("int", 1, 3), "dispersion": "gene"}`` (a bare value is fixed).
    max_evals
        Number of trials in total (those resumed from ``journal`` included), at
        most: the search ends earlier once it has converged (``patience``).
        TPE draws the first third of them (4 to 20, the default configuration
        included) at random and models the rest; with hyperopt's fixed 20, a
        short search was a random search (in the 12-trial demo, 0% gain over the
        default on 2 of 3 seeds against 5.7-8.7% now; on 20 Cortex trials a
        wash: ``benchmarks/results/demo_pruning.md``, ``pruning.md``).
    max_epochs
        Epoch cap per trial; ``None``: :func:`default_max_epochs`. Trials stop early
        when their validation ELBO stalls. The latent's KL weight warms up linearly
        over ``n_epochs_kl_warmup`` epochs (400, as in scvi-tools), so under a cap
        of 40 epochs it reaches at most 0.1: short searches compare models that
        are regularised less than a 400-epoch training would make them, as
        scvi-tools does with the same settings.
    train_size, test_size
        Fractions of cells for training (10% of which are the validation slice
        for early stopping and pruning) and for an untouched test split; the rest
        is held out for the loss. With test cells, the best model's held-out
        ``-log p(x)`` on them, whatever the objective, is recorded as
        ``uns[key_added]["best"]["test_loss"]``: no trial and no choice saw them.
    include_default
        Run the scVI default configuration first (trial 0), so the result shows the gain.
        The space's fixed values (and one-value choices) apply to it; when the
        space excludes one of its values (``{"n_latent": [2, 3]}``), it still
        runs as the reference, with a warning: it may then win and end in
        ``obsm`` (``include_default=False`` searches only the space).
        Resuming a journal started without it runs it next, under the next free id.
    objective
        ``None`` (or ``"marginal_nll"``, as ``uns[key]["params"]`` records it, or
        ``"nll"``, as the command line's ``--objective`` names it): the
        held-out ``-log p(x)`` per cell. ``"integration"``: maximise
        the scIB Total (needs ``labels_key`` and ``batch_key``; TPE minimises
        ``-Total``, and ``loss`` holds ``-Total``). A callable
        ``objective(model, adata_heldout) -> float`` to minimise instead
        (serialized with cloudpickle for the workers): ``adata_heldout`` holds
        the held-out cells, their counts in ``X`` (and in ``layers[layer]``
        with ``layer=``, so ``model.latent(adata_heldout)`` works) and their
        rows of ``adata.obs``. A
        journal records it by name and a hash of its source (and its
        ``version`` attribute, if set): resuming with changed code is refused.
    n_workers
        Parallel trials; default one per GPU slot, or one per CPU core this
        process may use: its CPU affinity (a Slurm job's or ``taskset``'s
        cores, not the whole node's) capped by a container's CPU limit and
        ``SLURM_CPUS_PER_TASK``. The cores are shared out as torch threads,
        at most ``OMP_NUM_THREADS`` per worker when it is set.
    gpus
        ``"all"`` visible GPUs, a number of them, a list of indices, or ``None``
        for CPU only (as are ``0``, ``False`` and ``"none"``, the command line's
        spelling). This and ``trials_per_gpu`` are for the local backend: with
        ``backend="dask"`` each trial takes one of the workers' ``GPU``
        resources (or a worker thread without them), and other values are refused.
    trials_per_gpu
        Trials sharing each GPU. ``"auto"`` (default): as many as the CPU cores
        can feed (one core per trial) and the GPU's free memory can hold; the
        choice and its reason are logged, and recorded in
        ``uns[key_added]["params"]["trials_per_gpu"]`` (0 on the CPU).
    seed
        Seed of the split, of TPE and of each trial's training (trial ``k``
        trains with ``seed + k`` on the split drawn with ``seed``;
        :func:`retrain` trains any trial again). The same call on the same
        machine gives the same search while trials finish in the same order
        (TPE models those finished when it draws); another ``n_workers``
        gives each trial another number of torch threads, which changes the
        losses by float rounding (from 1e-8 up to about 1e-4 of a loss) and can
        change TPE's choices.
    journal
        JSON-lines file; every finished trial is appended before it counts, and
        calling again with the same journal resumes. Its folder is created if
        needed. Beside it, ``<journal>.lock`` holds the lock that refuses a
        second search on the same journal while one runs, and
        ``<journal>.best_model/`` keeps the best model, so a resumed search need
        not train it again; both stay after the search (delete them with the
        journal).
    timeout
        Seconds after which no new trial starts and running ones are abandoned,
        counted from the start of the search (starting the worker processes,
        a few seconds, included).
    refit
        Refit the best configuration on all cells but the test cells, for its best
        epoch count, and use that model for ``obsm`` and ``save_dir``. With test
        cells, ``uns[key_added]["best"]["refit_test_loss"]`` is that model's test
        loss, beside ``"test_loss"``, the chosen trial's model's.
    save_dir
        Save the best model there (``sat.Model.load``): a new or empty folder,
        or one holding a model saved earlier, which is replaced.
    key_added
        Key in ``adata.uns``; also ``obsm[f"X_{key_added}"]`` and
        ``obs[f"{key_added}_split"]`` (no ``/``: ``.h5ad`` files cannot store it).
    copy
        Return a modified copy instead of writing into ``adata`` (in memory,
        also for a backed ``adata``).
    progress
        Show a progress bar (a widget in Jupyter).
    n_mc
        Importance samples per cell for the loss.
    pruner, pruner_kwargs
        Stop unpromising trials early, at rungs of their validation ELBO.
        ``"auto"`` (default): ASHA with its first rung at ``min(25,
        max_epochs // 4)`` epochs (25, 75, 225 for 400 epochs), TPE's random
        start-up trials judged only from the second rung on (the first rung
        ranks some datasets' trials poorly: on Cortex it stopped the best
        start-up configurations, which learn slowly), no pruning for
        trials under 20 epochs, for searches of fewer than 30 trials (a rung
        judges against too few peers: in the 12-trial demo it stopped the
        eventual winner on 2 of 3 seeds, in 20-trial Cortex searches it ended
        over 1% worse on 2 of 3), nor for searches with another
        ``objective`` (the rungs compare validation ELBOs, which do not rank
        configurations by integration scores); on 100-trial searches
        (replayed, ``benchmarks/results/pruning_replay.md``) it keeps the best
        within 0.14% for 3.1-3.5x fewer epochs. ``"auto"`` takes one setting,
        ``pruner_kwargs={"startup_rungs": 2}``: the start-up trials judged
        only from the third rung, which on Cortex kept a seed's best start-up
        configuration that the default stopped at 75 epochs (a best 1.5% lower
        on that seed) for 1.6x the search's time over three seeds
        (``benchmarks/results/pruning.md``). A resumed search keeps the
        pruning it started with. ``"asha"``
        (first rung ``min(25, max_epochs // 10)``, settings in
        ``pruner_kwargs``), ``"median"``, or ``None`` (or ``"none"``, as
        ``uns[key]["params"]`` records it: every trial runs until early
        stopping). The default configuration is never pruned.
    backend, client, scheduler, data_path
        ``"local"`` (this machine) or ``"dask"`` (a ``distributed.Client`` or a
        scheduler address; ``data_path`` for data the workers read themselves).
    labels_key
        Column of ``adata.obs`` with cell types: every finished trial also
        records the scIB scores of its latent, computed with scib-metrics
        (the ``scib`` extra: ``pip install -e ".[scib]"`` in a clone): bio conservation (isolated
        labels, KMeans NMI and ARI, label silhouette, cLISI), with ``batch_key``
        batch correction (BRAS, iLISI, kBET, graph connectivity, PCR comparison
        against a PCA of the same cells' log-normalised counts), and Bio
        conservation, Batch correction and Total = 0.4 batch + 0.6 bio. The
        held-out ``-log p(x)`` is recorded too (``marginal_nll``), whatever the
        objective. Failed and pruned trials have NaN scores.
    patience
        End the search when this many trials' worth of training in a row has
        not lowered the best loss by more than 0.2%, once at least 20 trials
        have finished. A trial that ran to the end counts as one; a pruned or
        failed trial, its loss unknown, as the share of ``max_epochs`` it
        trained. Running trials then finish. ``"auto"`` (default):
        ``max(8, round(0.08 * max_evals))``, 8 for 100 trials: with the
        default pruning it ended 100-trial searches of Cortex after 36 trials
        and PBMC4k after 24, 6.9x and 8.5x sooner than unpruned
        searches of all 100 at the same speed per epoch, their best within
        0.40% and 0.12% of theirs, and CBMC after 24 (6.9x, +0.11%)
        (``benchmarks/results/convergence.md``);
        without pruning, replayed, after 20-24 trials within 0.4%. ``None`` runs all
        ``max_evals`` trials. Why the search ended is in
        ``uns[key_added]["params"]["stop_reason"]``; resuming a search that
        converged with a larger ``max_evals`` or another ``patience`` goes on.
    startup
        Configurations run first, right after the default one, in place of
        TPE's first random draws; TPE learns from them like from any trial.
        ``None`` (default): random draws only. ``"winners"``: the best
        configuration of each 100-trial search in ``benchmarks/results/``
        (Cortex, PBMC4k, CBMC), those inside ``space`` (a hyperparameter
        they did not search takes the value they were trained with, the
        model's default; a warning when none fits). It is off by default
        because it does not improve what a default search ends with on data
        it did not come from: in default 100-trial searches of 700 PBMC cells
        and of CellBench (3 seeds each) it ended 0.1-0.3% higher on average
        and came within 0.5% of the best later on one and sooner on the
        other; in 10-trial searches it ended 0.15-3.2% higher on all 6 seeds
        (its trials leave TPE fewer of its own), and in the 40-epoch demo
        every winner trained worse than the default
        (``benchmarks/results/startup_held_out.md``, ``startup.md``).
        A list of dicts (a value for every searched hyperparameter) runs your
        own configurations first. The ``startup`` column of
        ``uns[key_added]["trials"]`` says where such a trial comes from.
        Given when a journal is resumed, those it has not run run next.
    score_cells
        ``"heldout"`` (default): score the held-out cells, which no model
        trained on, so a configuration is judged on cells it has not seen, as
        the loss is. ``"all"``: every cell, with less noise and as users then
        cluster them, but including the cells each model was fit to, whose
        latent flatters the configurations that fit them best. Only with
        ``labels_key``.

    Returns
    -------
    ``None``, or the modified copy with ``copy=True``. Writes, in one step
    once the search is over, ``adata.uns[key_added]`` (``"trials"``,
    ``"history"``, ``"best"``, ``"params"``: the settings, a setting left
    unset as the string ``"None"`` since ``.h5ad`` files store no ``None``, why the search
    ended and, as ``"n_resumed"``, how many trials came from the journal; and ``"default"`` when the default configuration ran), ``adata.obsm[f"X_{key_added}"]`` (latent of the best
    model) and ``adata.obs[f"{key_added}_split"]``; a call that fails changes
    none of them.

    Raises
    ------
    ValueError
        For bad input, arguments or output paths, before any training.
    PermissionError
        For an output path that cannot be written, before any training.
    ImportError
        With ``labels_key`` when scib-metrics is not installed (the message
        names the extra), before any training.
    RuntimeError
        When another search (process) uses ``journal`` (a
        :class:`JournalLockedError`; the message names the process), before any
        training; or when the backend fails mid-search (a Dask client or
        cluster closed; a :class:`BackendFailed`), once the finished trials are
        written into ``adata``; or when every trial finished but the best
        model could not be prepared (a GPU out of memory; a
        :class:`BestModelFailed`), once the trials are written into ``adata``
        without a latent (:func:`retrain` trains the best trial again), or
        could not be saved to ``save_dir`` (then with its latent);
        a :class:`NoTrialSucceededError` when no trial succeeded (``adata``
        unchanged; the trials are in its ``trials``).
    KeyboardInterrupt
        After Ctrl-C, once the finished trials are written into ``adata`` (when
        one of them succeeded; otherwise ``adata`` is unchanged). With
        ``copy=True``, the copy that holds them is this exception's ``adata``
        attribute (as for every error raised once the trials are written). The best
        trial's latent goes into ``obsm`` when its model needs no training
        (trained in this run or kept beside the journal, and ``refit=False``);
        otherwise ``obsm`` has none under ``key_added``, and resuming with the
        journal finishes the search. ``save_dir`` is written only by a search
        that ended.
    OSError
        When the journal cannot be written during the search (a full disk; a
        :class:`JournalWriteError`), once the finished trials are written into
        ``adata``; the error names the journal.
    TimeoutError
        When ``timeout`` passed before any trial finished (``adata`` unchanged).
    """
    follow_scanpy_verbosity()
    include_default, refit, copy, progress = (
        check_bool(name, value) for name, value in
        (("include_default", include_default), ("refit", refit), ("copy", copy), ("progress", progress))
    )
    if isinstance(adata, AnnData) and adata.is_view and adata.isbacked and not copy:
        raise ValueError(
            "adata is a view of a backed AnnData (a subset of a file opened with backed='r'), and "
            "results cannot be written into such a view. Load the subset first "
            "(adata = adata[...].to_memory()) or pass copy=True to get the results in a new AnnData."
        )
    key_added = check_uns_key("key_added", key_added)
    if isinstance(adata, AnnData):
        _refuse_to_replace_other_results(adata, key_added)
    train_size = check_fraction("train_size", train_size)
    test_size = check_fraction("test_size", test_size, allow_zero=True)
    max_epochs = check_int("max_epochs", max_epochs, low=1, high=MAX_BUDGET, allow_none=True)
    seed = check_int("seed", seed, low=0, high=MAX_SEED)
    if save_dir is not None:
        save_dir = check_model_dir(save_dir, "save_dir=")  # "~" expanded
    if journal is not None:
        journal = check_output_file(journal, "journal=")
    if labels_key is not None and labels_key == batch_key:
        raise ValueError(
            f"labels_key and batch_key are both {labels_key!r}: integration scores how well batches mix "
            "while cell types stay apart, so they need two columns."
        )
    labels = _obs_labels(adata, labels_key) if labels_key is not None else None
    data = extract_counts(adata, layer=layer, batch_key=batch_key)
    _advise_on_genes(data.n_vars, layer, batch_key)
    split = make_split(
        data.n_obs, train_size=train_size, test_size=test_size, validation_size=VALIDATION_SIZE, seed=seed
    )
    outcome = search(
        data, split, space=space, max_evals=max_evals,
        max_epochs=default_max_epochs(data.n_obs) if max_epochs is None else max_epochs,
        n_mc=n_mc, seed=seed, objective=objective, include_default=include_default, pruner=pruner,
        pruner_kwargs=pruner_kwargs, journal=journal, timeout=timeout, progress=progress, refit=refit,
        train_size=train_size, test_size=test_size, layer=layer, batch_key=batch_key, backend=backend,
        n_workers=n_workers, gpus=gpus, trials_per_gpu=trials_per_gpu, client=client,
        scheduler=scheduler, data_path=data_path, labels=labels, labels_key=labels_key,
        score_cells=score_cells, patience=patience, startup=startup,
        obs=adata.obs if callable(objective) else None,
    )
    written = None  # the AnnData holding the results, once they are written
    try:
        with interrupts_held():  # the results are built and written whole; a Ctrl-C now comes after them
            written = _store(adata, outcome, key_added, split, data.n_obs, save_dir=save_dir, copy=copy,
                             journal=journal)
    except KeyboardInterrupt as late:  # held while they were written: raised once they are
        if copy and written is not None:
            late.adata = written
        raise
    if outcome.interrupted is not None:
        if copy:  # the copy that holds the trials is otherwise out of reach
            outcome.interrupted.adata = written
        raise outcome.interrupted
    return written if copy else None


def _store(
    adata: AnnData, outcome: SearchOutcome, key: str, split: Split, n_obs: int, *,
    save_dir: str | os.PathLike | None, copy: bool, journal: Any,
) -> AnnData:
    """Write the search into ``adata`` (or its copy), then save the best model; returns the AnnData written.

    A model that cannot be saved to ``save_dir`` (a full disk) costs the
    saved model only: the results are written first, and the error comes as
    :class:`BestModelFailed` once they are.
    """
    uns = build_results(outcome.records, settings=outcome.settings, searched=outcome.searched)
    if uns["best"]["trial_id"] < 0:  # nothing to store: what adata held stays as it was
        if outcome.interrupted is not None:
            logger.warning("no trial had succeeded when the search was cut short; adata is unchanged")
            raise outcome.interrupted
        summary = _no_success_summary(uns["trials"])
        where = " and in the journal" if journal is not None else ""
        raise NoTrialSucceededError(
            f"{summary} adata is unchanged; every trial's error is in this exception's .trials{where}.",
            uns["trials"], summary,
        )
    if copy:  # a backed AnnData copies only to a file; the copy of one is read into memory
        adata = adata.to_memory() if adata.isbacked else adata.copy()
    _write_results(adata, key, uns, outcome, split, n_obs)
    if save_dir is not None and outcome.model is not None:
        try:
            outcome.model.save(save_dir, overwrite=True)
        except OSError as error:
            failed = BestModelFailed(
                f"the search's results are in adata (uns[{key!r}], obsm['X_{key}']), but its best model "
                f"could not be saved to {os.fspath(save_dir)} ({type(error).__name__}: {error})"
            )
            failed.__cause__ = error
            logger.error("%s", failed)
            if outcome.interrupted is None:
                outcome.interrupted = failed
    return adata


#: Above this many genes the search advises selecting highly variable genes first.
MANY_GENES = 5000


def _advise_on_genes(n_genes: int, layer: str | None, batch_key: str | None) -> None:
    """Say once, before the search, that scVI is usually trained on 2,000-4,000 variable genes.

    The advice is Scanpy's selection on counts (``flavor="seurat_v3"``, per batch when the
    search has batches), which needs the scikit-misc package; the message says so.
    """
    if n_genes <= MANY_GENES:
        return
    arguments = "".join(f", {name}={value!r}" for name, value in (("layer", layer), ("batch_key", batch_key))
                        if value is not None)
    logger.warning(
        "adata has %d genes; scVI is usually trained on 2,000 to 4,000 highly variable genes, and "
        "every trial's time grows with the genes. This search goes on with all genes; to select them "
        "(flavor \"seurat_v3\" reads the counts and needs scikit-misc: pip install scikit-misc): "
        "sc.pp.highly_variable_genes(adata, n_top_genes=3000, flavor=\"seurat_v3\"%s); "
        "adata = adata[:, adata.var[\"highly_variable\"]].copy()",
        n_genes, arguments,
    )


def _obs_labels(adata: AnnData, labels_key: Any) -> np.ndarray:
    """The labels of every cell, checked: a column of ``adata.obs`` without missing values."""
    if not isinstance(labels_key, str) or labels_key not in adata.obs:
        columns = list(adata.obs.columns)
        raise ValueError(f"labels_key={labels_key!r} is not a column of adata.obs (columns: {columns}).")
    column = adata.obs[labels_key]
    if column.isna().any():
        raise ValueError(
            f"adata.obs[{labels_key!r}] has {int(column.isna().sum())} missing label(s); label every "
            "cell (e.g. 'unknown') or subset adata to the labelled cells."
        )
    check_group_column(column, labels_key, "labels")
    return column.astype(str).to_numpy()


def _refuse_to_replace_other_results(adata: AnnData, key: str) -> None:
    """``key_added`` may replace an earlier search's results, never what another tool wrote there."""
    if key in adata.uns:
        if is_search_result(adata.uns[key]):
            return  # an earlier search: this one replaces it
        raise ValueError(
            f"key_added={key!r}: adata.uns[{key!r}] already holds something that is not a search result "
            "(e.g. scanpy's), which the search would replace; pass another key_added=."
        )
    # no search result there: an entry under its names is another tool's, unless a split
    taken = [f"adata.obsm['X_{key}']"] if f"X_{key}" in adata.obsm else []
    split = f"{key}_split"
    if split in adata.obs and not _is_a_search_split(adata.obs[split]):
        taken.append(f"adata.obs[{split!r}]")
    if taken:
        where = " and ".join(taken)
        raise ValueError(
            f"key_added={key!r}: {where} already hold(s) something without a search result in "
            f"adata.uns[{key!r}] (another tool's, or an earlier search's whose uns was dropped, as "
            f"ad.concat drops it), which the search would replace; pass another key_added=, or delete "
            f"it ({'; '.join('del ' + entry for entry in taken)}) if it may go."
        )


def _is_a_search_split(column: Any) -> bool:
    """Whether an obs column is one a search wrote: categorical, with exactly its four parts."""
    return isinstance(column.dtype, pd.CategoricalDtype) and list(column.cat.categories) == list(SPLIT_NAMES)


def _no_success_summary(trials: Any) -> str:
    """Why there is no result: how many trials ran, how they ended, and their most common error."""
    counts = trials["status"].value_counts()
    ended = ", ".join(f"{int(counts[s])} {s}" for s in ("fail", "pruned") if s in counts)
    errors = trials.loc[trials["status"] == "fail", "error"].astype(str)
    message = f"none of the {len(trials)} trials succeeded ({ended}), so there is no result to store."
    if len(errors):
        common = errors.value_counts()
        error = common.index[0].rstrip()
        message += f" The most common error ({int(common.iloc[0])} of {len(errors)} failed trials): {error}"
        message += "" if error.endswith(".") else "."
    return message


def _write_results(
    adata: AnnData, key: str, uns: dict, outcome: SearchOutcome, split: Split, n_obs: int
) -> None:
    """Store the search in ``adata`` in one step: ``uns``, ``obs`` and ``obsm`` change together."""
    if outcome.test_loss is not None:
        uns["best"]["test_loss"] = outcome.test_loss
    if outcome.refit_test_loss is not None:
        uns["best"]["refit_test_loss"] = outcome.refit_test_loss
    labels = split.labels(n_obs)
    write_results(adata, key, uns)  # checked, then stored
    adata.obs[f"{key}_split"] = labels
    if outcome.latent is not None:
        adata.obsm[f"X_{key}"] = np.asarray(outcome.latent)
    elif f"X_{key}" in adata.obsm:  # an earlier search's latent would not match these results
        del adata.obsm[f"X_{key}"]
        logger.warning("no best model this time: removed the earlier adata.obsm[%r]", f"X_{key}")
    _log_summary(uns)


def _log_summary(uns: dict) -> None:
    best, default = uns["best"], uns.get("default")
    message = f"best trial {best['trial_id']}: loss {best['loss']:.3f}"
    if default is not None:
        gain = gain_over_default(best["loss"], default["loss"])
        if np.isfinite(gain):
            message += f" (default {default['loss']:.3f}, {gain:.2f}% better)"
    logger.info(message)
    logger.info("the search ended with %s", uns["params"].get("stop_reason", "its budget"))
    trials = uns["trials"]
    pruned = trials[trials["status"] == "pruned"]
    if len(pruned):
        finished = trials[trials["status"] == "ok"]
        logger.info(
            "pruning stopped %d of %d trials after %.0f epochs on average (trials that finished: %.0f)",
            len(pruned), len(trials), pruned["n_epochs"].mean(),
            finished["n_epochs"].mean() if len(finished) else float("nan"),
        )
