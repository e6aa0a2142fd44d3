"""``pbmc68k_counts``: the counts behind scanpy's bundled ``pbmc68k_reduced``, offline."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._counts import check_counts
from ._finalize import finalize

#: Largest distance from an integer accepted when recovering counts from log data.
INTEGER_TOL = 0.25


def pbmc68k_counts() -> ad.AnnData:
    """Counts behind scanpy's bundled ``pbmc68k_reduced`` (700 cells x 765 genes), offline.

    ``sc.datasets.pbmc68k_reduced()`` ships with scanpy. Its ``raw.X`` is
    ``log1p`` of counts normalised to 10,000 per cell (stored to 3 decimals), with the
    per-cell totals in ``obs["n_counts"]``, so ``round(expm1(raw.X) * n_counts / 1e4)``
    recovers the integer counts. The recovered values are checked to be non-negative
    and within 0.25 of an integer before rounding (the largest distance is 0.08 with
    scanpy 1.11).

    Returns
    -------
    AnnData of 700 x 765 with counts in ``X`` (CSR, ``float32``) and
    ``layers["counts"]``; ``obs["cell_type"]`` from ``bulk_labels`` (10 types);
    ``var_names`` from ``raw.var_names``.
    """
    import scanpy as sc

    ref = sc.datasets.pbmc68k_reduced()
    if ref.raw is None or "n_counts" not in ref.obs:
        raise ValueError("pbmc68k_reduced has no raw data or no obs['n_counts'].")
    X = sp.csr_matrix(ref.raw.X, dtype=np.float64)
    X.data = np.expm1(X.data)
    X = sp.csr_matrix(sp.diags(ref.obs["n_counts"].to_numpy(np.float64) / 1e4) @ X)
    X.data = check_counts(X.data, "pbmc68k_reduced", tol=INTEGER_TOL)
    obs = pd.DataFrame(index=ref.obs_names.copy())
    obs["cell_type"] = ref.obs["bulk_labels"].to_numpy()
    var = pd.DataFrame(index=ref.raw.var_names.copy())
    adata = finalize(
        X,
        obs,
        var,
        source="scanpy.datasets.pbmc68k_reduced(); counts = round(expm1(raw.X) * obs.n_counts / 1e4)",
        what="pbmc68k_counts",
    )
    # keep the category order of the original labels
    cats = [c for c in ref.obs["bulk_labels"].cat.categories if c in set(adata.obs["cell_type"])]
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.reorder_categories(cats)
    return adata
