"""Tests of scanpy_autotune.datasets.

The parsers run on small files that the tests write in the real formats (Zeisel cortex
text, 10x HDF5 v2/v3, 10x mtx folders and tarballs). Downloads go through urllib with
``file://`` URLs, so the streaming, caching and renaming code runs for real; only the
"offline" and "broken transfer" cases replace ``datasets._urlopen``.
"""

from __future__ import annotations

import logging
import pickle
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


def offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


# ---------------------------------------------------------------------------
# pbmc68k
# ---------------------------------------------------------------------------


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


def test_pbmc68k_counts_matches_shared_file(pbmc68k_path):
    ref = ad.read_h5ad(pbmc68k_path)
    adata = datasets.pbmc68k_counts()
    assert adata.shape == ref.shape == (700, 765)
    assert list(adata.obs_names) == list(ref.obs_names)
    assert list(adata.var_names) == list(ref.var_names)
    assert abs(adata.X - sp.csr_matrix(ref.X)).max() == 0
    np.testing.assert_array_equal(
        adata.obs["cell_type"].astype(str), ref.obs["cell_type"].astype(str)
    )


# ---------------------------------------------------------------------------
# gene selection
# ---------------------------------------------------------------------------


def test_top_variance_genes_known_order():
    # column variances: 0, 4, 1, 4 (tie with column 1), 9
    X = np.array([[5, 0, 0, 0, 0], [5, 4, 2, 4, 6], [5, 0, 0, 0, 0], [5, 4, 2, 4, 6]], float)
    np.testing.assert_allclose(X.var(axis=0), [0, 4, 1, 4, 9])
    assert datasets._top_variance_genes(X, 1).tolist() == [4]
    assert datasets._top_variance_genes(X, 2).tolist() == [1, 4]  # tie -> first column
    assert datasets._top_variance_genes(X, 3).tolist() == [1, 3, 4]  # file order
    assert datasets._top_variance_genes(sp.csr_matrix(X), 3).tolist() == [1, 3, 4]
    assert datasets._top_variance_genes(X, None).tolist() == [0, 1, 2, 3, 4]
    assert datasets._top_variance_genes(X, 99).tolist() == [0, 1, 2, 3, 4]
    keep = np.array([True, False, False, False, False])
    assert datasets._top_variance_genes(X, 2, keep).tolist() == [0, 1, 4]
    with pytest.raises(ValueError):
        datasets._top_variance_genes(X, -1)


def test_top_variance_genes_sparse_equals_dense():
    rng = np.random.default_rng(3)
    X = rng.poisson(rng.uniform(0.01, 5, size=40), size=(60, 40)).astype(float)
    dense = datasets._top_variance_genes(X, 12)
    np.testing.assert_array_equal(dense, datasets._top_variance_genes(sp.csr_matrix(X), 12))
    expected = np.sort(np.argsort(-X.var(axis=0), kind="stable")[:12])
    np.testing.assert_array_equal(dense, expected)


# ---------------------------------------------------------------------------
# cortex
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("separator_row", ["", "\t\t\t", "\tcluster"])
def test_read_cortex_txt(tmp_path, separator_row):
    counts = _cortex_counts()
    meta = write_cortex_txt(tmp_path / "c.txt", counts, separator_row=separator_row)
    adata = datasets._read_cortex_txt(tmp_path / "c.txt")
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
    adata = datasets._read_cortex_txt(tmp_path / "c.txt")
    assert list(adata.obs["level1class"]) == rows[8].split("\t")[2:]


def test_read_cortex_txt_rejects_bad_counts(tmp_path):
    counts = _cortex_counts()
    write_cortex_txt(tmp_path / "c.txt", counts)
    text = (tmp_path / "c.txt").read_text()
    bad = text.replace("\nGene2\t", "\nGene2\t1\t0.5\t", 1)  # one value too many
    (tmp_path / "bad.txt").write_text(bad)
    with pytest.raises(ValueError, match="malformed gene rows"):
        datasets._read_cortex_txt(tmp_path / "bad.txt")
    lines = text.split("\n")
    short_row = lines[13].split("\t")[:-1]
    lines[13] = "\t".join(short_row)
    (tmp_path / "short.txt").write_text("\n".join(lines))
    with pytest.raises(ValueError, match="missing counts"):
        datasets._read_cortex_txt(tmp_path / "short.txt")
    lines = text.split("\n")
    fields = lines[12].split("\t")
    fields[3] = "1.5"
    lines[12] = "\t".join(fields)
    (tmp_path / "frac.txt").write_text("\n".join(lines))
    with pytest.raises(ValueError, match="not integers"):
        datasets._read_cortex_txt(tmp_path / "frac.txt")


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
    (tmp_path / "dir" / datasets.CORTEX_FILENAME).write_text((tmp_path / "c.txt").read_text())
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
    monkeypatch.setattr(datasets, "CORTEX_URL", file_url(source))
    cache = tmp_path / "cache"

    first = datasets.cortex(data_dir=cache, n_genes=None)
    cached = cache / "cortex" / datasets.CORTEX_FILENAME
    assert cached.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in cached.parent.iterdir()) == [datasets.CORTEX_FILENAME]

    # second call: no network needed, the cache is read
    monkeypatch.setattr(datasets, "_urlopen", offline)
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


def test_default_data_dir_is_scanpy_datasetdir(tmp_path, monkeypatch):
    import scanpy as sc

    source = tmp_path / "remote.txt"
    write_cortex_txt(source, _cortex_counts())
    monkeypatch.setattr(datasets, "CORTEX_URL", file_url(source))
    old = sc.settings.datasetdir
    sc.settings.datasetdir = tmp_path / "scanpy_data"  # a property: monkeypatch cannot undo it
    try:
        datasets.cortex(n_genes=2)
    finally:
        sc.settings.datasetdir = old
    assert (tmp_path / "scanpy_data" / "cortex" / datasets.CORTEX_FILENAME).is_file()


# ---------------------------------------------------------------------------
# offline and broken downloads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loader", "url_attr"),
    [
        (datasets.cortex, "CORTEX_URL"),
        (datasets.brain_large, "BRAIN_LARGE_URL"),
        (datasets.pbmc, "PBMC_10X_URLS"),
    ],
)
def test_offline_error_names_url_and_path(tmp_path, monkeypatch, loader, url_attr):
    monkeypatch.setattr(datasets, "_urlopen", offline)
    with pytest.raises(datasets.DatasetDownloadError) as info:
        loader(data_dir=tmp_path)
    err = info.value
    assert isinstance(err, ConnectionError) and isinstance(err, OSError)
    url = getattr(datasets, url_attr)
    url = url["pbmc8k"] if isinstance(url, dict) else url
    assert url in str(err)
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
    monkeypatch.setattr(datasets, "_urlopen", lambda *a, **k: _BrokenResponse(100, fail))
    dest = tmp_path / "sub" / "file.bin"
    with pytest.raises(datasets.DatasetDownloadError, match="example.org"):
        datasets._download("https://example.org/file.bin", dest)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_download_streams_file_url(tmp_path, caplog):
    src = tmp_path / "src.bin"
    payload = np.random.default_rng(0).bytes(3 * datasets._CHUNK_BYTES + 17)
    src.write_bytes(payload)
    dest = tmp_path / "cache" / "dest.bin"
    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        assert datasets._download(file_url(src), dest) == dest
    assert dest.read_bytes() == payload
    assert "Downloading" in caplog.text
    assert list(dest.parent.iterdir()) == [dest]


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
    adata = datasets._read_10x_h5_chunked(
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
    counts = _brain_counts()
    write_10x_h5(tmp_path / "m.h5", counts)
    full = datasets._read_10x_h5_chunked(tmp_path / "m.h5", n_genes=5, n_cells_gene_var=30)
    part = datasets._read_10x_h5_chunked(
        tmp_path / "m.h5", n_genes=5, n_cells_gene_var=30, max_cells=11, chunk_size=4
    )
    assert part.shape == (11, 5)
    assert list(part.var_names) == list(full.var_names)  # same genes whatever max_cells
    np.testing.assert_array_equal(part.X.toarray(), full.X.toarray()[:11])
    every = datasets._read_10x_h5_chunked(tmp_path / "m.h5", n_genes=None, chunk_size=9)
    np.testing.assert_array_equal(every.X.toarray(), counts)
    many = datasets._read_10x_h5_chunked(tmp_path / "m.h5", n_genes=5, max_cells=10_000)
    assert many.n_obs == counts.shape[0]


def test_read_10x_h5_needs_genome_when_ambiguous(tmp_path):
    counts = _brain_counts()
    write_10x_h5(tmp_path / "m.h5", counts)
    with h5py.File(tmp_path / "m.h5", "a") as f:
        f.copy("mm10", "hg19")
    with pytest.raises(ValueError, match="genome"):
        datasets._read_10x_h5_chunked(tmp_path / "m.h5")
    adata = datasets._read_10x_h5_chunked(tmp_path / "m.h5", genome="hg19", n_genes=None)
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
    monkeypatch.setattr(datasets, "BRAIN_LARGE_URL", file_url(tmp_path / "m.h5"))
    cached = datasets.brain_large(data_dir=tmp_path / "cache", n_genes=8, max_cells=12)
    assert (tmp_path / "cache" / "brain_large" / datasets.BRAIN_LARGE_FILENAME).is_file()
    assert cached.n_obs == keep[:12].sum()
    monkeypatch.setattr(datasets, "_urlopen", offline)
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
            with tarfile.open(raw / f"{sample}_filtered_gene_bc_matrices.tar.gz", "w:gz") as tar:
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
    gene_info.to_csv(raw / datasets.PBMC_GENE_INFO_FILENAME, index=False)
    meta_barcodes = ["ACGT000001-1", "ACGT000007-1", "ACGT000010-1", "ACGT000004-1",
                     "ACGT000001-11", "ACGT000000-1"]  # fmt: skip
    metadata = {
        "barcodes": pd.DataFrame(index=meta_barcodes),
        "clusters": np.array([0, 1, 2, 1, 0, 2]),
        "list_clusters": np.array(["B cells", "CD4 T cells", "NK cells"]),
        "design": pd.DataFrame({"x": np.arange(6)}),
    }
    with open(raw / datasets.PBMC_METADATA_FILENAME, "wb") as fh:
        pickle.dump(metadata, fh)
    return {"raw": raw, "ids": ids, "symbols": symbols, "samples": samples}


def test_read_10x_mtx(tmp_path):
    counts = np.array([[0, 1, 2], [3, 0, 0]])
    write_10x_mtx(
        tmp_path / "a" / "GRCh38", counts, ["E1", "E2", "E3"], ["A", "B", "B"], ["AA-1", "CC-1"]
    )
    adata = datasets._read_10x_mtx(tmp_path / "a")  # searched below
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.var_names) == ["E1", "E2", "E3"]
    assert list(adata.var["gene_symbols"]) == ["A", "B", "B"]
    assert list(adata.obs_names) == ["AA-1", "CC-1"]
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    with pytest.raises(FileNotFoundError):
        datasets._read_10x_mtx(tmp_path / "missing")


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
    (info["raw"] / datasets.PBMC_METADATA_FILENAME).unlink()
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


def test_pbmc_download_extract_and_cache(tmp_path, monkeypatch):
    info = _pbmc_raw(tmp_path, as_tar={"pbmc8k": True, "pbmc4k": True})
    raw = info["raw"]
    monkeypatch.setattr(datasets, "PBMC_10X_URLS", {
        s: file_url(raw / f"{s}_filtered_gene_bc_matrices.tar.gz") for s in ("pbmc8k", "pbmc4k")
    })  # fmt: skip
    monkeypatch.setattr(datasets, "PBMC_GENE_INFO_URL", file_url(raw / "gene_info_pbmc.csv"))
    monkeypatch.setattr(datasets, "PBMC_METADATA_URL", file_url(raw / "pbmc_metadata.pickle"))
    cache = tmp_path / "cache"
    first = datasets.pbmc(data_dir=cache)
    reference = datasets.pbmc(path=raw)
    assert (first.X != reference.X).nnz == 0
    assert (cache / "pbmc" / "pbmc8k" / "filtered_gene_bc_matrices" / "GRCh38").is_dir()
    assert not [p for p in (cache / "pbmc").iterdir() if p.name.endswith(".part")]
    monkeypatch.setattr(datasets, "_urlopen", offline)
    second = datasets.pbmc(data_dir=cache)
    assert (first.X != second.X).nnz == 0
    assert list(first.obs_names) == list(second.obs_names)
