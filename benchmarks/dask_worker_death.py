"""Searches started on a Dask cluster while one of its workers dies: does each end, and how?

    python benchmarks/dask_worker_death.py [--rounds 10] [--watchdog 150]

A ``LocalCluster`` of 2 single-threaded worker processes (with nannies, which
restart a killed worker). Each round kills one worker with SIGKILL at a
random moment in the first 0.3 s of a search's start (while the search sends
its data to the cluster) and runs a 3-trial search of the CellBench counts in
``tests/data``. A round that has not ended after ``--watchdog`` seconds is a
hang (the script then stops: the cluster is stuck). Writes
``results/dask_worker_death.md`` and ``.csv``: per round, the outcome, the
trials' statuses and the wall time.

Until session 22 the driver broadcast its data (``scatter(broadcast=True)``);
the scheduler's replication retried the dead worker without end, and the
search hung at its start.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import anndata as ad
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write  # noqa: E402

import scanpy_autotune as sat  # noqa: E402

DATA = ROOT / "tests" / "data" / "cellbench_360x400.h5ad"
SEARCH = dict(max_evals=3, max_epochs=3, n_mc=5, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--watchdog", type=float, default=150.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.new_clusters = 0
    from distributed import Client, LocalCluster

    rng = random.Random(args.seed)

    def new_cluster() -> tuple:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
        return cluster, Client(cluster)

    cluster, client = new_cluster()
    sat.tl.autotune(ad.read_h5ad(DATA), backend="dask", client=client, **SEARCH)  # warm
    rows = []
    for round_ in range(args.rounds):
        try:
            client.wait_for_workers(2, timeout=60)
        except Exception as err:  # Dask's nanny did not bring the killed worker back (not the search)
            print(f"round {round_}: the cluster did not restart its worker ({err}); a new cluster", flush=True)
            client.close()
            cluster.close()
            cluster, client = new_cluster()
            args.new_clusters += 1
        pids = sorted(client.run(os.getpid).values())
        victim, delay = pids[round_ % 2], rng.uniform(0.0, 0.3)
        threading.Timer(delay, os.kill, (victim, signal.SIGKILL)).start()
        ended = threading.Event()

        def watchdog(round_: int = round_, ended: threading.Event = ended, delay: float = delay) -> None:
            if not ended.wait(args.watchdog):
                rows.append(dict(round=round_, kill_after_s=delay, outcome="hang", statuses="",
                                 wall_s=args.watchdog))
                _write(rows, args)
                print(f"round {round_}: still running after {args.watchdog:.0f} s: a hang", flush=True)
                os._exit(3)

        threading.Thread(target=watchdog, daemon=True).start()
        adata = ad.read_h5ad(DATA)
        start = time.perf_counter()
        try:
            sat.tl.autotune(adata, backend="dask", client=client, **SEARCH)
            statuses = ",".join(adata.uns["autotune"]["trials"]["status"])
            outcome = "ended"
        except Exception as err:  # a clear error is an acceptable end; a hang is not
            statuses, outcome = "", f"error: {type(err).__name__}: {str(err)[:120]}"
        ended.set()
        rows.append(dict(round=round_, kill_after_s=round(delay, 3), outcome=outcome, statuses=statuses,
                         wall_s=round(time.perf_counter() - start, 2)))
        print(rows[-1], flush=True)
    _write(rows, args)
    client.close()
    cluster.close()


def _write(rows: list[dict], args: argparse.Namespace) -> None:
    table = pd.DataFrame(rows)
    hangs = int((table["outcome"] == "hang").sum())
    notes = (
        f"{len(table)} round(s): {int((table['outcome'] == 'ended').sum())} ended with their trials, "
        f"{int(table['outcome'].str.startswith('error').sum())} with an error, {hangs} hung. "
        f"New clusters started because Dask's nanny did not restart a killed worker within 60 s "
        f"(before the round's search, not a fault of the search): {args.new_clusters}."
    )
    write("dask_worker_death", table,
          f"python benchmarks/dask_worker_death.py --rounds {args.rounds} --watchdog {args.watchdog:g}",
          notes)


if __name__ == "__main__":
    main()
