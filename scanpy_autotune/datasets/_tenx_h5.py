"""Chunked reader of 10x Genomics HDF5 matrices that keeps only the top-variance genes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.utils import make_index_unique

from ._counts import check_counts
from ._gene_selection import select_by_variance

logger = logging.getLogger(__name__)


def _decode(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "S" or values.dtype == object:
        return np.array(
            [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], dtype=object
        )
    return values.astype(str).astype(object)


def has_group(path: str | os.PathLike, name: str) -> bool:
    """Whether the HDF5 file at ``path`` has a top-level entry ``name``."""
    with h5py.File(Path(path), "r") as f:
        return name in f


def read_10x_h5_chunked(
    path: str | os.PathLike,
    n_genes: int | None = 720,
    max_cells: int | None = None,
    genome: str | None = None,
    n_cells_gene_var: int = 10_000,
    chunk_size: int = 10_000,
) -> ad.AnnData:
    """Read a 10x HDF5 matrix cell-chunk by cell-chunk, keeping top-variance genes.

    The file stores genes x cells in compressed-column form: one column (cell) per
    ``indptr`` step. Cell Ranger 2 (v2) files have a group per genome (``mm10``) with
    ``data``, ``indices``, ``indptr``, ``shape``, ``genes`` (ids), ``gene_names``
    (symbols) and ``barcodes``; Cell Ranger 3 files have a ``matrix`` group with
    ``features/id`` and ``features/name``. The dense matrix is never built.

    Parameters
    ----------
    path
        The ``.h5`` file.
    n_genes
        Genes to keep, the highest population variance over the first
        ``n_cells_gene_var`` cells of the file (as in scVI); ``None`` keeps all.
        The kept genes stay in file order.
    max_cells
        Load only the first ``max_cells`` cells. The gene selection does not depend on
        it.
    genome
        Group to read; by default the only group of the file.
    n_cells_gene_var
        Number of leading cells used to compute gene variances.
    chunk_size
        Cells read at a time.

    Returns
    -------
    AnnData (not finalised), CSR ``float32`` counts, ``var_names`` gene symbols,
    ``var["gene_ids"]``, ``obs_names`` barcodes.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive.")
    with h5py.File(path, "r") as f:
        if genome is None:
            groups = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
            if len(groups) != 1:
                raise ValueError(f"{path}: choose genome= among {groups}.")
            genome = groups[0]
        g = f[genome]
        n_genes_total, n_cells_total = (int(v) for v in g["shape"][()])
        if "features" in g:
            gene_ids = _decode(g["features"]["id"][()])
            gene_names = _decode(g["features"]["name"][()])
        else:
            gene_ids = _decode(g["genes"][()])
            gene_names = _decode(g["gene_names"][()]) if "gene_names" in g else gene_ids
        indptr = g["indptr"][()].astype(np.int64)
        if indptr.shape[0] != n_cells_total + 1:
            raise ValueError(f"{path}: indptr has {indptr.shape[0]} entries, expected cells + 1.")
        dset_data, dset_indices = g["data"], g["indices"]
        n_keep = n_cells_total if max_cells is None else min(int(max_cells), n_cells_total)

        # gene variances over the leading cells
        if n_genes is None or n_genes >= n_genes_total:
            selected = np.arange(n_genes_total)
        else:
            n_var = max(1, min(n_cells_gene_var, n_cells_total))
            s1 = np.zeros(n_genes_total)
            s2 = np.zeros(n_genes_total)
            for start in range(0, n_var, chunk_size):
                stop = min(start + chunk_size, n_var)
                lo, hi = indptr[start], indptr[stop]
                d = dset_data[lo:hi].astype(np.float64)
                i = dset_indices[lo:hi]
                s1 += np.bincount(i, weights=d, minlength=n_genes_total)
                s2 += np.bincount(i, weights=d * d, minlength=n_genes_total)
            mean = s1 / n_var
            var = s2 / n_var - mean**2
            selected = select_by_variance(var, n_genes, None)
        lookup = np.full(n_genes_total, -1, dtype=np.int64)
        lookup[selected] = np.arange(selected.size)

        datas: list[np.ndarray] = []
        idxs: list[np.ndarray] = []
        row_nnz: list[np.ndarray] = []
        for start in range(0, n_keep, chunk_size):
            stop = min(start + chunk_size, n_keep)
            lo, hi = indptr[start], indptr[stop]
            d = dset_data[lo:hi]
            new = lookup[dset_indices[lo:hi]]
            mask = new >= 0
            rows = np.repeat(np.arange(stop - start), np.diff(indptr[start : stop + 1]))
            row_nnz.append(np.bincount(rows[mask], minlength=stop - start))
            datas.append(check_counts(d[mask], str(path)).astype(np.float32))
            idxs.append(new[mask].astype(np.int32))
            logger.info("brain_large: read %d / %d cells", stop, n_keep)
        barcodes = _decode(g["barcodes"][:n_keep])
    out_indptr = np.zeros(n_keep + 1, dtype=np.int64)
    if row_nnz:
        np.cumsum(np.concatenate(row_nnz), out=out_indptr[1:])
    X = sp.csr_matrix(
        (
            np.concatenate(datas) if datas else np.zeros(0, np.float32),
            np.concatenate(idxs) if idxs else np.zeros(0, np.int32),
            out_indptr,
        ),
        shape=(n_keep, selected.size),
    )
    var = pd.DataFrame(
        {"gene_ids": gene_ids[selected]},
        index=make_index_unique(pd.Index(gene_names[selected].astype(str))),
    )
    obs = pd.DataFrame(index=pd.Index(barcodes))
    return ad.AnnData(X=X, obs=obs, var=var)
