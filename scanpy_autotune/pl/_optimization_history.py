"""``sat.pl.optimization_history``: held-out loss in completion order, with the running best."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from .._results import DEFAULT_KEY, Results, read_results
from .._stop_reason import CUT_SHORT
from .._validation import check_bool
from ._docs import _doc_params, doc_adata_key, doc_returns_ax, doc_show_save_ax
from ._utils import (
    check_log_scale,
    finish,
    log_axis,
    logger,
    loss_names,
    mark_off_scale,
    new_ax,
    note_off_scale,
    save_target,
    value_limits,
)


@_doc_params(
    doc_adata_key=doc_adata_key, doc_show_save_ax=doc_show_save_ax, doc_returns_ax=doc_returns_ax
)
def optimization_history(
    adata: Any,
    *,
    key: str = DEFAULT_KEY,
    x: str = "trials",
    log: bool = False,
    robust: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | None:
    """The loss of each trial in the order the trials finished, with the running best.

    The loss is the search's (the held-out ``-log p(x)`` by default, ``-Total``
    with ``objective="integration"``); the y label says which.

    x is the completion position (1 = first trial to finish), or with
    ``x="time"`` the minutes from the start of the first trial until the trial
    finished, which shows what a pruner or the convergence stop saved. Successful trials
    are points (``gid="points-ok"``), pruned trials with a loss triangles
    (``gid="points-pruned"``); trials without a loss are crosses along the bottom
    edge (``gid="points-fail"``, and ``"points-pruned-noloss"`` for pruned ones).
    The running best over successful trials is a step line (``gid="running-best"``),
    the best trial a star (``gid="best"``), and the default configuration's loss a
    dashed horizontal line (``gid="default"``) when it was evaluated. Trials
    beyond a robust y-range are open triangles along the edge they passed
    (``gid="points-off-scale"``). When the
    search ended because it had converged, a dotted vertical line
    (``gid="converged"``) marks the trial after which no trial started; when
    it was cut short (a timeout, Ctrl-C, a failure), the title says so.

    Parameters
    ----------
    {doc_adata_key}
    x
        ``"trials"`` (the completion position) or ``"time"`` (wall-clock
        minutes since the first trial started; searches resumed later include
        the pause; a ``ValueError`` for results that did not record when each
        trial finished).
    log
        Logarithmic y axis (a ``ValueError`` for losses that are not all
        positive, such as ``-Total``).
    robust
        Fit the y-limits to the non-outlying losses (Tukey's far fence).
    {doc_show_save_ax}

    Returns
    -------
    {doc_returns_ax}
    """
    if x not in ("trials", "time"):
        raise ValueError(f"x={x!r}: use 'trials' or 'time'.")
    log = check_bool("log", log)
    robust = check_bool("robust", robust)
    save = save_target("optimization_history", show, save)
    owned = ax is None  # a figure this call makes (closed if its save fails)
    res = read_results(adata, key)
    trials = res.trials.sort_values("completion_order", kind="stable")
    x_values = _x_values(trials, x)
    loss = trials["loss"].to_numpy(dtype=float)
    check_log_scale(loss, log, "losses")
    fig, ax = new_ax(ax, (7.0, 4.2))
    finite = np.isfinite(loss)
    _draw_trials(ax, x_values, loss, trials["status"].to_numpy())
    _draw_references(ax, res, trials, x_values, loss)
    if log:
        ax.set_yscale("log")
    # leave a strip along the bottom for the trials without a loss
    references = (trials["trial_id"] == res.best["trial_id"]).to_numpy()
    if res.default is not None:
        references |= (trials["trial_id"] == res.default["trial_id"]).to_numpy()
    limits, n_off = value_limits(loss, log, robust, pad_low=0.14 if (~finite).any() else None, shown=references)
    if limits is not None:
        ax.set_ylim(*limits)
        note_off_scale(ax, n_off)
        mark_off_scale(ax, x_values, loss, limits)
    if log:
        log_axis(ax)
    # every trial inside the axes: those drawn along the bottom strip do not widen the x-limits
    low, high = float(np.min(x_values)), float(np.max(x_values))
    pad = 0.04 * (high - low) if high > low else (0.5 if x == "trials" else 0.05)
    ax.set_xlim(low - pad, high + pad)
    if x == "trials":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trials finished" if x == "trials" else "minutes since the first trial started")
    ax.set_ylabel(loss_names(res.params)[0])
    reason = str(res.params.get("stop_reason", ""))
    # cut short while trials were still to run (not after them, as while the best model was prepared)
    cut_short = reason.startswith(CUT_SHORT) or reason.startswith("timeout")
    ax.set_title("optimization history" + (f"\nended early: {_shortened(reason)}" if cut_short else ""))
    ax.legend(fontsize="small", loc="best")
    return finish(fig, ax, "optimization_history", show, save, owned=owned)


def _shortened(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _x_values(trials: pd.DataFrame, x: str) -> np.ndarray:
    """Each trial's place on the x axis: its completion position, or the minutes until it finished."""
    if x == "trials":
        return trials["completion_order"].to_numpy(dtype=float) + 1
    finished = trials["finished_at"].to_numpy(dtype=float)
    if not np.isfinite(finished).all():
        raise ValueError(
            "x='time' needs the time each trial finished (finished_at), which these results "
            "were written without. Use x='trials'."
        )
    start = np.min(finished - trials["duration_s"].to_numpy(dtype=float))
    return (finished - start) / 60.0


def _draw_trials(ax: Axes, x_values: np.ndarray, loss: np.ndarray, status: np.ndarray) -> None:
    """The trials (points by status, crosses along the bottom for those without a loss) and the running best."""
    finite = np.isfinite(loss)
    ok = finite & (status == "ok")
    if ok.any():
        ax.scatter(
            x_values[ok], loss[ok], s=24, color="C0", zorder=3, gid="points-ok", label=f"ok ({int(ok.sum())})",
        )
        running = np.minimum.accumulate(loss[ok])
        xs = np.append(x_values[ok], x_values.max())
        ax.step(
            xs, np.append(running, running[-1]), where="post", color="C2", lw=1.6, zorder=2,
            gid="running-best", label="best so far",
        )
    pruned = finite & (status == "pruned")
    if pruned.any():
        ax.scatter(
            x_values[pruned], loss[pruned], s=30, marker="^", facecolors="none", edgecolors="C1", zorder=3,
            gid="points-pruned", label=f"pruned ({int(pruned.sum())})",
        )
    bottom = ax.get_xaxis_transform()
    for stat, gid, color, text in (
        ("fail", "points-fail", "C3", "failed"),
        ("pruned", "points-pruned-noloss", "C1", "pruned, no loss"),
    ):
        sel = (status == "fail") if stat == "fail" else (~finite & (status == stat))
        if sel.any():
            ax.scatter(
                x_values[sel], np.full(sel.sum(), 0.03), transform=bottom, marker="x", s=30, color=color,
                zorder=3, clip_on=False, gid=gid, label=f"{text} ({int(sel.sum())}, at the bottom)",
            )


def _draw_references(ax: Axes, res: Results, trials: pd.DataFrame, x_values: np.ndarray, loss: np.ndarray) -> None:
    """The best trial (a star), the default configuration's loss (dashed) and where the search converged (dotted)."""
    if res.best["trial_id"] >= 0:
        at = (trials["trial_id"] == res.best["trial_id"]).to_numpy()
        ax.scatter(
            x_values[at], loss[at], marker="*", s=200, facecolors="gold", edgecolors="black", linewidths=0.8,
            zorder=4, gid="best", label=f"best: trial {res.best['trial_id']}",
        )
    if res.default is not None and np.isfinite(res.default["loss"]):
        ax.axhline(
            res.default["loss"], ls="--", lw=1.2, color="0.35", zorder=1, gid="default",
            label=f"default config (trial {res.default['trial_id']})",
        )
    elif res.default is not None:
        logger.info(
            "The default configuration (trial %d) has no loss; no reference line.",
            res.default["trial_id"],
        )
    converged_after = int(res.params.get("converged_after", 0) or 0)
    if converged_after > 0:
        stopped_at = x_values[min(converged_after, len(x_values)) - 1]
        ax.axvline(
            stopped_at, ls=":", lw=1.4, color="C4", zorder=1, gid="converged",
            label=f"converged after {converged_after} trials",
        )
