"""Helpers shared by the search tests (local pool and Dask)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path


def journal_trials(journal: Path) -> list[dict]:
    """The trial lines of a journal (a line still being written is skipped)."""
    lines = []
    for line in journal.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    return [line for line in lines if line.get("kind") == "trial"]


def interrupt_when(journal: Path, n_trials: int) -> threading.Thread:
    """Send this process SIGINT (Ctrl-C) once the journal holds ``n_trials`` trials.

    Call it from the main thread. It installs Python's own Ctrl-C handler first:
    a process started in the background by a non-interactive shell inherits
    SIGINT ignored, and then a Ctrl-C would never become a KeyboardInterrupt.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch():
        deadline = time.time() + 300
        while time.time() < deadline:
            if journal.exists() and len(journal_trials(journal)) >= n_trials:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def worker_processes(parent: int) -> list[int]:
    """Process ids of the search worker processes of ``parent`` that are still running."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and "_search._worker" in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def process_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
