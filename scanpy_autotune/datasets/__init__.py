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
cache the raw downloads, not the processed AnnData. Every download comes from a fixed
address (a fixed commit where the host has revisions); where a SHA-256 is pinned for
the file, the download is checked against it before it enters the cache (a file with
no pinned hash yet is cached with a warning that gives its hash). Pass ``path=`` to use a copy of the
raw file(s) that you downloaded yourself; a ``path=`` is always read as given: never
downloaded, copied into the cache or checked against a hash. No file is ever unpickled.
A file that cannot be read (damaged or truncated since it was cached, or a ``path=``
copy that is another file) raises :class:`DatasetFileError`, which names the file and
says what to do: delete a cached copy so that the next call downloads it afresh.
"""

from .._logging import follow_scanpy_verbosity
from ._brain_large import brain_large
from ._cortex import cortex
from ._download import DatasetDownloadError, DatasetFileError
from ._pbmc import pbmc
from ._pbmc68k import pbmc68k_counts

__all__ = [
    "DatasetDownloadError",
    "DatasetFileError",
    "brain_large",
    "cortex",
    "pbmc",
    "pbmc68k_counts",
]

follow_scanpy_verbosity()  # the package's messages follow sc.settings.verbosity
