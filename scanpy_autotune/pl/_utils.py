"""Figure and axis helpers shared by the plots: colours, axes, robust limits, saving."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, LinearSegmentedColormap, Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, ScalarFormatter

# the fences that clip outlying losses in tl.importances also decide what a robust axis leaves out
from .._importances import tukey_fences
from .._paths import check_output_file

logger = logging.getLogger("scanpy_autotune")

LOSS_LABEL = "held-out loss (−log p(x) per cell)"


def loss_names(params: Mapping[str, Any]) -> tuple[str, str]:
    """What a search's ``loss`` is, from ``uns[key]["params"]["objective"]``: an axis label and a short name."""
    objective = str(params.get("objective", "marginal_nll"))
    if objective == "marginal_nll":
        return LOSS_LABEL, "the held-out loss"
    if objective == "integration":
        return "−Total (scIB integration score)", "−Total (scIB)"
    name = objective.split(" sha256:")[0]  # a callable's identity: its name and a hash of its code
    return f"loss of your objective {name}", f"the objective {name}"
_IMAGE_SUFFIXES = {".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff", ".eps", ".ps", ".webp"}


# ----------------------------------------------------------------------------- colours


def _trial_cmap() -> Colormap:
    """``viridis`` without its palest yellow, so the last trials' lines stay visible on white.

    Perceptually uniform and readable with red-green colour blindness (the
    red-to-green map it replaced was neither, and its middle trials looked alike).
    """
    return LinearSegmentedColormap.from_list("autotune_trials", colormaps["viridis"](np.linspace(0.0, 0.88, 256)))


TRIAL_CMAP: Colormap = _trial_cmap()


def get_cmap(cmap: str | Colormap | None) -> Colormap:
    """A colormap by name or as given; :data:`TRIAL_CMAP` for ``None``."""
    if cmap is None:
        return TRIAL_CMAP
    if isinstance(cmap, Colormap):
        return cmap
    if isinstance(cmap, str) and cmap in colormaps:
        return colormaps[cmap]
    raise ValueError(f"cmap={cmap!r} is not a matplotlib colormap or the name of one (e.g. 'viridis').")


def trial_norm(trial_ids: np.ndarray) -> Normalize:
    """Normalisation of trial ids onto 0..1 (first to last trial)."""
    lo, hi = (float(trial_ids.min()), float(trial_ids.max())) if trial_ids.size else (0.0, 1.0)
    return Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)


def greyed(color: Any, amount: float = 0.55) -> tuple[float, float, float]:
    """Blend ``color`` toward mid grey (for failed trials)."""
    rgb = np.asarray(to_rgb(color))
    return tuple((1.0 - amount) * rgb + amount * 0.55)


# ----------------------------------------------------------------------------- figures


def _scanpy_setting(name: str, default: Any) -> Any:
    """``sc.settings.<name>`` when Scanpy is imported (the plots follow it), else ``default``."""
    value = getattr(getattr(sys.modules.get("scanpy"), "settings", None), name, None)
    return default if value is None else value


def _figdir() -> Path:
    return Path(_scanpy_setting("figdir", "figures"))


def _autoshow() -> bool:
    """What ``show=None`` means: Scanpy's ``sc.settings.autoshow``, else ``True``."""
    return bool(_scanpy_setting("autoshow", True))


def _save_path(name: str, save: bool | str) -> Path:
    if save is True:
        return _figdir() / f"{name}.png"
    path = Path(str(save))
    if path.parent == Path(".") and not path.is_absolute():
        path = _figdir() / f"{name}{save}"
    if path.suffix.lower() not in _IMAGE_SUFFIXES:
        path = path.with_name(path.name + ".png")
    return path


def save_target(name: str, show: Any, save: Any) -> Path | None:
    """Check ``show`` and ``save`` before anything is drawn; the file ``save`` names, if any.

    A wrong type (``show="no"``, ``save=3``) or a path that cannot be written
    fails here, so a failed call leaves no figure open.
    """
    if show is not None and not isinstance(show, (bool, np.bool_)):
        raise TypeError(f"show={show!r} must be True, False or None.")
    if isinstance(save, (bool, np.bool_)):
        save = bool(save)
    if save is None or save is False or save == "":  # as in Scanpy, an empty save saves nothing
        return None
    if not isinstance(save, (bool, str, os.PathLike)):
        raise TypeError(f"save={save!r} must be True, a file name or a suffix such as '.pdf', or None.")
    if save is not True and Path(save).is_dir():
        raise ValueError(f"save={os.fspath(save)!r} is a folder; pass a file name in it, e.g. {os.path.join(save, name + '.pdf')!r}.")
    path = _save_path(name, True if save is True else os.fspath(save))
    return check_output_file(path, "save=")


def finish(fig: Figure, ret: Any, name: str, show: bool | None, save: Path | None, *, owned: bool) -> Any:
    """Save to ``save`` (from :func:`save_target`), then show and return ``None``, or return ``ret`` when not shown.

    ``owned``: the call made ``fig`` (no ``ax=``), so a failed save closes it.
    """
    if save is not None:
        try:
            save.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(save, dpi=150, bbox_inches="tight")
        except OSError:
            if owned:
                plt.close(fig)
            raise
        logger.info("Saved %s to %s.", name, save)
    if show is None:
        show = _autoshow()
    if not show:
        return ret
    plt.show()
    return None


def new_ax(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure of ``figsize`` inches with one Axes."""
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax= must be a matplotlib Axes, not {ax!r}.")
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def panel_axes(ax: Axes | Sequence[Axes], names: list[str], plot: str) -> list[Axes]:
    """The Axes passed as ``ax=``, one per panel, or a ValueError that says how many are needed."""
    axes = [ax] if isinstance(ax, Axes) else list(np.asarray(ax, dtype=object).ravel())
    if not all(isinstance(a, Axes) for a in axes):
        raise TypeError(f"ax= must be an Axes or a sequence of Axes, not {ax!r}.")
    if len(axes) != len(names):
        needed = "one Axes" if len(names) == 1 else f"a sequence of {len(names)} Axes"
        raise ValueError(
            f"{plot} draws {len(names)} panel(s) ({', '.join(names)}), so ax= needs "
            f"{needed}, one per panel; got {len(axes)}."
        )
    return axes


# ----------------------------------------------------------------------------- axis limits


def inliers(values: np.ndarray, fence: float = 3.0) -> np.ndarray:
    """Mask of values within Tukey's far fences."""
    lo, hi = tukey_fences(values, fence)
    return (values >= lo) & (values <= hi)


def padded(
    lo: float, hi: float, log: bool, pad: float = 0.05, pad_low: float | None = None
) -> tuple[float, float]:
    """Axis limits around ``[lo, hi]`` (given in log10 space when ``log``)."""
    span = hi - lo
    if span <= 0:
        span = max(abs(hi), 1.0) if not log else 1.0
    lo, hi = lo - (pad if pad_low is None else pad_low) * span, hi + pad * span
    return (10.0**lo, 10.0**hi) if log else (lo, hi)


def to_space(values: np.ndarray, log: bool) -> np.ndarray:
    """``values`` as floats, in log10 when ``log`` (non-positive values become NaN)."""
    values = np.asarray(values, dtype=float)
    if not log:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(values), np.nan)


def value_limits(
    values: np.ndarray,
    log: bool,
    robust: bool = True,
    pad_low: float | None = None,
    shown: np.ndarray | None = None,
) -> tuple[tuple[float, float] | None, int]:
    """Limits for a set of points (outliers left out when ``robust``) and how many fall outside.

    ``shown``: a mask of the points kept inside whatever their value (the best
    trial, the default configuration: a robust range never hides them).
    """
    space = to_space(values, log)
    usable = np.isfinite(space)
    if not usable.any():
        return None, 0
    keep = np.zeros(space.shape, dtype=bool)
    keep[usable] = inliers(space[usable]) if robust else True
    if shown is not None:
        keep |= np.asarray(shown, dtype=bool) & usable
    lo, hi = padded(float(space[keep].min()), float(space[keep].max()), log, pad_low=pad_low)
    return (lo, hi), int((usable & ~keep).sum())


def note_off_scale(ax: Axes, n_off: int, axis: str = "y") -> None:
    """Say in the legend how many points or curves lie beyond the ``axis`` range (``gid="off-scale-note"``).

    An entry of the legend rather than a text in a corner, which the legend
    (placed where it covers the fewest points) could cover.
    """
    if n_off:
        ax.plot([], [], ls="none", label=f"{n_off} beyond the {axis}-range (robust=False shows all)",
                gid="off-scale-note")


def mark_off_scale(ax: Axes, x: np.ndarray, values: np.ndarray, limits: tuple[float, float]) -> None:
    """Open triangles at ``x`` along the top (bottom) edge for the values above (below) ``limits``
    (``gid="points-off-scale"``): where a trial beyond a robust range lies, it is still seen."""
    for beyond, marker, height in ((values > limits[1], "^", 0.97), (values < limits[0], "v", 0.03)):
        if beyond.any():
            ax.scatter(x[beyond], np.full(beyond.sum(), height), transform=ax.get_xaxis_transform(), marker=marker,
                       s=26, facecolors="none", edgecolors="0.35", zorder=3, clip_on=False, gid="points-off-scale")


def log_axis(ax: Axes) -> None:
    """Log y axis; with less than two decades, plain numbers instead of 6x10^2, at 1, 2 and 5 times a power of 10."""
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 100:
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(FuncFormatter(_one_two_five))


def _one_two_five(value: float, _position: Any = None) -> str:
    """A minor log tick's label when it is 2 or 5 times a power of 10 (every one crowds the axis)."""
    if value <= 0:
        return ""
    leading = value / 10.0 ** np.floor(np.log10(value))
    return f"{value:g}" if np.isclose(leading, 2.0) or np.isclose(leading, 5.0) else ""


def check_log_scale(values: np.ndarray, log: bool, what: str) -> None:
    """Refuse ``log=True`` when a finite value is not positive: a log axis would leave it out, silently."""
    values = np.asarray(values, dtype=float)
    if log and (values[np.isfinite(values)] <= 0).any():
        raise ValueError(
            f"log=True needs positive values, and some {what} are zero or negative (the loss of "
            "objective='integration', -Total, always is); use log=False."
        )


def label_leftmost(axes: Sequence[Axes], label: str) -> None:
    """Put the y label on each Axes that has none of ``axes`` to its left in its grid row.

    Panels that share a row share y; a lone panel drawn into the middle of a
    grid (``ax=``) still needs its label.
    """
    rows: dict[tuple[int, int], list[tuple[int, Axes]]] = {}
    for panel in axes:
        spec = panel.get_subplotspec()
        if spec is None:
            panel.set_ylabel(label)
            continue
        rows.setdefault((id(spec.get_gridspec()), spec.rowspan.start), []).append((spec.colspan.start, panel))
    for row in rows.values():
        min(row, key=lambda item: item[0])[1].set_ylabel(label)


# ----------------------------------------------------------------------------- trial columns


def categories(col: pd.Series) -> list[Any]:
    """The distinct non-missing values of a column, sorted (by their text when mixed)."""
    values = [v for v in pd.unique(col) if not pd.isna(v)]
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def finite_loss(trials: pd.DataFrame) -> np.ndarray:
    """Mask of the trials with a finite loss."""
    return np.isfinite(trials["loss"].to_numpy(dtype=float))
