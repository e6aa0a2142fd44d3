"""The CPU epoch beside its floor and beside scvi-tools, in one run (issue 23).

    python benchmarks/cpu_floor.py [--scvi-python VENV/bin/python] [--epochs 20] [--nll-epochs 400]

For each dataset, the default configuration with observed library size
(scvi-tools' default), batch 128, 75% of cells for training (seed 0 split),
2 torch threads:

- floor: the dense matrix products of one epoch alone, timed with torch's own
  kernels (``../shared/tools/matmul_floor.py``, same shapes and training cells);
- ours, with the likelihood compiled (what training of 400 epochs does by
  default on these datasets) and eager (``compiled_likelihood=False``);
- scvi-tools' ``SCVI`` on the same training cells (``--scvi-python``).

Seconds per epoch are steady state: the median time between consecutive
epoch ends. Writes ``results/cpu_floor.md``. With ``--nll-epochs N`` it also
trains both of our paths for ``N`` epochs and compares their held-out NLL
(100 importance samples, the same draws for both): ``results/cpu_floor_nll.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT, EpochClock, write  # noqa: E402
from peer_scvi import theirs  # noqa: E402

import scanpy_autotune as sat  # noqa: E402

DATASETS = ["cortex_zeisel_3005x200", "pbmc4k_10x_4271x2000", "cbmc_citeseq_8617x2000"]
FLOOR_TOOL = ROOT.parent / "shared" / "tools" / "matmul_floor.py"


def _floor_function():
    spec = importlib.util.spec_from_file_location("matmul_floor", FLOOR_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.floor_seconds_per_epoch


def _fit(adata, epochs: int, compiled: bool, clock=None):
    return sat.Model.fit(
        adata, seed=0, max_epochs=epochs, validation_size=0.0, early_stopping=False,
        use_observed_lib_size=True, device="cpu", callback=clock, compiled_likelihood=compiled,
    )


def _steady(adata, epochs: int, compiled: bool) -> tuple[float, sat.Model]:
    clock = EpochClock()
    model = _fit(adata, epochs, compiled, clock)
    return clock.seconds_per_epoch(np.median), model


def timings(names: list[str], epochs: int, scvi_python: str | None, repeats: int) -> pd.DataFrame:
    """Per dataset, the median of ``repeats`` rounds, each timing the floor, both our paths and the peer in turn.

    This machine's speed drifts by tens of percent within minutes (other
    tenants of its host), so the rounds are interleaved and the ratios are
    taken within a round.
    """
    floor = _floor_function()
    rows = []
    for name in names:
        path = DATA / f"{name}.h5ad"
        adata = ad.read_h5ad(path)
        rounds = []
        for _ in range(repeats):
            compiled_s, model = _steady(adata, epochs, True)
            assert model.module.compiled_likelihood, "the likelihood was not compiled (see the log)"
            eager_s, _ = _steady(adata, epochs, False)
            n_train = len(model.split["train"])
            floor_s = floor(adata.n_vars, n_train)
            one = {
                "floor s": floor_s, "ours s": compiled_s, "ours / floor": compiled_s / floor_s,
                "ours eager s": eager_s, "eager / floor": eager_s / floor_s,
            }
            if scvi_python:
                split = {"train": model.split["train"], "heldout": model.split["heldout"]}
                peer = theirs(scvi_python, path, split, epochs, 1, "cpu")["steady_s_per_epoch"]
                one.update({
                    "scvi-tools s": peer, "speed-up over scvi-tools": peer / compiled_s,
                    "scvi-tools / floor": peer / floor_s,
                })
            print(name, one, flush=True)
            rounds.append(one)
        row = {"dataset": name, "genes": adata.n_vars, "training cells": n_train, "rounds": repeats}
        row.update(pd.DataFrame(rounds).median().to_dict())
        row["ours / floor, range"] = (
            f"{min(r['ours / floor'] for r in rounds):.2f}-{max(r['ours / floor'] for r in rounds):.2f}"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def held_out_nll(names: list[str], epochs: int) -> pd.DataFrame:
    rows = []
    for name in names:
        adata = ad.read_h5ad(DATA / f"{name}.h5ad")
        row = {"dataset": name, "epochs": epochs}
        for compiled in (False, True):
            model = _fit(adata, epochs, compiled)
            torch.manual_seed(0)  # the same importance samples for both paths
            label = "compiled" if compiled else "eager"
            row[f"NLL {label}"] = model.marginal_nll(adata, n_mc=100, cells="heldout")
            row[f"final train ELBO {label}"] = model.train_result.train_elbo[-1]
        row["NLL difference %"] = 100 * (row["NLL compiled"] - row["NLL eager"]) / row["NLL eager"]
        rows.append(row)
        print(row, flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per timing run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per dataset (medians reported)")
    parser.add_argument("--scvi-python", help="python of a venv with scvi-tools 1.4 (leave out: no peer column)")
    parser.add_argument("--nll-epochs", type=int, default=0, help="also compare held-out NLL after this many epochs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    command = (
        f"python benchmarks/cpu_floor.py --epochs {args.epochs} --repeats {args.repeats} "
        f"--datasets {' '.join(args.datasets)}"
    )
    if args.scvi_python:
        command += f" --scvi-python {args.scvi_python}"
    if args.epochs:
        table = timings(args.datasets, args.epochs, args.scvi_python, args.repeats)
        write(
            "cpu_floor", table, command,
            notes=(
                "Seconds per epoch, steady state (median time between consecutive epoch ends), the "
                "median of interleaved rounds (each times the floor, both our paths and scvi-tools in "
                "turn; this machine's speed drifts between rounds, so ratios are taken within a round), "
                "2 torch threads, default configuration with observed library size, batch 128. "
                "floor: the dense matrix products alone (`../shared/tools/matmul_floor.py`, the "
                "same shapes and training cells). ours: the likelihood compiled "
                "(`compiled_likelihood=True`; a default training of 400 epochs compiles it from 500 "
                "genes: PBMC4k and CBMC, not Cortex); ours eager: `compiled_likelihood=False`."
            ),
        )
    if args.nll_epochs:
        write(
            "cpu_floor_nll", held_out_nll(args.datasets, args.nll_epochs),
            f"python benchmarks/cpu_floor.py --epochs 0 --nll-epochs {args.nll_epochs} "
            f"--datasets {' '.join(args.datasets)}",
            notes=(
                "Held-out marginal NLL (100 importance samples, the same draws for both paths) of "
                "the default configuration with observed library size trained with the likelihood "
                "eager and compiled, seed 0, no early stopping."
            ),
        )


if __name__ == "__main__":
    main()
