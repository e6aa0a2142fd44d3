"""A worker process of the local pool: ``python -m scanpy_autotune._search._worker FD DEVICE THREADS``.

Started as a fresh interpreter (not ``multiprocessing``'s spawn), so it never
re-imports the user's ``__main__`` script. It pins itself to its device and
thread count before torch is imported, receives the trial context once over
the socket ``FD``, then evaluates trials until told to stop.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import sys
from multiprocessing.connection import Connection


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
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        _, trial_id, params, rungs = message
        reporter = RungReporter(conn, trial_id, rungs)
        record, model = evaluate_trial(context, trial_id, params, device, reporter)
        conn.send(("done", trial_id, record, model))


def main(argv: list[str]) -> None:
    fd, device, threads = int(argv[0]), argv[1], int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C stops
    if device.startswith("cuda"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        local_device = "cuda:0"
    else:
        local_device = "cpu"
    import torch

    from ._allocator import restore_dynamic_thresholds

    torch.set_num_threads(max(1, threads))
    restore_dynamic_thresholds()
    conn = Connection(fd)
    try:
        serve(conn, local_device)
    except EOFError:  # the driver went away
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
