"""``pbmc``: the scVI "PBMC" dataset, 10x pbmc8k + pbmc4k restricted as in scVI."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validation import check_bool
from ._archive import safe_extract
from ._download import RemoteFile, default_data_dir, download, fetch, reading
from ._finalize import finalize
from ._pbmc_metadata import read_pbmc_metadata
from ._tenx_mtx import read_10x_mtx

logger = logging.getLogger(__name__)

# 10x Genomics' CDN has no revisions, and no SHA-256 of these archives is published by
# 10x or found in any public downloader. They are checked against the MD5 sums that
# Bioconductor's TENxPBMCData records for exactly these files (inst/scripts/make-metadata.R).
PBMC_10X_FILES = {
    "pbmc8k": RemoteFile(
        url="https://cf.10xgenomics.com/samples/cell-exp/2.1.0/pbmc8k/"
        "pbmc8k_filtered_gene_bc_matrices.tar.gz",
        sha256=None,
        filename="pbmc8k_filtered_gene_bc_matrices.tar.gz",
        md5="cbb3a7553ece7eaddeb8a56df781ccb0",
    ),
    "pbmc4k": RemoteFile(
        url="https://cf.10xgenomics.com/samples/cell-exp/2.1.0/pbmc4k/"
        "pbmc4k_filtered_gene_bc_matrices.tar.gz",
        sha256=None,
        filename="pbmc4k_filtered_gene_bc_matrices.tar.gz",
        md5="f61f4deca423ef0fa82d63fdfa0497f7",
    ),
}

# YosefLab/scVI-data at the commit that gave both files their current content
# (2018-08-22, "gene_info for Figure 5 preprint"; identical on master at 9a647afc,
# 2025-05-21). The hashes are those of that commit's blobs (`git show COMMIT:PATH |
# sha256sum`); neither file is a Git LFS pointer.
_SCVI_DATA = (
    "https://raw.githubusercontent.com/YosefLab/scVI-data/58027751bad1f412634936eb2760dbc6649a989e"
)
PBMC_GENE_INFO_FILE = RemoteFile(
    url=f"{_SCVI_DATA}/gene_info.csv",
    sha256="cc33ad3226e9750de0f1d9782b9021d6a82224f6dde43005e6d6558eb560f9d5",
    filename="gene_info_pbmc.csv",
)
PBMC_METADATA_FILE = RemoteFile(
    url=f"{_SCVI_DATA}/pbmc_metadata.pickle",
    sha256="a7b8b2a5cec508b8f3c080aa28bcc3c6be34ab249bacc4c6b8bc1cec3a966e07",
    filename="pbmc_metadata.pickle",
)


def _pbmc_sample(
    sample: str,
    *,
    path: str | os.PathLike | None,
    data_dir: str | os.PathLike | None,
) -> ad.AnnData:
    """One 10x sample (``pbmc8k`` or ``pbmc4k``) from ``path`` or the cache."""
    remote = PBMC_10X_FILES[sample]
    if path is not None:
        root = Path(path)
        if (root / sample).is_dir():
            with reading(root / sample, loader="pbmc", cached=False):
                return read_10x_mtx(root / sample)
        archive = root / remote.filename
        if not archive.is_file():
            raise FileNotFoundError(
                f"Neither {root / sample}/ (an extracted 10x folder) nor {archive} exists; "
                f"download {remote.url}."
            )
        with tempfile.TemporaryDirectory() as tmp, reading(archive, loader="pbmc", cached=False):
            extracted = Path(tmp) / sample
            safe_extract(archive, extracted)
            return read_10x_mtx(extracted)
    cache = default_data_dir(data_dir) / "pbmc"
    extracted = cache / sample
    if not extracted.is_dir():
        archive = download(
            remote.url, cache / remote.filename, sha256=remote.sha256, md5=remote.md5, loader="pbmc"
        )
        logger.info("Extracting %s", archive)
        with reading(archive, loader="pbmc", cached=True):
            safe_extract(archive, extracted)
    with reading(extracted, loader="pbmc", cached=True, source=cache / remote.filename):
        return read_10x_mtx(extracted)


def pbmc(
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    scvi_subset: bool = True,
) -> ad.AnnData:
    """The scVI "PBMC" dataset: 10x pbmc8k + pbmc4k, about 12k cells x 3346 genes.

    Built as in scvi-tools' ``_load_pbmc_dataset``: each 10x filtered matrix
    (Cell Ranger 2.1.0, GRCh38) is read, cells and genes with no counts are removed,
    the two are stacked (pbmc8k first, ``batch`` 0, then pbmc4k, ``batch`` 1) on the
    genes they share, the cells are restricted and ordered as in the scVI metadata
    (``pbmc_metadata.pickle``; cells listed there but absent from the 10x files are
    left out, as in scvi-tools) and the genes restricted and ordered as in
    ``gene_info_pbmc.csv`` (column ``ENSG``). Labels are the scVI clusters
    (``list_clusters[clusters]``). Where a barcode occurs in both samples the
    metadata row is matched to the pbmc4k cell, as in scvi-tools.

    The two scVI files are downloaded from a fixed commit of the scVI-data repository
    and checked against their SHA-256 before they enter the cache.

    Parameters
    ----------
    path
        A folder with local copies of the raw files, named as when downloaded:
        ``pbmc8k_filtered_gene_bc_matrices.tar.gz`` and
        ``pbmc4k_filtered_gene_bc_matrices.tar.gz`` (or ``pbmc8k/`` and ``pbmc4k/``,
        extracted), plus ``gene_info_pbmc.csv`` and ``pbmc_metadata.pickle`` when
        ``scvi_subset`` is true. They are read as given: no download, no cache, no
        checksum.
    data_dir
        Cache folder; ``scanpy.settings.datasetdir`` by default (files go to
        ``<data_dir>/pbmc/``).
    scvi_subset
        If false, skip the scVI metadata: every cell with counts of both samples, every
        gene with counts in both, ``cell_type`` ``"unknown"`` (only the two 10x files
        are needed).

    Returns
    -------
    AnnData of about 11,990 x 3346 (scVI selection; without it, the 8,381 + 4,340
    cells of the two samples x the genes detected in both), counts in ``X`` (CSR,
    ``float32``) and ``layers["counts"]``. ``obs``:
    ``cell_type`` (scVI cluster names), ``labels`` (cluster index), ``batch``
    (``"0"`` pbmc8k, ``"1"`` pbmc4k, categorical), ``sample``, ``barcode``;
    ``obs_names`` are ``<barcode>-<sample>``. ``var_names``: gene symbols (made
    unique); ``var["gene_ids"]``: Ensembl ids.

    Raises
    ------
    DatasetDownloadError
        When a file is not cached, no ``path`` is given and the download fails, or a
        downloaded file does not have its pinned SHA-256.
    FileNotFoundError
        When ``path`` lacks one of the files (the message says which, and where
        to download it).
    DatasetFileError
        When the file (given or cached) cannot be read as this dataset; the
        message names the file.
    ValueError
        When ``pbmc_metadata.pickle`` is not the scVI metadata or holds anything but
        plain data (see Notes).

    Notes
    -----
    ``pbmc_metadata.pickle`` is a Python pickle (pandas objects) from the scVI-data
    repository. It is never unpickled: a restricted reader rebuilds the barcodes,
    clusters and cluster names from the pickle's opcodes and refuses any other
    callable, so even a tampered copy given with ``path=`` cannot run code.
    """
    scvi_subset = check_bool("scvi_subset", scvi_subset)
    samples = {}
    for batch, sample in enumerate(("pbmc8k", "pbmc4k")):
        a = _pbmc_sample(sample, path=path, data_dir=data_dir)
        counts = np.asarray(a.X.sum(axis=1)).ravel()
        a = a[counts > 0]
        gcounts = np.asarray(a.X.sum(axis=0)).ravel()
        a = a[:, gcounts > 0].copy()
        a.obs["barcode"] = a.obs_names.to_numpy()
        a.obs["sample"] = sample
        a.obs["batch"] = str(batch)
        samples[sample] = a
    a8, a4 = samples["pbmc8k"], samples["pbmc4k"]
    common = a8.var_names[a8.var_names.isin(a4.var_names)]
    X = sp.vstack([a8[:, common].X, a4[:, common].X], format="csr")
    obs = pd.concat([a8.obs, a4.obs], axis=0, ignore_index=True)
    var = pd.DataFrame({"gene_ids": common.to_numpy()}, index=common)
    var["gene_symbols"] = a8.var.loc[common, "gene_symbols"].to_numpy()
    source = f"10x pbmc8k + pbmc4k ({PBMC_10X_FILES['pbmc8k'].url}, {PBMC_10X_FILES['pbmc4k'].url})"

    if scvi_subset:
        gene_info_file = fetch(
            PBMC_GENE_INFO_FILE, path=path, data_dir=data_dir, subdir="pbmc", loader="pbmc"
        )
        metadata_file = fetch(
            PBMC_METADATA_FILE, path=path, data_dir=data_dir, subdir="pbmc", loader="pbmc"
        )
        with reading(gene_info_file, loader="pbmc", cached=path is None):
            gene_info = pd.read_csv(gene_info_file, sep=",")
            if "ENSG" not in gene_info:
                raise ValueError("it has no ENSG column")
        with reading(metadata_file, loader="pbmc", cached=path is None):
            metadata = read_pbmc_metadata(metadata_file)
        position = {bc: i for i, bc in enumerate(obs["barcode"])}  # pbmc4k wins on clashes
        found = np.array([bc in position for bc in metadata.barcodes], dtype=bool)
        logger.info(
            "pbmc: %d of %d metadata cells found in the 10x files",
            int(found.sum()),
            metadata.barcodes.size,
        )
        rows = np.array([position[bc] for bc in metadata.barcodes[found]], dtype=np.int64)
        clusters = metadata.clusters[found]
        X = X[rows]
        obs = obs.iloc[rows].reset_index(drop=True)
        obs["labels"] = clusters
        obs["cell_type"] = metadata.cluster_names[clusters]
        ensg = gene_info["ENSG"].astype(str)
        ensg = ensg[ensg.isin(var.index)].to_numpy()
        cols = var.index.get_indexer(ensg)
        X = X[:, cols]
        var = var.iloc[cols]
        source += (
            f"; cells, labels and genes of scVI ({PBMC_METADATA_FILE.url}, "
            f"{PBMC_GENE_INFO_FILE.url})"
        )
    obs["batch"] = obs["batch"].astype("category")
    obs.index = pd.Index(obs["barcode"].astype(str) + "-" + obs["sample"].astype(str))
    var = var.set_index(pd.Index(var["gene_symbols"].astype(str).to_numpy()))
    var = var.drop(columns="gene_symbols")
    return finalize(X, obs, var, source=source, what="pbmc")
