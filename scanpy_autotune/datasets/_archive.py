"""Safe, atomic extraction of downloaded tar archives."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive into ``dest`` (atomically: temporary folder then rename).

    Members that would land outside ``dest`` (absolute paths, ``..``, links pointing
    out) or that are not plain files or folders are refused, with tarfile's ``data``
    filter where Python has it and by an explicit check otherwise.

    Parameters
    ----------
    archive
        The ``.tar``/``.tar.gz`` file.
    dest
        Folder to create; it must not exist yet.
    """
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
