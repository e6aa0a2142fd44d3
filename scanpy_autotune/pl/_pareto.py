"""``sat.pl.pareto``: the trade-off between likelihood and integration, with its Pareto front."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from .._results import DEFAULT_KEY, read_results
from .._validation import check_bool
from ._docs import _doc_params, doc_adata, doc_key, doc_show_save
from ._utils import finish, note_off_scale, panel_axes, save_target, value_limits

_NLL_LABEL = "held-out −log p(x) per cell (lower is better)"
#: The two panels: (x column, y column, x lower is better, y higher is better).
_PANELS = (
    ("marginal_nll", "total", _NLL_LABEL, "Total (higher is better)"),
    ("bio_conservation", "batch_correction", "Bio conservation (higher is better)",
     "Batch correction (higher is better)"),
)
#: The one panel of a search scored without ``batch_key`` (no batch correction, no Total).
_BIO_PANELS = (("marginal_nll", "bio_conservation", _NLL_LABEL, "Bio conservation (higher is better)"),)


def pareto_front(x: np.ndarray, y: np.ndarray, *, minimize_x: bool) -> np.ndarray:
    """Indices of the points no other point beats on both axes (``y`` is maximised).

    Parameters
    ----------
    x, y
        The points' coordinates (finite).
    minimize_x
        Whether a lower ``x`` is better (the loss) or a higher one (a score).

    Returns
    -------
    numpy.ndarray
        The indices on the front, sorted by ``x``.
    """
    sign = 1.0 if minimize_x else -1.0
    order = np.lexsort((-y, sign * x))  # best x first; among equal x, best y first
    front, best_y = [], -np.inf
    for i in order:
        if y[i] > best_y:
            front.append(i)
            best_y = y[i]
    return np.asarray(sorted(front, key=lambda i: x[i]), dtype=int)


@_doc_params(doc_adata=doc_adata, doc_key=doc_key, doc_show_save=doc_show_save)
def pareto(
    adata: Any,
    *,
    key: str = DEFAULT_KEY,
    robust: bool = True,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> np.ndarray | None:
    """The held-out likelihood against integration, and batch correction against bio conservation.

    One point per successful trial of a search run with ``labels_key`` (and
    ``batch_key``); the trials no other trial beats on both axes form the
    Pareto front (a line). The best trial of the search's objective is a gold
    star, as in the other plots, the default configuration a square. Left: held-out ``-log p(x)`` on x,
    Total on y; right: Bio conservation on x, Batch correction on y. A search
    scored without ``batch_key`` has neither Total nor batch correction: one
    panel then, ``-log p(x)`` on x and Bio conservation on y.

    Parameters
    ----------
    {doc_adata}
    {doc_key}
    robust
        Fit the ``-log p(x)`` axis to the non-outlying losses (Tukey's far
        fence), so that one poor trial does not squeeze the others into a
        corner; the Pareto front, the best trial and the default stay inside,
        and a note counts the trials beyond it.
    ax
        Two Axes, one per panel (one Axes without batch scores); a new figure
        when ``None``.
    {doc_show_save}

    Returns
    -------
    numpy.ndarray of Axes, or None
        The panels' Axes when the plot is not shown (``show=False``, or
        ``show=None`` with ``sc.settings.autoshow = False``).

    Raises
    ------
    ValueError
        When the search recorded no integration scores (run it with ``labels_key``)
        or no trial succeeded.
    """
    robust = check_bool("robust", robust)
    save = save_target("pareto", show, save)
    owned = ax is None  # a figure this call makes (closed if its save fails)
    res = read_results(adata, key)
    if not res.scored:
        raise ValueError(
            f"adata.uns[{key!r}] holds no integration scores; run sat.tl.autotune with labels_key= "
            "(and batch_key=) to record them."
        )
    trials = res.trials
    ok = trials[(trials["status"] == "ok")]
    panels = _PANELS if np.isfinite(ok["batch_correction"].to_numpy(float)).any() else _BIO_PANELS
    if ax is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.9 * len(panels) - 0.3, 4.0), layout="constrained")
        axes = list(np.atleast_1d(axes))
    else:
        axes = panel_axes(ax, [f"{x} against {y}" for x, y, _, _ in panels], "pareto")
        fig = axes[0].figure
    best_id, default_id = res.best["trial_id"], (res.default or {}).get("trial_id", -1)
    for axis, (x_name, y_name, x_label, y_label) in zip(axes, panels):
        usable = ok[np.isfinite(ok[x_name].to_numpy(float)) & np.isfinite(ok[y_name].to_numpy(float))]
        if usable.empty:
            raise ValueError(f"no successful trial has both {x_name} and {y_name}.")
        x, y = usable[x_name].to_numpy(float), usable[y_name].to_numpy(float)
        axis.scatter(x, y, s=18, color="0.55", alpha=0.8, label="trials", zorder=2)
        front = pareto_front(x, y, minimize_x=x_name == "marginal_nll")
        axis.plot(x[front], y[front], "-o", color="tab:blue", ms=4, lw=1.2, label="Pareto front", zorder=3)
        # the default as a hollow square under the best's star: both show when they are one trial
        row = usable[usable["trial_id"] == default_id]
        if len(row):
            axis.scatter(row[x_name], row[y_name], marker="s", s=90, facecolors="none", edgecolors="black",
                         linewidths=1.4, label=f"default (trial {default_id})", zorder=4)
        row = usable[usable["trial_id"] == best_id]
        if len(row):
            axis.scatter(row[x_name], row[y_name], marker="*", s=200, facecolors="gold", edgecolors="black",
                         linewidths=0.8, label=f"best (trial {best_id})", zorder=5)
        if robust and x_name == "marginal_nll":
            on_front = np.zeros(len(x), dtype=bool)
            on_front[front] = True  # the front, the best and the default: never left out of the range
            references = on_front | usable["trial_id"].isin([best_id, default_id]).to_numpy()
            limits, n_off = value_limits(x, log=False, shown=references)
            if limits is not None and n_off:
                axis.set_xlim(*limits)
                note_off_scale(axis, n_off, "x")
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.legend(fontsize="small", frameon=False)
    if ax is None:
        fig.suptitle(f"{len(ok)} successful trials", fontsize="medium")
    return finish(fig, np.asarray(axes, dtype=object), "pareto", show, save, owned=owned)
