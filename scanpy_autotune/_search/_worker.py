"""A worker process of the local pool: ``scanpy_autotune._search._worker FD DEVICE THREADS PARENT``.

The pool runs it through :data:`._local_pool.WORKER_BOOT` (as ``python -m``
would, with this package imported from the driver's folder).

Started as a fresh interpreter (not ``multiprocessing``'s spawn), so it never
re-imports the user's ``__main__`` script. The pool pins it to its GPU and
thread count through its environment, before anything imports torch. It
receives the trial context once over the socket ``FD``, then evaluates trials
until told to stop, or until the driver (process ``PARENT``) is gone: a killed
notebook kernel must not leave trials burning cores.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

ORPHAN_CHECK_SECONDS = 1.0


class RungReporter:
    """The per-epoch callback of one trial: at rung epochs, ask the driver whether to go on.

    It sends the best validation ELBO so far (NaN once the trial has produced
    a NaN) and waits for the driver's decision; other epochs cost nothing.
    """

    def __init__(self, conn: Connection, trial_id: int, rungs: list[int]) -> None:
        self.conn, self.trial_id, self.rungs = conn, trial_id, set(rungs)
        self.best = float("-inf")

    def __call__(self, epoch: int, train_elbo: float, validation_elbo: float) -> bool:
        if math.isnan(validation_elbo) or math.isnan(self.best):
            self.best = math.nan
        else:
            self.best = max(self.best, validation_elbo)
        if epoch + 1 not in self.rungs:
            return False
        self.conn.send(("report", self.trial_id, epoch + 1, self.best))
        return bool(self.conn.recv())


def serve(conn: Connection, device: str) -> None:
    """Evaluate the trials sent over ``conn`` on ``device`` until a ``stop`` message."""
    from ._objective import evaluate_trial

    context = pickle.loads(conn.recv_bytes())
    conn.send(("ready",))  # a worker that dies before this never began a trial: the pool restarts it
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        _, trial_id, params, rungs = message
        reporter = RungReporter(conn, trial_id, rungs)
        record, model = evaluate_trial(context, trial_id, params, device, reporter)
        conn.send(("done", trial_id, record, model))


def exit_when_orphaned(parent: int, interval: float = ORPHAN_CHECK_SECONDS) -> threading.Thread:
    """Watch, from a daemon thread, for the driver ``parent`` to die, and then end this process.

    A worker in the middle of a trial only notices a closed socket when the trial
    ends, which can be many minutes after a driver was killed (SIGKILL, out of memory).
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="orphan-watch", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> None:
    fd, device, threads, parent = int(argv[0]), argv[1], int(argv[2]), int(argv[3])
    # Importing the package (torch with it) took this long already: the driver may be gone by now.
    exit_when_orphaned(parent)
    # The driver decides what Ctrl-C or a SIGTERM sent to the whole process group (a batch system's time
    # limit) stops: a worker ended by it would be recorded as a failed trial. It stops workers with SIGKILL,
    # and a worker whose driver is gone exits by itself (exit_when_orphaned).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    local_device = "cuda:0" if device.startswith("cuda") else "cpu"  # its one visible GPU
    import torch

    from ._allocator import restore_dynamic_thresholds

    torch.set_num_threads(max(1, threads))
    restore_dynamic_thresholds()
    conn = Connection(fd)
    try:
        serve(conn, local_device)
    except EOFError:  # the driver went away
        pass
    _exit_now()


def _exit_now() -> None:
    """End the process without the interpreter's teardown, which the driver would wait for.

    Once told to stop, a worker has sent everything it had; tearing down torch's
    modules then takes 1-2 s of a process that trained (0.1 s this way), and
    every search waits for its workers to end. Only the standard streams need
    flushing: nothing else is written here.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
