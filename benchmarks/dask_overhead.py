"""The same search on the local pool and on a Dask LocalCluster, both with 2 workers.

    python benchmarks/dask_overhead.py [--max-evals 40] [--max-epochs 100]

Writes ``results/dask_overhead.md`` and ``.csv``: wall time of each and the
Dask/local ratio (target: Dask overhead at most 10%).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, write  # noqa: E402

import scanpy_autotune as sat  # noqa: E402

DATASET = "pbmc68k_counts_700x765"


def search(backend: str, args: argparse.Namespace, client=None) -> dict:
    adata = ad.read_h5ad(DATA / f"{DATASET}.h5ad")
    start = time.perf_counter()
    sat.tl.autotune(
        adata, max_evals=args.max_evals, max_epochs=args.max_epochs, n_workers=2, gpus=None,
        seed=0, backend=backend, client=client, progress=False,
    )
    wall = time.perf_counter() - start
    uns = adata.uns["autotune"]
    trials = uns["trials"]
    return {
        "backend": backend,
        "dataset": DATASET,
        "trials": len(trials),
        "max_epochs": args.max_epochs,
        "wall_s": wall,
        "trials_per_hour": len(trials) / wall * 3600,
        "mean_epochs": float(trials["n_epochs"].mean()),
        "best_loss": float(uns["best"]["loss"]),
        "default_loss": float(uns["default"]["loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-evals", type=int, default=40)
    parser.add_argument("--max-epochs", type=int, default=100)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    rows = [search("local", args)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        rows.append(search("dask", args, client))
    table = pd.DataFrame(rows)
    ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    write(
        "dask_overhead", table,
        f"python benchmarks/dask_overhead.py --max-evals {args.max_evals} --max-epochs {args.max_epochs}",
        notes=f"Dask / local wall-time ratio: {ratio:.3f} (target <= 1.10). The cluster is started "
        "before the Dask search's clock starts; worker start-up of the local pool is inside its clock.",
    )
    print(table.to_string(), f"\nratio {ratio:.3f}")


if __name__ == "__main__":
    main()
