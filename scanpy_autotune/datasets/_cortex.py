"""``cortex``: Zeisel et al. 2015 mouse cortex (the scVI "Cortex" dataset)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.utils import make_index_unique

from .._validation import check_int
from ._counts import check_counts
from ._download import RemoteFile, fetch, reading
from ._finalize import finalize
from ._gene_selection import top_variance_genes

logger = logging.getLogger(__name__)

# The Linnarsson lab's copy, the address scVI used. The host has no revisions and no
# SHA-256 of this file is published (none found in scvi-tools, scanpy, Bioconductor or
# other public downloaders), so it is not verified yet: the first download logs its hash.
CORTEX_FILE = RemoteFile(
    url="https://storage.googleapis.com/linnarsson-lab-www-blobs/blobs/cortex/"
    "expression_mRNA_17-Aug-2014.txt",
    sha256=None,
    filename="expression_mRNA_17-Aug-2014.txt",
)


def _clean_column(name: str) -> str:
    name = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip().lower()).strip("_")
    return name or "unnamed"


def _maybe_numeric(values: Sequence[str]) -> np.ndarray:
    """Values as numbers when they all parse, else as strings (positional, no index)."""
    try:
        return pd.to_numeric(pd.Series(values)).to_numpy()
    except (ValueError, TypeError):
        return np.asarray(values, dtype=str)


def read_cortex_txt(path: str | os.PathLike) -> ad.AnnData:
    """Parse the Zeisel et al. 2015 ``expression_mRNA_17-Aug-2014.txt`` file.

    The file is tab separated. The first rows describe the cells: their first field
    is empty, the second is the attribute name (``tissue``, ``group #``,
    ``total mRNA mol``, ``well``, ``sex``, ``age``, ``diameter``, ``cell_id``,
    ``level1class``, ``level2class``) and the values follow, one per cell. A filler
    row follows (skipped, as is any row without values). Then, from line 12, one row
    per gene: gene name, gene cluster, and the counts of every cell. Genes found at
    several genomic locations have one row each (``Name_loc1``, ``Name_loc2``, ...);
    they are kept apart, as scVI did.

    Parameters
    ----------
    path
        The text file.

    Returns
    -------
    AnnData with every gene (CSR ``float32`` counts, not yet finalised; duplicated
    gene names made unique with ``-1``, ``-2``, ... suffixes); obs holds
    every cell attribute under a cleaned name (``group #`` -> ``group``,
    ``total mRNA mol`` -> ``total_mrna_mol``, ...) and is indexed by ``cell_id``;
    ``var["cluster"]`` holds the gene cluster.
    """
    meta: dict[str, list[str]] = {}
    n_cells: int | None = None
    first_gene_line: int | None = None
    # pass 1: the cell attribute rows, up to the first gene row
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh):
            fields = line.rstrip("\r\n").split("\t")
            if not any(f.strip() for f in fields[2:]):
                continue  # blank or filler row (the file has one before the genes)
            if fields[0].strip() != "":
                first_gene_line = lineno
                break
            if n_cells is None:
                n_cells = len(fields) - 2
            if len(fields) - 2 != n_cells:
                raise ValueError(
                    f"{path}:{lineno + 1}: {len(fields) - 2} values, expected {n_cells}."
                )
            meta[fields[1].strip()] = fields[2:]
    if first_gene_line is None:
        raise ValueError(f"{path}: no gene rows found.")

    # pass 2: the gene rows, with pandas' C parser, a block of genes at a time
    gene_names: list[str] = []
    gene_clusters: list[str] = []
    blocks: list[sp.csr_matrix] = []
    reader = pd.read_csv(
        path,
        sep="\t",
        header=None,
        skiprows=first_gene_line,
        chunksize=2000,
        dtype={0: str, 1: str},
        keep_default_na=False,
        na_values=[""],
        engine="c",
    )
    with reader:
        while True:
            try:
                chunk = next(reader)
            except StopIteration:
                break
            except pd.errors.ParserError as err:
                raise ValueError(f"{path}: malformed gene rows: {err}".strip()) from err
            n_values = chunk.shape[1] - 2
            if n_cells is None:
                n_cells = n_values
            if n_values != n_cells:
                raise ValueError(f"{path}: gene rows have {n_values} counts, expected {n_cells}.")
            try:
                values = chunk.iloc[:, 2:].to_numpy(dtype=np.float64)
            except ValueError as err:
                raise ValueError(f"{path}: unreadable counts ({err}).") from err
            if np.isnan(values).any():
                raise ValueError(f"{path}: missing counts (a gene row is too short).")
            block = sp.csr_matrix(values)  # genes x cells
            block.data = check_counts(block.data, str(path)).astype(np.float32)
            blocks.append(block)
            gene_names.extend(chunk.iloc[:, 0].str.strip().tolist())
            gene_clusters.extend(chunk.iloc[:, 1].astype(str).str.strip().tolist())
    if not blocks or n_cells is None:
        raise ValueError(f"{path}: no gene rows found.")
    X_gc = sp.vstack(blocks, format="csr").T  # cells x genes (CSC)
    obs = pd.DataFrame(index=pd.RangeIndex(n_cells))
    for name, vals in meta.items():
        obs[_clean_column(name)] = _maybe_numeric(vals)
    if "cell_id" in obs:
        obs.index = pd.Index(obs.pop("cell_id").astype(str).to_numpy())
    var = pd.DataFrame(index=make_index_unique(pd.Index(gene_names, dtype=str)))
    var["cluster"] = _maybe_numeric(gene_clusters)
    return ad.AnnData(
        X=sp.csr_matrix(X_gc, dtype=np.float32), obs=obs.set_axis(obs.index.astype(str)), var=var
    )


def cortex(
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    n_genes: int | None = 558,
    genes_to_keep: Sequence[str] | None = None,
) -> ad.AnnData:
    """Zeisel et al. 2015 mouse cortex (the scVI "Cortex" dataset): 3005 cells.

    Downloads ``expression_mRNA_17-Aug-2014.txt`` (from the Linnarsson lab's
    storage, the URL scVI uses) into ``<data_dir>/cortex/`` once. Preprocessing as in scVI's
    ``CortexDataset``: keep the ``n_genes`` genes of highest variance of the raw
    counts over all cells, plus ``genes_to_keep``, in the order of the file. Ties at
    the cut-off go to the gene listed first (scVI's ``argsort`` left them undefined).

    Parameters
    ----------
    path
        A local copy of ``expression_mRNA_17-Aug-2014.txt`` (or the folder holding it);
        it is read as given (no download, no cache, no checksum).
    data_dir
        Cache folder; ``scanpy.settings.datasetdir`` by default.
    n_genes
        How many genes to keep by variance; ``None`` keeps all 19,972.
    genes_to_keep
        Gene names (case-insensitive) kept in addition to the top-variance genes.

    Returns
    -------
    AnnData of 3005 x 558 (by default), counts in ``X`` (CSR, ``float32``) and
    ``layers["counts"]``. ``obs``: ``cell_type`` (``level1class``, 7 types),
    ``precise_cell_type`` (``level2class``, 47 subclasses), ``tissue``, ``group``,
    ``total_mrna_mol``, ``well``, ``sex``, ``age``, ``diameter``, ``level1class``,
    ``level2class``; indexed by ``cell_id``. ``var["cluster"]``: the gene cluster
    column of the file.

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
    if isinstance(genes_to_keep, str):
        raise ValueError(f"genes_to_keep={genes_to_keep!r} must be a list of gene names, e.g. [{genes_to_keep!r}].")
    file = fetch(
        CORTEX_FILE,
        path=path,
        data_dir=data_dir,
        subdir="cortex",
        loader="cortex",
    )
    logger.info("Parsing %s", file)
    with reading(file, loader="cortex", cached=path is None):
        full = read_cortex_txt(file)
    keep = None
    if genes_to_keep:
        wanted = {g.lower() for g in genes_to_keep}
        lower = full.var_names.str.lower()
        keep = np.asarray(lower.isin(wanted))
        missing = wanted - set(lower[keep])
        if missing:
            logger.warning("cortex: genes_to_keep not in the data: %s", sorted(missing))
    selected = top_variance_genes(full.X, n_genes, keep)
    sub = full[:, selected]
    obs = sub.obs.copy()
    if "level1class" in obs:
        obs["cell_type"] = obs["level1class"].astype(str)
    if "level2class" in obs:
        obs["precise_cell_type"] = obs["level2class"].astype(str).astype("category")
    return finalize(
        sub.X,
        obs,
        sub.var,
        source=f"Zeisel et al. 2015, {CORTEX_FILE.url}; top {n_genes} genes by variance",
        what="cortex",
    )
