"""Counts extraction for large data: no needless copies, same values, same fingerprints."""

import hashlib

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.special import gammaln

from scanpy_autotune._vae import _data
from scanpy_autotune._vae._data import DeviceCounts, extract_counts


def _counts(n_obs=60, n_vars=30, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = rng.negative_binomial(2, 0.6, size=(n_obs, n_vars)).astype(np.float32)
    X[:, 0] += 1  # no empty cells
    return sp.csr_matrix(X)


def test_canonical_float32_csr_is_not_copied():
    adata = ad.AnnData(_counts())
    data = extract_counts(adata)
    assert np.shares_memory(data.X.data, adata.X.data)
    assert np.shares_memory(data.X.indices, adata.X.indices)
    counts = DeviceCounts(data, "cpu")
    assert counts.X.shape == adata.shape  # small: dense on the device


def test_duplicates_zeros_and_integer_dtypes_are_normalized_without_touching_adata():
    X = _counts()
    coo = X.tocoo()
    # Every entry stored twice as halves' integer parts would not sum back; store value and 0 instead.
    rows = np.concatenate([coo.row, coo.row])
    cols = np.concatenate([coo.col, coo.col])
    values = np.concatenate([coo.data, np.zeros_like(coo.data)]).astype(np.int64)
    messy = sp.csr_matrix((values, (rows, cols)), shape=X.shape)
    messy.has_canonical_format = False
    messy_values = messy.data.copy()
    adata = ad.AnnData(messy)
    data = extract_counts(adata)
    assert data.X.dtype == np.float32 and data.X.has_canonical_format
    assert data.X.data.all()  # stored zeros removed
    np.testing.assert_array_equal(data.X.toarray(), X.toarray())
    np.testing.assert_array_equal(adata.X.data, messy_values)


def test_non_integer_float32_counts_are_refused():
    X = _counts()
    X.data[3] = 1.5
    with pytest.raises(ValueError, match="non-integer"):
        extract_counts(ad.AnnData(X))


def test_row_lgamma_sums_by_blocks_equal_dense():
    X = _counts(n_obs=101)
    expected = gammaln(X.toarray().astype(np.float64) + 1).sum(axis=1)
    np.testing.assert_allclose(_data._row_lgamma_sums(X, chunk=7), expected, rtol=1e-12)


def test_sparse_device_counts_keep_32_bit_indices_and_match_dense(monkeypatch):
    data = extract_counts(ad.AnnData(_counts()))
    dense = DeviceCounts(data, "cpu")
    monkeypatch.setattr(_data, "DENSE_LIMIT_BYTES", 0)
    sparse = DeviceCounts(data, "cpu")
    assert sparse.indices.dtype == torch.int32
    assert np.shares_memory(sparse.indices.numpy(), data.X.indices)
    rows = torch.tensor([3, 59, 0, 3])
    for a, b in zip(dense.rows(rows), sparse.rows(rows)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(dense.log_x_factorial, sparse.log_x_factorial)


def test_fingerprint_streams_to_the_whole_array_digest(monkeypatch):
    monkeypatch.setattr(_data, "_HASH_BLOCK", 7)
    data = extract_counts(ad.AnnData(_counts()))
    h = hashlib.sha1()
    h.update(np.asarray(data.X.shape, dtype=np.int64).tobytes())
    h.update(data.X.indptr.astype(np.int64).tobytes())
    h.update(data.X.indices.astype(np.int64).tobytes())
    h.update(data.X.data.astype(np.float32).tobytes())
    h.update(data.batch.astype(np.int64).tobytes())
    h.update("\0".join(map(str, data.obs_names)).encode())
    assert data.fingerprint() == h.hexdigest()[:16]


def test_bad_values_are_counted_across_blocks():
    values = np.arange(20, dtype=np.float32)
    values[[1, 9, 17]] = -2
    with pytest.raises(ValueError, match="has 3 negative value"):
        _data._check_values(values, "adata.X", block=4)
    values[[1, 9, 17]] = 0.5
    with pytest.raises(ValueError, match="has 3 non-integer value"):
        _data._check_values(values, "adata.X", block=4)


@pytest.mark.parametrize("form", ["csr", "csc", "dense"])
def test_backed_anndata_is_read_from_its_file(tmp_path, form):
    """``read_h5ad(..., backed="r")`` gives on-disk datasets for X; their counts and fingerprint equal the in-memory ones."""
    X = _counts()
    stored = {"csr": X, "csc": sp.csc_matrix(X), "dense": X.toarray()}[form]
    path = tmp_path / "counts.h5ad"
    ad.AnnData(stored).write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    assert backed.isbacked and not isinstance(backed.X, (np.ndarray, sp.spmatrix))
    from_file = extract_counts(backed)
    in_memory = extract_counts(ad.read_h5ad(path))
    assert (from_file.X != in_memory.X).nnz == 0
    assert from_file.fingerprint() == in_memory.fingerprint()
