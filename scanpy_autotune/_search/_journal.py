"""Append-only JSON-lines journal of finished trials; resume after a crash.

The first line is a header::

    {"kind": "header", "version": 1, "settings": {...}}

and every further line one finished trial::

    {"kind": "trial", "trial_id": 3, "status": "ok", "loss": 1218.5, ...}

Each line is flushed and fsynced before :meth:`Journal.append` returns. NaN and
infinities are written as ``null`` (JSON has no NaN); the journal reads lines
back as JSON, and the caller's ``decode`` (the search's
``TrialRecord.from_json``) turns ``null`` numbers back into NaN.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import JournalLockedError, JournalWriteError

__all__ = ["JOURNAL_VERSION", "Journal", "to_json_safe"]

logger = logging.getLogger("scanpy_autotune")

JOURNAL_VERSION = 1


# ---------------------------------------------------------------------------
# JSON conversion
# ---------------------------------------------------------------------------


def to_json_safe(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types.

    Parameters
    ----------
    obj
        Dicts, lists, tuples, numpy arrays and scalars, Python scalars, strings,
        ``None`` and paths, nested.

    Returns
    -------
    Any
        The same structure with dict keys as strings, arrays as lists, numpy
        scalars as Python scalars and non-finite floats as ``None``.

    Raises
    ------
    TypeError
        For any other type.
    """
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Cannot write {type(obj).__name__} to the journal: {obj!r}.")


def _dumps(obj: Any) -> str:
    return json.dumps(to_json_safe(obj), allow_nan=False, separators=(",", ":"))


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

_HEADER_START = b'{"kind":"header"'


def _parse_lines(path: Path) -> tuple[list[tuple[int, dict]], int]:
    """Parse the file's lines; return ``(line number, object)`` pairs and where the good lines end.

    A bad last line (a write cut short) ends the good part; a bad line elsewhere
    raises ``ValueError`` with its line number.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    parsed: list[tuple[int, dict]] = []
    good_end = 0
    offset = 0
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines) or (number == len(lines) - 1 and lines[-1] == b"")
        end = offset + len(raw) + (1 if number < len(lines) else 0)
        if raw.strip():
            try:
                obj = json.loads(raw.decode("utf-8"))
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as err:
                if is_last and number > 1:
                    logger.warning(
                        "Dropping the incomplete last line %d of the journal %s (%s); it is "
                        "most likely a write cut short by a crash.",
                        number,
                        path,
                        err,
                    )
                    break
                raise ValueError(
                    f"The journal {path} is corrupt at line {number}: {err}. Fix or remove "
                    "that line, or use a new journal path."
                ) from None
            parsed.append((number, obj))
        good_end = end
        offset = end
    return parsed, good_end


def _is_torn_header(data: bytes) -> bool:
    """Whether ``data`` is the start of a header line whose write was cut short (one line, no newline)."""
    compact = data.replace(b" ", b"")
    return b"\n" not in data and len(compact) > 0 and (
        compact.startswith(_HEADER_START) or _HEADER_START.startswith(compact)
    ) and not compact.endswith(b"}")


def _not_a_journal(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path} is not a scanpy-autotune journal ({why}); it was left untouched. "
        "Pass a new journal path, or the path of a journal an earlier search wrote."
    )


def _repair(path: Path, good_end: int) -> None:
    """Truncate the file after its last good line and make sure it ends with a newline."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        if good_end < size:
            fh.truncate(good_end)
        if good_end > 0:
            fh.seek(good_end - 1)
            if fh.read(1) != b"\n":
                fh.seek(good_end)
                fh.write(b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def _check_header(path: Path, first: dict) -> dict:
    if first.get("kind") != "header":
        raise _not_a_journal(path, "its first line is no journal header")
    if first.get("version") != JOURNAL_VERSION:
        raise ValueError(
            f"The journal {path} has version {first.get('version')!r}; this version of "
            f"scanpy-autotune reads version {JOURNAL_VERSION}. Use a new journal path."
        )
    settings = first.get("settings")
    if not isinstance(settings, dict):
        raise ValueError(f"The header of the journal {path} has no settings.")
    return settings


def _differing_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    new = to_json_safe(dict(new))
    return sorted(k for k in set(old) | set(new) if old.get(k, ...) != new.get(k, ...))


def _notes(lines: list[tuple[int, dict]]) -> list[dict]:
    """The journal's lines that are neither its header nor a trial (``Journal.note``), in file order."""
    return [line for _, line in lines if line.get("kind") not in ("header", "trial")]


def _trial_records(
    path: Path, lines: list[tuple[int, dict]], decode: Callable[[dict], Any] | None
) -> list[Any]:
    records, seen = [], set()
    for number, line in lines:
        if line.get("kind") != "trial":
            logger.debug("Skipping a journal line of kind %r in %s.", line.get("kind"), path)
            continue
        record = {k: v for k, v in line.items() if k != "kind"}
        if decode is not None:
            try:
                record = decode(record)
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f"The journal {path} has a bad trial at line {number}: {err}. Fix or remove "
                    "that line, or use a new journal path."
                ) from None
        trial_id = record["trial_id"] if isinstance(record, dict) else record.trial_id
        if trial_id in seen:
            logger.warning(
                "The journal %s holds trial %r more than once; keeping the first.", path, trial_id
            )
            continue
        seen.add(trial_id)
        records.append(record)
    return records


# ---------------------------------------------------------------------------
# The lock: one search per journal
# ---------------------------------------------------------------------------


class _Lock:
    """An exclusive lock on ``<journal>.lock``, held while a search uses the journal.

    ``flock`` locks end with the process that holds them, so a killed search
    never leaves a journal locked; the lock file says who holds it. Where
    ``fcntl`` does not exist (Windows) nothing is locked, nor on a file
    system that refuses locks (a warning says so).
    """

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.path = Path(f"{journal}.lock")
        self._fh = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            logger.debug("no fcntl: the journal %s is not locked", self.path)
            return
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                # ENOLCK, ENOSYS, EOPNOTSUPP: a file system without locks (Lustre without
                # -o flock, NFS without its lock service); the holder line is an old one
                fh.close()
                logger.warning(
                    "The file system of the journal %s does not support locks (%s); it is used without "
                    "one: run no other search on it at the same time.", self.journal, err.strerror or err,
                )
                return
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise JournalLockedError(
                f"The journal {self.journal} is in use by another search ({holder}); wait for it to "
                "end or use another journal path."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file releases the lock
            self._fh = None


# ---------------------------------------------------------------------------
# The journal
# ---------------------------------------------------------------------------


class Journal:
    """An append-only trial log.

    Use :meth:`Journal.open` to create or resume one. The constructor writes
    the header when the file does not exist or is empty, and otherwise trusts
    the file.

    Parameters
    ----------
    path
        The journal file.
    settings
        The search settings written into a new file's header.
    """

    def __init__(self, path: str | os.PathLike, settings: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.settings = to_json_safe(dict(settings or {}))
        self._lock: _Lock | None = None
        self.notes: list[dict] = []  # non-trial lines read by open(), e.g. where a search stopped
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            header = {"kind": "header", "version": JOURNAL_VERSION, "settings": self.settings}
            self._write_line(_dumps(header), mode="w")
            _fsync_dir(self.path.parent)

    @staticmethod
    def stored_settings(path: str | os.PathLike) -> dict[str, Any] | None:
        """The settings in the header of an existing journal, or ``None``.

        ``None`` when the file does not exist, is empty, or does not start with a
        readable journal header; :meth:`open` then says what is wrong with it.

        Parameters
        ----------
        path
            The journal file.

        Returns
        -------
        dict or None
        """
        path = Path(path)
        if not path.is_file():
            return None
        with open(path, "rb") as fh:
            first = fh.readline()
        try:
            header = json.loads(first.decode("utf-8"))
            return _check_header(path, header) if isinstance(header, dict) else None
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        settings: Mapping[str, Any],
        *,
        decode: Callable[[dict], Any] | None = None,
        lock: bool = False,
    ) -> tuple[Journal, list[Any]]:
        """Create a journal, or resume one written with the same settings.

        A file that exists is first recognised by its header: a file that is
        not a journal is never changed. Only then is a last line cut short by
        a crash dropped.

        Parameters
        ----------
        path
            The journal file; created with its folder when missing.
        settings
            The settings that must match on resume (space text, seed, split,
            data fingerprint, ...); JSON-compatible values.
        decode
            Turns each trial line (a dict) into the caller's record type; a
            ``ValueError`` it raises is reported with the file and line number.
        lock
            Hold ``<path>.lock`` until :meth:`close`, so that a second search
            on the same journal fails at once (:class:`JournalLockedError`).

        Returns
        -------
        journal
            Ready for :meth:`append`.
        records
            The trials already in the file, in file order, without their
            ``kind`` key (decoded when ``decode`` is given); the first of
            duplicated trial ids only.

        Raises
        ------
        ValueError
            If the file is not a journal, its settings differ (the message
            names the keys), or a line other than the last is corrupt (the
            message gives its number).
        JournalLockedError
            With ``lock``, when another process holds the journal.
        """
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"The journal path {path} is a directory; pass a file path.")
        held = None
        if lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            held = _Lock(path.resolve())  # one lock for every name of the file (a symbolic link)
            held.acquire()
        try:
            journal, records = cls._open(path, settings, decode)
        except BaseException:
            if held is not None:
                held.release()
            raise
        journal._lock = held
        return journal, records

    @classmethod
    def _open(
        cls, path: Path, settings: Mapping[str, Any], decode: Callable[[dict], Any] | None
    ) -> tuple[Journal, list[Any]]:
        if not path.exists() or path.stat().st_size == 0:
            return cls(path, settings), []
        data = path.read_bytes()
        if _is_torn_header(data):
            logger.warning(
                "The journal %s holds only a header cut short by a crash; starting it afresh.", path
            )
            path.write_bytes(b"")
            return cls(path, settings), []
        try:
            lines, good_end = _parse_lines(path)
        except ValueError as err:
            if not data.lstrip().startswith(b"{") or b'"header"' not in data.split(b"\n", 1)[0]:
                raise _not_a_journal(path, "its first line is no journal header") from err
            raise
        if not lines:
            raise _not_a_journal(path, "it holds no journal header")
        stored = _check_header(path, lines[0][1])
        differing = _differing_keys(stored, settings)
        if differing:
            details = "; ".join(
                f"{k}: journal {stored.get(k)!r}, now {to_json_safe(settings.get(k))!r}"
                for k in differing
            )
            hint = (
                " (the data's hash covers the counts, the cell names and each cell's batch, in their order: "
                "the same cells or genes reordered or subset, another layer or another batch_key are other data)"
                if "data" in differing else ""
            )
            raise ValueError(
                f"The journal {path} was written with other settings ({details}){hint}; "
                "use a new journal path or the same settings."
            )
        records = _trial_records(path, lines[1:], decode)
        _repair(path, good_end)
        logger.info("Resuming the journal %s with %d finished trial(s).", path, len(records))
        journal = cls(path, settings)
        journal.notes = _notes(lines[1:])
        return journal, records

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one trial record, flushed and fsynced before returning.

        Parameters
        ----------
        record
            A dict with at least ``trial_id``; values as :func:`to_json_safe` takes.
        """
        if "trial_id" not in record:
            raise ValueError("A journal record needs a 'trial_id'.")
        line = _dumps({"kind": "trial", **{k: v for k, v in record.items() if k != "kind"}})
        self._write_line(line, mode="a")

    def note(self, kind: str, **fields: Any) -> None:
        """Append a line that is not a trial (``{"kind": kind, ...}``), such as why a search stopped."""
        if kind in ("header", "trial"):
            raise ValueError(f"a note cannot be of kind {kind!r}")
        self._write_line(_dumps({"kind": kind, **fields}), mode="a")
        self.notes.append({"kind": kind, **to_json_safe(fields)})

    def close(self) -> None:
        """Release the journal's lock (taken by ``open(..., lock=True)``); appending still works."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_line(self, line: str, mode: str) -> None:
        try:
            with open(self.path, mode, encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as error:  # a torn last line is repaired when the journal is opened again
            raise JournalWriteError(
                error.errno, f"the journal {self.path} could not be written ({error.strerror or error})"
            ) from error

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"


def _fsync_dir(folder: Path) -> None:
    """Make a new file's directory entry durable (a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
