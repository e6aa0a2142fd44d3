"""Downloads into the dataset cache: pinned addresses, SHA-256 verified, never half a file."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20

# Indirection so that tests can simulate a machine without network.
_urlopen = urllib.request.urlopen


class DatasetDownloadError(ConnectionError):
    """A dataset file could not be downloaded (offline, blocked host, broken transfer).

    Also raised when a downloaded file does not have the SHA-256 pinned for its URL
    (the file is then deleted, never cached). Subclass of :class:`ConnectionError` (and
    so of :class:`OSError`). The message names the URL and says how to use a copy
    downloaded by hand (``path=``).
    """


class DatasetFileError(ValueError):
    """A dataset file on disk could not be read: damaged, truncated or another file.

    Raised by the loaders instead of the reader's own error (a gzip, tar, HDF5 or
    parser error that names neither the file nor a remedy). The message names the
    file and, for a file in the cache, says to delete it so that the next call
    downloads it afresh. Subclass of :class:`ValueError`.
    """


@contextmanager
def reading(
    file: str | os.PathLike, *, loader: str, cached: bool, source: str | os.PathLike | None = None
) -> Iterator[None]:
    """Turn a reader's failure on ``file`` into a :class:`DatasetFileError` naming it.

    Errors that already say what is wrong with a path (missing, a folder, no
    permission) and download errors pass through unchanged.

    Parameters
    ----------
    file
        The file or extracted folder being read.
    loader
        Name of the public function, used in the message.
    cached
        Whether ``file`` is in the cache (the remedy is to delete it) or was given with
        ``path=`` (the remedy is to check that copy).
    source
        The cached file ``file`` was extracted from, deleted with it (otherwise the
        next call would extract the same damage again).
    """
    try:
        yield
        return
    except (DatasetFileError, DatasetDownloadError, FileNotFoundError, IsADirectoryError,
            NotADirectoryError, PermissionError) as err:
        # a part missing inside a cached folder is damage too; a missing path is not
        if not (cached and isinstance(err, FileNotFoundError) and Path(file).exists()):
            raise
        failure: BaseException = err
    except (OSError, EOFError, ValueError, KeyError, IndexError, tarfile.TarError,
            zlib.error) as err:
        failure = err
    if cached:
        also = f" and {source}, which it was extracted from," if source is not None else ""
        remedy = (
            f"The cached copy looks damaged or truncated: delete {file}{also} and call "
            f"{loader}() again to download it afresh."
        )
    else:
        remedy = (
            f"Check the copy passed with path=: it looks damaged, truncated or not the "
            f"file {loader}() expects."
        )
    raise DatasetFileError(
        f"{loader}() could not read {file} ({type(failure).__name__}: {failure}). {remedy}"
    ) from failure


@dataclass(frozen=True)
class RemoteFile:
    """A raw file a loader downloads.

    Attributes
    ----------
    url
        Where to download it from, at a fixed revision where the host has revisions.
    sha256
        Its SHA-256 (hex), checked before the file enters the cache; ``None`` where no
        trustworthy published SHA-256 is known.
    filename
        Its name in the cache, and the name a ``path=`` folder must use.
    md5
        Its MD5 (hex), checked instead where only an MD5 is published (10x Genomics'
        files, whose MD5 sums Bioconductor's data packages record). With neither hash
        the download is cached unverified and its SHA-256 is logged as a warning.
    """

    url: str
    sha256: str | None
    filename: str
    md5: str | None = None


def default_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir``, or scanpy's ``settings.datasetdir`` when it is ``None``."""
    if data_dir is not None:
        return Path(data_dir)
    import scanpy as sc

    return Path(sc.settings.datasetdir)


def download(
    url: str, dest: str | os.PathLike, *, sha256: str | None, md5: str | None = None,
    loader: str = "the loader",
) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already exists.

    The bytes go to a temporary file beside ``dest``; their SHA-256 is computed while
    they stream and checked against ``sha256``, and only a complete, verified file is
    renamed to ``dest``, so the cache never holds half a file or a file with the wrong
    content.

    Parameters
    ----------
    url
        Where to download from.
    dest
        Final location of the file.
    sha256
        Expected SHA-256 of the file (hex).
    md5
        Expected MD5 (hex), checked when no SHA-256 is given. With neither, the check
        is skipped and the SHA-256 of the downloaded file is logged as a warning.
    loader
        Name of the public function, used in the error message.

    Returns
    -------
    ``dest``.

    Raises
    ------
    DatasetDownloadError
        When the network or the host fails, the transfer is incomplete, or the file's
        SHA-256 differs from ``sha256`` (the message then names the URL, the expected
        and the actual hash).
    """
    dest = Path(dest)
    if dest.is_dir():
        raise IsADirectoryError(
            f"{dest} is a folder where {loader}() caches the file {dest.name}; remove it (or pass "
            "another data_dir=) so that the file can be downloaded there."
        )
    if dest.exists():
        logger.info("Using cached %s", dest)
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        blocker = next(
            (p for p in (dest.parent, *dest.parent.parents) if p.exists() and not p.is_dir()), err.filename
        )
        raise NotADirectoryError(
            f"{loader}() cannot create its cache folder {dest.parent}: {blocker} is a file, not a "
            "folder. Pass another data_dir= or move that file."
        ) from err
    except OSError as err:  # a read-only working folder (Scanpy's datasetdir is ./data by default)
        raise _unwritable(loader, dest.parent, err) from err
    hint = (
        f"If this machine is offline, download {url} by hand (for example "
        f"`curl -L -o {dest.name} '{url}'`) and pass path=... to {loader}(), or put the "
        f"file at {dest}."
    )
    logger.info("Downloading %s to %s", url, dest)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as err:
        raise _unwritable(loader, dest.parent, err) from err
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    md5_digest = hashlib.md5(usedforsecurity=False)
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
                            chunk = response.read(CHUNK_BYTES)
                            if not chunk:
                                break
                            out.write(chunk)
                            digest.update(chunk)
                            md5_digest.update(chunk)
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
            if sha256 is None and md5 is not None:
                _check_hash(url, "MD5", expected=md5, actual=md5_digest.hexdigest(), loader=loader)
            else:
                _check_hash(url, "SHA-256", expected=sha256, actual=digest.hexdigest(), loader=loader)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("Saved %s (%d bytes)", dest, dest.stat().st_size)
    return dest


def _check_hash(url: str, name: str, *, expected: str | None, actual: str, loader: str) -> None:
    if expected is None:
        logger.warning(
            "No hash is pinned for %s, so the download is not verified; its %s is %s",
            url,
            name,
            actual,
        )
        return
    if actual != expected.lower():
        raise DatasetDownloadError(
            f"{name} mismatch for {url}: expected {expected.lower()}, got {actual}. The "
            "download was deleted, not cached: the file at that address changed or the "
            f"transfer was corrupted. A copy you have checked yourself can be passed as "
            f"path=... to {loader}()."
        )


def local_file(path: str | os.PathLike, filename: str) -> Path:
    """``path`` itself, or ``path / filename`` when ``path`` is a folder."""
    path = Path(path)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected a copy of {filename}).")
    return path


def fetch(
    remote: RemoteFile,
    *,
    path: str | os.PathLike | None,
    data_dir: str | os.PathLike | None,
    subdir: str,
    loader: str,
) -> Path:
    """Resolve a raw file: ``path`` if given (read as given, not verified), else the cache.

    Parameters
    ----------
    remote
        The file, its pinned address and hash.
    path
        A local copy (or a folder holding ``remote.filename``) given by the user; used
        as it is, without checking its hash.
    data_dir
        Cache folder; ``scanpy.settings.datasetdir`` when ``None``.
    subdir
        Folder of the dataset inside the cache.
    loader
        Name of the public function, used in messages.

    Returns
    -------
    The file to read.
    """
    if path is not None:
        local = local_file(path, remote.filename)
        logger.info("Reading %s", local)
        return local
    dest = default_data_dir(data_dir) / subdir / remote.filename
    return download(remote.url, dest, sha256=remote.sha256, md5=remote.md5, loader=loader)


def _unwritable(loader: str, folder: Path, err: OSError) -> OSError:
    """The error for a cache folder that cannot be created or written, naming the way out."""
    return OSError(
        err.errno, f"{loader}() cannot use its cache folder {folder.absolute()} ({err.strerror or err}); "
        "pass data_dir= (or set scanpy.settings.datasetdir) to a writable folder."
    )
