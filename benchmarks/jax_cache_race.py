"""Two processes filling one JAX compilation cache at once, with and without its file lock.

    python benchmarks/jax_cache_race.py

Each round starts two Python processes on an empty cache folder; each compiles
the same 119 small jitted functions in the same order, as two scoring workers
of a search compile scib-metrics' functions. Without a size bound JAX reads
and writes the folder without a lock, and a process can read an entry the
other is still writing ("Error reading persistent compilation cache entry
... truncated"); with ``jax_compilation_cache_max_size`` set, as the package
sets it (``_scib.JAX_CACHE_MAX_BYTES``), both go through JAX's file lock.
Counts those warnings per round. Writes ``results/jax_cache_race.md``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

import pandas as pd
from _common import write

CHILD = r"""
import sys, warnings, jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
if sys.argv[2] == "locked":
    jax.config.update("jax_compilation_cache_max_size", 1 << 30)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for k in range(1, 120):
        f = jax.jit(lambda x, k=k: jnp.sin(x) * k + jnp.cumsum(x, axis=0) ** 2 @ jnp.ones((k, k)))
        f(jnp.ones((k, k))).block_until_ready()
print(sum("compilation cache" in str(w.message) for w in caught))
"""

ROUNDS = 5


def _round(mode: str) -> int:
    with tempfile.TemporaryDirectory() as cache:
        children = [
            subprocess.Popen([sys.executable, "-c", CHILD, cache, mode], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        return sum(int(child.communicate()[0].strip() or 0) for child in children)


def main() -> None:
    rows = []
    for mode in ("unlocked", "locked"):
        warnings = [_round(mode) for _ in range(ROUNDS)]
        rows.append({"cache": mode, "rounds": ROUNDS, "rounds_with_a_warning": sum(w > 0 for w in warnings),
                     "warnings": sum(warnings)})
        print(rows[-1], flush=True)
    write(
        "jax_cache_race", pd.DataFrame(rows), "python benchmarks/jax_cache_race.py",
        notes="unlocked: JAX's default (no size bound, no lock); locked: the bound the package sets.",
    )


if __name__ == "__main__":
    main()
