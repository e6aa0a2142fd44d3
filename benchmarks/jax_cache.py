"""An integration search with and without JAX's persistent compilation cache.

    python benchmarks/jax_cache.py

Each run is a fresh process searching the 360 CellBench cells of ``tests/data``
(``objective="integration"``, 4 trials of 15 epochs, 2 workers, as the tests
and the tutorial run it). ``cold``: the cache folder is empty (its first use on
a machine); ``warm``: a later search, the folder filled by the cold run;
``off``: JAX's cache switched off by the user (``JAX_ENABLE_COMPILATION_CACHE=false``),
as every search was before.
Writes ``results/jax_cache.md``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
from _common import INTEGRATION_SEARCH_CHILD, ROOT, SMALL_CELLBENCH, run_with_package_from, write


def _run(cache_home: Path, cache_on: bool) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["JAX_ENABLE_COMPILATION_CACHE"] = "true" if cache_on else "false"
    return run_with_package_from(ROOT, INTEGRATION_SEARCH_CHILD, SMALL_CELLBENCH, environ=env)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as home:
        for run in ("cold", "warm", "warm"):
            rows.append({"cache": run, **_run(Path(home), True)})
            print(rows[-1], flush=True)
        cached = sum(1 for _ in (Path(home) / "scanpy_autotune" / "jax").iterdir())
    with tempfile.TemporaryDirectory() as home:
        rows.append({"cache": "off", **_run(Path(home), False)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["first_trials_s"] = table["trial_s"].map(lambda d: round(sum(d[:2]) / 2, 1))
    write(
        "jax_cache", table[["cache", "wall_s", "first_trials_s", "trial_s", "total"]].round(1),
        "python benchmarks/jax_cache.py",
        notes=f"{cached} compiled functions in the cache after the cold run. first_trials_s: the mean "
        "duration of the two first trials (one per worker, each paying its process's compiles); "
        "total: each trial's scIB Total, the same with and without the cache.",
    )


if __name__ == "__main__":
    main()
