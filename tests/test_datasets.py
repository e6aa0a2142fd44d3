"""Tests of scanpy_autotune.datasets.

The parsers run on small files that the tests write in the real formats (Zeisel cortex
text, 10x HDF5 v2/v3, 10x mtx folders and tarballs, and scVI's metadata pickle, written
opcode by opcode in the layout of the published file). Downloads go through urllib with
``file://`` URLs, so the streaming, hashing, caching and renaming code runs for real;
only the "offline" and "broken transfer" cases replace ``_download._urlopen``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
import pickletools
import re
import shutil
import struct
import tarfile
import urllib.error
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from scanpy_autotune import datasets
from scanpy_autotune.datasets import (
    _brain_large,
    _cortex,
    _download,
    _gene_selection,
    _pbmc,
    _pbmc_metadata,
    _safe_pickle,
    _tenx_h5,
    _tenx_mtx,
)

# ---------------------------------------------------------------------------
# helpers that write the real formats
# ---------------------------------------------------------------------------

CORTEX_ATTRS = [
    "tissue",
    "group #",
    "total mRNA mol",
    "well",
    "sex",
    "age",
    "diameter",
    "cell_id",
    "level1class",
    "level2class",
]


def _cortex_counts(seed: int = 0, n_cells: int = 7, n_genes: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.uniform(0.2, 8.0, size=n_genes), size=(n_cells, n_genes))
    counts[-1] = 0  # a cell with no counts
    return counts


def write_cortex_txt(
    path: Path, counts: np.ndarray, genes: list[str] | None = None, separator_row: str = ""
) -> dict[str, list[str]]:
    """Write ``counts`` (cells x genes) in the layout of expression_mRNA_17-Aug-2014.txt."""
    n_cells, n_genes = counts.shape
    genes = genes or [f"Gene{j}" for j in range(n_genes)]
    level1 = ["interneurons", "pyramidal SS", "oligodendrocytes", "microglia"]
    meta = {
        "tissue": ["sscortex" if i % 2 else "ca1hippocampus" for i in range(n_cells)],
        "group #": [str(1 + i % 4) for i in range(n_cells)],
        "total mRNA mol": [str(int(c)) for c in counts.sum(axis=1)],
        "well": [str(10 + i) for i in range(n_cells)],
        "sex": ["1" if i % 2 else "-1" for i in range(n_cells)],
        "age": [str(20 + i % 3) for i in range(n_cells)],
        "diameter": [f"{8.5 + i / 10:.2f}" for i in range(n_cells)],
        "cell_id": [f"17720710{i:02d}_C{i:02d}" for i in range(n_cells)],
        "level1class": [level1[i % 4] for i in range(n_cells)],
        "level2class": [f"Sub{i % 3}" for i in range(n_cells)],
    }
    lines = ["\t".join(["", name, *meta[name]]) for name in CORTEX_ATTRS]
    lines.append(separator_row)
    for j, gene in enumerate(genes):
        lines.append("\t".join([gene, str(1 + j % 3), *map(str, counts[:, j])]))
    path.write_text("\n".join(lines) + "\n")
    return meta


def write_10x_h5(
    path: Path, counts: np.ndarray, *, v3: bool = False, genome: str = "mm10"
) -> tuple[list[str], list[str], list[str]]:
    """Write ``counts`` (cells x genes) as a 10x HDF5 matrix (v2 genome group, or v3)."""
    n_cells, n_genes = counts.shape
    csc = sp.csc_matrix(counts.T.astype(np.int32))  # genes x cells, one column per cell
    ids = [f"ENSMUSG{j:05d}" for j in range(n_genes)]
    names = [f"Gm{j}" for j in range(n_genes)]
    names[-1] = names[0]  # a duplicated symbol, as in real annotations
    barcodes = [f"AAACCTGAG{i:07d}-1" for i in range(n_cells)]
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix" if v3 else genome)
        g.create_dataset("data", data=csc.data.astype(np.int32))
        g.create_dataset("indices", data=csc.indices.astype(np.int64))
        g.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([n_genes, n_cells], dtype=np.int32))
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        if v3:
            feat = g.create_group("features")
            feat.create_dataset("id", data=np.array(ids, dtype="S"))
            feat.create_dataset("name", data=np.array(names, dtype="S"))
        else:
            g.create_dataset("genes", data=np.array(ids, dtype="S"))
            g.create_dataset("gene_names", data=np.array(names, dtype="S"))
    return ids, names, barcodes


def write_10x_mtx(
    folder: Path, counts: np.ndarray, ids: list[str], symbols: list[str], barcodes: list[str]
) -> None:
    """Write a Cell Ranger 2 ``filtered_gene_bc_matrices/GRCh38`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.mmwrite(folder / "matrix.mtx", sp.coo_matrix(counts.T.astype(np.int64)))
    (folder / "genes.tsv").write_text(
        "".join(f"{i}\t{s}\n" for i, s in zip(ids, symbols, strict=True))
    )
    (folder / "barcodes.tsv").write_text("".join(f"{b}\n" for b in barcodes))


def file_url(path: Path) -> str:
    return path.resolve().as_uri()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served(remote: _download.RemoteFile, source: Path) -> _download.RemoteFile:
    """``remote`` served from the local file ``source``, pinned to its real SHA-256."""
    return dataclasses.replace(remote, url=file_url(source), sha256=sha256_of(source))


def offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


# ---------------------------------------------------------------------------
# pickles written opcode by opcode
# ---------------------------------------------------------------------------
# scVI's pbmc_metadata.pickle was written in 2018 by pandas 0.2x (protocol 3); today's pandas
# pickles differently, so the tests write that layout by hand, as the file has it:
# numpy arrays through numpy.core.multiarray._reconstruct, DataFrames as
# NEWOBJ + BUILD of a BlockManager state, Index objects through _new_Index.

#: The globals of the published pbmc_metadata.pickle (read with pickletools.genops).
SCVI_METADATA_GLOBALS = {
    "builtins slice",
    "numpy dtype",
    "numpy ndarray",
    "numpy.core.multiarray _reconstruct",
    "pandas.core.frame DataFrame",
    "pandas.core.indexes.base Index",
    "pandas.core.indexes.base _new_Index",
    "pandas.core.indexes.numeric Int64Index",
    "pandas.core.internals BlockManager",
}


def op_global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def op_str(value: str) -> bytes:
    raw = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def op_int(value: int) -> bytes:
    return pickle.BININT + struct.pack("<i", value)


def op_bytes(value: bytes) -> bytes:
    return pickle.BINBYTES + struct.pack("<I", len(value)) + value


def op_tuple(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def op_list(*items: bytes) -> bytes:
    return pickle.EMPTY_LIST + (pickle.MARK + b"".join(items) + pickle.APPENDS if items else b"")


def op_dict(*pairs: tuple[bytes, bytes]) -> bytes:
    body = b"".join(key + value for key, value in pairs)
    return pickle.EMPTY_DICT + (pickle.MARK + body + pickle.SETITEMS if pairs else b"")


def op_call(func: bytes, *args: bytes) -> bytes:
    return func + op_tuple(*args) + pickle.REDUCE


def op_dtype(dtype: np.dtype) -> bytes:
    """numpy.dtype(name, False, True) then BUILD of its state, as numpy 1.x wrote it."""
    assert dtype.hasobject or dtype.kind in "iuf", "only what the scVI file holds"
    if dtype.hasobject:
        name, order, flags = "O8", "|", 63
    else:
        name, order, flags = f"{dtype.kind}{dtype.itemsize}", "<", 0
    state = op_tuple(
        op_int(3), op_str(order), pickle.NONE * 3, op_int(-1), op_int(-1), op_int(flags)
    )
    call = op_call(op_global("numpy", "dtype"), op_str(name), pickle.NEWFALSE, pickle.NEWTRUE)
    return call + state + pickle.BUILD


def op_ndarray(values: np.ndarray) -> bytes:
    values = np.asarray(values)
    reconstruct = op_call(
        op_global("numpy.core.multiarray", "_reconstruct"),
        op_global("numpy", "ndarray"),
        op_tuple(op_int(0)),
        op_bytes(b"b"),
    )
    if values.dtype.hasobject:
        data = op_list(*(op_str(str(v)) for v in values.ravel()))
    else:
        data = op_bytes(values.astype(values.dtype.newbyteorder("<")).tobytes())
    shape = op_tuple(*(op_int(n) for n in values.shape))
    state = op_tuple(op_int(1), shape, op_dtype(values.dtype), pickle.NEWFALSE, data)
    return reconstruct + state + pickle.BUILD


def op_index(values: np.ndarray, cls: str = "Index") -> bytes:
    module = "pandas.core.indexes.numeric" if cls == "Int64Index" else "pandas.core.indexes.base"
    state = op_dict((op_str("data"), op_ndarray(values)), (op_str("name"), pickle.NONE))
    return op_call(
        op_global("pandas.core.indexes.base", "_new_Index"), op_global(module, cls), state
    )


def op_dataframe(index: bytes, columns: list[str], values: np.ndarray) -> bytes:
    """A one-block DataFrame (``values`` is columns x rows) as pandas 0.2x pickled it."""
    column_index = op_index(np.array(columns, dtype=object))
    axes = op_list(column_index, index)
    mgr_locs = op_call(op_global("builtins", "slice"), op_int(0), op_int(len(columns)), op_int(1))
    block = op_dict((op_str("values"), op_ndarray(values)), (op_str("mgr_locs"), mgr_locs))
    extra_state = op_dict(
        (op_str("0.14.1"), op_dict((op_str("axes"), axes), (op_str("blocks"), op_list(block))))
    )
    # BlockManager state: axes, block values, block items, extra state
    manager_state = op_tuple(axes, op_list(op_ndarray(values)), op_list(column_index), extra_state)
    manager = op_global("pandas.core.internals", "BlockManager") + pickle.EMPTY_TUPLE
    manager += pickle.NEWOBJ + manager_state + pickle.BUILD
    state = op_dict(
        (op_str("_data"), manager),
        (op_str("_typ"), op_str("dataframe")),
        (op_str("_metadata"), op_list()),
    )
    frame = op_global("pandas.core.frame", "DataFrame") + pickle.EMPTY_TUPLE + pickle.NEWOBJ
    return frame + state + pickle.BUILD


def scvi_metadata_pickle(
    barcodes: list[str],
    clusters: list[int],
    cluster_names: list[str],
    replace: dict[str, bytes] | None = None,
) -> bytes:
    """The layout of scVI's pbmc_metadata.pickle, with the given cells and clusters.

    ``replace`` maps entries to opcodes written in their place.
    """
    n = len(barcodes)
    entries = {
        "design": op_dataframe(
            op_index(np.arange(n, dtype=np.int64), cls="Int64Index"),
            ["(Intercept)", "batchpbmc4k"],
            np.vstack([np.ones(n), np.arange(n) % 2]).astype(np.float64),
        ),
        "barcodes": op_dataframe(
            op_index(np.array(barcodes, dtype=object)),
            ["Unnamed: 0"],
            np.arange(1, n + 1, dtype=np.int64)[None, :],
        ),
        "clusters": op_ndarray(np.asarray(clusters, dtype=np.int64)),
        "list_clusters": op_ndarray(np.asarray(cluster_names, dtype=object)),
    }
    entries.update(replace or {})
    body = op_dict(*((op_str(key), value) for key, value in entries.items()))
    return pickle.PROTO + b"\x03" + body + pickle.STOP


def pickle_globals(data: bytes) -> set[str]:
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


# ---------------------------------------------------------------------------
# pbmc68k
# ---------------------------------------------------------------------------

#: Computed once from the counts of the benchmarks' reference file pbmc68k_counts_700x765.h5ad
#: (in the project's shared data folder), so the test needs no copy of it.
PBMC68K_COUNTS_SHA256 = "037323a6a447e00b1e3f2ff3b33bb8500ae67675b9db317f345c8a236c9f2ab4"
PBMC68K_OBS_NAMES_SHA256 = "23ffc29f54ffc640186f4aee43c4822c136afc50c53670dd62097601c72351bd"
PBMC68K_VAR_NAMES_SHA256 = "b76f48fc8a6b6221b37992e98e3e4e044f1502e7ff2933087f1d985d4c080129"
PBMC68K_CELL_TYPES_SHA256 = "b2d622a471aa82ef78b18f392f95b4013dc61bfe1c4237cb7bfcb7b2493e9d63"


def counts_digest(X: sp.spmatrix) -> str:
    """SHA-256 of a count matrix: shape, then canonical CSR indptr, indices and values."""
    X = sp.csr_matrix(X, dtype=np.float64)
    X.eliminate_zeros()
    X.sort_indices()
    digest = hashlib.sha256()
    for part in (
        np.asarray(X.shape, "<i8"),
        X.indptr.astype("<i8"),
        X.indices.astype("<i8"),
        X.data.astype("<f8"),
    ):
        digest.update(part.tobytes())
    return digest.hexdigest()


def names_digest(values) -> str:
    return hashlib.sha256("\n".join(map(str, values)).encode()).hexdigest()


def test_pbmc68k_counts():
    import scanpy as sc

    adata = datasets.pbmc68k_counts()
    assert adata.shape == (700, 765)
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    data = adata.X.data
    assert data.min() >= 0 and np.array_equal(data, np.round(data))
    assert (adata.layers["counts"] != adata.X).nnz == 0
    assert adata.layers["counts"] is not adata.X
    assert np.asarray(adata.X.sum(axis=1)).min() > 0
    ref = sc.datasets.pbmc68k_reduced()
    assert list(adata.var_names) == list(ref.raw.var_names)
    assert adata.obs["cell_type"].dtype == "category"
    np.testing.assert_array_equal(
        adata.obs["cell_type"].astype(str), ref.obs["bulk_labels"].astype(str)
    )
    # the normalised data are recovered from the counts (raw.X is stored to 3 decimals)
    X = adata.X.toarray().astype(np.float64)
    lognorm = np.log1p(X / ref.obs["n_counts"].to_numpy()[:, None] * 1e4)
    np.testing.assert_allclose(lognorm, ref.raw.X.toarray(), rtol=0, atol=5.01e-4)


def test_pbmc68k_counts_match_the_reference_file():
    adata = datasets.pbmc68k_counts()
    assert adata.shape == (700, 765)
    assert adata.X.nnz == 174_400
    assert float(adata.X.sum(dtype=np.float64)) == 486_651
    assert counts_digest(adata.X) == PBMC68K_COUNTS_SHA256
    assert names_digest(adata.obs_names) == PBMC68K_OBS_NAMES_SHA256
    assert names_digest(adata.var_names) == PBMC68K_VAR_NAMES_SHA256
    assert names_digest(adata.obs["cell_type"].astype(str)) == PBMC68K_CELL_TYPES_SHA256


# ---------------------------------------------------------------------------
# gene selection
# ---------------------------------------------------------------------------


def test_top_variance_genes_known_order():
    top = _gene_selection.top_variance_genes
    # column variances: 0, 4, 1, 4 (tie with column 1), 9
    X = np.array([[5, 0, 0, 0, 0], [5, 4, 2, 4, 6], [5, 0, 0, 0, 0], [5, 4, 2, 4, 6]], float)
    np.testing.assert_allclose(X.var(axis=0), [0, 4, 1, 4, 9])
    assert top(X, 1).tolist() == [4]
    assert top(X, 2).tolist() == [1, 4]  # tie -> first column
    assert top(X, 3).tolist() == [1, 3, 4]  # file order
    assert top(sp.csr_matrix(X), 3).tolist() == [1, 3, 4]
    assert top(X, None).tolist() == [0, 1, 2, 3, 4]
    assert top(X, 99).tolist() == [0, 1, 2, 3, 4]
    keep = np.array([True, False, False, False, False])
    assert top(X, 2, keep).tolist() == [0, 1, 4]
    with pytest.raises(ValueError):
        top(X, -1)


def test_top_variance_genes_sparse_equals_dense():
    rng = np.random.default_rng(3)
    X = rng.poisson(rng.uniform(0.01, 5, size=40), size=(60, 40)).astype(float)
    dense = _gene_selection.top_variance_genes(X, 12)
    np.testing.assert_array_equal(dense, _gene_selection.top_variance_genes(sp.csr_matrix(X), 12))
    expected = np.sort(np.argsort(-X.var(axis=0), kind="stable")[:12])
    np.testing.assert_array_equal(dense, expected)


# ---------------------------------------------------------------------------
# cortex
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("separator_row", ["", "\t\t\t", "\tcluster"])
def test_read_cortex_txt(tmp_path, separator_row):
    counts = _cortex_counts()
    meta = write_cortex_txt(tmp_path / "c.txt", counts, separator_row=separator_row)
    adata = _cortex.read_cortex_txt(tmp_path / "c.txt")
    assert adata.shape == counts.shape
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.obs_names) == meta["cell_id"]
    assert list(adata.var_names) == [f"Gene{j}" for j in range(counts.shape[1])]
    assert set(adata.obs.columns) == {
        "tissue", "group", "total_mrna_mol", "well", "sex", "age", "diameter",
        "level1class", "level2class",
    }  # fmt: skip
    assert list(adata.obs["level1class"]) == meta["level1class"]
    assert adata.obs["total_mrna_mol"].tolist() == counts.sum(axis=1).tolist()
    np.testing.assert_allclose(adata.obs["diameter"], [float(v) for v in meta["diameter"]])
    assert adata.var["cluster"].tolist() == [1 + j % 3 for j in range(counts.shape[1])]


def test_read_cortex_txt_matches_scvi_row_layout(tmp_path):
    # scVI read the group # from row 1, level1class from row 8 and genes from row 11 on.
    counts = _cortex_counts()
    write_cortex_txt(tmp_path / "c.txt", counts)
    rows = (tmp_path / "c.txt").read_text().split("\n")
    assert rows[1].split("\t")[1] == "group #"
    assert rows[8].split("\t")[1] == "level1class"
    assert rows[11].split("\t")[0] == "Gene0"
    adata = _cortex.read_cortex_txt(tmp_path / "c.txt")
    assert list(adata.obs["level1class"]) == rows[8].split("\t")[2:]


def test_read_cortex_txt_rejects_bad_counts(tmp_path):
    counts = _cortex_counts()
    write_cortex_txt(tmp_path / "c.txt", counts)
    text = (tmp_path / "c.txt").read_text()
    bad = text.replace("\nGene2\t", "\nGene2\t1\t0.5\t", 1)  # one value too many
    (tmp_path / "bad.txt").write_text(bad)
    with pytest.raises(ValueError, match="malformed gene rows"):
        _cortex.read_cortex_txt(tmp_path / "bad.txt")
    lines = text.split("\n")
    short_row = lines[13].split("\t")[:-1]
    lines[13] = "\t".join(short_row)
    (tmp_path / "short.txt").write_text("\n".join(lines))
    with pytest.raises(ValueError, match="missing counts"):
        _cortex.read_cortex_txt(tmp_path / "short.txt")
    lines = text.split("\n")
    fields = lines[12].split("\t")
    fields[3] = "1.5"
    lines[12] = "\t".join(fields)
    (tmp_path / "frac.txt").write_text("\n".join(lines))
    with pytest.raises(ValueError, match="not integers"):
        _cortex.read_cortex_txt(tmp_path / "frac.txt")


def test_cortex_from_path(tmp_path, caplog):
    counts = _cortex_counts()
    meta = write_cortex_txt(tmp_path / "c.txt", counts)
    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        adata = datasets.cortex(path=tmp_path / "c.txt", n_genes=3, genes_to_keep=["GENE0"])
    top = set(np.argsort(-counts.var(axis=0), kind="stable")[:3].tolist()) | {0}
    expected_genes = sorted(top)
    assert list(adata.var_names) == [f"Gene{j}" for j in expected_genes]
    # the last cell has no counts: dropped, and logged
    assert adata.n_obs == counts.shape[0] - 1
    assert "dropping 1" in caplog.text
    np.testing.assert_array_equal(adata.X.toarray(), counts[:-1][:, expected_genes])
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert (adata.layers["counts"] != adata.X).nnz == 0
    assert list(adata.obs["cell_type"]) == meta["level1class"][:-1]
    assert list(adata.obs["precise_cell_type"]) == meta["level2class"][:-1]
    assert adata.obs["cell_type"].dtype == "category"
    # a folder holding the file works too, and n_genes=None keeps every gene
    (tmp_path / "dir").mkdir()
    filename = _cortex.CORTEX_FILE.filename
    (tmp_path / "dir" / filename).write_text((tmp_path / "c.txt").read_text())
    full = datasets.cortex(path=tmp_path / "dir", n_genes=None)
    assert full.n_vars == counts.shape[1]


def test_cortex_reads_shared_like_layout_roundtrip(tmp_path):
    """The parsed result survives an .h5ad round trip (obs/var dtypes are writable)."""
    write_cortex_txt(tmp_path / "c.txt", _cortex_counts())
    adata = datasets.cortex(path=tmp_path / "c.txt", n_genes=4)
    adata.write_h5ad(tmp_path / "c.h5ad")
    back = ad.read_h5ad(tmp_path / "c.h5ad")
    assert (back.X != adata.X).nnz == 0
    assert list(back.obs["cell_type"]) == list(adata.obs["cell_type"])


def test_cortex_download_then_cache_then_path_precedence(tmp_path, monkeypatch):
    source = tmp_path / "remote" / "expression.txt"
    source.parent.mkdir()
    counts_a = _cortex_counts(seed=1)
    write_cortex_txt(source, counts_a)
    monkeypatch.setattr(_cortex, "CORTEX_FILE", served(_cortex.CORTEX_FILE, source))
    cache = tmp_path / "cache"
    filename = _cortex.CORTEX_FILE.filename

    first = datasets.cortex(data_dir=cache, n_genes=None)
    cached = cache / "cortex" / filename
    assert cached.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in cached.parent.iterdir()) == [filename]

    # second call: no network needed, the cache is read
    monkeypatch.setattr(_download, "_urlopen", offline)
    second = datasets.cortex(data_dir=cache, n_genes=None)
    assert (first.X != second.X).nnz == 0

    # path= wins over the cache
    other = tmp_path / "other.txt"
    counts_b = _cortex_counts(seed=2)
    write_cortex_txt(other, counts_b)
    third = datasets.cortex(path=other, data_dir=cache, n_genes=None)
    np.testing.assert_array_equal(third.X.toarray(), counts_b[:-1])
    with pytest.raises(FileNotFoundError):
        datasets.cortex(path=tmp_path / "missing.txt", data_dir=cache)


def test_cortex_download_with_wrong_hash_is_not_cached(tmp_path, monkeypatch):
    source = tmp_path / "remote.txt"
    write_cortex_txt(source, _cortex_counts())
    pinned = dataclasses.replace(served(_cortex.CORTEX_FILE, source), sha256="ab" * 32)
    monkeypatch.setattr(_cortex, "CORTEX_FILE", pinned)
    with pytest.raises(datasets.DatasetDownloadError, match="SHA-256 mismatch") as info:
        datasets.cortex(data_dir=tmp_path / "cache")
    assert sha256_of(source) in str(info.value) and "ab" * 32 in str(info.value)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_default_data_dir_is_scanpy_datasetdir(tmp_path, monkeypatch):
    import scanpy as sc

    source = tmp_path / "remote.txt"
    write_cortex_txt(source, _cortex_counts())
    monkeypatch.setattr(_cortex, "CORTEX_FILE", served(_cortex.CORTEX_FILE, source))
    old = sc.settings.datasetdir
    sc.settings.datasetdir = tmp_path / "scanpy_data"  # a property: monkeypatch cannot undo it
    try:
        datasets.cortex(n_genes=2)
    finally:
        sc.settings.datasetdir = old
    assert (tmp_path / "scanpy_data" / "cortex" / _cortex.CORTEX_FILE.filename).is_file()


# ---------------------------------------------------------------------------
# pinned downloads: addresses, checksums, offline and broken transfers
# ---------------------------------------------------------------------------

ALL_REMOTE_FILES = {
    "cortex": _cortex.CORTEX_FILE,
    "brain_large": _brain_large.BRAIN_LARGE_FILE,
    "pbmc8k": _pbmc.PBMC_10X_FILES["pbmc8k"],
    "pbmc4k": _pbmc.PBMC_10X_FILES["pbmc4k"],
    "gene_info": _pbmc.PBMC_GENE_INFO_FILE,
    "metadata": _pbmc.PBMC_METADATA_FILE,
}


@pytest.mark.parametrize("name", sorted(ALL_REMOTE_FILES))
def test_downloads_are_pinned(name):
    remote = ALL_REMOTE_FILES[name]
    assert remote.url.startswith("https://")
    assert remote.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
    if "github" in remote.url:  # a host with revisions: a commit, never a branch
        assert re.search(r"/[0-9a-f]{40}/", remote.url), remote.url
        assert "/master/" not in remote.url and "/main/" not in remote.url
        assert remote.sha256 is not None


@pytest.mark.parametrize(
    ("loader", "module", "attr"),
    [
        (datasets.cortex, _cortex, "CORTEX_FILE"),
        (datasets.brain_large, _brain_large, "BRAIN_LARGE_FILE"),
        (datasets.pbmc, _pbmc, "PBMC_10X_FILES"),
    ],
)
def test_offline_error_names_url_and_path(tmp_path, monkeypatch, loader, module, attr):
    monkeypatch.setattr(_download, "_urlopen", offline)
    with pytest.raises(datasets.DatasetDownloadError) as info:
        loader(data_dir=tmp_path)
    err = info.value
    assert isinstance(err, ConnectionError) and isinstance(err, OSError)
    remote = getattr(module, attr)
    remote = remote["pbmc8k"] if isinstance(remote, dict) else remote
    assert remote.url in str(err)
    assert "path=" in str(err) and "by hand" in str(err)
    assert isinstance(err.__cause__, urllib.error.URLError)
    # no half file anywhere in the cache
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


class _BrokenResponse:
    """A response that sends part of the body, then the connection drops."""

    def __init__(self, total: int, fail: bool):
        self.headers = {"Content-Length": str(total)}
        self._chunks = [b"x" * 10]
        self._fail = fail

    def read(self, n: int = -1) -> bytes:
        if self._chunks:
            return self._chunks.pop()
        if self._fail:
            raise ConnectionResetError("connection reset by peer")
        return b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("fail", [True, False])
def test_interrupted_download_leaves_no_file(tmp_path, monkeypatch, fail):
    monkeypatch.setattr(_download, "_urlopen", lambda *a, **k: _BrokenResponse(100, fail))
    dest = tmp_path / "sub" / "file.bin"
    with pytest.raises(datasets.DatasetDownloadError, match="example.org"):
        _download.download("https://example.org/file.bin", dest, sha256=None)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def _payload(tmp_path: Path) -> tuple[Path, bytes]:
    src = tmp_path / "src.bin"
    payload = np.random.default_rng(0).bytes(3 * _download.CHUNK_BYTES + 17)
    src.write_bytes(payload)
    return src, payload


def test_download_with_good_checksum_streams_and_caches(tmp_path, monkeypatch, caplog):
    src, payload = _payload(tmp_path)
    dest = tmp_path / "cache" / "dest.bin"
    expected = hashlib.sha256(payload).hexdigest()
    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        assert _download.download(file_url(src), dest, sha256=expected) == dest
    assert dest.read_bytes() == payload
    assert "Downloading" in caplog.text
    assert list(dest.parent.iterdir()) == [dest]
    # cached: the next call needs no network
    monkeypatch.setattr(_download, "_urlopen", offline)
    assert _download.download(file_url(src), dest, sha256=expected) == dest
    assert dest.read_bytes() == payload


def test_download_checksum_mismatch_deletes_the_file(tmp_path):
    src, payload = _payload(tmp_path)
    dest = tmp_path / "cache" / "dest.bin"
    url = file_url(src)
    expected = hashlib.sha256(b"another file").hexdigest()
    actual = hashlib.sha256(payload).hexdigest()
    with pytest.raises(datasets.DatasetDownloadError) as info:
        _download.download(url, dest, sha256=expected, loader="cortex")
    message = str(info.value)
    assert "SHA-256 mismatch" in message
    assert url in message and f"expected {expected}" in message and f"got {actual}" in message
    assert "path=" in message and "cortex()" in message
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # the temporary file is gone too


def test_download_checked_by_md5_where_only_an_md5_is_published(tmp_path):
    src, payload = _payload(tmp_path)
    dest = tmp_path / "cache" / "dest.bin"
    good = hashlib.md5(payload).hexdigest()
    with pytest.raises(datasets.DatasetDownloadError, match=rf"MD5 mismatch .* got {good}"):
        _download.download(file_url(src), dest, sha256=None, md5="0" * 32)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    assert _download.download(file_url(src), dest, sha256=None, md5=good) == dest
    assert dest.read_bytes() == payload


def test_the_pbmc_archives_are_checked_against_their_md5(tmp_path, monkeypatch):
    from scanpy_autotune.datasets import _pbmc

    src, payload = _payload(tmp_path)
    for sample, remote in list(_pbmc.PBMC_10X_FILES.items()):  # the real pins, a local address
        monkeypatch.setitem(_pbmc.PBMC_10X_FILES, sample, dataclasses.replace(remote, url=file_url(src)))
    with pytest.raises(datasets.DatasetDownloadError, match=rf"MD5 mismatch .* got {hashlib.md5(payload).hexdigest()}"):
        _pbmc._pbmc_sample("pbmc4k", path=None, data_dir=tmp_path / "cache")


def test_every_download_is_pinned_by_a_hash():
    from scanpy_autotune.datasets import _brain_large, _pbmc

    remotes = [_cortex.CORTEX_FILE, _brain_large.BRAIN_LARGE_FILE, _pbmc.PBMC_GENE_INFO_FILE,
               _pbmc.PBMC_METADATA_FILE, *_pbmc.PBMC_10X_FILES.values()]
    unpinned = [r.url for r in remotes if r.sha256 is None and r.md5 is None]
    # The Linnarsson lab's cortex text file has no published hash anywhere (see _cortex.py).
    assert unpinned == [_cortex.CORTEX_FILE.url]


def test_download_without_pinned_hash_logs_the_hash(tmp_path, caplog):
    src, payload = _payload(tmp_path)
    dest = tmp_path / "cache" / "dest.bin"
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
        _download.download(file_url(src), dest, sha256=None)
    assert dest.read_bytes() == payload
    assert hashlib.sha256(payload).hexdigest() in caplog.text
    assert "not verified" in caplog.text


def test_path_is_read_as_given_without_checksum(tmp_path, monkeypatch):
    source = tmp_path / "c.txt"
    write_cortex_txt(source, _cortex_counts())
    pinned = dataclasses.replace(_cortex.CORTEX_FILE, sha256="00" * 32)
    monkeypatch.setattr(_cortex, "CORTEX_FILE", pinned)
    monkeypatch.setattr(_download, "_urlopen", offline)
    adata = datasets.cortex(path=source, data_dir=tmp_path / "cache", n_genes=None)
    assert adata.n_obs == _cortex_counts().shape[0] - 1
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------
# reading pickles without unpickling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_pickle_reader_rebuilds_plain_data(protocol):
    value = {
        "barcodes": np.array(["AAAC-1", "GGTT-1", "CCAA-11"]),
        "clusters": np.array([2, 0, 1]),
        "names": np.array(["B cells", "NK cells", "Other"], dtype=object),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        "big_endian": np.arange(4, dtype=">i4"),
        "flags": np.array([True, False]),
        "nested": [1, 2.5, None, True, "x", b"raw", (3, ("y",)), slice(0, 5, 2)],
    }
    data = pickle.dumps(value, protocol=protocol)
    back = _safe_pickle.read_plain_pickle(data)
    assert sorted(back) == sorted(value)
    for key in ("barcodes", "clusters", "names", "fortran", "big_endian", "flags"):
        assert back[key].dtype == value[key].dtype, key
        np.testing.assert_array_equal(back[key], value[key])
    assert back["fortran"].flags.f_contiguous
    assert back["nested"] == value["nested"]


def test_pickle_reader_reads_the_scvi_metadata_layout():
    data = scvi_metadata_pickle(
        ["AAAC-1", "GGTT-1", "CCAA-11"], [2, 0, 1], ["B cells", "NK cells", "Other"]
    )
    assert pickle_globals(data) == SCVI_METADATA_GLOBALS  # the published file's layout
    content = _safe_pickle.read_plain_pickle(data)
    assert list(content) == ["design", "barcodes", "clusters", "list_clusters"]
    frame = content["barcodes"]
    assert isinstance(frame, _safe_pickle.PickledObject)
    assert frame.class_path == "pandas.core.frame.DataFrame"
    rows = frame.state["_data"].state[0][1]
    assert rows.class_path == "pandas.core.indexes.base.Index"
    assert rows.state["data"].tolist() == ["AAAC-1", "GGTT-1", "CCAA-11"]
    design_rows = content["design"].state["_data"].state[0][1]
    assert design_rows.class_path == "pandas.core.indexes.numeric.Int64Index"
    assert design_rows.state["data"].tolist() == [0, 1, 2]
    blocks = content["design"].state["_data"].state[3]["0.14.1"]["blocks"]
    assert blocks[0]["mgr_locs"] == slice(0, 2, 1)
    np.testing.assert_array_equal(blocks[0]["values"][1], [0.0, 1.0, 0.0])
    assert content["clusters"].dtype == np.int64 and content["clusters"].tolist() == [2, 0, 1]
    assert content["list_clusters"].tolist() == ["B cells", "NK cells", "Other"]


def test_read_pbmc_metadata(tmp_path):
    path = tmp_path / "pbmc_metadata.pickle"
    path.write_bytes(
        scvi_metadata_pickle(["AAAC-1", "GGTT-1", "CCAA-11"], [2, 0, 2], ["B", "NK", "T"])
    )
    metadata = _pbmc_metadata.read_pbmc_metadata(path)
    assert metadata.barcodes.tolist() == ["AAAC-1", "GGTT-1", "CCAA-11"]
    assert metadata.clusters.dtype == np.int64 and metadata.clusters.tolist() == [2, 0, 2]
    assert metadata.cluster_names.tolist() == ["B", "NK", "T"]
    # a dict of plain arrays is read too
    plain = {"barcodes": np.array(["A-1", "C-1"]), "clusters": np.array([1, 0]),
             "list_clusters": np.array(["x", "y"])}  # fmt: skip
    path.write_bytes(pickle.dumps(plain))
    assert _pbmc_metadata.read_pbmc_metadata(path).barcodes.tolist() == ["A-1", "C-1"]
    # parts that disagree are refused
    path.write_bytes(scvi_metadata_pickle(["A-1", "C-1"], [0, 3], ["B", "NK"]))
    with pytest.raises(ValueError, match="cluster indices"):
        _pbmc_metadata.read_pbmc_metadata(path)
    path.write_bytes(scvi_metadata_pickle(["A-1", "C-1"], [0], ["B", "NK"]))
    with pytest.raises(ValueError, match="1 clusters for 2 barcodes"):
        _pbmc_metadata.read_pbmc_metadata(path)


def _system_call(command: str, *, stack_global: bool = False) -> bytes:
    """Opcodes that make pickle.load run ``os.system(command)``."""
    if stack_global:
        func = op_str("posix") + op_str("system") + pickle.STACK_GLOBAL
    else:
        func = op_global("os", "system")
    return op_call(func, op_str(command))


@pytest.mark.parametrize("stack_global", [False, True])
def test_pickle_reader_refuses_code(tmp_path, stack_global):
    marker = tmp_path / "ran"
    evil = pickle.PROTO + b"\x04" + _system_call(f"touch {marker}", stack_global=stack_global)
    with pytest.raises(_safe_pickle.PickleReadError, match=r"refused global (os|posix)\.system"):
        _safe_pickle.read_plain_pickle(evil + pickle.STOP)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        op_call(op_global("builtins", "eval"), op_str("1")),
        op_call(op_global("numpy", "load"), op_str("x.npy")),
        # an allowed numpy callable cannot be handed another class
        op_call(
            op_global("numpy.core.multiarray", "_reconstruct"),
            op_global("pandas.core.frame", "DataFrame"),
            op_tuple(op_int(0)),
            op_bytes(b"b"),
        ),
        # nor can a structured dtype smuggle in field definitions
        op_call(op_global("numpy", "dtype"), op_str("i4,f8"), pickle.NEWFALSE, pickle.NEWTRUE),
        # protocol 0/1 object construction is not interpreted at all
        pickle.MARK + pickle.INST + b"os\nsystem\n",
    ],
    ids=["eval", "numpy-load", "reconstruct-other-class", "structured-dtype", "INST"],
)
def test_pickle_reader_refuses_other_callables(payload):
    with pytest.raises(_safe_pickle.PickleReadError):
        _safe_pickle.read_plain_pickle(pickle.PROTO + b"\x03" + payload + pickle.STOP)


def test_pbmc_refuses_a_tampered_metadata_file(tmp_path):
    info = _pbmc_raw(tmp_path, as_tar={"pbmc8k": False, "pbmc4k": False})
    marker = tmp_path / "ran"
    tampered = scvi_metadata_pickle(
        ["ACGT000001-1"], [0], ["B cells"], replace={"clusters": _system_call(f"touch {marker}")}
    )
    (info["raw"] / _pbmc.PBMC_METADATA_FILE.filename).write_bytes(tampered)
    with pytest.raises(ValueError, match="refused global os.system"):
        datasets.pbmc(path=info["raw"])
    assert not marker.exists()


# ---------------------------------------------------------------------------
# 10x HDF5 (brain_large)
# ---------------------------------------------------------------------------


def _brain_counts(n_cells: int = 40, n_genes: int = 15, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.uniform(0.05, 6.0, size=n_genes), size=(n_cells, n_genes))
    counts[5] = 0
    counts[6] = 0
    counts[6, 0] = 1  # a single count: dropped by the scVI filter
    return counts


@pytest.mark.parametrize("v3", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_read_10x_h5_chunked(tmp_path, v3, chunk_size):
    counts = _brain_counts()
    ids, names, barcodes = write_10x_h5(tmp_path / "m.h5", counts, v3=v3)
    adata = _tenx_h5.read_10x_h5_chunked(
        tmp_path / "m.h5", n_genes=6, n_cells_gene_var=20, chunk_size=chunk_size
    )
    expected = np.sort(np.argsort(-counts[:20].var(axis=0), kind="stable")[:6])
    assert adata.shape == (counts.shape[0], 6)
    np.testing.assert_array_equal(adata.X.toarray(), counts[:, expected])
    assert adata.var["gene_ids"].tolist() == [ids[j] for j in expected]
    assert list(adata.var_names) == [names[j] for j in expected]
    assert list(adata.obs_names) == barcodes
    assert adata.X.has_sorted_indices


def test_read_10x_h5_chunked_max_cells_and_all_genes(tmp_path):
    read = _tenx_h5.read_10x_h5_chunked
    counts = _brain_counts()
    write_10x_h5(tmp_path / "m.h5", counts)
    full = read(tmp_path / "m.h5", n_genes=5, n_cells_gene_var=30)
    part = read(tmp_path / "m.h5", n_genes=5, n_cells_gene_var=30, max_cells=11, chunk_size=4)
    assert part.shape == (11, 5)
    assert list(part.var_names) == list(full.var_names)  # same genes whatever max_cells
    np.testing.assert_array_equal(part.X.toarray(), full.X.toarray()[:11])
    every = read(tmp_path / "m.h5", n_genes=None, chunk_size=9)
    np.testing.assert_array_equal(every.X.toarray(), counts)
    many = read(tmp_path / "m.h5", n_genes=5, max_cells=10_000)
    assert many.n_obs == counts.shape[0]


def test_read_10x_h5_needs_genome_when_ambiguous(tmp_path):
    counts = _brain_counts()
    write_10x_h5(tmp_path / "m.h5", counts)
    with h5py.File(tmp_path / "m.h5", "a") as f:
        f.copy("mm10", "hg19")
    with pytest.raises(ValueError, match="genome"):
        _tenx_h5.read_10x_h5_chunked(tmp_path / "m.h5")
    adata = _tenx_h5.read_10x_h5_chunked(tmp_path / "m.h5", genome="hg19", n_genes=None)
    np.testing.assert_array_equal(adata.X.toarray(), counts)


def test_brain_large_from_path_and_cache(tmp_path, monkeypatch):
    counts = _brain_counts()
    write_10x_h5(tmp_path / "m.h5", counts)
    adata = datasets.brain_large(path=tmp_path / "m.h5", n_genes=8, n_cells_gene_var=40)
    expected_genes = np.sort(np.argsort(-counts.var(axis=0), kind="stable")[:8])
    sub = counts[:, expected_genes]
    keep = (sub.sum(axis=1) >= 2) & ((sub > 0).sum(axis=1) >= 2)
    assert not keep[5] and not keep[6]
    np.testing.assert_array_equal(adata.X.toarray(), sub[keep])
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert (adata.layers["counts"] != adata.X).nnz == 0
    assert set(adata.obs["cell_type"]) == {"unknown"}
    assert adata.var_names.is_unique
    # through the cache, with max_cells
    remote = served(_brain_large.BRAIN_LARGE_FILE, tmp_path / "m.h5")
    monkeypatch.setattr(_brain_large, "BRAIN_LARGE_FILE", remote)
    cached = datasets.brain_large(data_dir=tmp_path / "cache", n_genes=8, max_cells=12)
    assert (tmp_path / "cache" / "brain_large" / remote.filename).is_file()
    assert cached.n_obs == keep[:12].sum()
    monkeypatch.setattr(_download, "_urlopen", offline)
    again = datasets.brain_large(data_dir=tmp_path / "cache", n_genes=8, max_cells=12)
    assert (again.X != cached.X).nnz == 0


# ---------------------------------------------------------------------------
# 10x mtx (pbmc)
# ---------------------------------------------------------------------------

N_PBMC_GENES = 12


def _pbmc_raw(tmp_path: Path, *, as_tar: dict[str, bool]) -> dict:
    """Two 10x samples, scVI's gene_info and metadata, in a folder named like the cache."""
    rng = np.random.default_rng(7)
    ids = [f"ENSG{j:011d}" for j in range(N_PBMC_GENES)]
    symbols = [f"G{j}" for j in range(N_PBMC_GENES)]
    symbols[3] = symbols[2]  # duplicated symbol
    raw = tmp_path / "raw"
    raw.mkdir()
    samples = {}
    for sample, n_cells, start in (("pbmc8k", 9, 0), ("pbmc4k", 6, 6)):
        counts = rng.poisson(2.0, size=(n_cells, N_PBMC_GENES))
        if sample == "pbmc8k":
            counts[:, 11] = 0  # a gene with no counts in pbmc8k only
            counts[4] = 0  # an empty cell
        # pbmc4k's first barcodes repeat pbmc8k's last ones (clash on 6, 7, 8)
        barcodes = [f"ACGT{i:06d}-1" for i in range(start, start + n_cells)]
        folder = raw / "build" / sample / "filtered_gene_bc_matrices" / "GRCh38"
        write_10x_mtx(folder, counts, ids, symbols, barcodes)
        if as_tar[sample]:
            archive = raw / _pbmc.PBMC_10X_FILES[sample].filename
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(
                    raw / "build" / sample / "filtered_gene_bc_matrices",
                    arcname="filtered_gene_bc_matrices",
                )
        else:
            (raw / "build" / sample).rename(raw / sample)
        samples[sample] = (counts, barcodes)
    # gene_info: genes kept by scVI, in its order; one is absent from the data
    gene_info = pd.DataFrame(
        {
            "ENSG": [ids[5], ids[0], ids[11], ids[2], ids[3], "ENSG99"],
            "GS": ["a", "b", "c", "d", "e", "f"],
        }
    )
    gene_info.to_csv(raw / _pbmc.PBMC_GENE_INFO_FILE.filename, index=False)
    meta_barcodes = ["ACGT000001-1", "ACGT000007-1", "ACGT000010-1", "ACGT000004-1",
                     "ACGT000001-11", "ACGT000000-1"]  # fmt: skip
    metadata = scvi_metadata_pickle(
        meta_barcodes, [0, 1, 2, 1, 0, 2], ["B cells", "CD4 T cells", "NK cells"]
    )
    (raw / _pbmc.PBMC_METADATA_FILE.filename).write_bytes(metadata)
    return {"raw": raw, "ids": ids, "symbols": symbols, "samples": samples}


def test_read_10x_mtx(tmp_path):
    counts = np.array([[0, 1, 2], [3, 0, 0]])
    write_10x_mtx(
        tmp_path / "a" / "GRCh38", counts, ["E1", "E2", "E3"], ["A", "B", "B"], ["AA-1", "CC-1"]
    )
    adata = _tenx_mtx.read_10x_mtx(tmp_path / "a")  # searched below
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.var_names) == ["E1", "E2", "E3"]
    assert list(adata.var["gene_symbols"]) == ["A", "B", "B"]
    assert list(adata.obs_names) == ["AA-1", "CC-1"]
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    with pytest.raises(FileNotFoundError):
        _tenx_mtx.read_10x_mtx(tmp_path / "missing")


def test_pbmc_scvi_selection(tmp_path, caplog):
    info = _pbmc_raw(tmp_path, as_tar={"pbmc8k": True, "pbmc4k": False})
    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        adata = datasets.pbmc(path=info["raw"])
    c8, _ = info["samples"]["pbmc8k"]
    c4, _ = info["samples"]["pbmc4k"]
    # metadata cells in order; ACGT000007-1 is in both samples -> pbmc4k's cell (row 1);
    # ACGT000001-11 is not in the files; ACGT000004-1 has no counts
    genes = [5, 0, 2, 3]  # gene_info order; gene 11 has no counts in pbmc8k, ENSG99 absent
    expected = np.vstack([c8[1], c4[1], c4[4], c8[0]])[:, genes]
    np.testing.assert_array_equal(adata.X.toarray(), expected)
    assert list(adata.obs_names) == [
        "ACGT000001-1-pbmc8k",
        "ACGT000007-1-pbmc4k",
        "ACGT000010-1-pbmc4k",
        "ACGT000000-1-pbmc8k",
    ]
    assert list(adata.obs["cell_type"]) == ["B cells", "CD4 T cells", "NK cells", "NK cells"]
    assert list(adata.obs["labels"]) == [0, 1, 2, 2]
    assert list(adata.obs["batch"]) == ["0", "1", "1", "0"]
    assert adata.obs["batch"].dtype == "category"
    assert list(adata.var["gene_ids"]) == [info["ids"][j] for j in genes]
    assert list(adata.var_names) == ["G5", "G0", "G2", "G2-1"]
    assert (adata.layers["counts"] != adata.X).nnz == 0
    assert "metadata cells found" in caplog.text


def test_pbmc_without_scvi_metadata(tmp_path):
    info = _pbmc_raw(tmp_path, as_tar={"pbmc8k": False, "pbmc4k": True})
    (info["raw"] / _pbmc.PBMC_METADATA_FILE.filename).unlink()
    adata = datasets.pbmc(path=info["raw"], scvi_subset=False)
    c8, b8 = info["samples"]["pbmc8k"]
    c4, b4 = info["samples"]["pbmc4k"]
    keep8 = c8.sum(axis=1) > 0
    expected = np.vstack([c8[keep8], c4])[:, :11]
    np.testing.assert_array_equal(adata.X.toarray(), expected)
    assert adata.n_obs == keep8.sum() + c4.shape[0]
    assert adata.obs_names.is_unique  # clashing barcodes stay distinct
    assert set(adata.obs["cell_type"]) == {"unknown"}
    assert adata.obs["batch"].value_counts().to_dict() == {"0": keep8.sum(), "1": c4.shape[0]}
    with pytest.raises(FileNotFoundError, match="pbmc_metadata"):
        datasets.pbmc(path=info["raw"])


def _serve_pbmc(raw: Path, monkeypatch) -> None:
    """Serve the four PBMC files from the local folder ``raw``, pinned to their real hashes."""
    monkeypatch.setattr(_pbmc, "PBMC_10X_FILES", {
        s: served(remote, raw / remote.filename) for s, remote in _pbmc.PBMC_10X_FILES.items()
    })  # fmt: skip
    for attr in ("PBMC_GENE_INFO_FILE", "PBMC_METADATA_FILE"):
        remote = getattr(_pbmc, attr)
        monkeypatch.setattr(_pbmc, attr, served(remote, raw / remote.filename))


def test_pbmc_download_extract_and_cache(tmp_path, monkeypatch):
    info = _pbmc_raw(tmp_path, as_tar={"pbmc8k": True, "pbmc4k": True})
    raw = info["raw"]
    _serve_pbmc(raw, monkeypatch)
    cache = tmp_path / "cache"
    first = datasets.pbmc(data_dir=cache)
    reference = datasets.pbmc(path=raw)
    assert (first.X != reference.X).nnz == 0
    assert (cache / "pbmc" / "pbmc8k" / "filtered_gene_bc_matrices" / "GRCh38").is_dir()
    assert (cache / "pbmc" / "pbmc_metadata.pickle").read_bytes() == (
        raw / "pbmc_metadata.pickle"
    ).read_bytes()
    assert not [p for p in (cache / "pbmc").iterdir() if p.name.endswith(".part")]
    monkeypatch.setattr(_download, "_urlopen", offline)
    second = datasets.pbmc(data_dir=cache)
    assert (first.X != second.X).nnz == 0
    assert list(first.obs_names) == list(second.obs_names)


def test_damaged_cache_files_are_named_with_the_remedy(tmp_path, monkeypatch):
    # cortex: a cached text file overwritten by binary garbage, then by a truncated copy
    source = tmp_path / "remote.txt"
    write_cortex_txt(source, _cortex_counts(seed=3))
    monkeypatch.setattr(_cortex, "CORTEX_FILE", served(_cortex.CORTEX_FILE, source))
    cache = tmp_path / "cache"
    good = datasets.cortex(data_dir=cache, n_genes=None)
    cached = cache / "cortex" / _cortex.CORTEX_FILE.filename
    cached.write_bytes(b"\x89\xff\xfe\x00garbage")
    with pytest.raises(datasets.DatasetFileError) as info:
        datasets.cortex(data_dir=cache, n_genes=None)
    message = str(info.value)
    assert str(cached) in message and "delete" in message and "download it afresh" in message
    assert "UnicodeDecodeError" in message
    cached.write_bytes(source.read_bytes()[:-7])  # the last gene row cut short
    with pytest.raises(datasets.DatasetFileError, match="delete .* download it afresh"):
        datasets.cortex(data_dir=cache, n_genes=None)
    cached.unlink()  # the remedy the message gives works
    again = datasets.cortex(data_dir=cache, n_genes=None)
    assert (again.X != good.X).nnz == 0

    # brain_large: a truncated HDF5 file given with path= (the remedy is to check it)
    write_10x_h5(tmp_path / "m.h5", _brain_counts())
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes((tmp_path / "m.h5").read_bytes()[:300])
    with pytest.raises(datasets.DatasetFileError, match="Check the copy passed with path=") as info:
        datasets.brain_large(path=truncated, n_genes=8)
    assert str(truncated) in str(info.value)


def test_damaged_pbmc_files_are_named(tmp_path, monkeypatch):
    info = _pbmc_raw(tmp_path, as_tar={"pbmc8k": True, "pbmc4k": True})
    raw = info["raw"]
    _serve_pbmc(raw, monkeypatch)
    cache = tmp_path / "cache"
    datasets.pbmc(data_dir=cache)
    monkeypatch.setattr(_download, "_urlopen", offline)
    # a cached extracted folder that lost its matrix: delete the folder, not the archive
    folder = cache / "pbmc" / "pbmc8k"
    next(folder.rglob("matrix.mtx*")).unlink()
    with pytest.raises(datasets.DatasetFileError) as err:
        datasets.pbmc(data_dir=cache)
    archive_in_cache = cache / "pbmc" / _pbmc.PBMC_10X_FILES["pbmc8k"].filename
    assert f"delete {folder} and {archive_in_cache}, which it was extracted from," in str(err.value)
    # a cached gene list that is another file
    shutil.rmtree(folder)
    (cache / "pbmc" / _pbmc.PBMC_GENE_INFO_FILE.filename).write_text("my lab notes\n")
    with pytest.raises(datasets.DatasetFileError, match=r"no ENSG column\). The cached copy"):
        datasets.pbmc(data_dir=cache)
    # a damaged archive given with path=
    archive = raw / _pbmc.PBMC_10X_FILES["pbmc4k"].filename
    archive.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(datasets.DatasetFileError, match="Check the copy passed with path=") as err:
        datasets.pbmc(path=raw)
    assert str(archive) in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(chunk_size=0), r"chunk_size=0 must be an integer >= 1"),
    (dict(max_cells=-5), r"max_cells=-5 must be an integer >= 1"),
    (dict(max_cells=True), r"max_cells=True must be an integer"),
    (dict(n_genes=0), r"n_genes=0 must be an integer >= 1"),
    (dict(n_cells_gene_var=0), r"n_cells_gene_var=0 must be an integer >= 1"),
])
def test_brain_large_arguments_are_checked_before_the_file_is_read(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        datasets.brain_large(data_dir=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing fetched, nothing blamed on the cache


def test_a_cache_folder_of_the_wrong_shape_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(_download, "_urlopen", offline)
    (tmp_path / "afile").write_text("notes")
    with pytest.raises(NotADirectoryError, match=r"cannot create its cache folder .*afile is a file, not a folder"):
        datasets.cortex(data_dir=tmp_path / "afile")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cortex").write_text("notes")
    with pytest.raises(NotADirectoryError, match=r"c/cortex is a file, not a folder"):
        datasets.cortex(data_dir=tmp_path / "c")
    (tmp_path / "d" / "cortex" / _cortex.CORTEX_FILE.filename).mkdir(parents=True)
    with pytest.raises(IsADirectoryError, match=r"is a folder where cortex\(\) caches the file"):
        datasets.cortex(data_dir=tmp_path / "d")
    assert (tmp_path / "afile").read_text() == "notes" and (tmp_path / "c" / "cortex").read_text() == "notes"
    # a folder that cannot be made (a read-only working folder under Scanpy's ./data; /proc refuses root too)
    with pytest.raises(OSError, match=r"cannot use its cache folder /proc/sat-cache/cortex .*pass data_dir="):
        datasets.cortex(data_dir="/proc/sat-cache")


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_genes=0), r"n_genes=0 must be an integer >= 1"),
    (dict(n_genes=2.5), r"n_genes=2.5 must be an integer"),
    (dict(genes_to_keep="Gene40"), r"genes_to_keep='Gene40' must be a list of gene names"),
])
def test_cortex_arguments_are_checked_before_any_download(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        datasets.cortex(data_dir=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing fetched or created
