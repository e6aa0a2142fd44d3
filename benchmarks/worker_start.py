"""What a short search and a first fit cost before and after the session-26 start-up changes.

    python benchmarks/worker_start.py [BEFORE]

``BEFORE`` (a git revision, default ``cf8e218``) is checked out into a temporary
worktree and imported from there; ``after`` is this tree. Each run is a fresh
process on the 360 CellBench cells of ``tests/data`` (400 genes, so the
likelihood runs eagerly, as on any data under 500 genes): the first
``sat.Model.fit`` of the process (2 epochs) and a second one, then two searches
of 4 trials of 2 epochs on 2 workers, as the test suite runs them; the second
search is the one a notebook pays once the package is imported.
Writes ``results/worker_start.md``.
"""

from __future__ import annotations

import sys

import pandas as pd
from _common import ROOT, SMALL_CELLBENCH, run_with_package_from, runs_before, write

CHILD = r"""
import json, sys, time
import anndata as ad
import scanpy_autotune as sat

adata = ad.read_h5ad(sys.argv[1])
fits = []
for _ in range(2):
    start = time.perf_counter()
    sat.Model.fit(adata, max_epochs=2, seed=0)
    fits.append(round(time.perf_counter() - start, 2))
searches, trial_s, losses = [], [], []
for _ in range(2):
    searched = adata.copy()
    start = time.perf_counter()
    sat.tl.autotune(searched, max_evals=4, max_epochs=2, n_workers=2, seed=0, progress=False)
    searches.append(round(time.perf_counter() - start, 2))
    trials = searched.uns["autotune"]["trials"].sort_values("trial_id")
    trial_s.append([round(float(d), 2) for d in trials["duration_s"]])
    losses = [round(float(loss), 4) for loss in trials["loss"]]
print(json.dumps({"source": sat.__file__, "first_fit_s": fits[0], "second_fit_s": fits[1],
                  "first_search_s": searches[0], "second_search_s": searches[1],
                  "second_search_trial_s": trial_s[1], "loss": losses}))
"""


def _run(source) -> dict:
    return run_with_package_from(source, CHILD, SMALL_CELLBENCH)


def main() -> None:
    before = sys.argv[1] if len(sys.argv) > 1 else "cf8e218"
    rows = runs_before(before, _run)
    for _ in range(2):
        rows.append({"code": "after", **_run(ROOT)})
        print(rows[-1], flush=True)
    write(
        "worker_start", pd.DataFrame(rows), f"python benchmarks/worker_start.py {before}",
        notes="second_search_trial_s: each trial's duration in the second search (the first trial of each "
        "worker pays that process's first-use costs); loss: the second search's held-out losses, the same "
        "before and after.",
    )


if __name__ == "__main__":
    main()
