"""Plots of a search, read only from ``adata.uns[key]`` (Scanpy conventions).

Every function takes ``key="autotune"``, ``show=None`` and ``save=None``; those
that draw one panel also take ``ax=None``. With ``show=False`` they return the
Axes (a Figure for :func:`sensitivity`); otherwise they call
:func:`matplotlib.pyplot.show` and return ``None``. ``save=True`` writes
``figures/<plot name>.png``; a string with a directory (``"out/hist.png"``) is
used as the path, a bare string (``"_cortex"``) is appended to the plot name in
``figures/`` (Scanpy's ``sc.settings.figdir`` when Scanpy is imported). Files are
PNG unless the path ends in another format matplotlib writes.

This module imports neither torch, nor the model, nor the search.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, LinearSegmentedColormap, Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, ScalarFormatter

from ._results import DEFAULT_KEY, Results, read_results

__all__ = [
    "trial_history",
    "sensitivity",
    "optimization_history",
    "param_importance",
    "importances",
]

logger = logging.getLogger("scanpy_autotune")

HISTORY_LABELS = {
    "validation": "validation ELBO (held out of training)",
    "train": "training ELBO",
}
LOSS_LABEL = "held-out loss (−log p(x) per cell)"
_STYLE = {  # status -> line style, width, alpha
    "ok": ("-", 1.3, 0.9),
    "pruned": (":", 1.1, 0.9),
    "fail": ("--", 1.0, 0.7),
}
_IMAGE_SUFFIXES = {".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff", ".eps", ".ps", ".webp"}


def _trial_cmap() -> Colormap:
    """``RdYlGn`` with its pale yellow middle darkened, so mid-search lines stay visible."""
    t = np.linspace(0.0, 1.0, 256)
    rgba = colormaps["RdYlGn"](t)
    rgba[:, :3] *= (1.0 - 0.3 * np.exp(-(((t - 0.5) / 0.2) ** 2)))[:, None]
    return LinearSegmentedColormap.from_list("autotune_trials", rgba)


TRIAL_CMAP: Colormap = _trial_cmap()


# ----------------------------------------------------------------------------- helpers


def _get_cmap(cmap: str | Colormap | None) -> Colormap:
    if cmap is None:
        return TRIAL_CMAP
    return colormaps[cmap] if isinstance(cmap, str) else cmap


def _trial_norm(trial_ids: np.ndarray) -> Normalize:
    lo, hi = (float(trial_ids.min()), float(trial_ids.max())) if trial_ids.size else (0.0, 1.0)
    return Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)


def _greyed(color: Any, amount: float = 0.55) -> tuple[float, float, float]:
    """Blend ``color`` toward mid grey (for failed trials)."""
    rgb = np.asarray(to_rgb(color))
    return tuple((1.0 - amount) * rgb + amount * 0.55)


def _figdir() -> Path:
    scanpy = sys.modules.get("scanpy")
    figdir = getattr(getattr(scanpy, "settings", None), "figdir", None)
    return Path(figdir) if figdir is not None else Path("figures")


def _save_path(name: str, save: bool | str) -> Path:
    if save is True:
        return _figdir() / f"{name}.png"
    path = Path(str(save))
    if path.parent == Path(".") and not path.is_absolute():
        path = _figdir() / f"{name}{save}"
    if path.suffix.lower() not in _IMAGE_SUFFIXES:
        path = path.with_name(path.name + ".png")
    return path


def _finish(fig: Figure, ret: Any, name: str, show: bool | None, save: bool | str | None) -> Any:
    """Save (when asked), then show and return ``None``, or return ``ret`` when ``show=False``."""
    if save:
        path = _save_path(name, save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
        logger.info("Saved %s to %s.", name, path)
    if show is False:
        return ret
    plt.show()
    return None


def _new_ax(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _fences(values: np.ndarray, fence: float = 3.0) -> tuple[float, float]:
    """Tukey's far fences: ``fence`` interquartile ranges beyond the quartiles."""
    if values.size < 4:
        return -np.inf, np.inf
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    scale = max(q3 - q1, 1e-3 * abs(med), 1e-12)
    return q1 - fence * scale, q3 + fence * scale


def _inliers(values: np.ndarray, fence: float = 3.0) -> np.ndarray:
    """Mask of values within Tukey's far fences."""
    lo, hi = _fences(values, fence)
    return (values >= lo) & (values <= hi)


def _padded(
    lo: float, hi: float, log: bool, pad: float = 0.05, pad_low: float | None = None
) -> tuple[float, float]:
    """Axis limits around ``[lo, hi]`` (given in log10 space when ``log``)."""
    span = hi - lo
    if span <= 0:
        span = max(abs(hi), 1.0) if not log else 1.0
    lo, hi = lo - (pad if pad_low is None else pad_low) * span, hi + pad * span
    return (10.0**lo, 10.0**hi) if log else (lo, hi)


def _to_space(values: np.ndarray, log: bool) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if not log:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(values), np.nan)


def _note_off_scale(ax: Axes, n_off: int) -> None:
    if n_off:
        ax.text(
            0.99,
            0.99,
            f"{n_off} beyond the y-range (robust=False shows all)",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize="x-small",
            color="0.35",
            gid="off-scale-note",
        )


def _value_limits(
    values: np.ndarray, log: bool, robust: bool = True, pad_low: float | None = None
) -> tuple[tuple[float, float] | None, int]:
    """y-limits for a set of points (outliers left out when ``robust``) and how many fall outside."""
    space = _to_space(values, log)
    space = space[np.isfinite(space)]
    if space.size == 0:
        return None, 0
    keep = _inliers(space) if robust else np.ones(space.shape, dtype=bool)
    lo, hi = _padded(float(space[keep].min()), float(space[keep].max()), log, pad_low=pad_low)
    return (lo, hi), int((~keep).sum())


def _log_axis(ax: Axes) -> None:
    """Log y axis; with less than two decades, plain numbers instead of 6x10^2."""
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 100:
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _kind_of(trials: pd.DataFrame, name: str) -> str:
    col = trials[name]
    if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
        return "categorical"
    return "log" if name == "lr" else "numeric"


def _select_params(res: Results, params: str | Sequence[str] | None) -> dict[str, str]:
    """Name -> kind for the requested hyperparameters (default: the searched ones)."""
    kinds = res.param_kinds()
    if params is None:
        if not kinds:
            raise ValueError(f"adata.uns[{res.key!r}] records no hyperparameters to plot.")
        return kinds
    names = [params] if isinstance(params, str) else list(params)
    valid = list(kinds) + [h for h in res.hyperparameters if h not in kinds]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"Unknown hyperparameter(s) {unknown}; valid names are {valid}.")
    if not names:
        raise ValueError(f"params is empty; valid names are {valid}.")
    return {n: kinds.get(n) or _kind_of(res.trials, n) for n in names}


def _categories(col: pd.Series) -> list[Any]:
    values = [v for v in pd.unique(col) if not pd.isna(v)]
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _finite_loss(trials: pd.DataFrame) -> np.ndarray:
    return np.isfinite(trials["loss"].to_numpy(dtype=float))


# ----------------------------------------------------------------------------- trial_history


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
    rows: list[np.ndarray], log: bool
) -> tuple[tuple[float, float] | None, np.ndarray]:
    """Robust y-limits from final values: outlying trials are left out; early epochs may be cut."""
    rows = [_to_space(r, log) for r in rows]
    rows = [r[np.isfinite(r)] for r in rows]
    drawn = np.asarray([r.size > 0 for r in rows])
    if not drawn.any():
        return None, np.zeros(len(rows), dtype=bool)
    finals = np.asarray([r[-1] if r.size else np.nan for r in rows])
    keep = drawn.copy()
    keep[drawn] = _inliers(finals[drawn])
    lo = min(float(r.min()) for r, k in zip(rows, keep, strict=True) if k)
    pooled = np.concatenate([r for r, k in zip(rows, keep, strict=True) if k])
    hi = max(float(finals[keep].max()), float(np.percentile(pooled, 90)))
    limits = _padded(lo, hi, log)
    hi_space = _to_space(np.asarray([limits[1]]), log)[0]
    off = drawn & (finals > hi_space)
    return limits, off


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
    """Per-epoch ELBO of every trial, first trial red, last trial green.

    The curves are drawn as the negative ELBO per cell (lower is better). Each
    trial with any recorded epoch is one line (``gid="trial-<id>"``, label
    ``"trial <id> (<status>)"``); failed trials are dashed and greyed, pruned
    trials dotted, the best trial thicker. Failed trials that never finished an
    epoch have no history and draw nothing (the legend counts them).

    Parameters
    ----------
    adata
        An :class:`~anndata.AnnData` after :func:`scanpy_autotune.tl.autotune`.
    key
        Where the results are stored in ``adata.uns``.
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
        Colormap over trial ids (default: a darkened ``RdYlGn``, red to green).
    ax
        Axes to draw into; a new figure when ``None``.
    show
        ``False`` returns the Axes; otherwise :func:`matplotlib.pyplot.show`.
    save
        ``True`` or a path / suffix to write a PNG (see the module docstring).

    Returns
    -------
    Axes or None
        The Axes when ``show=False``.
    """
    res = read_results(adata, key)
    curves = _as_loss(res.curves(which))
    trials = res.trials
    cmap_ = _get_cmap(cmap)
    ids = trials["trial_id"].to_numpy()
    norm = _trial_norm(ids)
    fig, ax = _new_ax(ax, (7.5, 4.5))
    epochs = np.arange(1, curves.shape[1] + 1)
    rows, n_drawn = [], {s: 0 for s in _STYLE}
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
            color = _greyed(color)
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
    if log:
        ax.set_yscale("log")
    if robust:
        limits, off = _history_limits(rows, log)
        if limits is not None:
            ax.set_ylim(*limits)
            _note_off_scale(ax, int(off.sum()))
    if log:
        _log_axis(ax)
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
    ax.legend(handles=handles, loc="upper right", bbox_to_anchor=(1.0, 0.93), fontsize="small")
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap_), ax=ax, label="trial id (first red → last green)"
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per cell (lower is better)")
    ax.set_title(
        f"{HISTORY_LABELS.get(which, which)}, {sum(n_drawn.values())} of {len(trials)} trials"
    )
    return _finish(fig, ax, "trial_history", show, save)


# ----------------------------------------------------------------------------- sensitivity

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
    cats = _categories(col)
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
    if kind == "log":
        ax.set_xscale("log")
    ax.set_title(name)
    ax.set_gid(f"param-{name}")


def sensitivity(
    adata: Any,
    params: str | Sequence[str] | None = None,
    *,
    key: str = DEFAULT_KEY,
    ncols: int = 3,
    robust: bool = True,
    cmap: str | Colormap = "viridis",
    panel_size: tuple[float, float] = (3.4, 2.9),
    show: bool | None = None,
    save: bool | str | None = None,
) -> Figure | None:
    """Held-out loss against each searched hyperparameter, one panel each.

    Categorical hyperparameters are drawn as jittered points over a box per
    value, numeric ones as a scatter (log x for ``"log"`` kinds and ``lr``).
    Points are coloured by the epochs each trial trained (``gid="points-<status>"``,
    pruned trials as triangles); the best trial is a gold star (``gid="best"``).
    Only trials with a finite loss are points; the title counts the others.

    Parameters
    ----------
    adata
        An :class:`~anndata.AnnData` after :func:`scanpy_autotune.tl.autotune`.
    params
        Hyperparameter name(s) to plot; default every searched one.
    key
        Where the results are stored in ``adata.uns``.
    ncols
        Panels per row.
    robust
        Fit the shared y-limits to the non-outlying losses (Tukey's far fence).
    cmap
        Colormap for the number of epochs.
    panel_size
        Width and height of one panel, in inches.
    show
        ``False`` returns the Figure; otherwise :func:`matplotlib.pyplot.show`.
    save
        ``True`` or a path / suffix to write a PNG (see the module docstring).

    Returns
    -------
    Figure or None
        The Figure when ``show=False``.

    Raises
    ------
    ValueError
        For an unknown hyperparameter name (the message lists the valid ones).
    """
    res = read_results(adata, key)
    kinds = _select_params(res, params)
    trials = res.trials
    cmap_ = _get_cmap(cmap)
    ncols = max(1, min(int(ncols), len(kinds)))
    nrows = -(-len(kinds) // ncols)
    fig = plt.figure(
        figsize=(panel_size[0] * ncols + 1.0, panel_size[1] * nrows + 0.7), layout="constrained"
    )
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    finite = _finite_loss(trials)
    epochs = trials["n_epochs"].to_numpy(dtype=float)[finite]
    epochs = epochs[np.isfinite(epochs)]
    color_norm = Normalize(*(epochs.min(), epochs.max()) if epochs.size else (0, 1))
    for ax, (name, kind) in zip(axes, kinds.items(), strict=False):
        _draw_panel(ax, trials, name, kind, color_norm, cmap_, res.best["trial_id"])
    for ax in axes[len(kinds) :]:
        ax.remove()
    used = list(axes[: len(kinds)])
    for ax in used[::ncols]:
        ax.set_ylabel(LOSS_LABEL)
    n_off = 0
    if robust:
        limits, n_off = _value_limits(trials["loss"].to_numpy(dtype=float), log=False)
        if limits is not None:
            used[0].set_ylim(*limits)
    fig.colorbar(
        ScalarMappable(norm=color_norm, cmap=cmap_), ax=used, label="epochs trained", shrink=0.9
    )
    n_status = trials.loc[~finite, "status"].value_counts()
    hidden = ", ".join(f"{n} {s if s != 'fail' else 'failed'}" for s, n in n_status.items())
    title = f"held-out loss vs hyperparameters: {int(finite.sum())} trials shown"
    title += f"; not shown (no loss): {hidden}" if hidden else "; none failed"
    if n_off:
        title += f"; {n_off} beyond the y-range"
    fig.suptitle(title, fontsize="medium")
    return _finish(fig, fig, "sensitivity", show, save)


# ----------------------------------------------------------------------------- optimization_history


def optimization_history(
    adata: Any,
    *,
    key: str = DEFAULT_KEY,
    log: bool = False,
    robust: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
) -> Axes | None:
    """Held-out loss of each trial in the order the trials finished, with the running best.

    x is the completion position (1 = first trial to finish). Successful trials
    are points (``gid="points-ok"``), pruned trials with a loss triangles
    (``gid="points-pruned"``); trials without a loss are crosses along the bottom
    edge (``gid="points-fail"``, and ``"points-pruned-noloss"`` for pruned ones).
    The running best over successful trials is a step line (``gid="running-best"``),
    the best trial a star (``gid="best"``), and the default configuration's loss a
    dashed horizontal line (``gid="default"``) when it was evaluated.

    Parameters
    ----------
    adata
        An :class:`~anndata.AnnData` after :func:`scanpy_autotune.tl.autotune`.
    key
        Where the results are stored in ``adata.uns``.
    log
        Logarithmic y axis.
    robust
        Fit the y-limits to the non-outlying losses (Tukey's far fence).
    ax
        Axes to draw into; a new figure when ``None``.
    show
        ``False`` returns the Axes; otherwise :func:`matplotlib.pyplot.show`.
    save
        ``True`` or a path / suffix to write a PNG (see the module docstring).

    Returns
    -------
    Axes or None
        The Axes when ``show=False``.
    """
    res = read_results(adata, key)
    trials = res.trials.sort_values("completion_order", kind="stable")
    fig, ax = _new_ax(ax, (7.0, 4.2))
    x = trials["completion_order"].to_numpy(dtype=float) + 1
    loss = trials["loss"].to_numpy(dtype=float)
    status = trials["status"].to_numpy()
    finite = np.isfinite(loss)
    ok = finite & (status == "ok")
    if ok.any():
        ax.scatter(
            x[ok],
            loss[ok],
            s=24,
            color="C0",
            zorder=3,
            gid="points-ok",
            label=f"ok ({int(ok.sum())})",
        )
        running = np.minimum.accumulate(loss[ok])
        xs = np.append(x[ok], x.max())
        ax.step(
            xs,
            np.append(running, running[-1]),
            where="post",
            color="C2",
            lw=1.6,
            zorder=2,
            gid="running-best",
            label="best so far",
        )
    pruned = finite & (status == "pruned")
    if pruned.any():
        ax.scatter(
            x[pruned],
            loss[pruned],
            s=30,
            marker="^",
            facecolors="none",
            edgecolors="C1",
            zorder=3,
            gid="points-pruned",
            label=f"pruned ({int(pruned.sum())})",
        )
    bottom = ax.get_xaxis_transform()
    for stat, gid, color, text in (
        ("fail", "points-fail", "C3", "failed"),
        ("pruned", "points-pruned-noloss", "C1", "pruned, no loss"),
    ):
        sel = (status == "fail") if stat == "fail" else (~finite & (status == stat))
        if sel.any():
            ax.scatter(
                x[sel],
                np.full(sel.sum(), 0.03),
                transform=bottom,
                marker="x",
                s=30,
                color=color,
                zorder=3,
                clip_on=False,
                gid=gid,
                label=f"{text} ({int(sel.sum())}, at the bottom)",
            )
    if res.best["trial_id"] >= 0:
        at = (trials["trial_id"] == res.best["trial_id"]).to_numpy()
        ax.scatter(
            x[at],
            loss[at],
            marker="*",
            s=200,
            facecolors="gold",
            edgecolors="black",
            linewidths=0.8,
            zorder=4,
            gid="best",
            label=f"best: trial {res.best['trial_id']}",
        )
    if res.default is not None and np.isfinite(res.default["loss"]):
        ax.axhline(
            res.default["loss"],
            ls="--",
            lw=1.2,
            color="0.35",
            zorder=1,
            gid="default",
            label=f"default config (trial {res.default['trial_id']})",
        )
    elif res.default is not None:
        logger.info(
            "The default configuration (trial %d) has no loss; no reference line.",
            res.default["trial_id"],
        )
    if log:
        ax.set_yscale("log")
    # leave a strip along the bottom for the trials without a loss
    limits, n_off = _value_limits(loss, log, robust, pad_low=0.14 if (~finite).any() else None)
    if limits is not None:
        ax.set_ylim(*limits)
        _note_off_scale(ax, n_off)
    if log:
        _log_axis(ax)
    ax.set_xlabel("trials finished")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title("optimization history")
    ax.legend(fontsize="small", loc="upper right", bbox_to_anchor=(1.0, 0.93))
    return _finish(fig, ax, "optimization_history", show, save)


# ----------------------------------------------------------------------------- param_importance

MIN_TRIALS_IMPORTANCE = 5
_METHOD_TEXT = {
    "permutation": "out-of-fold permutation importance",
    "impurity": "impurity importance",
}


def _feature_matrix(trials: pd.DataFrame, kinds: dict[str, str]) -> np.ndarray:
    columns = []
    for name, kind in kinds.items():
        col = trials[name]
        if kind == "categorical":
            lookup = {c: i for i, c in enumerate(_categories(col))}
            values = np.asarray([lookup.get(v, -1) for v in col], dtype=float)
        else:
            values = col.to_numpy(dtype=float, na_value=np.nan)
            if kind == "log":
                values = _to_space(values, log=True)
            fill = np.nanmedian(values) if np.isfinite(values).any() else 0.0
            values = np.where(np.isfinite(values), values, fill)
        columns.append(values)
    return np.column_stack(columns)


def _r2(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R² of each row of ``pred`` (shape ``(..., n)``) against ``y``."""
    ss_tot = float(((y - y.mean()) ** 2).sum())
    ss_res = ((pred - y) ** 2).sum(axis=-1)
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else np.zeros(ss_res.shape)


def _permutation_importance(
    make_model: Any, X: np.ndarray, y: np.ndarray, n_repeats: int = 10, n_folds: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold permutation importance: R² lost on unseen trials when a column is shuffled.

    A forest is fit on each of ``n_folds`` folds' complement; the held-out
    trials are predicted as they are and with one column replaced by values of
    randomly drawn trials. R² is computed once over all out-of-fold predictions,
    so that every fold, however small, counts. In-sample permutation importance
    would mostly measure what a fully grown forest memorised. Seeded (0).
    """
    rng = np.random.default_rng(0)
    n, p = X.shape
    folds = np.array_split(rng.permutation(n), min(n_folds, n))
    base = np.empty(n)
    shuffled = np.empty((p, n_repeats, n))
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        model = make_model().fit(X[train], y[train])
        base[test] = model.predict(X[test])
        stacked = np.repeat(X[test][None, None], p, axis=0).repeat(n_repeats, axis=1)
        for j in range(p):
            for r in range(n_repeats):
                stacked[j, r, :, j] = X[rng.permutation(n)[: test.size], j]
        pred = model.predict(stacked.reshape(-1, p)).reshape(p, n_repeats, test.size)
        shuffled[:, :, test] = pred
    drop = _r2(y, base) - _r2(y, shuffled)
    return drop.mean(axis=1), drop.std(axis=1)


def importances(
    adata: Any,
    params: str | Sequence[str] | None = None,
    *,
    key: str = DEFAULT_KEY,
    method: str = "permutation",
    n_estimators: int = 100,
    robust: bool = True,
) -> pd.DataFrame:
    """Importance of each hyperparameter for the held-out loss (what :func:`param_importance` draws).

    A random forest (``random_state=0``) is fit to the successful trials, with
    categorical values ordinal-encoded and ``"log"`` hyperparameters in log10.

    Parameters
    ----------
    adata
        An :class:`~anndata.AnnData` after :func:`scanpy_autotune.tl.autotune`.
    params
        Hyperparameters to rank; default every searched one.
    key
        Where the results are stored in ``adata.uns``.
    method
        ``"permutation"``: out-of-fold permutation importance, the R² lost
        on trials unseen by the forest (5-fold) when a column is shuffled
        (10 repeats); ``"impurity"``: mean decrease in impurity of a forest
        fit to every trial.
    n_estimators
        Trees in the forest.
    robust
        Clip the losses to Tukey's far fences first, so that one diverging
        trial does not decide the ranking.

    Returns
    -------
    pandas.DataFrame
        Index: hyperparameter; columns ``importance`` and ``std``; sorted by
        decreasing importance.

    Raises
    ------
    ValueError
        With fewer than 5 successful trials, or an unknown method or name.
    ImportError
        Without scikit-learn.
    """
    if method not in ("permutation", "impurity"):
        raise ValueError(f"method={method!r} is not valid; use 'permutation' or 'impurity'.")
    res = read_results(adata, key)
    kinds = _select_params(res, params)
    trials = res.trials[(res.trials["status"] == "ok") & _finite_loss(res.trials)]
    if len(trials) < MIN_TRIALS_IMPORTANCE:
        raise ValueError(
            f"param_importance needs at least {MIN_TRIALS_IMPORTANCE} successful trials with a "
            f"loss; adata.uns[{key!r}] has {len(trials)}. Run more trials (a larger max_evals)."
        )
    try:
        from sklearn.ensemble import RandomForestRegressor
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("param_importance needs scikit-learn: pip install scikit-learn") from err
    X = _feature_matrix(trials, kinds)
    y = trials["loss"].to_numpy(dtype=float)
    if robust:
        y = np.clip(y, *_fences(y))

    def make_forest() -> Any:
        return RandomForestRegressor(n_estimators=n_estimators, random_state=0, n_jobs=1)

    if method == "permutation":
        mean, std = _permutation_importance(make_forest, X, y)
    else:
        forest = make_forest().fit(X, y)
        mean = forest.feature_importances_
        std = np.std([tree.feature_importances_ for tree in forest.estimators_], axis=0)
    table = pd.DataFrame(
        {"importance": mean, "std": std}, index=pd.Index(list(kinds), name="hyperparameter")
    )
    return table.sort_values("importance", ascending=False, kind="stable")


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
    """Bar chart of how much each hyperparameter explains the held-out loss.

    See :func:`importances` for the computation; the most important
    hyperparameter is the top bar.

    Parameters
    ----------
    adata
        An :class:`~anndata.AnnData` after :func:`scanpy_autotune.tl.autotune`.
    params
        Hyperparameters to rank; default every searched one.
    key
        Where the results are stored in ``adata.uns``.
    method
        ``"permutation"`` or ``"impurity"`` random-forest importance.
    n_estimators
        Trees in the forest.
    robust
        Clip outlying losses first (see :func:`importances`).
    ax
        Axes to draw into; a new figure when ``None``.
    show
        ``False`` returns the Axes; otherwise :func:`matplotlib.pyplot.show`.
    save
        ``True`` or a path / suffix to write a PNG (see the module docstring).

    Returns
    -------
    Axes or None
        The Axes when ``show=False``.

    Raises
    ------
    ValueError
        With fewer than 5 successful trials, or an unknown method or name.
    """
    table = importances(
        adata, params, key=key, method=method, n_estimators=n_estimators, robust=robust
    )
    trials = read_results(adata, key).trials
    n_ok = int(((trials["status"] == "ok") & _finite_loss(trials)).sum())
    fig, ax = _new_ax(ax, (6.0, 0.45 * len(table) + 1.6))
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
        f"hyperparameter importance for the held-out loss\n"
        f"random forest, {_METHOD_TEXT[method]}, {n_ok} successful trials"
        + (" (outlying losses clipped)" if robust else ""),
        fontsize="medium",
    )
    return _finish(fig, ax, "param_importance", show, save)
