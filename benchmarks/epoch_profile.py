"""Where a training epoch of the default model goes, by kind of operation (torch profiler).

    python benchmarks/epoch_profile.py [--epochs 3] [--threads 2]

For Cortex and PBMC4k (the datasets of ``peer_scvi.py``), the default
configuration with observed library size trains a warm-up epoch, then
``--epochs`` epochs under ``torch.profiler``. Self CPU time is grouped into
matrix products (``mm``, ``addmm``: the same dense products any scVI
implementation must compute), the likelihood node (its own kernels), the
optimizer step, and everything else. The last columns compare the matrix
products alone with a fifth of scvi-tools' seconds per epoch from
``results/peer_scvi_quiet.csv`` (``--peer``): what a 5x speed-up would leave for the rest.
Writes ``results/epoch_profile.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, write  # noqa: E402

import scanpy_autotune as sat  # noqa: E402

DATASETS = ["cortex_zeisel_3005x200", "pbmc4k_10x_4271x2000"]
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"}
OPTIMIZER = {"aten::_fused_adam_"}


def _fit(adata, epochs: int):
    return sat.Model.fit(
        adata, seed=0, max_epochs=epochs, validation_size=0.0, early_stopping=False,
        use_observed_lib_size=True, device="cpu",
    )


def profile_dataset(name: str, epochs: int) -> dict:
    adata = ad.read_h5ad(DATA / f"{name}.h5ad")
    _fit(adata, 1)  # warm-up: first-call costs of torch kernels
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _fit(adata, epochs)
    groups = {"matmul": 0.0, "likelihood": 0.0, "optimizer": 0.0, "other": 0.0}
    total = 0.0
    for item in prof.key_averages():
        seconds = item.self_cpu_time_total / 1e6
        total += seconds
        if item.key in MATMUL:
            groups["matmul"] += seconds
        elif item.key in OPTIMIZER or item.key.startswith("Optimizer.step"):
            groups["optimizer"] += seconds
        else:
            groups["other"] += seconds
    # The likelihood node's kernels were counted under "other" by their own names; move them.
    nll_total = sum(
        item.cpu_time_total / 1e6 for item in prof.key_averages() if item.key in ("CountNLL", "CountNLLBackward")
    )
    groups["likelihood"] = nll_total
    groups["other"] -= nll_total
    row = {"dataset": name, "profiled_epochs": epochs, "s_per_epoch_profiled": total / epochs}
    for key, seconds in groups.items():
        row[f"{key}_s_per_epoch"] = seconds / epochs
        row[f"{key}_%"] = 100 * seconds / total
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peer", default="peer_scvi_quiet", help="results/PEER.csv with scvi-tools' s/epoch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [profile_dataset(name, args.epochs) for name in DATASETS]
    table = pd.DataFrame(rows)
    peer_file = RESULTS / f"{args.peer}.csv"
    if peer_file.exists():
        peer = pd.read_csv(peer_file).set_index("dataset")["s/epoch scvi-tools"]
        table["scvi_s_per_epoch"] = table["dataset"].map(peer)
        table["5x_budget_s"] = table["scvi_s_per_epoch"] / 5
        table["matmul_share_of_5x_budget_%"] = 100 * table["matmul_s_per_epoch"] / table["5x_budget_s"]
    write(
        "epoch_profile", table,
        f"python benchmarks/epoch_profile.py --epochs {args.epochs} --threads {args.threads} --peer {args.peer}",
        notes=(
            "Self CPU time under torch.profiler (the profiler adds some overhead to every operation). "
            "matmul: dense matrix products (encoder input layer, decoder output heads and their "
            "gradients); likelihood: everything inside the fused ZINB node, forward and backward; "
            "optimizer: the fused Adam step and its Python wrapper; other: the rest (layers, "
            "batch norm, dropout, KL, minibatch gathering, autograd bookkeeping)."
        ),
    )
    print(table.to_string())


if __name__ == "__main__":
    main()
