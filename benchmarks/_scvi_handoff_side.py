"""The scvi-tools half of scvi_handoff.py; runs in scvi-tools' own virtual environment.

    python _scvi_handoff_side.py JOB.json   -> one JSON line on stdout

``JOB.json``: ``data`` (an ``.h5ad`` path), ``train`` / ``heldout`` / ``test`` (cell
positions), ``kwargs`` (what ``sat.tl.scvi_kwargs`` returned), ``seed``, ``n_mc`` and
``accelerator``. The configuration is trained on the ``train`` cells exactly as the
hand-off says (``setup_anndata``, ``SCVI(...)``, ``train(...)``); only where to train
and the progress bar are added. Then the marginal NLL per cell (importance sampling)
of the ``heldout`` and ``test`` cells.
"""

import inspect
import json
import sys
import time

import anndata as ad
import numpy as np
import scvi
import torch


def check_names(kwargs: dict) -> None:
    """Each name is a named parameter where it lands (a ``**kwargs`` catch-all hides typos)."""
    where = {
        "setup_anndata": [scvi.model.SCVI.setup_anndata],
        "model": [scvi.model.SCVI.__init__, scvi.module.VAE.__init__],  # SCVI passes the rest to its VAE
        "train": [scvi.model.SCVI.train, scvi.train.Trainer.__init__],
        "plan_kwargs": [scvi.train.TrainingPlan.__init__],
    }
    sections = dict(kwargs, plan_kwargs=kwargs["train"].get("plan_kwargs", {}))
    for section, functions in where.items():
        known = {name for f in functions for name in inspect.signature(f).parameters}
        unknown = sorted(set(sections[section]) - known)
        if unknown:
            raise ValueError(f"{section}: {unknown} are not parameters of {functions}")


def marginal_nll(model, adata, cells: list[int], n_mc: int) -> float:
    if not cells:
        return float("nan")
    log_lik = model.get_marginal_ll(adata, indices=cells, n_mc_samples=n_mc, return_mean=False)
    return float(-np.mean(np.asarray(log_lik)))


def main() -> None:
    job = json.loads(open(sys.argv[1]).read())
    torch.set_num_threads(2)
    scvi.settings.seed = int(job["seed"])
    scvi.settings.dl_num_workers = 0
    kwargs = job["kwargs"]
    check_names(kwargs)
    adata = ad.read_h5ad(job["data"])
    train = adata[job["train"]].copy()
    scvi.model.SCVI.setup_anndata(train, **kwargs["setup_anndata"])
    model = scvi.model.SCVI(train, **kwargs["model"])
    start = time.perf_counter()
    model.train(
        **kwargs["train"], accelerator=job["accelerator"], devices=1, enable_progress_bar=False
    )
    seconds = time.perf_counter() - start
    # the whole AnnData is set up like the training cells (scvi-tools transfers the registry)
    print(json.dumps({
        "heldout_nll": marginal_nll(model, adata, job["heldout"], int(job["n_mc"])),
        "test_nll": marginal_nll(model, adata, job["test"], int(job["n_mc"])),
        "epochs": len(model.history["elbo_train"]),
        "seconds": seconds,
        "version": scvi.__version__,
    }))


if __name__ == "__main__":
    main()
