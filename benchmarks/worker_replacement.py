"""How long a worker's replacement holds the driver's loop (the local pool, real data).

    python benchmarks/worker_replacement.py --label "messages from a thread (a34400b)"
    PYTHONPATH=/tmp/old python benchmarks/worker_replacement.py --label "context sent from the loop (250ecb6)"

A pool of two CPU workers holds PBMC4k's counts (4271 cells x 2000 genes, a
context of several MB, far more than a socket's buffer). Each round starts a
trial that would train for hours on each worker, kills the first worker
(SIGKILL), and times the ``poll`` that finds it dead and starts its
replacement: while that call runs, no other trial's rung is answered and no
result is read. Also times how long the replacement takes to say it holds the
context. The second command runs the same script against an older checkout
(``git worktree add /tmp/old 250ecb6``). Each run adds its rows to
``results/worker_replacement.md``.
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import anndata as ad
import pandas as pd
from _common import DATA, RESULTS, write

from scanpy_autotune._search._context import TrialContext
from scanpy_autotune._search._local_pool import LocalPool
from scanpy_autotune._vae._data import extract_counts, make_split

ROUNDS = 3


def one_round(context: TrialContext) -> dict:
    pool = LocalPool(["cpu", "cpu"])
    pool.start(context)
    try:
        for trial_id in (0, 1):
            pool.submit(trial_id, {"n_hidden": 128}, [])
        deadline = time.monotonic() + 120
        while not all(slot.ready for slot in pool._slots) and time.monotonic() < deadline:
            pool.poll(0.2)  # reads each worker's "ready"
        first = pool._slots[0]
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
        started = time.monotonic()
        while pool._slots[0] is first:
            pool.poll(0.0)
        held = time.monotonic() - started
        while not pool._slots[0].ready and time.monotonic() < started + 120:
            pool.poll(0.05)
        ready = time.monotonic() - started
    finally:
        pool.shutdown(kill=True)
    return {"poll_held_s": round(held, 3), "replacement_ready_s": round(ready, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="what code this is (commit, change)")
    args = parser.parse_args()
    adata = ad.read_h5ad(DATA / "pbmc4k_10x_4271x2000.h5ad")
    data = extract_counts(adata)
    split = make_split(data.n_obs, train_size=0.75, validation_size=0.1, seed=0)
    context = TrialContext(data=data, split=split, max_epochs=10**6, n_mc=2)
    rows = [{"code": args.label, "round": r, **one_round(context)} for r in range(ROUNDS)]
    earlier = RESULTS / "worker_replacement.csv"
    table = pd.DataFrame(rows)
    if earlier.exists():
        table = pd.concat([pd.read_csv(earlier), table], ignore_index=True)
    write(
        "worker_replacement", table, "python benchmarks/worker_replacement.py --label LABEL",
        notes="poll_held_s: the driver's poll that found the worker dead and started its replacement; "
        "replacement_ready_s: until the replacement held the context (it imports torch first).",
    )


if __name__ == "__main__":
    main()
