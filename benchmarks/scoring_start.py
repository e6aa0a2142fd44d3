"""An integration search's first trials before and after kBET's numba functions were cached.

    python benchmarks/scoring_start.py [BEFORE]

``BEFORE`` (a git revision, default ``cf8e218``) is checked out into a temporary
worktree and imported from there; ``after`` is this tree. Each run is a fresh
process searching the 360 CellBench cells of ``tests/data``
(``objective="integration"``, 4 trials of 15 epochs, 2 workers, as the tests
and the tutorial run it), with JAX's compilation cache filled. ``after, cold``:
numba's cache of umap-learn's two functions emptied first (a machine's first
search); ``after``: a later search. Writes ``results/scoring_start.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from _common import (
    INTEGRATION_SEARCH_CHILD,
    ROOT,
    SMALL_CELLBENCH,
    run_with_package_from,
    runs_before,
    write,
)


def _run(source: Path) -> dict:
    return run_with_package_from(source, INTEGRATION_SEARCH_CHILD, SMALL_CELLBENCH)


def _forget_compiled_umap_functions() -> None:
    """Remove numba's cached ``smooth_knn_dist`` and ``compute_membership_strengths`` of umap-learn."""
    import umap.umap_ as umap_module

    from scanpy_autotune._scib import _keep_compiled_umap_functions

    _keep_compiled_umap_functions()
    for function in (umap_module.smooth_knn_dist, umap_module.compute_membership_strengths):
        folder = Path(function.stats.cache_path)
        for path in folder.glob(f"umap_.{function.__name__}-*.nb*"):
            path.unlink()


def main() -> None:
    before = sys.argv[1] if len(sys.argv) > 1 else "cf8e218"
    rows = runs_before(before, _run)
    _forget_compiled_umap_functions()
    for run in ("after, cold", "after", "after"):
        rows.append({"code": run, **_run(ROOT)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["first_trials_s"] = table["trial_s"].map(lambda d: round(sum(d[:2]) / 2, 1))
    write(
        "scoring_start", table[["code", "wall_s", "first_trials_s", "trial_s", "total"]].round(1),
        f"python benchmarks/scoring_start.py {before}",
        notes="first_trials_s: the mean duration of the two first trials (one per worker, each paying its "
        "process's imports and compiles); total: each trial's scIB Total, the same before and after. "
        "wall_s also holds the driver's check that scib-metrics is installed, which imported it (5-8 s of "
        "the driver) before and only looks for it after: 1-3 s of the wall time ('after, cold' against "
        "'before', the same first trials), since the workers start meanwhile. Runs are in order, not "
        "interleaved; JAX's cache was filled by earlier searches.",
    )


if __name__ == "__main__":
    main()
