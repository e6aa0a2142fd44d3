"""Eager against CUDA-graph training on one GPU: seconds per epoch and held-out NLL (issue 18).

    python benchmarks/gpu_graphs.py [--epochs 40]

For Cortex and PBMC4k, trains the default configuration twice with the same seed,
``cuda_graphs=False`` then ``True``, and records the steady seconds per epoch (median
time between epoch ends, the first three epochs left out: they include the warm-up
and the captures) and the held-out ``-log p(x)``. Writes ``results/gpu_graphs.md``.
Needs a CUDA device; run by ``gpu_session.sh``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, EpochClock, write  # noqa: E402

import scanpy_autotune as sat  # noqa: E402

DATASETS = ("cortex_zeisel_3005x200", "pbmc4k_10x_4271x2000")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_graphs.py needs a CUDA device")
    rows = []
    for name in DATASETS:
        adata = ad.read_h5ad(DATA / f"{name}.h5ad")
        for graphs in (False, True):
            clock = EpochClock()
            start = time.perf_counter()
            model = sat.Model.fit(adata, max_epochs=args.epochs, seed=0, device="cuda", cuda_graphs=graphs,
                                  early_stopping=False, callback=clock)
            fit_s = time.perf_counter() - start
            steady = float(np.median(np.diff(clock.ends[3:]))) if len(clock.ends) > 4 else float("nan")
            rows.append({
                "dataset": name, "cuda_graphs": graphs, "epochs": len(clock.ends), "fit_s": fit_s,
                "s_per_epoch": steady,
                "heldout_nll": model.marginal_nll(adata, n_mc=100, cells="heldout"),
                "last_validation_elbo": float(model.history["validation_elbo"].iloc[-1]),
            })
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    notes = []
    for name in DATASETS:
        eager, graphed = (table[(table["dataset"] == name) & (table["cuda_graphs"] == g)].iloc[0] for g in (False, True))
        notes.append(
            f"- {name}: {eager['s_per_epoch'] / graphed['s_per_epoch']:.2f}x faster per epoch with graphs; held-out "
            f"NLL {graphed['heldout_nll']:.3f} against {eager['heldout_nll']:.3f} eager "
            f"({100 * (graphed['heldout_nll'] - eager['heldout_nll']) / eager['heldout_nll']:+.3f}%, target within 0.1%)"
        )
    write("gpu_graphs", table, f"python benchmarks/gpu_graphs.py --epochs {args.epochs}", "\n".join(notes))
    print("\n".join(notes))


if __name__ == "__main__":
    main()
