"""``sat.pl.sensitivity``: the held-out loss against each hyperparameter, one panel each."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .._results import DEFAULT_KEY, read_results
from .._validation import check_bool, check_int
from ._docs import _doc_params, doc_adata, doc_key, doc_show_save
from ._utils import (
    categories,
    finish,
    finite_loss,
    get_cmap,
    label_leftmost,
    logger,
    loss_names,
    mark_off_scale,
    panel_axes,
    save_target,
    value_limits,
)

_POINT_STYLE = {  # status -> marker, size, edge
    "ok": ("o", 22, "none"),
    "pruned": ("^", 26, "0.2"),
    "fail": ("X", 30, "0.2"),
}


def _panel_x(
    col: pd.Series, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, list[Any] | None]:
    """x positions of a column: jittered category positions, or the values themselves."""
    if kind != "categorical":
        return col.to_numpy(dtype=float, na_value=np.nan), None
    cats = categories(col)
    lookup = {c: i for i, c in enumerate(cats)}
    pos = np.asarray([lookup.get(v, np.nan) for v in col], dtype=float)
    return pos + rng.uniform(-0.18, 0.18, size=pos.size), cats


def _draw_panel(
    ax: Axes,
    trials: pd.DataFrame,
    name: str,
    kind: str,
    color_norm: Normalize,
    cmap: Colormap,
    best_id: int,
    limits: tuple[float, float] | None,
) -> None:
    rng = np.random.default_rng(0)
    x, cats = _panel_x(trials[name], kind, rng)
    loss = trials["loss"].to_numpy(dtype=float)
    shown = np.isfinite(loss) & np.isfinite(x)
    if kind == "log":
        shown &= x > 0
    epochs = trials["n_epochs"].to_numpy(dtype=float)
    epochs = np.where(np.isfinite(epochs), epochs, 0.0)
    if cats is not None:
        centers = np.round(x)
        groups = [(i, loss[shown & (centers == i)]) for i in range(len(cats))]
        groups = [(i, g) for i, g in groups if g.size]
        if groups:
            ax.boxplot(
                [g for _, g in groups],
                positions=[i for i, _ in groups],
                widths=0.55,
                showfliers=False,
                manage_ticks=False,
                medianprops={"color": "0.2"},
                boxprops={"color": "0.5"},
                whiskerprops={"color": "0.5"},
                capprops={"color": "0.5"},
            )
        ax.set_xticks(range(len(cats)), [str(c) for c in cats])
        ax.set_xlim(-0.6, len(cats) - 0.4)
        if len(cats) > 4 or max((len(str(c)) for c in cats), default=0) > 6:
            ax.tick_params(axis="x", labelrotation=30)
    for status, (marker, size, edge) in _POINT_STYLE.items():
        sel = shown & (trials["status"] == status).to_numpy()
        if sel.any():
            ax.scatter(
                x[sel],
                loss[sel],
                c=epochs[sel],
                cmap=cmap,
                norm=color_norm,
                marker=marker,
                s=size,
                edgecolors=edge,
                linewidths=0.6,
                alpha=0.9,
                zorder=3,
                gid=f"points-{status}",
            )
    # Trials without a loss stand at their value along the bottom edge: a value that always
    # failed (a learning rate too high) is the one thing such a panel must not hide.
    placed = np.isfinite(x) & ((x > 0) if kind == "log" else True)
    bottom = ax.get_xaxis_transform()
    for status, gid, color in (("fail", "points-fail-noloss", "C3"), ("pruned", "points-pruned-noloss", "C1")):
        sel = placed & ~np.isfinite(loss) & (trials["status"] == status).to_numpy()
        if sel.any():
            ax.scatter(x[sel], np.full(sel.sum(), 0.03), transform=bottom, marker="x", s=28, color=color,
                       zorder=3, clip_on=False, gid=gid)
    if limits is not None:
        mark_off_scale(ax, x[placed], loss[placed], limits)
    at = np.flatnonzero((trials["trial_id"] == best_id).to_numpy() & shown)
    if at.size:
        ax.scatter(
            x[at],
            loss[at],
            marker="*",
            s=220,
            facecolors="gold",
            edgecolors="black",
            linewidths=0.8,
            zorder=4,
            gid="best",
        )
    if cats is None:
        ax.margins(x=0.08)  # the best trial's star whole at the edge of the range
    if kind == "log":
        ax.set_xscale("log")
    elif cats is None and pd.api.types.is_integer_dtype(trials[name]):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no 2.5 layers
    ax.set_title(name)
    ax.set_gid(f"param-{name}")


def _new_panels(
    n_panels: int, ncols: int, panel_size: tuple[float, float]
) -> tuple[Figure, list[Axes]]:
    """A new figure with ``n_panels`` Axes sharing y, ``ncols`` per row."""
    ncols = max(1, min(int(ncols), n_panels))
    nrows = -(-n_panels // ncols)
    fig = plt.figure(
        figsize=(panel_size[0] * ncols + 1.0, panel_size[1] * nrows + 0.7), layout="constrained"
    )
    grid = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for extra in grid[n_panels:]:
        extra.remove()
    return fig, list(grid[:n_panels])


@_doc_params(doc_adata=doc_adata, doc_key=doc_key, doc_show_save=doc_show_save)
def sensitivity(
    adata: Any,
    params: str | Sequence[str] | None = None,
    *,
    key: str = DEFAULT_KEY,
    ncols: int = 3,
    robust: bool = True,
    cmap: str | Colormap = "viridis",
    panel_size: tuple[float, float] = (3.4, 2.9),
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | np.ndarray | None:
    """The search's loss against each searched hyperparameter, one panel each.

    The loss is the held-out ``-log p(x)`` by default, ``-Total`` with
    ``objective="integration"``; the y label says which.

    Categorical hyperparameters are drawn as jittered points over a box per
    value, numeric ones as a scatter (log x for ``"log"`` kinds).
    Points are coloured by the epochs each trial trained (``gid="points-<status>"``,
    pruned trials as triangles); the best trial is a gold star (``gid="best"``).
    Trials without a loss (failed, or pruned before a loss) are crosses along
    the bottom edge at their value (``gid="points-fail-noloss"``,
    ``"points-pruned-noloss"``), and trials beyond a robust y-range are open
    triangles along the edge they passed (``gid="points-off-scale"``), so a
    value that always failed or did badly is seen. On a new figure the title counts
    both (with ``ax=`` they are logged instead).

    Parameters
    ----------
    {doc_adata}
    params
        Hyperparameter name(s) to plot; default every searched one.
    {doc_key}
    ncols
        Panels per row of a new figure.
    robust
        Fit the y-limits to the non-outlying losses (Tukey's far fence).
    cmap
        Colormap for the number of epochs.
    panel_size
        Width and height of one panel of a new figure, in inches.
    ax
        Axes to draw into: one Axes when one hyperparameter is drawn, else a
        sequence (or array, read row by row) with one Axes per hyperparameter,
        in the order of ``params``. ``None``: a new figure of ``ncols`` columns.
    {doc_show_save}

    Returns
    -------
    Axes, numpy.ndarray of Axes, or None
        When not shown (``show=False``, or ``show=None`` with
        ``sc.settings.autoshow = False``): the one panel's Axes, or a 1-D array of the
        panels' Axes in the order drawn when several are drawn or ``ax`` is a
        sequence.

    Raises
    ------
    ValueError
        For an unknown hyperparameter name (the message lists the valid ones),
        an ``ax`` with a number of Axes other than the number of panels, a
        bad ``ncols`` or ``panel_size``, or a ``cmap`` matplotlib does not know.
    """
    ncols = check_int("ncols", ncols, low=1)
    if (
        not isinstance(panel_size, (tuple, list))
        or len(panel_size) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < np.inf for v in panel_size)
    ):
        raise ValueError(f"panel_size={panel_size!r} must be (width, height) in inches, two positive numbers.")
    robust = check_bool("robust", robust)
    save = save_target("sensitivity", show, save)
    cmap_ = get_cmap(cmap)
    owned = ax is None  # a figure this call makes (closed if its save fails)
    res = read_results(adata, key)
    kinds = res.param_kinds(params)
    if not kinds:
        raise ValueError(f"adata.uns[{key!r}] records no hyperparameters to plot.")
    names = list(kinds)
    if ax is None:
        fig, axes = _new_panels(len(names), ncols, panel_size)
    else:
        axes = panel_axes(ax, names, "sensitivity")
        fig = axes[0].figure
    trials = res.trials
    loss_label, loss_name = loss_names(res.params)
    finite = finite_loss(trials)
    epochs = trials["n_epochs"].to_numpy(dtype=float)[finite]
    epochs = epochs[np.isfinite(epochs)]
    color_norm = Normalize(*(epochs.min(), epochs.max()) if epochs.size else (0, 1))
    limits, n_off = None, 0
    if robust or not finite.all():  # a strip along the bottom for the trials without a loss
        limits, n_off = value_limits(
            trials["loss"].to_numpy(dtype=float), log=False, robust=robust,
            pad_low=None if finite.all() else 0.14, shown=(trials["trial_id"] == res.best["trial_id"]).to_numpy(),
        )
    for panel, (name, kind) in zip(axes, kinds.items(), strict=True):
        _draw_panel(panel, trials, name, kind, color_norm, cmap_, res.best["trial_id"], limits)
        if limits is not None:
            panel.set_ylim(*limits)
    label_leftmost(axes, loss_label)
    one_length = epochs.size > 0 and epochs.min() == epochs.max()
    if not one_length:  # a colour bar of one value would show a range no trial trained
        fig.colorbar(
            ScalarMappable(norm=color_norm, cmap=cmap_), ax=axes, label="epochs trained", shrink=0.9
        )
    n_status = trials.loc[~finite, "status"].value_counts()
    hidden = ", ".join(f"{n} {s if s != 'fail' else 'failed'}" for s, n in n_status.items())
    title = f"{loss_name.removeprefix('the ')} vs hyperparameters: {int(finite.sum())} trials with a loss"
    if one_length:
        title += f", each trained {int(epochs[0])} epoch{'s' if epochs[0] != 1 else ''}"
    title += f"; without a loss (crosses at the bottom): {hidden}" if hidden else "; none failed"
    if n_off:
        title += f"; {n_off} beyond the y-range (open triangles at the edge)"
    if ax is None:  # wrapped to the figure's width (about 13 characters an inch at this size)
        fig.suptitle(textwrap.fill(title, max(40, int(13 * fig.get_figwidth()))), fontsize="medium")
    else:  # the caller's figure keeps its own title
        logger.info("sensitivity: %s.", title)
    one_axes = isinstance(ax, Axes) or (ax is None and len(axes) == 1)
    drawn = axes[0] if one_axes else np.asarray(axes, dtype=object)
    return finish(fig, drawn, "sensitivity", show, save, owned=owned)
