"""``brain_large``: 10x Genomics 1.3 million mouse brain cells (the scVI "Brain Large")."""

from __future__ import annotations

import os

import anndata as ad

from .._validation import check_int
from ._download import RemoteFile, fetch, reading
from ._finalize import finalize
from ._tenx_h5 import has_group, read_10x_h5_chunked

# 10x Genomics' CDN has no revisions, and no SHA-256 of this file is published by 10x or
# found in any public downloader. It is checked against the MD5 sum that Bioconductor's
# TENxBrainData records for exactly this file (inst/scripts/make-metadata.R).
BRAIN_LARGE_FILE = RemoteFile(
    url="https://cf.10xgenomics.com/samples/cell-exp/1.3.0/1M_neurons/"
    "1M_neurons_filtered_gene_bc_matrices_h5.h5",
    sha256=None,
    filename="1M_neurons_filtered_gene_bc_matrices_h5.h5",
    md5="f97b8c67e57a534816b9b2bccf31476b",
)


def brain_large(
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    n_genes: int | None = 720,
    max_cells: int | None = None,
    n_cells_gene_var: int = 10_000,
    chunk_size: int = 10_000,
) -> ad.AnnData:
    """10x Genomics 1.3 million mouse brain cells (the scVI "Brain Large" dataset).

    Downloads ``1M_neurons_filtered_gene_bc_matrices_h5.h5`` (about 4 GB, from
    10x Genomics) into ``<data_dir>/brain_large/`` once, then reads it in chunks
    of cells, keeping only the selected genes, so memory grows with the kept counts
    only. As in scVI, the genes are the ``n_genes`` of highest variance over the first
    ``n_cells_gene_var`` cells, and cells with fewer than 2 counts or fewer than 2
    detected genes (in the kept genes) are dropped.

    Parameters
    ----------
    path
        A local copy of the ``.h5`` file (or the folder holding it); it is read as
        given (no download, no cache, no checksum).
    data_dir
        Cache folder; ``scanpy.settings.datasetdir`` by default.
    n_genes
        Genes to keep by variance; ``None`` keeps all 27,998.
    max_cells
        Load only the first ``max_cells`` cells of the file (before the cell filter).
    n_cells_gene_var
        Leading cells used to rank genes by variance.
    chunk_size
        Cells read at a time.

    Returns
    -------
    AnnData of about 1.3M x 720 (or ``max_cells`` x 720), counts in ``X`` (CSR,
    ``float32``) and ``layers["counts"]``. ``obs["cell_type"]`` is ``"unknown"`` (the
    dataset has no labels); ``obs_names`` are barcodes; ``var_names`` gene symbols
    (made unique), ``var["gene_ids"]`` Ensembl ids.

    Raises
    ------
    DatasetDownloadError
        When the file is not cached, no ``path`` is given and the download fails
        (or, once a SHA-256 is pinned for it, the downloaded file does not match it).
    FileNotFoundError
        When ``path`` does not exist.
    DatasetFileError
        When the file (given or cached) cannot be read as this dataset; the
        message names the file.
    """
    n_genes = check_int("n_genes", n_genes, low=1, allow_none=True)
    max_cells = check_int("max_cells", max_cells, low=1, allow_none=True)
    n_cells_gene_var = check_int("n_cells_gene_var", n_cells_gene_var, low=1)
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    file = fetch(
        BRAIN_LARGE_FILE,
        path=path,
        data_dir=data_dir,
        subdir="brain_large",
        loader="brain_large",
    )
    with reading(file, loader="brain_large", cached=path is None):
        raw = read_10x_h5_chunked(
            file,
            n_genes=n_genes,
            max_cells=max_cells,
            genome="mm10" if has_group(file, "mm10") else None,
            n_cells_gene_var=n_cells_gene_var,
            chunk_size=chunk_size,
        )
    obs = raw.obs.copy()
    obs["cell_type"] = "unknown"
    return finalize(
        raw.X,
        obs,
        raw.var,
        source=f"10x 1.3M mouse brain cells, {BRAIN_LARGE_FILE.url}; top {n_genes} genes by "
        f"variance over the first {n_cells_gene_var} cells",
        what="brain_large",
        min_counts=2,
        min_genes=2,
    )
