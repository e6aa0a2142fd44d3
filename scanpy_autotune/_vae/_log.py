"""Messages a process logs once, however many trials repeat their cause."""

from __future__ import annotations

import logging

logger = logging.getLogger("scanpy_autotune")

_logged: set[str] = set()


def log_once(message: str, level: int = logging.INFO) -> None:
    """Log ``message`` the first time this process sees it (every trial would repeat it)."""
    if message not in _logged:
        _logged.add(message)
        logger.log(level, message)
