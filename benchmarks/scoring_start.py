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
from _common import ROOT, checked_out, run_with_package_from, write

CHILD = r"""
import json, sys, time
import anndata as ad
import scanpy_autotune as sat

adata = ad.read_h5ad(sys.argv[1])
start = time.perf_counter()
sat.tl.autotune(adata, batch_key="batch", labels_key="cell_type", objective="integration", max_evals=4,
                max_epochs=15, n_workers=2, n_mc=20, seed=0, progress=False)
wall = time.perf_counter() - start
trials = adata.uns["autotune"]["trials"].sort_values("trial_id")
print(json.dumps({"source": sat.__file__, "wall_s": wall,
                  "trial_s": [round(float(d), 2) for d in trials["duration_s"]],
                  "total": [round(float(t), 6) for t in trials["total"]]}))
"""


def _run(source: Path) -> dict:
    return run_with_package_from(source, CHILD, str(ROOT / "tests" / "data" / "cellbench_360x400.h5ad"))


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
    rows = []
    with checked_out(before) as worktree:
        for _ in range(2):
            rows.append({"code": f"before ({before})", **_run(worktree)})
            print(rows[-1], flush=True)
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
