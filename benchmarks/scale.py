"""One trial on synthetic negative-binomial counts of growing size: seconds per epoch and peak memory.

    python benchmarks/scale.py [--cells 10000 100000 1000000] [--genes 720] [--epochs 3] [--device cuda]

The counts have the Brain Large shape (720 genes) and are generated a block
of cells at a time straight into CSR ``float32`` (never dense) and written to
a temporary ``.h5ad``; a fresh process (``--one PATH``) reads it and trains
them, so its peak memory is that of one trial. They are trained with the
default configuration with 2 torch threads, on the CPU or with ``--device
cuda`` on the GPU, as one trial of a search would be (75% training cells, a
tenth of them for validation, validation ELBO after every epoch).

Reported per size: the CSR matrix's bytes (data, indices, indptr), seconds
per epoch (mean time between the ends of consecutive epochs, validation
included), the first epoch with the set-up before it (validation, device
tensors), and peak memory: the process's peak resident set minus its
resident set after the imports, in absolute terms and as a multiple of the
CSR matrix; on the GPU also the peak GPU memory the trial's tensors held
(``torch.cuda.max_memory_allocated``) and what the allocator reserved. Writes
``results/scale.md`` and ``.csv`` (``scale_gpu`` with ``--device cuda``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import EpochClock, write  # noqa: E402

BLOCK = 20_000


def _block(n: int, gene_mean: np.ndarray, gene_theta: np.ndarray, seed: np.random.SeedSequence) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    size_factor = rng.lognormal(mean=0.0, sigma=0.3, size=(n, 1))
    mean = size_factor * gene_mean
    counts = rng.poisson(rng.gamma(gene_theta, mean / gene_theta)).astype(np.float32)
    empty = counts.sum(axis=1) == 0
    counts[empty, rng.integers(0, len(gene_mean), size=int(empty.sum()))] = 1  # no empty cells
    return sp.csr_matrix(counts)


def synthetic_counts(n_cells: int, n_genes: int, seed: int = 0) -> sp.csr_matrix:
    """Negative-binomial counts (gamma-Poisson) with log-normal gene means and library factors.

    Blocks of :data:`BLOCK` cells are drawn in parallel, each from its own
    child of the seed, so the counts do not depend on the number of processes.
    """
    root = np.random.SeedSequence(seed)
    gene_seed, *block_seeds = root.spawn(1 + -(-n_cells // BLOCK))
    rng = np.random.default_rng(gene_seed)
    gene_mean = rng.lognormal(mean=-1.6, sigma=1.4, size=n_genes)
    gene_theta = rng.lognormal(mean=0.0, sigma=0.5, size=n_genes)
    sizes = [min(BLOCK, n_cells - start) for start in range(0, n_cells, BLOCK)]
    with ProcessPoolExecutor(min(len(sizes), os.cpu_count() or 1)) as pool:
        blocks = list(pool.map(_block, sizes, repeat(gene_mean), repeat(gene_theta), block_seeds))
    X = sp.vstack(blocks, format="csr")
    X.indices = X.indices.astype(np.int32)
    X.indptr = X.indptr.astype(np.int64)
    return X


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def one(path: Path, epochs: int, device: str = "cpu") -> dict:
    """Read the counts, train one default trial and measure; runs in its own process."""
    import anndata as ad
    import torch

    import scanpy_autotune as sat
    from scanpy_autotune._vae._data import DENSE_LIMIT_BYTES

    torch.set_num_threads(2)
    baseline = _rss_bytes()
    adata = ad.read_h5ad(path)
    X = adata.X
    n_cells, n_genes = X.shape
    csr_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    clock = EpochClock()
    start = time.perf_counter()
    model = sat.Model.fit(adata, max_epochs=epochs, seed=0, device=device, early_stopping=False, callback=clock)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    steady = clock.seconds_per_epoch(np.mean)
    on_gpu = {}
    if device != "cpu":
        on_gpu = {
            "gpu": torch.cuda.get_device_name(),
            "gpu_peak_allocated_MB": torch.cuda.max_memory_allocated() / 1e6,
            "gpu_peak_reserved_MB": torch.cuda.max_memory_reserved() / 1e6,
        }
    return {
        "device": device,
        "cells": n_cells,
        "genes": n_genes,
        "nnz": int(X.nnz),
        "density": X.nnz / (n_cells * n_genes),
        "csr_MB": csr_bytes / 1e6,
        "dense_on_device": n_cells * n_genes * 4 <= DENSE_LIMIT_BYTES,
        "epochs": len(clock.ends),
        "s_per_epoch": steady,
        "first_epoch_with_setup_s": clock.ends[0] - start,
        "s_per_epoch_per_100k_cells": steady / n_cells * 1e5,
        "peak_MB": (peak - baseline) / 1e6,
        "peak_over_csr": (peak - baseline) / csr_bytes,
        "final_train_elbo": float(model.history["train_elbo"].iloc[-1]),
        **on_gpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--genes", type=int, default=720)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the trial trains")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.epochs, args.device)))
        return
    import anndata as ad

    rows = []
    for n_cells in args.cells:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "counts.h5ad"
            ad.AnnData(synthetic_counts(n_cells, args.genes)).write_h5ad(path)
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(path), "--epochs", str(args.epochs), "--device", args.device],
                capture_output=True, text=True,
            )
        if out.returncode != 0:
            raise SystemExit(f"the trial of {n_cells} cells failed:\n{out.stderr[-4000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    cells = " ".join(map(str, args.cells))
    on_gpu = args.device != "cpu"
    targets = ("Target (issue 18): 1M cells one epoch <= 10 s on the GPU, with its peak GPU memory."
               if on_gpu else "Targets (issue 8): 1M cells one epoch <= 60 s; peak <= 3x the CSR matrix; cost "
               "linear in cells (constant s_per_epoch_per_100k_cells).")
    write(
        "scale_gpu" if on_gpu else "scale", table,
        f"python benchmarks/scale.py --cells {cells} --genes {args.genes} --epochs {args.epochs}"
        + (f" --device {args.device}" if on_gpu else ""),
        notes=(
            "Default configuration (ZINB, 128 hidden, 10 latent, 1 layer, latent library), batch 128, "
            f"2 torch threads, {'GPU' if on_gpu else 'CPU'}. peak_MB: peak resident set of the trial's process "
            "minus its resident set after the imports (reading the .h5ad included). " + targets
        ),
    )
    print(table.to_string())


if __name__ == "__main__":
    main()
