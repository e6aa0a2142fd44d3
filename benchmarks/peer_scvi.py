"""Our model against scvi-tools' SCVI: held-out marginal NLL and seconds per epoch.

Default configuration, 400 epochs without early stopping, the same 75% of
cells for training (split with seed 0), observed library size (SCVI's
default), 100 importance samples on the same 25% held-out cells. scvi-tools
runs in its own virtual environment (``--scvi-python``), never imported here.

    python benchmarks/peer_scvi.py --scvi-python /path/to/scvi-venv/bin/python [--device cuda]

With ``--device cuda`` both train on the first GPU (scvi-tools through
Lightning's ``accelerator="gpu"``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, EpochClock, write  # noqa: E402

import scanpy_autotune as sat  # noqa: E402

DATASETS = ["cortex_zeisel_3005x200.h5ad", "pbmc4k_10x_4271x2000.h5ad"]


def ours(path: Path, epochs: int, n_mc: int, device: str) -> tuple[dict, dict]:
    adata = ad.read_h5ad(path)
    clock = EpochClock()
    start = time.perf_counter()
    model = sat.Model.fit(
        adata, seed=0, max_epochs=epochs, validation_size=0.0, early_stopping=False,
        use_observed_lib_size=True, device=device, callback=clock,
    )
    seconds = time.perf_counter() - start
    nll = model.marginal_nll(adata, n_mc=n_mc, cells="heldout")
    split = {"train": model.split["train"], "heldout": model.split["heldout"]}
    return {
        "nll": nll,
        "s_per_epoch": seconds / model.train_result.n_epochs,
        "steady_s_per_epoch": clock.seconds_per_epoch(np.median),
    }, split



def theirs(python: str, path: Path, split: dict, epochs: int, n_mc: int, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        split_file = Path(tmp) / "split.json"
        split_file.write_text(json.dumps(split))
        out = subprocess.run(
            [python, str(Path(__file__).with_name("_scvi_side.py")), str(path), str(split_file),
             str(epochs), str(n_mc), "gpu" if device.startswith("cuda") else "cpu"],
            capture_output=True, text=True,
        )
    if out.returncode != 0:
        raise RuntimeError(f"scvi-tools side failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scvi-python", required=True, help="python of a venv with scvi-tools 1.4")
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--n-mc", type=int, default=100)
    parser.add_argument("--out", default="peer_scvi", help="name of the results files (results/OUT.md, .csv)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both packages train")
    parser.add_argument("--datasets", nargs="+", default=DATASETS, help="file names under the data folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for name in args.datasets:
        ours_result, split = ours(DATA / name, args.epochs, args.n_mc, args.device)
        peer = theirs(args.scvi_python, DATA / name, split, args.epochs, args.n_mc, args.device)
        rows.append({
            "dataset": name.removesuffix(".h5ad"),
            "device": args.device,
            "epochs": args.epochs,
            "NLL ours": ours_result["nll"],
            "NLL scvi-tools": peer["nll"],
            "NLL difference %": 100 * (ours_result["nll"] - peer["nll"]) / peer["nll"],
            "s/epoch ours": ours_result["s_per_epoch"],
            "s/epoch scvi-tools": peer["s_per_epoch"],
            "speed-up": peer["s_per_epoch"] / ours_result["s_per_epoch"],
            "steady s/epoch ours": ours_result["steady_s_per_epoch"],
            "steady s/epoch scvi-tools": peer["steady_s_per_epoch"],
            "steady speed-up": peer["steady_s_per_epoch"] / ours_result["steady_s_per_epoch"],
            "scvi-tools": peer["version"],
        })
        print(rows[-1], flush=True)
    write(
        args.out, pd.DataFrame(rows),
        f"python benchmarks/peer_scvi.py --scvi-python {args.scvi_python} --epochs {args.epochs} "
        f"--n-mc {args.n_mc} --out {args.out} --device {args.device} --datasets {' '.join(args.datasets)}",
        notes="Both: default configuration (n_hidden 128, n_latent 10, 1 layer, dropout 0.1, ZINB, "
        "lr 1e-3), observed library size, no early stopping, batch 128, KL warm-up 400 epochs, "
        "2 torch threads (CPU); the same training and held-out cells (seed 0 split, 75/25). "
        "s/epoch: the whole training call (ours: Model.fit with its set-up; scvi-tools: model.train) "
        "divided by the epochs; steady s/epoch: median time between consecutive epoch ends.",
    )


if __name__ == "__main__":
    main()
