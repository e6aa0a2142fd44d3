"""Real count datasets: loaders with a local cache, plus an offline default.

Every loader returns an :class:`~anndata.AnnData` with

- raw integer counts in ``X`` (CSR, ``float32``) and a copy in ``layers["counts"]``,
- labels in ``obs["cell_type"]`` (categorical; ``"unknown"`` where the source has none),
- gene symbols as ``var_names`` (made unique),
- a one-line provenance note in ``uns["source"]``.

Cells whose counts are all zero are dropped (the number is logged).

:func:`pbmc68k_counts` needs no network: it recovers the counts behind the copy of
``pbmc68k_reduced`` that ships with scanpy. :func:`cortex`, :func:`pbmc` and
:func:`brain_large` fetch the datasets of the scVI papers (Lopez et al. 2018,
Eyer et al. 2019) from their original public sources, once, into a cache folder
(``scanpy.settings.datasetdir`` unless ``data_dir=`` says otherwise). The loaders
cache the raw downloads, not the processed AnnData. Pass ``path=`` to use a copy of
the raw file(s) that you downloaded yourself; a ``path=`` is always read directly and
never downloaded or copied into the cache.
"""

from __future__ import annotations

import http.client
import logging
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.utils import make_index_unique
from tqdm.auto import tqdm

__all__ = [
    "DatasetDownloadError",
    "brain_large",
    "cortex",
    "pbmc",
    "pbmc68k_counts",
]

logger = logging.getLogger("scanpy_autotune.datasets")

CORTEX_URL = (
    "https://storage.googleapis.com/linnarsson-lab-www-blobs/blobs/cortex/"
    "expression_mRNA_17-Aug-2014.txt"
)
CORTEX_FILENAME = "expression_mRNA_17-Aug-2014.txt"

PBMC_10X_URLS = {
    "pbmc8k": "https://cf.10xgenomics.com/samples/cell-exp/2.1.0/pbmc8k/"
    "pbmc8k_filtered_gene_bc_matrices.tar.gz",
    "pbmc4k": "https://cf.10xgenomics.com/samples/cell-exp/2.1.0/pbmc4k/"
    "pbmc4k_filtered_gene_bc_matrices.tar.gz",
}
PBMC_GENE_INFO_URL = "https://github.com/YosefLab/scVI-data/raw/master/gene_info.csv"
PBMC_GENE_INFO_FILENAME = "gene_info_pbmc.csv"
PBMC_METADATA_URL = "https://github.com/YosefLab/scVI-data/raw/master/pbmc_metadata.pickle"
PBMC_METADATA_FILENAME = "pbmc_metadata.pickle"

BRAIN_LARGE_URL = (
    "https://cf.10xgenomics.com/samples/cell-exp/1.3.0/1M_neurons/"
    "1M_neurons_filtered_gene_bc_matrices_h5.h5"
)
BRAIN_LARGE_FILENAME = "1M_neurons_filtered_gene_bc_matrices_h5.h5"

#: Largest distance from an integer accepted when recovering counts from log data.
_INTEGER_TOL = 0.25
_CHUNK_BYTES = 1 << 20

# Indirection so that tests can simulate a machine without network.
_urlopen = urllib.request.urlopen


class DatasetDownloadError(ConnectionError):
    """A dataset file could not be downloaded (offline, blocked host, broken transfer).

    Subclass of :class:`ConnectionError` (and so of :class:`OSError`). The message
    names the URL and says how to use a copy downloaded by hand (``path=``).
    """


# ---------------------------------------------------------------------------
# Download and cache
# ---------------------------------------------------------------------------


def _default_data_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    import scanpy as sc

    return Path(sc.settings.datasetdir)


def _download(url: str, dest: Path, *, loader: str = "the loader") -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already exists.

    The bytes go to a temporary file beside ``dest`` that is renamed once complete,
    so the cache never holds half a file.

    Parameters
    ----------
    url
        Where to download from.
    dest
        Final location of the file.
    loader
        Name of the public function, used in the error message.

    Returns
    -------
    ``dest``.

    Raises
    ------
    DatasetDownloadError
        When the network or the host fails, or the transfer is incomplete.
    """
    dest = Path(dest)
    if dest.exists():
        logger.info("Using cached %s", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    hint = (
        f"If this machine is offline, download {url} by hand (for example "
        f"`curl -L -o {dest.name} '{url}'`) and pass path=... to {loader}(), or put the "
        f"file at {dest}."
    )
    logger.info("Downloading %s to %s", url, dest)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with _urlopen(url, timeout=60) as response:
                    length = response.headers.get("Content-Length") if response.headers else None
                    total = int(length) if length else None
                    written = 0
                    with tqdm(
                        total=total,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=dest.name,
                    ) as bar:
                        while True:
                            chunk = response.read(_CHUNK_BYTES)
                            if not chunk:
                                break
                            out.write(chunk)
                            written += len(chunk)
                            bar.update(len(chunk))
            except (
                urllib.error.URLError,
                http.client.HTTPException,
                ConnectionError,
                TimeoutError,
            ) as err:
                raise DatasetDownloadError(f"Could not download {url}: {err}. {hint}") from err
            if total is not None and written != total:
                raise DatasetDownloadError(
                    f"Incomplete download of {url}: got {written} of {total} bytes. {hint}"
                )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("Saved %s (%d bytes)", dest, dest.stat().st_size)
    return dest


def _local_file(path: str | os.PathLike, filename: str) -> Path:
    """``path`` itself, or ``path / filename`` when ``path`` is a folder."""
    path = Path(path)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected a copy of {filename}).")
    return path


def _fetch(
    url: str,
    filename: str,
    *,
    path: str | os.PathLike | None,
    data_dir: str | os.PathLike | None,
    subdir: str,
    loader: str,
) -> Path:
    """Resolve a raw file: ``path`` if given, else the cache (downloading if needed)."""
    if path is not None:
        local = _local_file(path, filename)
        logger.info("Reading %s", local)
        return local
    return _download(url, _default_data_dir(data_dir) / subdir / filename, loader=loader)


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _check_counts(data: np.ndarray, what: str, tol: float = 1e-6) -> np.ndarray:
    """Round ``data`` to integers after checking it is finite, non-negative and integral."""
    data = np.asarray(data, dtype=np.float64)
    if data.size == 0:
        return data
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{what}: counts contain NaN or infinite values.")
    if data.min() < 0:
        raise ValueError(f"{what}: counts contain negative values (min {data.min()}).")
    rounded = np.rint(data)
    dev = float(np.abs(data - rounded).max())
    if dev > tol:
        raise ValueError(f"{what}: counts are not integers (max distance to an integer {dev:.3g}).")
    return rounded


def _top_variance_genes(
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
    return _select_by_variance(var, n_genes, keep)


def _select_by_variance(var: np.ndarray, n_genes: int, keep: np.ndarray | None) -> np.ndarray:
    order = np.argsort(-var, kind="stable")
    selected = np.zeros(var.shape[0], dtype=bool)
    selected[order[:n_genes]] = True
    if keep is not None:
        selected |= keep
    return np.flatnonzero(selected)


def _finalize(
    X: sp.spmatrix,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    *,
    source: str,
    what: str,
    min_counts: int = 1,
    min_genes: int = 1,
) -> ad.AnnData:
    """Assemble the AnnData every loader returns (counts in X and layers["counts"])."""
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


def _clean_column(name: str) -> str:
    name = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip().lower()).strip("_")
    return name or "unnamed"


def _maybe_numeric(values: Sequence[str]) -> np.ndarray:
    """Values as numbers when they all parse, else as strings (positional, no index)."""
    try:
        return pd.to_numeric(pd.Series(values)).to_numpy()
    except (ValueError, TypeError):
        return np.asarray(values, dtype=str)


# ---------------------------------------------------------------------------
# pbmc68k (offline)
# ---------------------------------------------------------------------------


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
    X.data = _check_counts(X.data, "pbmc68k_reduced", tol=_INTEGER_TOL)
    obs = pd.DataFrame(index=ref.obs_names.copy())
    obs["cell_type"] = ref.obs["bulk_labels"].to_numpy()
    var = pd.DataFrame(index=ref.raw.var_names.copy())
    adata = _finalize(
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


# ---------------------------------------------------------------------------
# Cortex (Zeisel et al. 2015)
# ---------------------------------------------------------------------------


def _read_cortex_txt(path: str | os.PathLike) -> ad.AnnData:
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
            block.data = _check_counts(block.data, str(path)).astype(np.float32)
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

    Downloads ``expression_mRNA_17-Aug-2014.txt`` (the URL used by scVI, see
    ``CORTEX_URL``) into ``<data_dir>/cortex/`` once. Preprocessing as in scVI's
    ``CortexDataset``: keep the ``n_genes`` genes of highest variance of the raw
    counts over all cells, plus ``genes_to_keep``, in the order of the file. Ties at
    the cut-off go to the gene listed first (scVI's ``argsort`` left them undefined).

    Parameters
    ----------
    path
        A local copy of ``expression_mRNA_17-Aug-2014.txt`` (or the folder holding it);
        it is read directly, the cache is not used.
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
        When the file is not cached, no ``path`` is given and the download fails.
    """
    file = _fetch(
        CORTEX_URL,
        CORTEX_FILENAME,
        path=path,
        data_dir=data_dir,
        subdir="cortex",
        loader="cortex",
    )
    logger.info("Parsing %s", file)
    full = _read_cortex_txt(file)
    keep = None
    if genes_to_keep:
        wanted = {g.lower() for g in genes_to_keep}
        lower = full.var_names.str.lower()
        keep = np.asarray(lower.isin(wanted))
        missing = wanted - set(lower[keep])
        if missing:
            logger.warning("cortex: genes_to_keep not in the data: %s", sorted(missing))
    selected = _top_variance_genes(full.X, n_genes, keep)
    sub = full[:, selected]
    obs = sub.obs.copy()
    if "level1class" in obs:
        obs["cell_type"] = obs["level1class"].astype(str)
    if "level2class" in obs:
        obs["precise_cell_type"] = obs["level2class"].astype(str).astype("category")
    return _finalize(
        sub.X,
        obs,
        sub.var,
        source=f"Zeisel et al. 2015, {CORTEX_URL}; top {n_genes} genes by variance",
        what="cortex",
    )


# ---------------------------------------------------------------------------
# PBMC (10x pbmc8k + pbmc4k, scVI's selection)
# ---------------------------------------------------------------------------


def _find_mtx_dir(root: Path) -> Path:
    """The folder under ``root`` (itself included) that holds ``matrix.mtx[.gz]``."""
    for name in ("matrix.mtx", "matrix.mtx.gz"):
        if (root / name).is_file():
            return root
    for dirpath, _, files in sorted(os.walk(root)):
        if any(f in ("matrix.mtx", "matrix.mtx.gz") for f in files):
            return Path(dirpath)
    raise FileNotFoundError(f"No matrix.mtx(.gz) under {root}.")


def _read_10x_mtx(path: str | os.PathLike) -> ad.AnnData:
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

    folder = _find_mtx_dir(Path(path))
    adata = sc.read_10x_mtx(folder, var_names="gene_ids", make_unique=False, cache=False)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    if "gene_symbols" not in adata.var:
        adata.var["gene_symbols"] = adata.var_names.to_numpy()
    return adata


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive into ``dest`` (atomically: temporary folder then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        with tarfile.open(archive, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                base = tmp.resolve()
                for member in tar.getmembers():
                    target = (tmp / member.name).resolve()
                    if base not in target.parents and target != base:
                        raise ValueError(f"Unsafe path in {archive}: {member.name}")
                    if not (member.isfile() or member.isdir()):
                        raise ValueError(f"Unsupported member in {archive}: {member.name}")
                tar.extractall(tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _pbmc_sample(
    sample: str,
    *,
    path: str | os.PathLike | None,
    data_dir: str | os.PathLike | None,
) -> ad.AnnData:
    """One 10x sample (``pbmc8k`` or ``pbmc4k``) from ``path`` or the cache."""
    archive_name = f"{sample}_filtered_gene_bc_matrices.tar.gz"
    if path is not None:
        root = Path(path)
        if (root / sample).is_dir():
            return _read_10x_mtx(root / sample)
        archive = root / archive_name
        if not archive.is_file():
            raise FileNotFoundError(
                f"Neither {root / sample}/ (an extracted 10x folder) nor {archive} exists; "
                f"download {PBMC_10X_URLS[sample]}."
            )
        with tempfile.TemporaryDirectory() as tmp:
            extracted = Path(tmp) / sample
            _safe_extract(archive, extracted)
            return _read_10x_mtx(extracted)
    cache = _default_data_dir(data_dir) / "pbmc"
    extracted = cache / sample
    if not extracted.is_dir():
        archive = _download(PBMC_10X_URLS[sample], cache / archive_name, loader="pbmc")
        logger.info("Extracting %s", archive)
        _safe_extract(archive, extracted)
    return _read_10x_mtx(extracted)


def _metadata_barcodes(obj: Any) -> np.ndarray:
    if isinstance(obj, pd.DataFrame | pd.Series):
        if isinstance(obj.index, pd.RangeIndex):
            return np.asarray(obj.to_numpy()).ravel().astype(str)
        return np.asarray(obj.index).ravel().astype(str)
    return np.asarray(obj).ravel().astype(str)


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

    Parameters
    ----------
    path
        A folder with local copies of the raw files, named as when downloaded:
        ``pbmc8k_filtered_gene_bc_matrices.tar.gz`` and
        ``pbmc4k_filtered_gene_bc_matrices.tar.gz`` (or ``pbmc8k/`` and ``pbmc4k/``,
        extracted), plus ``gene_info_pbmc.csv`` and ``pbmc_metadata.pickle`` when
        ``scvi_subset`` is true. Read directly, the cache is not used.
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
    cells of the two samples x the genes detected in both), counts in ``X`` (CSR, ``float32``) and ``layers["counts"]``. ``obs``:
    ``cell_type`` (scVI cluster names), ``labels`` (cluster index), ``batch``
    (``"0"`` pbmc8k, ``"1"`` pbmc4k, categorical), ``sample``, ``barcode``;
    ``obs_names`` are ``<barcode>-<sample>``. ``var_names``: gene symbols (made
    unique); ``var["gene_ids"]``: Ensembl ids.

    Raises
    ------
    DatasetDownloadError
        When a file is not cached, no ``path`` is given and the download fails.

    Notes
    -----
    ``pbmc_metadata.pickle`` is a Python pickle (pandas objects) from the scVI-data
    repository and is loaded with :func:`pandas.read_pickle`, as scvi-tools does;
    unpickling runs code from the file, so only use a copy from that source.
    """
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
    source = f"10x pbmc8k + pbmc4k ({PBMC_10X_URLS['pbmc8k']}, {PBMC_10X_URLS['pbmc4k']})"

    if scvi_subset:
        gene_info_file = _fetch(
            PBMC_GENE_INFO_URL,
            PBMC_GENE_INFO_FILENAME,
            path=path,
            data_dir=data_dir,
            subdir="pbmc",
            loader="pbmc",
        )
        metadata_file = _fetch(
            PBMC_METADATA_URL,
            PBMC_METADATA_FILENAME,
            path=path,
            data_dir=data_dir,
            subdir="pbmc",
            loader="pbmc",
        )
        gene_info = pd.read_csv(gene_info_file, sep=",")
        try:
            metadata = pd.read_pickle(metadata_file)
        except (pickle.UnpicklingError, ImportError, AttributeError, TypeError) as err:
            raise ValueError(f"Could not read {metadata_file}: {err}") from err
        position = {bc: i for i, bc in enumerate(obs["barcode"])}  # pbmc4k wins on clashes
        meta_barcodes = _metadata_barcodes(metadata["barcodes"])
        found = np.array([bc in position for bc in meta_barcodes], dtype=bool)
        logger.info(
            "pbmc: %d of %d metadata cells found in the 10x files",
            int(found.sum()),
            meta_barcodes.size,
        )
        rows = np.array([position[bc] for bc in meta_barcodes[found]], dtype=np.int64)
        clusters = np.asarray(metadata["clusters"]).ravel()[found].astype(np.int64)
        names = np.asarray(metadata["list_clusters"]).ravel().astype(str)
        X = X[rows]
        obs = obs.iloc[rows].reset_index(drop=True)
        obs["labels"] = clusters
        obs["cell_type"] = names[clusters]
        ensg = gene_info["ENSG"].astype(str)
        ensg = ensg[ensg.isin(var.index)].to_numpy()
        cols = var.index.get_indexer(ensg)
        X = X[:, cols]
        var = var.iloc[cols]
        source += f"; cells, labels and genes of scVI ({PBMC_METADATA_URL}, {PBMC_GENE_INFO_URL})"
    obs["batch"] = obs["batch"].astype("category")
    obs.index = pd.Index(obs["barcode"].astype(str) + "-" + obs["sample"].astype(str))
    var = var.set_index(pd.Index(var["gene_symbols"].astype(str).to_numpy()))
    var = var.drop(columns="gene_symbols")
    return _finalize(X, obs, var, source=source, what="pbmc")


# ---------------------------------------------------------------------------
# Brain large (10x 1.3M mouse brain cells)
# ---------------------------------------------------------------------------


def _decode(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "S" or values.dtype == object:
        return np.array(
            [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], dtype=object
        )
    return values.astype(str).astype(object)


def _read_10x_h5_chunked(
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
            selected = _select_by_variance(var, n_genes, None)
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
            datas.append(_check_counts(d[mask], str(path)).astype(np.float32))
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


def brain_large(
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    n_genes: int | None = 720,
    max_cells: int | None = None,
    n_cells_gene_var: int = 10_000,
    chunk_size: int = 10_000,
) -> ad.AnnData:
    """10x Genomics 1.3 million mouse brain cells (the scVI "Brain Large" dataset).

    Downloads ``1M_neurons_filtered_gene_bc_matrices_h5.h5`` (about 4 GB, see
    ``BRAIN_LARGE_URL``) into ``<data_dir>/brain_large/`` once, then reads it in chunks
    of cells, keeping only the selected genes, so memory grows with the kept counts
    only. As in scVI, the genes are the ``n_genes`` of highest variance over the first
    ``n_cells_gene_var`` cells, and cells with fewer than 2 counts or fewer than 2
    detected genes (in the kept genes) are dropped.

    Parameters
    ----------
    path
        A local copy of the ``.h5`` file (or the folder holding it); read directly, the
        cache is not used.
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
        When the file is not cached, no ``path`` is given and the download fails.
    """
    file = _fetch(
        BRAIN_LARGE_URL,
        BRAIN_LARGE_FILENAME,
        path=path,
        data_dir=data_dir,
        subdir="brain_large",
        loader="brain_large",
    )
    raw = _read_10x_h5_chunked(
        file,
        n_genes=n_genes,
        max_cells=max_cells,
        genome="mm10" if _has_group(file, "mm10") else None,
        n_cells_gene_var=n_cells_gene_var,
        chunk_size=chunk_size,
    )
    obs = raw.obs.copy()
    obs["cell_type"] = "unknown"
    return _finalize(
        raw.X,
        obs,
        raw.var,
        source=f"10x 1.3M mouse brain cells, {BRAIN_LARGE_URL}; top {n_genes} genes by "
        f"variance over the first {n_cells_gene_var} cells",
        what="brain_large",
        min_counts=2,
        min_genes=2,
    )


def _has_group(path: Path, name: str) -> bool:
    with h5py.File(path, "r") as f:
        return name in f
