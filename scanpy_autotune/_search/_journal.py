"""Append-only JSON-lines journal of finished trials; resume after a crash.

The first line is a header::

    {"kind": "header", "version": 1, "settings": {...}}

and every further line one finished trial::

    {"kind": "trial", "trial_id": 3, "status": "ok", "loss": 1218.5, ...}

Each line is flushed and fsynced before :meth:`Journal.append` returns. NaN and
infinities are written as ``null``; on reading, ``null`` becomes NaN again for
the keys in ``nan_keys`` (``loss`` by default) and inside lists of numbers
(histories padded with NaN).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_NAN_KEYS", "JOURNAL_VERSION", "Journal", "to_json_safe"]

logger = logging.getLogger("scanpy_autotune")

JOURNAL_VERSION = 1
DEFAULT_NAN_KEYS: tuple[str, ...] = ("loss",)


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


def _restore_nan(obj: Any) -> Any:
    """``None`` to NaN inside lists that hold numbers (NaN-padded arrays)."""
    if isinstance(obj, list):
        items = [_restore_nan(v) for v in obj]
        numeric = any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)
        return [float("nan") if (v is None and numeric) else v for v in items]
    if isinstance(obj, dict):
        return {k: _restore_nan(v) for k, v in obj.items()}
    return obj


def _decode_record(line: dict, nan_keys: Iterable[str]) -> dict:
    record = {k: _restore_nan(v) for k, v in line.items() if k != "kind"}
    for key in nan_keys:
        if key in record and record[key] is None:
            record[key] = float("nan")
    return record


def _dumps(obj: Any) -> str:
    return json.dumps(to_json_safe(obj), allow_nan=False, separators=(",", ":"))


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _parse_lines(path: Path) -> tuple[list[dict], int]:
    """Parse the file's lines; return the good lines and the byte offset where they end.

    A bad last line (partial write) ends the good part; a bad line elsewhere
    raises ``ValueError`` with its line number.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    parsed: list[dict] = []
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
                if is_last:
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
            parsed.append(obj)
        good_end = end
        offset = end
    return parsed, good_end


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
        raise ValueError(f"{path} is not a scanpy-autotune journal (its first line is no header).")
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


def _trial_records(path: Path, lines: list[dict], nan_keys: Iterable[str]) -> list[dict]:
    records, seen = [], set()
    for line in lines:
        if line.get("kind") != "trial":
            logger.debug("Skipping a journal line of kind %r in %s.", line.get("kind"), path)
            continue
        record = _decode_record(line, nan_keys)
        trial_id = record.get("trial_id")
        if trial_id in seen:
            logger.warning(
                "The journal %s holds trial %r more than once; keeping the first.", path, trial_id
            )
            continue
        seen.add(trial_id)
        records.append(record)
    return records


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
    nan_keys
        Top-level record keys whose ``null`` reads back as NaN.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        settings: Mapping[str, Any] | None = None,
        nan_keys: Iterable[str] = DEFAULT_NAN_KEYS,
    ) -> None:
        self.path = Path(path)
        self.nan_keys = tuple(nan_keys)
        self.settings = to_json_safe(dict(settings or {}))
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            header = {"kind": "header", "version": JOURNAL_VERSION, "settings": self.settings}
            self._write_line(_dumps(header), mode="w")
            _fsync_dir(self.path.parent)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        settings: Mapping[str, Any],
        nan_keys: Iterable[str] = DEFAULT_NAN_KEYS,
    ) -> tuple[Journal, list[dict]]:
        """Create a journal, or resume one written with the same settings.

        Parameters
        ----------
        path
            The journal file; created with its folder when missing.
        settings
            The settings that must match on resume (space text, seed, split,
            data fingerprint, ...); JSON-compatible values.
        nan_keys
            Top-level record keys whose ``null`` reads back as NaN.

        Returns
        -------
        journal
            Ready for :meth:`append`.
        records
            The trials already in the file, in file order, without their
            ``kind`` key; the first of duplicated trial ids only.

        Raises
        ------
        ValueError
            If the file's settings differ (the message names the keys), or a
            line other than the last is corrupt (the message gives its number).
        """
        path = Path(path)
        nan_keys = tuple(nan_keys)
        if not path.exists() or path.stat().st_size == 0:
            return cls(path, settings, nan_keys), []
        lines, good_end = _parse_lines(path)
        if not lines:
            logger.warning("The journal %s holds no complete line; starting it afresh.", path)
            path.write_bytes(b"")
            return cls(path, settings, nan_keys), []
        stored = _check_header(path, lines[0])
        differing = _differing_keys(stored, settings)
        if differing:
            details = "; ".join(
                f"{k}: journal {stored.get(k)!r}, now {to_json_safe(settings.get(k))!r}"
                for k in differing
            )
            raise ValueError(
                f"The journal {path} was written with other settings ({', '.join(differing)}: "
                f"{details}); use a new journal path or the same settings."
            )
        _repair(path, good_end)
        records = _trial_records(path, lines[1:], nan_keys)
        logger.info("Resuming the journal %s with %d finished trial(s).", path, len(records))
        return cls(path, settings, nan_keys), records

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

    def read(self) -> list[dict]:
        """The trial records in the file (as :meth:`open` returns them), without repairing it."""
        lines, _ = _parse_lines(self.path)
        return _trial_records(self.path, lines[1:], self.nan_keys)

    def _write_line(self, line: str, mode: str) -> None:
        with open(self.path, mode, encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

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
