"""What the command reads and writes: the ``.h5ad`` files, the plots and the summary it prints."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from .._paths import replace_file
from .._record import gain_over_default
from .._results import is_search_result, read_results
from .._stop_reason import ended_on_its_own
from ._parser import KEY, PROG

logger = logging.getLogger("scanpy_autotune")

PLOTS = ("trial_history", "sensitivity", "optimization_history", "param_importance", "pareto")


def _read_h5ad(path: Path):
    import anndata as ad

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an .h5ad file")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py and anndata raise many kinds for a file that is not .h5ad
        raise ValueError(f"cannot read {path} as an .h5ad file: {err}") from None


def write_plots(
    adata: Any, directory: str | Path, key: str = KEY, skipped: dict[str, str] | None = None
) -> list[Path]:
    """Write every :mod:`scanpy_autotune.pl` figure of ``adata.uns[key]`` as PNG.

    ``pareto`` is drawn for a search with ``--labels-key`` only. A figure that
    cannot be drawn (``param_importance`` needs at least five successful
    trials) is skipped with a warning.

    Parameters
    ----------
    adata
        An AnnData after :func:`scanpy_autotune.tl.autotune`.
    directory
        Created if needed.
    key
        The results' key in ``adata.uns``.
    skipped
        Given a dict, each figure that could not be drawn is added to it,
        with the reason.

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import pl

    folder = Path(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    scored = read_results(adata, key).scored
    for name in PLOTS:
        if name == "pareto" and not scored:
            continue  # drawn only for a search with --labels-key, as documented
        path = folder / f"{name}.png"
        try:
            getattr(pl, name)(adata, key=key, show=False, save=str(path))
        except (ValueError, ImportError) as err:
            logger.warning("skipped the %s plot: %s", name, err)
            if skipped is not None:
                skipped[name] = str(err)
            continue
        finally:
            plt.close("all")
        written.append(path)
    return written


def _summary(adata: Any, key: str = KEY) -> str:
    """The best configuration and its gain over the default, as text."""
    uns = adata.uns[key]
    trials = uns["trials"]
    best, default = uns["best"], uns.get("default")
    counts = trials["status"].value_counts()
    resumed = int(uns["params"].get("n_resumed", 0) or 0)
    source = f" ({resumed} resumed from the journal {uns['params'].get('journal')})" if resumed else ""
    lines = [
        f"{len(trials)} trials{source}: "
        + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("ok", "pruned", "fail"))
    ]
    if uns["params"].get("stop_reason"):
        lines.append(f"the search ended with {uns['params']['stop_reason']}")
    lines.append(f"best configuration (trial {int(best['trial_id'])}):")
    params = dict(best["params"])
    width = max(len(name) for name in params) if params else 0
    lines += [f"  {name:<{width}}  {_format_value(value)}" for name, value in sorted(params.items())]
    loss = float(best["loss"])
    if read_results(adata, key).scored:
        lines += _score_lines(trials, int(best["trial_id"]), None if default is None else int(default["trial_id"]))
    elif default is not None and math.isfinite(float(default["loss"])):
        reference = float(default["loss"])
        gain = gain_over_default(loss, reference)
        lines.append(
            f"held-out -log p(x) per cell: {loss:.3f} (default configuration {reference:.3f}); "
            f"gain over the default: {gain:.2f}%"
        )
    else:
        lines.append(f"held-out -log p(x) per cell: {loss:.3f} (the default configuration was not evaluated)")
    return "\n".join(lines)


def _score_lines(trials: Any, best: int, default: int | None) -> list[str]:
    """The integration scores and the held-out likelihood of the best and the default trial."""
    columns = ("total", "bio_conservation", "batch_correction", "marginal_nll")
    rows = trials.set_index("trial_id")
    lines = [f"  {'':<8}  " + "  ".join(f"{c:>16}" for c in columns)]
    for name, trial in (("best", best), ("default", default)):
        if trial is not None and trial in rows.index:
            lines.append(f"  {name:<8}  " + "  ".join(f"{float(rows.at[trial, c]):>16.4f}" for c in columns))
    return ["integration scores (higher is better) and held-out -log p(x) (lower is better):", *lines]


def _write_h5ad(adata: Any, path: Path) -> None:
    """Write the result all at once: a temporary file beside ``path``, renamed when complete."""
    replace_file(path, lambda temporary: adata.write_h5ad(temporary))


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cut_short_output(output: Path, key: str = KEY) -> Path:
    """Where a search cut short writes its trials: ``-o``, unless it holds a finished search.

    A finished search there (an earlier run's result) is never replaced by a
    part of another: the trials go to ``<name>.interrupted.h5ad`` beside it.
    """
    if output.exists() and _holds_finished_search(output, key):
        return output.with_name(f"{output.stem}.interrupted{output.suffix}")
    return output


def _holds_finished_search(path: Path, key: str = KEY) -> bool:
    """Whether the ``.h5ad`` at ``path`` holds, under ``uns[key]``, a search that ended on its own."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            reason = file[f"uns/{key}/params/stop_reason"][()]
    except (OSError, KeyError, TypeError):  # not an .h5ad, or no search result in it
        return False
    return ended_on_its_own(reason.decode() if isinstance(reason, bytes) else str(reason))


def searches_in(path: Path) -> list[str]:
    """The keys of ``uns`` under which the ``.h5ad`` at ``path`` holds a search's results (none for another file)."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            uns = file.get("uns")
            return sorted(k for k in uns if is_search_result(uns[k]))  # an h5py group is a Mapping
    except (OSError, TypeError):  # not an .h5ad (or no uns in it)
        return []


def check_output_keeps_searches(output: Path | None, input_path: Path, adata: Any, key: str) -> None:
    """Refuse, before the search, an ``-o`` whose other searches the result would replace.

    The result is the input AnnData with this search added, written whole over
    ``-o``: searches that ``-o`` holds under other keys, and the input does
    not, would be gone. Searching ``-o`` itself (as the input) keeps them.
    """
    if output is None or not output.exists() or output.resolve() == input_path.resolve():
        return
    lost = [k for k in searches_in(output) if k != key and k not in adata.uns]
    if lost:
        raise ValueError(
            f"-o {output} holds the search result(s) {lost}, which {input_path} does not: writing this search "
            f"there would replace them. To add it beside them, search that file itself ({PROG} tune "
            f"{output} -o {output} --key-added {key}), or choose another -o."
        )
