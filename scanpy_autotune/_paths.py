"""Where the package writes: checks before any work, and writes that are all or nothing.

A search can run for hours; a path that cannot be written must fail before
the first trial, not after the last. Nothing here creates a folder: checks
look, and try to create (and at once remove) an empty file in the folder that
will be written, since permissions alone do not tell (the superuser passes
every permission check, yet cannot write into ``/proc`` or a read-only mount),
so a call that fails leaves the file system as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "MODEL_FILES",
    "check_model_dir",
    "check_output_dir",
    "check_output_file",
    "replace_dir",
    "replace_file",
    "writable_folder",
]

#: The files of a model saved by :meth:`scanpy_autotune.Model.save` (``trial.json``:
#: the trial id, beside a journal).
MODEL_FILES = frozenset({"config.json", "weights.pt", "trial.json"})


def writable_folder(folder: Path) -> bool:
    """Whether entries can be created in ``folder``: its permissions, then an empty file tried there."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
    except OSError:
        return False
    try:
        os.close(handle)
    finally:
        os.unlink(probe)
    return True


def _writable_ancestor(path: Path, what: str) -> None:
    """Refuse ``path`` unless the closest existing folder above it is a writable folder."""
    parent = path.parent
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path}: {parent} is a file, not a folder.")
    if not writable_folder(parent):
        raise PermissionError(f"{what} {path}: the folder {parent.absolute()} is not writable.")


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """Check that a file can be written at ``path`` (leaving nothing behind).

    Parameters
    ----------
    path
        The file to write later; an existing file there is replaced then.
    what
        How the user named it (``"-o"``, ``"journal="``), for the message.

    Raises
    ------
    ValueError
        When ``path`` is a folder, or a file stands where a folder is needed.
    PermissionError
        When the file or its folder is not writable.
    """
    path = _non_empty(path, what, "a file path")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; pass a file path.")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{what} {path} is not writable.")
        folder = path.resolve().parent
        if not writable_folder(folder):
            raise PermissionError(
                f"{what} {path}: the folder {folder} is not writable (the file is replaced through "
                "a temporary file beside it)."
            )
        return path
    _writable_ancestor(path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Check that files can be written into the folder ``path`` (leaving nothing behind).

    Raises
    ------
    ValueError
        When ``path`` or a folder above it is a file.
    PermissionError
        When it cannot be written.
    """
    path = _non_empty(path, what, "a folder")
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{what} {path} is a file, not a folder.")
        if not writable_folder(path):
            raise PermissionError(f"{what} {path} is not writable.")
        return path
    _writable_ancestor(path, what)
    return path


def _non_empty(path: str | os.PathLike, what: str, wanted: str) -> Path:
    """``path`` as a Path, ``~`` expanded; an empty one (``Path("")`` is the current folder) is refused."""
    if not os.fspath(path):
        raise ValueError(f"{what} is an empty path; pass {wanted}.")
    return Path(path).expanduser()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _permissions_of_a_new(kind: str, replaced: Path) -> int:
    """The mode a plain write would give: the replaced file's, else what the umask leaves."""
    if replaced.exists():
        return replaced.stat().st_mode & 0o7777
    return (0o777 if kind == "dir" else 0o666) & ~_umask()


def check_model_dir(path: str | os.PathLike, what: str) -> Path:
    """Check that a model can be saved into the folder ``path`` (leaving nothing behind).

    The folder may be new, empty, or hold a model saved earlier (which is
    replaced); a folder with any other file is refused, so that nothing the
    package did not write is overwritten.

    Raises
    ------
    ValueError
        When ``path`` is a file or a folder holding other files.
    PermissionError
        When it cannot be written.
    """
    path = _non_empty(path, what, "a folder for the model")
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{what} {path} is a file; pass a folder for the model.")
        others = sorted(p.name for p in path.iterdir() if p.name not in MODEL_FILES)
        if others:
            raise ValueError(
                f"{what} {path} holds files that are not a saved model ({', '.join(others[:5])}); "
                "pass a new or empty folder."
            )
    return check_output_dir(path, what)


def replace_file(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write a file all at once: ``write`` fills a temporary file beside ``path``, then it is renamed.

    A crash or an error while writing leaves the old file (or none) in place,
    never half a file. Missing folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the suffix: some writers (h5py, anndata) look at it.
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(temporary))
        os.chmod(temporary, _permissions_of_a_new("file", path))  # mkstemp's are private (0600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def replace_dir(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write a folder all at once: ``write`` fills a temporary folder beside ``path``, then it replaces it.

    The old folder is moved aside before the new one takes its name and
    removed afterwards, so ``path`` holds the old or the new content in full.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(temporary)
        os.chmod(temporary, _permissions_of_a_new("dir", path))  # mkdtemp's are private (0700)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
        os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
