"""The scVI PBMC metadata (``pbmc_metadata.pickle``), read without unpickling."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._safe_pickle import PickledObject, PickleReadError, read_plain_pickle

_DATAFRAME = "pandas.core.frame.DataFrame"


@dataclass(frozen=True)
class PbmcMetadata:
    """The cells and labels of scVI's PBMC selection.

    Attributes
    ----------
    barcodes
        Cell barcodes (``str``), in scVI's order.
    clusters
        Cluster index of each cell (``int64``), into ``cluster_names``.
    cluster_names
        Name of each cluster (``str``).
    """

    barcodes: np.ndarray
    clusters: np.ndarray
    cluster_names: np.ndarray


def read_pbmc_metadata(path: str | os.PathLike) -> PbmcMetadata:
    """Read ``barcodes``, ``clusters`` and ``list_clusters`` from scVI's metadata pickle.

    The file is a pickle of a dict written in 2018 by pandas 0.2x (``barcodes`` is a
    DataFrame whose row labels are the barcodes). It is never unpickled: a restricted
    reader (:func:`read_plain_pickle`) rebuilds its arrays and strings from the opcodes
    and refuses anything else, so a tampered file cannot run code. A dict of plain
    arrays (barcodes as an array of strings) is read as well.

    Parameters
    ----------
    path
        The pickle.

    Returns
    -------
    The barcodes, cluster indices and cluster names.

    Raises
    ------
    ValueError
        When the file is not such a pickle, uses anything the reader refuses, or its
        parts disagree (lengths, cluster indices out of range).
    """
    try:
        content = read_plain_pickle(Path(path).read_bytes())
    except PickleReadError as err:
        raise ValueError(f"Could not read {path}: {err}") from err
    missing = {"barcodes", "clusters", "list_clusters"} - set(
        content if isinstance(content, dict) else ()
    )
    if missing:
        raise ValueError(f"{path}: not the scVI PBMC metadata (missing {sorted(missing)}).")
    barcodes = _barcodes(content["barcodes"], path)
    clusters = np.asarray(content["clusters"]).ravel()
    names = np.asarray(content["list_clusters"]).ravel().astype(str)
    if clusters.dtype.kind not in "iu":
        raise ValueError(f"{path}: clusters are {clusters.dtype}, expected integers.")
    clusters = clusters.astype(np.int64)
    if clusters.size != barcodes.size:
        raise ValueError(f"{path}: {clusters.size} clusters for {barcodes.size} barcodes.")
    if clusters.size and (clusters.min() < 0 or clusters.max() >= names.size):
        raise ValueError(f"{path}: cluster indices outside 0..{names.size - 1}.")
    return PbmcMetadata(barcodes=barcodes, clusters=clusters, cluster_names=names)


def _barcodes(value: Any, path: str | os.PathLike) -> np.ndarray:
    """Barcodes from a pickled DataFrame's row labels, or from an array or list."""
    if isinstance(value, PickledObject):
        if value.class_path != _DATAFRAME:
            raise ValueError(f"{path}: barcodes are a {value.class_path}, expected a DataFrame.")
        value = _dataframe_row_labels(value, path)
    values = np.asarray(value)
    if values.dtype.kind not in "OUS":
        raise ValueError(f"{path}: barcodes are {values.dtype}, expected strings.")
    return values.ravel().astype(str)


def _dataframe_row_labels(frame: PickledObject, path: str | os.PathLike) -> np.ndarray:
    # A pickled DataFrame's state holds its BlockManager under "_data" (pandas < 1.1)
    # or "_mgr"; the manager's state starts with its axes: [columns, rows], each an
    # Index rebuilt by pandas' _new_Index from a dict holding "data".
    try:
        manager = frame.state.get("_data", frame.state.get("_mgr"))
        rows = manager.state[0][1]
        labels = rows.state["data"]
    except (AttributeError, IndexError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: unexpected layout of the barcodes DataFrame.") from err
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"{path}: unexpected layout of the barcodes DataFrame.")
    return labels
