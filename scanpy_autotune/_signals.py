"""Hold Ctrl-C and SIGTERM while a step that must not be cut in half runs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["interrupts_held"]


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT), and a SIGTERM that Python handles, arriving inside the block until it ends.

    A finished trial goes to the journal and to the search's records in one
    step: an interrupt between the two would leave it in one and not the other;
    the results go into ``adata`` and into an output file whole. SIGTERM is held only where a Python handler was installed for it (the
    command line turns it into a Ctrl-C); by default it ends the process at
    once, and the journal still holds every finished trial. Each signal is
    delivered again, to the handler in place before, on leaving. Outside the
    main thread (where Python delivers signals) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))}
    if callable(signal.getsignal(signal.SIGTERM)):
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)
