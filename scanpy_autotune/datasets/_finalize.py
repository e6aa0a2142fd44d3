"""The AnnData every loader returns: counts in X and layers["counts"], labels, provenance."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.utils import make_index_unique

logger = logging.getLogger(__name__)


def finalize(
    X: sp.spmatrix,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    *,
    source: str,
    what: str,
    min_counts: int = 1,
    min_genes: int = 1,
) -> ad.AnnData:
    """Assemble the AnnData every loader returns.

    Parameters
    ----------
    X
        Cells x genes counts.
    obs, var
        Cell and gene annotations; ``obs["cell_type"]`` becomes categorical
        (``"unknown"`` when absent) and ``var_names`` are made unique.
    source
        One-line provenance note, stored in ``uns["source"]``.
    what
        Name of the loader, used in log messages.
    min_counts, min_genes
        Cells with fewer counts or fewer detected genes are dropped (the number is
        logged).

    Returns
    -------
    AnnData with CSR ``float32`` counts in ``X`` and a copy in ``layers["counts"]``.
    """
    X = sp.csr_matrix(X, dtype=np.float32)
    X.eliminate_zeros()
    X.sort_indices()
    totals = np.asarray(X.sum(axis=1)).ravel()
    detected = np.diff(X.indptr)
    keep = (totals >= min_counts) & (detected >= min_genes)
    n_drop = int((~keep).sum())
    if n_drop:
        logger.info(
            "%s: dropping %d of %d cells with fewer than %d counts or %d detected genes",
            what,
            n_drop,
            X.shape[0],
            min_counts,
            min_genes,
        )
        X = X[keep]
        obs = obs.iloc[np.flatnonzero(keep)]
    obs = obs.copy()
    obs.index = pd.Index(obs.index.astype(str), name=None)
    if "cell_type" not in obs:
        obs["cell_type"] = "unknown"
    obs["cell_type"] = obs["cell_type"].astype(str).astype("category")
    var = var.copy()
    var.index = make_index_unique(pd.Index(var.index.astype(str), name=None))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.layers["counts"] = X.copy()
    adata.uns["source"] = source
    logger.info("%s: %d cells x %d genes", what, adata.n_obs, adata.n_vars)
    return adata
