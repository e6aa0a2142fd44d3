"""``sat.pl.trial_history``: the per-epoch ELBO of every trial."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .._results import DEFAULT_KEY, read_results
from .._validation import check_bool
from ._docs import _doc_params, doc_adata_key, doc_returns_ax, doc_show_save_ax
from ._utils import (
    check_log_scale,
    finish,
    get_cmap,
    greyed,
    inliers,
    log_axis,
    new_ax,
    note_off_scale,
    padded,
    save_target,
    to_space,
    trial_norm,
)

HISTORY_LABELS = {
    "validation": "validation ELBO (held out of training)",
    "train": "training ELBO",
}
_STYLE = {  # status -> line style, width, alpha
    "ok": ("-", 1.3, 0.9),
    "pruned": (":", 1.1, 0.9),
    "fail": ("--", 1.0, 0.7),
}


def _as_loss(curves: np.ndarray) -> np.ndarray:
    """Curves as a negative ELBO (lower is better), whatever sign convention was recorded.

    The ELBO of count data is a log-probability bound, so it is negative; a
    history whose values are mostly negative is negated.
    """
    finite = curves[np.isfinite(curves)]
    if finite.size and np.median(finite) < 0:
        return -curves
    return curves


def _history_limits(
    rows: list[np.ndarray], log: bool, best_row: int | None = None
) -> tuple[tuple[float, float] | None, np.ndarray]:
    """Robust y-limits from final values: outlying trials are left out (never the best, ``best_row``);
    early epochs may be cut."""
    rows = [to_space(r, log) for r in rows]
    rows = [r[np.isfinite(r)] for r in rows]
    drawn = np.asarray([r.size > 0 for r in rows])
    if not drawn.any():
        return None, np.zeros(len(rows), dtype=bool)
    finals = np.asarray([r[-1] if r.size else np.nan for r in rows])
    keep = drawn.copy()
    keep[drawn] = inliers(finals[drawn])
    if best_row is not None and drawn[best_row]:
        keep[best_row] = True
    lo = min(float(r.min()) for r, k in zip(rows, keep, strict=True) if k)
    pooled = np.concatenate([r for r, k in zip(rows, keep, strict=True) if k])
    hi = max(float(finals[keep].max()), float(np.percentile(pooled, 90)))
    limits = padded(lo, hi, log)
    hi_space = to_space(np.asarray([limits[1]]), log)[0]
    off = drawn & (finals > hi_space)
    return limits, off


@_doc_params(
    doc_adata_key=doc_adata_key, doc_show_save_ax=doc_show_save_ax, doc_returns_ax=doc_returns_ax
)
def trial_history(
    adata: Any,
    *,
    key: str = DEFAULT_KEY,
    which: str = "validation",
    log: bool = False,
    robust: bool = True,
    cmap: str | Colormap | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | None:
    """Per-epoch ELBO of every trial, coloured from the first trial to the last.

    The curves are drawn as the negative ELBO per cell (lower is better). Each
    trial with any recorded epoch is one line (``gid="trial-<id>"``, label
    ``"trial <id> (<status>)"``); failed trials are dashed and greyed, pruned
    trials dotted, the best trial thicker. Failed trials that never finished an
    epoch have no history and draw nothing (the legend counts them).

    A trial keeps the weights of its best validation epoch, not its last: a
    dot on each successful trial's curve marks that epoch (``gid="kept"``),
    so a trial whose validation ELBO rose after its first epochs shows that
    its model is an early one.

    Parameters
    ----------
    {doc_adata_key}
    which
        ``"validation"``: the ELBO on the validation slice (carved from the
        training cells, held out of the gradient updates); ``"train"``: the
        training ELBO.
    log
        Logarithmic y axis.
    robust
        Fit the y-limits to the trials whose final value is not an outlier
        (Tukey's far fence) and clip the first, steepest epochs, so that a few
        diverging trials cannot flatten the others; a note counts the curves
        that end beyond the range.
    cmap
        Colormap over trial ids, or its name (default: ``viridis``, from dark
        blue to yellow-green, without its palest yellow); a ``ValueError`` for
        a name matplotlib does not know.
    {doc_show_save_ax}

    Returns
    -------
    {doc_returns_ax}
    """
    log = check_bool("log", log)
    robust = check_bool("robust", robust)
    save = save_target("trial_history", show, save)
    owned = ax is None  # a figure this call makes (closed if its save fails)
    res = read_results(adata, key)
    curves = _as_loss(res.curves(which))
    check_log_scale(curves, log, "negative ELBO values")
    trials = res.trials
    cmap_ = get_cmap(cmap)
    ids = trials["trial_id"].to_numpy()
    norm = trial_norm(ids)
    fig, ax = new_ax(ax, (7.5, 4.5))
    epochs = np.arange(1, curves.shape[1] + 1)
    kept_epochs = trials["best_epoch"].to_numpy(dtype=float) if "best_epoch" in trials else np.full(len(ids), np.nan)
    rows, n_drawn, kept = [], {s: 0 for s in _STYLE}, []
    for i, (tid, status) in enumerate(zip(ids, trials["status"], strict=True)):
        row = curves[i]
        finite = np.flatnonzero(np.isfinite(row))
        rows.append(row[: finite[-1] + 1] if finite.size else row[:0])
        if not finite.size:
            continue
        n_drawn[status] += 1
        ls, lw, alpha = _STYLE[status]
        color = cmap_(norm(tid))
        if status == "fail":
            color = greyed(color)
        if tid == res.best["trial_id"]:
            lw *= 2.2
        ax.plot(
            epochs[: finite[-1] + 1],
            rows[-1],
            ls=ls,
            lw=lw,
            alpha=alpha,
            color=color,
            gid=f"trial-{tid}",
            label=f"trial {tid} ({status})",
            zorder=3 if status == "ok" else 2,
        )
        at = kept_epochs[i]
        if status == "ok" and np.isfinite(at) and 0 <= at <= finite[-1] and np.isfinite(row[int(at)]):
            kept.append((epochs[int(at)], row[int(at)], color))
    if kept:
        xs, ys, colors = zip(*kept, strict=True)
        ax.scatter(xs, ys, s=22, c=list(colors), edgecolors="black", linewidths=0.6, zorder=4, gid="kept")
    if log:
        ax.set_yscale("log")
    if robust:
        best_rows = np.flatnonzero(ids == res.best["trial_id"])
        limits, off = _history_limits(rows, log, int(best_rows[0]) if best_rows.size else None)
        if limits is not None:
            ax.set_ylim(*limits)
            note_off_scale(ax, int(off.sum()))
    if log:
        log_axis(ax)
    n_status = trials["status"].value_counts()
    handles = []
    for status, text in (("ok", "ok"), ("pruned", "pruned"), ("fail", "failed")):
        ls, lw, _ = _STYLE[status]
        n_all = int(n_status.get(status, 0))
        label = f"{text} ({n_all})"
        if n_drawn[status] < n_all:
            label = f"{text} ({n_all}; {n_all - n_drawn[status]} without history)"
        handles.append(Line2D([], [], ls=ls, lw=lw, color="0.4", label=label))
    if res.best["trial_id"] >= 0:
        handles.append(
            Line2D(
                [],
                [],
                lw=_STYLE["ok"][1] * 2.2,
                color="0.2",
                label=f"best: trial {res.best['trial_id']}",
            )
        )
    if kept:
        handles.append(
            Line2D([], [], ls="", marker="o", markersize=5, markerfacecolor="0.6", markeredgecolor="black",
                   label="weights kept (best validation epoch)")
        )
    handles += [line for line in ax.get_lines() if line.get_gid() == "off-scale-note"]
    ax.legend(handles=handles, loc="best", fontsize="small")
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap_), ax=ax, label="trial id (first → last)")
    colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per cell (lower is better)")
    ax.set_title(
        f"{HISTORY_LABELS.get(which, which)}, {sum(n_drawn.values())} of {len(trials)} trials"
    )
    return finish(fig, ax, "trial_history", show, save, owned=owned)
