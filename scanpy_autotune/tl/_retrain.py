"""``sat.tl.retrain``: one trial of a search trained again, as the search trained it."""

from __future__ import annotations

from typing import Any

from .._results import DEFAULT_KEY, read_results
from .._vae import Model
from ._trial import as_searched, max_epochs_of, trial_hyperparameters, trial_row

__all__ = ["retrain"]


def retrain(adata: Any, trial: int | None = None, *, key: str = DEFAULT_KEY, device: str | None = None) -> Model:
    """Train one trial of a search again, with everything the search gave it.

    Trial ``k`` of a search with ``seed=s`` trained with seed ``s + k`` on the
    split drawn with ``s`` (``adata.obs[f"{key}_split"]``), for the search's
    epoch cap, on its layer and batch column, with the trial's hyperparameters
    and scVI's defaults for the others. This trains exactly that again, so the
    model's held-out loss (:meth:`Model.marginal_nll`) is the trial's recorded
    loss: the same number on the same machine with as many torch threads as
    the trial had (the search shares the cores among its workers: with two
    workers on two cores, ``torch.set_num_threads(1)``; other thread counts
    change the float rounding, which training carries to about 1e-4 of the
    loss). A pruned
    trial trains to the end (the pruner stopped it early in the search); a
    model refit by ``refit=True`` is not a trial (this gives the trial before
    its refit).

    Parameters
    ----------
    adata
        The :class:`~anndata.AnnData` the search ran on, with its results
        (``uns[key]`` and ``obs[f"{key}_split"]``; read back from ``.h5ad`` too).
    trial
        The trial's id; ``None``: the best trial.
    key
        Where the results are stored (``key_added`` of the search).
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
        ``trial`` is ``None``), or ``adata.obs[f"{key}_split"]`` is missing or
        not a search's split.

    Examples
    --------
    >>> sat.tl.autotune(adata, max_evals=20)
    >>> model = sat.tl.retrain(adata, trial=7)       # the search's trial 7, again
    >>> model.marginal_nll(adata)                    # its recorded loss
    """
    res = read_results(adata, key)
    row = trial_row(res, trial)
    trial_id = int(row["trial_id"])
    split = f"{key}_split"
    if split not in adata.obs:
        raise ValueError(
            f"adata.obs[{split!r}] is missing: the search's split is needed to train its trial again "
            "(it is kept in the AnnData the search wrote into)."
        )
    hyperparameters = trial_hyperparameters(row, res.hyperparameters, trial_id)
    return Model.fit(
        adata,
        layer=as_searched(res, "layer", None),
        batch_key=as_searched(res, "batch_key", None),
        split=split,
        seed=int(res.params["seed"]) + trial_id,
        max_epochs=max_epochs_of(res),
        device=device,
        **hyperparameters,
    )
