"""Derive the small real data sets in ``tests/data/`` from the shared benchmark data (run by hand).

The test suite reads only the files this script writes, so a fresh clone runs every test
without ``../shared``. Run it again only to change a subset, then commit the new files::

    python tests/data/make_test_data.py                      # reads ../shared/data beside the repo
    python tests/data/make_test_data.py --shared /path/to/shared/data

It writes, with a fixed seed (the same input gives byte-for-byte the same counts):

``cortex_800x200.h5ad``
    800 of the 3005 cells of ``cortex_zeisel_3005x200.h5ad`` (Zeisel et al. 2015), drawn
    uniformly without replacement and kept in file order; all 200 genes; ``obs["cell_type"]``.
``cellbench_360x400.h5ad``
    360 of the 909 cells of ``cellbench_5cl_3plates_909x16074.h5ad`` (CellBench CEL-seq2,
    5 lung cancer cell lines on 3 plates): 24 cells drawn from each of the 15 plate x cell line
    groups (the smallest holds 35), kept in file order. Genes: the 400 of highest variance of
    ``log1p(counts / total * 1e4)`` over all 909 cells, in file order. ``obs["batch"]`` (the
    plate) and ``obs["cell_type"]`` (the cell line). 400 genes rather than 1000 keep
    ``tests/data`` near 400 KB: at 82 % non-zeros, 1000 genes take 645 KB on their own.

Each file holds integer-valued ``float32`` counts as CSR in ``X``, the kept ``obs`` columns,
and ``uns["source"]``: what it is a subset of and how it was drawn. pbmc68k needs no file:
``scanpy_autotune.datasets.pbmc68k_counts()`` rebuilds those 700 cells offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = HERE.parents[2] / "shared" / "data"  # tests/data -> repository -> its parent
SEED = 0
OBS_COLUMNS = ("cell_type", "batch")

CORTEX_SOURCE = "cortex_zeisel_3005x200.h5ad"
CORTEX_CELLS = 800
CELLBENCH_SOURCE = "cellbench_5cl_3plates_909x16074.h5ad"
CELLBENCH_CELLS_PER_GROUP = 24  # x 3 plates x 5 cell lines = 360 cells
CELLBENCH_GENES = 400


def counts_subset(adata: ad.AnnData, cells: np.ndarray, genes: np.ndarray, how: str) -> ad.AnnData:
    """A new AnnData of the given cells and genes: CSR float32 counts, cell labels, its source.

    Parameters
    ----------
    adata
        The full data set, raw counts in ``X`` and its own origin in ``uns["source"]``.
    cells, genes
        Integer indices of the rows and columns to keep.
    how
        How the subset was drawn, written into ``uns["source"]``.

    Returns
    -------
    The subset, with ``obs["cell_type"]`` and ``obs["batch"]`` where ``adata`` has them.
    """
    X = sp.csr_matrix(adata.X[cells][:, genes], dtype=np.float32)
    X.sort_indices()
    if X.data.min(initial=0) < 0 or not np.array_equal(X.data, np.round(X.data)):
        raise ValueError("the subset's counts are not non-negative integers")
    empty = int((np.asarray(X.sum(axis=1)).ravel() == 0).sum())
    if empty:
        raise ValueError(f"{empty} kept cell(s) have no counts in the kept genes")
    obs = pd.DataFrame(index=adata.obs_names[cells].copy())
    for column in OBS_COLUMNS:
        if column in adata.obs:
            labels = pd.Categorical(adata.obs[column].iloc[cells])
            obs[column] = labels.remove_unused_categories()
    var = pd.DataFrame(index=adata.var_names[genes].copy())
    source = f"{how}; the full data set: {adata.uns.get('source', 'unknown')}"
    return ad.AnnData(X=X, obs=obs, var=var, uns={"source": source})


def top_lognorm_variance_genes(X: sp.spmatrix, n_genes: int) -> np.ndarray:
    """Indices, in column order, of the ``n_genes`` columns of highest log-normalised variance.

    Each cell is scaled to 10,000 counts, then ``log1p``; variance is over cells
    (``ddof=0``). Ties at the cut-off go to the lower column index.

    Parameters
    ----------
    X
        Cells x genes raw counts; every cell has counts.
    n_genes
        How many genes to select.

    Returns
    -------
    Sorted integer column indices.
    """
    X = sp.csr_matrix(X, dtype=np.float64)
    totals = np.asarray(X.sum(axis=1)).ravel()
    lognorm = sp.csr_matrix(sp.diags(1e4 / totals) @ X)
    lognorm.data = np.log1p(lognorm.data)
    mean = np.asarray(lognorm.mean(axis=0)).ravel()
    variance = np.asarray(lognorm.multiply(lognorm).mean(axis=0)).ravel() - mean**2
    return np.sort(np.argsort(-variance, kind="stable")[:n_genes])


def cortex_800(shared: Path) -> ad.AnnData:
    """800 Zeisel cortex cells drawn uniformly (seed ``SEED``), all 200 genes."""
    full = ad.read_h5ad(shared / CORTEX_SOURCE)
    rng = np.random.default_rng(SEED)
    cells = np.sort(rng.choice(full.n_obs, CORTEX_CELLS, replace=False))
    how = (
        f"{CORTEX_CELLS} of the {full.n_obs} cells of {CORTEX_SOURCE}, drawn uniformly without "
        f"replacement by numpy.random.default_rng({SEED}).choice and kept in file order; "
        f"all {full.n_vars} genes (tests/data/make_test_data.py)"
    )
    return counts_subset(full, cells, np.arange(full.n_vars), how)


def cellbench_360(shared: Path) -> ad.AnnData:
    """CellBench cells balanced over plate x cell line, genes by log-normalised variance."""
    full = ad.read_h5ad(shared / CELLBENCH_SOURCE)
    rng = np.random.default_rng(SEED)
    groups = full.obs.groupby(["batch", "cell_type"], observed=True).indices  # sorted keys
    smallest = min(len(rows) for rows in groups.values())
    if smallest < CELLBENCH_CELLS_PER_GROUP:
        raise ValueError(f"a plate x cell line group has {smallest} cells, fewer than "
                         f"{CELLBENCH_CELLS_PER_GROUP}")
    cells = np.sort(np.concatenate([
        rng.choice(rows, CELLBENCH_CELLS_PER_GROUP, replace=False) for rows in groups.values()
    ]))
    genes = top_lognorm_variance_genes(full.X, CELLBENCH_GENES)
    how = (
        f"{len(cells)} of the {full.n_obs} cells of {CELLBENCH_SOURCE}: "
        f"{CELLBENCH_CELLS_PER_GROUP} from each of the {len(groups)} batch (plate) x cell_type "
        f"(cell line) groups, drawn without replacement by numpy.random.default_rng({SEED}).choice "
        f"group after group in sorted order, kept in file order; the {CELLBENCH_GENES} of "
        f"{full.n_vars} genes of highest variance of log1p(counts / cell total * 1e4) over all "
        f"{full.n_obs} cells, in file order (tests/data/make_test_data.py)"
    )
    return counts_subset(full, cells, genes, how)


def main(argv: list[str] | None = None) -> None:
    """Write the subsets into ``tests/data`` and print their shapes and sizes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                        help=f"folder of the full data sets (default: {DEFAULT_SHARED})")
    args = parser.parse_args(argv)
    for make in (cortex_800, cellbench_360):
        adata = make(args.shared)
        path = HERE / f"{make.__name__.split('_')[0]}_{adata.n_obs}x{adata.n_vars}.h5ad"
        adata.write_h5ad(path, compression="gzip")
        print(f"{path.name}: {adata.n_obs} cells x {adata.n_vars} genes, "
              f"{path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
