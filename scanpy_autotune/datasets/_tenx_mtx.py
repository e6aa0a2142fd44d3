"""Reader of 10x Genomics Market Exchange folders (matrix.mtx, barcodes, genes/features)."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp


def find_mtx_dir(root: Path) -> Path:
    """The folder under ``root`` (itself included) that holds ``matrix.mtx[.gz]``."""
    for name in ("matrix.mtx", "matrix.mtx.gz"):
        if (root / name).is_file():
            return root
    for dirpath, _, files in sorted(os.walk(root)):
        if any(f in ("matrix.mtx", "matrix.mtx.gz") for f in files):
            return Path(dirpath)
    raise FileNotFoundError(f"No matrix.mtx(.gz) under {root}.")


def read_10x_mtx(path: str | os.PathLike) -> ad.AnnData:
    """Read a 10x Market Exchange folder (v2 ``genes.tsv`` or v3 ``features.tsv.gz``).

    Parameters
    ----------
    path
        The folder with ``matrix.mtx``, ``barcodes.tsv`` and ``genes.tsv`` (or a folder
        above it, searched for the matrix).

    Returns
    -------
    AnnData, cells x genes, CSR ``float32`` counts; ``var_names`` are the gene ids
    (Ensembl) and ``var["gene_symbols"]`` the symbols.
    """
    import scanpy as sc

    folder = find_mtx_dir(Path(path))
    adata = sc.read_10x_mtx(folder, var_names="gene_ids", make_unique=False, cache=False)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    if "gene_symbols" not in adata.var:
        adata.var["gene_symbols"] = adata.var_names.to_numpy()
    return adata
