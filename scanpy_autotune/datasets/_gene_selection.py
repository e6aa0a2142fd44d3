"""Selection of the genes of highest count variance, as in the scVI papers."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def top_variance_genes(
    X: sp.spmatrix | np.ndarray,
    n_genes: int | None,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the ``n_genes`` columns of highest variance, in column order.

    Variance is the population variance (``ddof=0``) of the counts over the rows of
    ``X``. Ties at the cut-off go to the lower column index. Columns flagged in
    ``keep`` (a boolean mask) are added to the selection.

    Parameters
    ----------
    X
        Cells x genes counts.
    n_genes
        How many genes to select by variance; ``None`` or at least the number of
        columns selects every column.
    keep
        Optional boolean mask of columns that are always selected.

    Returns
    -------
    Sorted integer indices of the selected columns.
    """
    n_total = X.shape[1]
    if n_genes is None or n_genes >= n_total:
        return np.arange(n_total)
    if n_genes < 0:
        raise ValueError(f"n_genes must be non-negative, got {n_genes}.")
    n_cells = X.shape[0]
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        mean = np.asarray(X.sum(axis=0)).ravel() / n_cells
        sq = np.asarray(X.multiply(X).sum(axis=0)).ravel() / n_cells
        var = sq - mean**2
    else:
        var = np.asarray(X, dtype=np.float64).var(axis=0)
    return select_by_variance(var, n_genes, keep)


def select_by_variance(var: np.ndarray, n_genes: int, keep: np.ndarray | None) -> np.ndarray:
    """Sorted indices of the ``n_genes`` largest ``var`` (ties: lower index) plus ``keep``."""
    order = np.argsort(-var, kind="stable")
    selected = np.zeros(var.shape[0], dtype=bool)
    selected[order[:n_genes]] = True
    if keep is not None:
        selected |= keep
    return np.flatnonzero(selected)
