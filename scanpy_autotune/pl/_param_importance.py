"""``sat.pl.param_importance``: a bar chart of :func:`scanpy_autotune.tl.importances`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from .._importances import importances
from .._results import DEFAULT_KEY, read_results
from .._validation import check_bool
from ._docs import _doc_params, doc_adata, doc_key, doc_returns_ax, doc_show_save_ax
from ._utils import finish, finite_loss, loss_names, new_ax, save_target

_METHOD_TEXT = {
    "permutation": "out-of-fold permutation importance",
    "impurity": "impurity importance",
}


@_doc_params(
    doc_adata=doc_adata,
    doc_key=doc_key,
    doc_show_save_ax=doc_show_save_ax,
    doc_returns_ax=doc_returns_ax,
)
def param_importance(
    adata: Any,
    params: str | Sequence[str] | None = None,
    *,
    key: str = DEFAULT_KEY,
    method: str = "permutation",
    n_estimators: int = 100,
    robust: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | None:
    """Bar chart of how much each hyperparameter explains the search's loss.

    See :func:`scanpy_autotune.tl.importances` for the computation; the most
    important hyperparameter is the top bar. With ``"permutation"`` a bar is
    the R² a random forest loses, on trials it did not see, when that
    hyperparameter's column is shuffled: 0 for one that does not matter, and
    above 1 when the shuffled column misleads the forest into predicting worse
    than the mean loss would; its error bar is the standard deviation over the
    10 shuffles. With ``"impurity"`` a bar is the share of the forest's
    impurity decrease (the bars sum to 1), its error bar the standard
    deviation over the trees (whose importances vary widely: a bar may reach
    below 0). With few trials (under about 30) the ranking is rough.

    Parameters
    ----------
    {doc_adata}
    params
        Hyperparameters to rank; default every searched one.
    {doc_key}
    method
        ``"permutation"`` or ``"impurity"`` random-forest importance.
    n_estimators
        Trees in the forest.
    robust
        Clip outlying losses first (see :func:`scanpy_autotune.tl.importances`).
    {doc_show_save_ax}

    Returns
    -------
    {doc_returns_ax}

    Raises
    ------
    ValueError
        With fewer than 5 successful trials, or an unknown method or name.
    """
    robust = check_bool("robust", robust)
    save = save_target("param_importance", show, save)  # before the forest is fit: a wrong type fails at once
    table = importances(
        adata, params, key=key, method=method, n_estimators=n_estimators, robust=robust
    )
    owned = ax is None  # a figure this call makes (closed if its save fails)
    res = read_results(adata, key)
    trials = res.trials
    n_ok = int(((trials["status"] == "ok") & finite_loss(trials)).sum())
    fig, ax = new_ax(ax, (6.0, 0.45 * len(table) + 1.6))
    pos = np.arange(len(table))[::-1]
    ax.barh(
        pos,
        table["importance"],
        xerr=table["std"],
        color="C0",
        ecolor="0.4",
        capsize=2,
        gid="importance-bars",
    )
    ax.set_yticks(pos, list(table.index))
    ax.axvline(0, color="0.3", lw=0.8)
    unit = (
        "R² lost on unseen trials when the column is shuffled"
        if method == "permutation"
        else "mean decrease in impurity"
    )
    ax.set_xlabel(unit)
    ax.set_title(
        f"hyperparameter importance for {loss_names(res.params)[1]}\n"
        f"random forest, {_METHOD_TEXT[method]},\n{n_ok} successful trials"
        + (" (outlying losses clipped)" if robust else ""),
        fontsize="medium",
    )
    return finish(fig, ax, "param_importance", show, save, owned=owned)
