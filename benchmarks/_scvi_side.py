"""The scvi-tools half of peer_scvi.py; runs in scvi-tools' own virtual environment.

    python _scvi_side.py DATA.h5ad SPLIT.json EPOCHS N_MC [cpu|gpu]   -> one JSON line on stdout
"""

import json
import sys
import time

import anndata as ad
import numpy as np
import scvi
import torch
from lightning.pytorch.callbacks import Callback


class EpochEnds(Callback):
    """Records when each training epoch ends."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter())


def main() -> None:
    path, split_file, epochs, n_mc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    accelerator = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    torch.set_num_threads(2)
    scvi.settings.seed = 0
    scvi.settings.dl_num_workers = 0
    split = json.loads(open(split_file).read())
    adata = ad.read_h5ad(path)
    train = adata[split["train"]].copy()
    heldout = adata[split["heldout"]].copy()
    scvi.model.SCVI.setup_anndata(train)
    model = scvi.model.SCVI(train)  # defaults: 128 hidden, 10 latent, 1 layer, zinb, observed library
    ends = EpochEnds()
    start = time.perf_counter()
    model.train(
        max_epochs=epochs, train_size=1.0, batch_size=128, early_stopping=False,
        accelerator=accelerator, devices=1, enable_progress_bar=False, callbacks=[ends],
    )
    seconds = time.perf_counter() - start
    scvi.model.SCVI.setup_anndata(heldout)
    log_lik = model.get_marginal_ll(heldout, n_mc_samples=n_mc, return_mean=False)
    print(json.dumps({
        "nll": float(-np.mean(np.asarray(log_lik))),
        "s_per_epoch": seconds / epochs,
        "steady_s_per_epoch": float(np.median(np.diff(ends.times))) if len(ends.times) > 1 else float("nan"),
        "version": scvi.__version__,
    }))


if __name__ == "__main__":
    main()
