"""``sat.tl.retrain``: one trial of a search trained again, as the search trained it."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._results import DEFAULT_KEY, Results, read_results
from .._search import training_seed
from .._vae import Model, resolve_hyperparameters
from .._vae._data import (
    SPLIT_NAMES,
    CountData,
    DeviceCounts,
    Split,
    extract_counts,
    make_split,
    split_from_labels,
)
from .._vae._model import resolve_device
from ._trial import as_searched, max_epochs_of, trial_hyperparameters, trial_row, validation_size_of

__all__ = ["retrain"]


def retrain(
    adata: Any,
    trial: int | None = None,
    *,
    key: str = DEFAULT_KEY,
    layer: str | None = None,
    batch_key: str | None = None,
    device: str | None = None,
) -> Model:
    """Train one trial of a search again, with everything the search gave it.

    Trial ``k`` of a search with ``seed=s`` trained with seed ``s + k`` on the
    split drawn with ``s`` (``adata.obs[f"{key}_split"]``), for the search's
    epoch cap, on its layer and batch column, with the trial's hyperparameters
    and scVI's defaults for the others. This trains exactly that again, so the
    model's held-out loss (:meth:`~scanpy_autotune.Model.marginal_nll`) is the trial's recorded
    loss: the same number on the same machine with as many torch threads as
    the trial had (the search shares the cores among its workers: with two
    workers on two cores, ``torch.set_num_threads(1)``; other thread counts
    change the float rounding, which training carries to between 1e-8 and
    about 1e-4 of the loss, depending on the trial). A pruned trial trains to the end (the pruner stopped it early in
    the search); a model refit by ``refit=True`` is not a trial (this gives
    the trial before its refit). ``adata`` must hold the data the search ran
    on, and its split as the search drew it: anything else is refused, since
    it would train another model under the trial's name.

    Parameters
    ----------
    adata
        The :class:`~anndata.AnnData` the search ran on, with its results
        (``uns[key]`` and ``obs[f"{key}_split"]``; read back from ``.h5ad`` too).
    trial
        The trial's id; ``None``: the best trial.
    key
        Where the results are stored (``key_added`` of the search).
    layer, batch_key
        For results that do not record them (written before they were kept in
        ``adata.uns[key]["params"]``): the search's ``layer=`` and ``batch_key=``.
        Results that record them need neither; a contradicting value is refused.
    device
        ``"cpu"``, ``"cuda"``, ...; default: a GPU when there is one.

    Returns
    -------
    Model
        The trained model.

    Raises
    ------
    KeyError
        When ``adata.uns`` has no ``key``.
    ValueError
        When ``trial`` is not a trial of the search, no trial succeeded (and
        ``trial`` is ``None``), ``adata`` holds other counts, cells or batches
        than the search's, or ``adata.obs[f"{key}_split"]`` is missing or not
        the split the search drew.

    Examples
    --------
    >>> sat.tl.autotune(adata, max_evals=20)
    >>> model = sat.tl.retrain(adata, trial=7)       # the search's trial 7, again
    >>> model.marginal_nll(adata)                    # its recorded loss
    """
    res = read_results(adata, key)
    row = trial_row(res, trial)
    trial_id = int(row["trial_id"])
    layer, batch_key = as_searched(res, "layer", layer), as_searched(res, "batch_key", batch_key)
    column = f"{key}_split"
    if column not in adata.obs:
        raise ValueError(
            f"adata.obs[{column!r}] is missing: the search's split is needed to train its trial again "
            "(it is kept in the AnnData the search wrote into)."
        )
    config = resolve_hyperparameters(trial_hyperparameters(row, res.hyperparameters, trial_id), strict=True)
    data = extract_counts(adata, layer=layer, batch_key=batch_key)
    _check_same_data(res, data)
    split = split_from_labels(adata.obs[column], column)
    _check_same_split(res, data.n_obs, split, column)
    return Model.fit_prepared(
        data, DeviceCounts(data, resolve_device(device)), split, config,
        seed=training_seed(res.params["seed"], trial_id), max_epochs=max_epochs_of(res), layer=layer, batch_key=batch_key,
    )


def _check_same_data(res: Results, data: CountData) -> None:
    """The counts, cells and batches the search ran on (its fingerprint; its shape for older results)."""
    recorded = res.params.get("data")
    if recorded is not None:  # the fingerprint covers the shape too
        if str(recorded) != data.fingerprint():
            raise ValueError(
                f"adata is not the data the search of adata.uns[{res.key!r}] ran on: its counts, cell names "
                "or batches differ (or its cells or genes are in another order, or it holds other genes), "
                "so its trials cannot be trained again on it."
            )
        return
    shape = (res.params.get("n_cells"), res.params.get("n_genes"))
    if None not in shape and tuple(int(v) for v in shape) != (data.n_obs, data.n_vars):
        raise ValueError(
            f"adata has {data.n_obs} cells x {data.n_vars} genes; the search of adata.uns[{res.key!r}] ran on "
            f"{shape[0]} x {shape[1]}, so its trials cannot be trained again on it."
        )


def _check_same_split(res: Results, n_obs: int, split: Split, column: str) -> None:
    """The split in ``obs`` is the one the search drew (none of its cells moved to another part)."""
    settings = {name: res.params.get(name) for name in ("train_size", "test_size", "seed")}
    if None in settings.values():
        return  # results that do not record how the split was drawn: the column is all there is
    drawn = make_split(
        n_obs, train_size=float(settings["train_size"]), test_size=float(settings["test_size"]),
        validation_size=validation_size_of(res), seed=int(settings["seed"]),
    )
    moved = sum(int(np.setdiff1d(getattr(drawn, name), getattr(split, name)).size) for name in SPLIT_NAMES)
    if moved:
        raise ValueError(
            f"adata.obs[{column!r}] is not the split the search drew: {moved} cell(s) are in another part "
            "(edited by hand?); restore it, or train a configuration of your own with sat.Model.fit."
        )
