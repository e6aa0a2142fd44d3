"""kBET with exact diffusion neighbours against scib-metrics' pynndescent ones: values and first-score time.

    python benchmarks/kbet_neighbours.py

Each row is a fresh process (as a scoring worker is), so the first score pays
every compile: with ``exact`` our scoring's own lookup (scikit-learn, as
``sat.tl.autotune`` scores), with ``pynndescent`` scib-metrics' unpatched one.
Latents: a model trained on the 360 CellBench cells of ``tests/data`` (30 epochs,
batch covariate) and synthetic Gaussian clusters (3000 cells, 5 labels, 3
batches shifted slightly). Writes ``results/kbet_neighbours.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
from _common import ROOT, write

CHILD = r"""
import json, sys, time
import numpy as np
import anndata as ad
import scanpy_autotune as sat
from scanpy_autotune import _scib

mode, which = sys.argv[1], sys.argv[2]
if which == "cellbench":
    adata = ad.read_h5ad(sys.argv[3])
    model = sat.Model.fit(adata, batch_key="batch", max_epochs=30, seed=0, device="cpu")
    latent = model.latent(adata)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    batch = adata.obs["batch"].astype(str).to_numpy()
else:
    rng = np.random.default_rng(0)
    n = 3000
    codes, batches = rng.integers(0, 5, n), rng.integers(0, 3, n)
    centers, shift = rng.normal(scale=4, size=(5, 10)), rng.normal(scale=0.15, size=(3, 10))
    latent = centers[codes] + shift[batches] + rng.normal(size=(n, 10))
    labels, batch = codes.astype(str), batches.astype(str)
import scib_metrics
neighbours = _scib._neighbors(np.asarray(latent, dtype=np.float32), 90).subset_neighbors(50)
start = time.perf_counter()
if mode == "exact":
    with _scib._exact_diffusion_neighbours():
        value = scib_metrics.kbet_per_label(neighbours, batch, labels)
else:
    value = scib_metrics.kbet_per_label(neighbours, batch, labels)
print(json.dumps({"kbet": float(value), "first_kbet_s": time.perf_counter() - start}))
"""


def main() -> None:
    rows = []
    cellbench = str(ROOT / "tests" / "data" / "cellbench_360x400.h5ad")
    for which in ("cellbench", "synthetic"):
        for mode in ("exact", "pynndescent"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode, which, cellbench],
                capture_output=True, text=True, check=True,
            ).stdout.strip().splitlines()[-1]
            result = json.loads(out)
            rows.append({"latent": which, "neighbours": mode, **result})
            print(rows[-1], flush=True)
    write(
        "kbet_neighbours", pd.DataFrame(rows), "python benchmarks/kbet_neighbours.py",
        notes="first_kbet_s: the first kBET of a fresh process, compiles included (JAX's for kBET "
        "itself in both rows; pynndescent's numba code only in its own).",
    )


if __name__ == "__main__":
    main()
