"""``sat.tl.scvi_kwargs``: a search's configuration as the arguments of scvi-tools' ``SCVI``."""

from __future__ import annotations

import math
from typing import Any

from .._results import DEFAULT_KEY, read_results
from .._vae._config import ADAM_EPS, LR_FACTOR
from ._trial import as_searched, max_epochs_of, trial_hyperparameters, trial_row, validation_size_of

__all__ = ["SCVI_TOOLS_NAMES", "scvi_kwargs"]

#: Our hyperparameter -> (where it goes, its scvi-tools 1.4 name). ``"model"``:
#: ``scvi.model.SCVI(adata, ...)``; ``"train"``: ``SCVI.train(...)`` (the early-stopping
#: names reach ``scvi.train.Trainer`` through it); ``"plan_kwargs"``:
#: ``SCVI.train(plan_kwargs=...)``, i.e. ``scvi.train.TrainingPlan``. Every value
#: means the same in both packages, so values pass unchanged, but for ``lr_patience``
#: (:data:`_LR_PATIENCE_SHIFT`).
SCVI_TOOLS_NAMES: dict[str, tuple[str, str]] = {
    "n_hidden": ("model", "n_hidden"),
    "n_latent": ("model", "n_latent"),
    "n_layers": ("model", "n_layers"),
    "dropout_rate": ("model", "dropout_rate"),
    "reconstruction_loss": ("model", "gene_likelihood"),
    "dispersion": ("model", "dispersion"),
    "use_observed_lib_size": ("model", "use_observed_lib_size"),
    "batch_size": ("train", "batch_size"),
    "early_stopping": ("train", "early_stopping"),
    "early_stopping_patience": ("train", "early_stopping_patience"),
    "lr": ("plan_kwargs", "lr"),
    "weight_decay": ("plan_kwargs", "weight_decay"),
    "n_epochs_kl_warmup": ("plan_kwargs", "n_epochs_kl_warmup"),
    "max_kl_weight": ("plan_kwargs", "max_kl_weight"),
    "reduce_lr_on_plateau": ("plan_kwargs", "reduce_lr_on_plateau"),
    "lr_patience": ("plan_kwargs", "lr_patience"),
}

# Training constants that are not hyperparameters here. They equal scvi-tools 1.4's
# defaults; passing them keeps the hand-off right if those defaults change.
_PLAN_CONSTANTS: dict[str, float] = {"eps": ADAM_EPS, "lr_factor": LR_FACTOR}
#: Here the rate drops after ``lr_patience`` epochs without a better validation
#: ELBO; torch's ``ReduceLROnPlateau``, which scvi-tools uses, waits for one more
#: (it drops once the bad epochs exceed its ``patience``).
_LR_PATIENCE_SHIFT = -1
#: scvi-tools' own validation fraction when ``train_size`` is not given (0.9 of
#: the cells train); only then does it move a last minibatch of one or two cells
#: into validation (BatchNorm cannot train on one cell), so it is not passed.
_SCVI_DEFAULT_TRAIN_SIZE = 0.9


def scvi_kwargs(
    adata: Any,
    *,
    key: str = DEFAULT_KEY,
    trial: int | None = None,
    layer: str | None = None,
    batch_key: str | None = None,
) -> dict[str, dict[str, Any]]:
    """A search's configuration as the arguments of scvi-tools' ``SCVI`` (hand-off to scvi-tools).

    Takes the best trial of ``adata.uns[key]`` (or trial ``trial``), fills
    the hyperparameters the search did not record (neither searched nor fixed)
    with scanpy-autotune's defaults, which are not all scvi-tools' defaults
    (``use_observed_lib_size=False`` here), and renames them for scvi-tools 1.4:

    ========================  ==================================================
    scanpy-autotune           scvi-tools
    ========================  ==================================================
    n_hidden, n_latent,       ``SCVI(n_hidden=, n_latent=, n_layers=,``
    n_layers, dropout_rate    ``dropout_rate=)``
    reconstruction_loss       ``SCVI(gene_likelihood=)`` (zinb, nb, poisson)
    dispersion                ``SCVI(dispersion=)`` (gene, gene-batch)
    use_observed_lib_size     ``SCVI(use_observed_lib_size=)``
    batch_size                ``train(batch_size=)``
    early_stopping,           ``train(early_stopping=,``
    early_stopping_patience   ``early_stopping_patience=)``
    lr, weight_decay          ``train(plan_kwargs={"lr", "weight_decay"})``
    n_epochs_kl_warmup,       ``train(plan_kwargs={"n_epochs_kl_warmup",``
    max_kl_weight             ``"max_kl_weight"})``
    reduce_lr_on_plateau,     ``train(plan_kwargs={"reduce_lr_on_plateau",``
    lr_patience               ``"lr_patience"})`` (``lr_patience`` one less)
    ========================  ==================================================

    With a ``batch_key``, ``model["encode_covariates"]`` is ``True``: the
    encoders here take the batch at every layer, as scvi-tools' do with it
    (its default is ``False``, which leaves the batch to the decoder).
    ``lr_patience`` is handed off one less: here the rate drops after
    ``lr_patience`` epochs without a better validation ELBO, where torch's
    ``ReduceLROnPlateau`` in scvi-tools waits for ``patience + 1``.

    The training set-up of the search comes along: ``train["max_epochs"]``
    is the search's epoch cap; ``train["train_size"]`` is ``1 -`` its
    validation fraction (scvi-tools keeps the rest of the cells it is given
    for early stopping, as each trial kept that fraction of its training
    cells), left out when that is scvi-tools' default 0.9, since only then
    does scvi-tools move a last minibatch of one or two cells into validation
    (scanpy-autotune drops it); and ``plan_kwargs`` states Adam's ``eps=0.01``
    and the plateau factor ``lr_factor=0.6`` that scanpy-autotune trains with.

    Three things do not carry over: scvi-tools keeps the last epoch's weights
    where a trial restored its best validation epoch; scvi-tools trains on
    every cell it is given, where a trial trained on the search's training
    cells only (``adata.obs[f"{key}_split"]`` says which); and, with
    ``use_observed_lib_size=False``, it takes the library-size prior from
    every cell it is given, where a trial took it from its training cells.

    Parameters
    ----------
    adata
        An :class:`~anndata.AnnData` after :func:`scanpy_autotune.tl.autotune`
        (in memory or read back from ``.h5ad``).
    key
        Where the results are stored in ``adata.uns``.
    trial
        The id of the trial to hand off (any status); ``None``: the best trial.
    layer, batch_key
        For results that do not record them (written before they were kept in
        ``adata.uns[key]["params"]``): the layer and ``obs`` column the search
        was run with (:func:`~scanpy_autotune.tl.autotune`'s ``layer=`` and
        ``batch_key=``), passed on to ``setup_anndata``. Results that record
        them need neither; a value that contradicts the recorded one is refused.

    Returns
    -------
    dict
        ``"setup_anndata"`` (``layer``, ``batch_key``), ``"model"`` (keyword
        arguments of ``scvi.model.SCVI``) and ``"train"`` (of ``SCVI.train``,
        with ``plan_kwargs``). Fresh dictionaries of plain Python values.

    Raises
    ------
    KeyError
        When ``adata.uns`` has no ``key``.
    ValueError
        When no trial succeeded (and ``trial`` is ``None``), ``trial`` is not a
        trial id of the search, a stored value is not valid, ``layer`` or
        ``batch_key`` contradicts the search's, or a hyperparameter has no
        scvi-tools equivalent (it is never dropped silently).

    Examples
    --------
    >>> import scanpy_autotune as sat
    >>> import scvi
    >>> sat.tl.autotune(adata, layer="counts", test_size=0.1)
    >>> kw = sat.tl.scvi_kwargs(adata)
    >>> kw["setup_anndata"]
    {'layer': 'counts', 'batch_key': None}
    >>> kw["model"]
    {'n_hidden': 64, 'n_latent': 5, 'n_layers': 3, 'dropout_rate': 0.3,
     'gene_likelihood': 'zinb', 'dispersion': 'gene', 'use_observed_lib_size': False}
    >>> scvi.model.SCVI.setup_anndata(adata, **kw["setup_anndata"])
    >>> model = scvi.model.SCVI(adata, **kw["model"])
    >>> model.train(**kw["train"])
    """
    res = read_results(adata, key)
    setup = {
        "layer": as_searched(res, "layer", layer),
        "batch_key": as_searched(res, "batch_key", batch_key),
    }
    row = trial_row(res, trial)
    hyperparameters = trial_hyperparameters(row, res.hyperparameters, int(row["trial_id"]))
    unmapped = [name for name in hyperparameters if name not in SCVI_TOOLS_NAMES]
    if unmapped:
        raise ValueError(
            f"Trial {int(row['trial_id'])} has hyperparameter(s) {unmapped} with no scvi-tools "
            f"equivalent; only {sorted(SCVI_TOOLS_NAMES)} can be handed off."
        )
    model: dict[str, Any] = {}
    train: dict[str, Any] = {"max_epochs": max_epochs_of(res)}
    train_size = 1.0 - validation_size_of(res)
    if not math.isclose(train_size, _SCVI_DEFAULT_TRAIN_SIZE):
        train["train_size"] = train_size
    plan_kwargs: dict[str, Any] = {}
    sections = {"model": model, "train": train, "plan_kwargs": plan_kwargs}
    for name, value in hyperparameters.items():
        section, scvi_name = SCVI_TOOLS_NAMES[name]
        sections[section][scvi_name] = value + _LR_PATIENCE_SHIFT if name == "lr_patience" else value
    if setup["batch_key"] is not None:
        model["encode_covariates"] = True
    plan_kwargs.update(_PLAN_CONSTANTS)
    train["plan_kwargs"] = plan_kwargs
    return {
        "setup_anndata": setup,
        "model": model,
        "train": train,
    }
