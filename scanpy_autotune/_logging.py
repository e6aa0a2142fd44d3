"""The package's log, following Scanpy's ``sc.settings.verbosity``.

Every module logs to the ``scanpy_autotune`` logger. Its messages are shown as
Scanpy shows its own: through ``scanpy.logging`` (stderr, or
``sc.settings.logfile``), at the level ``sc.settings.verbosity`` sets (0 errors,
1 warnings, 2 info, 3 hints, 4 debug). A program that configures Python's
logging itself (handlers on the root logger) receives them there instead, and
the level it sets on ``scanpy_autotune`` wins.
"""

from __future__ import annotations

import builtins
import logging
import sys

__all__ = ["follow_scanpy_verbosity", "logger"]

logger = logging.getLogger("scanpy_autotune")

_VERBOSITY_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: 15, 4: logging.DEBUG}


#: Per level, highest first: the ``scanpy.logging`` function that shows a record, and the prefix
#: Scanpy's format gives it (``scanpy.logging._LogFormatter``). Below the last: debug.
_SCANPY_LEVELS = (
    (logging.ERROR, "error", "ERROR: "),
    (logging.WARNING, "warning", "WARNING: "),
    (logging.INFO, "info", ""),
    (logging.DEBUG + 1, "hint", "--> "),
)
_SCANPY_DEBUG = ("debug", "    ")


class _ScanpyHandler(logging.Handler):
    """Shows a record as Scanpy shows its own, unless the program logs through the root logger.

    Through ``scanpy.logging`` once Scanpy is imported (its ``logfile`` and
    format). Before that, nobody changed Scanpy's settings, so the record goes
    where Scanpy's default sends it (stderr; stdout in Jupyter) in its default
    format, without Scanpy's import: 1-2 s that
    a search's first message (a Ctrl-C's warning) would otherwise spend, open
    to a second Ctrl-C.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:  # the program chose where log records go
            return
        try:
            function, prefix = next(
                ((name, text) for level, name, text in _SCANPY_LEVELS if record.levelno >= level), _SCANPY_DEBUG
            )
            sc = sys.modules.get("scanpy")
            if sc is not None and hasattr(sc, "logging"):
                getattr(sc.logging, function)(record.getMessage())
                return
            # Scanpy's default logfile: stdout in IPython and Jupyter, else stderr
            stream = sys.stdout if getattr(builtins, "__IPYTHON__", False) else sys.stderr
            print(prefix + record.getMessage(), file=stream)
        except Exception:  # pragma: no cover - never let logging break a search
            self.handleError(record)


_HANDLER = _ScanpyHandler()
_synced_level = [logging.NOTSET]


#: ``sc.settings.verbosity`` until someone changes it (1, warnings).
_SCANPY_DEFAULT_VERBOSITY = 1


def _scanpy_level() -> int:
    """The level of ``sc.settings.verbosity``; Scanpy's default when it is not imported.

    Whoever changed the verbosity imported Scanpy to do it, so reading it from
    ``sys.modules`` spares ``import sat.tl`` (and the command line) Scanpy's 2 s import.
    """
    settings = getattr(sys.modules.get("scanpy"), "settings", None)
    verbosity = getattr(settings, "verbosity", _SCANPY_DEFAULT_VERBOSITY)
    return _VERBOSITY_LEVELS.get(int(verbosity), logging.DEBUG)


def follow_scanpy_verbosity() -> None:
    """Give the package logger the level of ``sc.settings.verbosity`` (called by the public functions).

    A level that someone else set on the ``scanpy_autotune`` logger (a program,
    the command line, pytest's ``caplog``) is left as it is.
    """
    if not logger.handlers:  # the command line installs its own handler
        logger.addHandler(_HANDLER)
    if logger.level not in (logging.NOTSET, _synced_level[0]):
        return
    level = _scanpy_level()
    logger.setLevel(level)
    _synced_level[0] = level
