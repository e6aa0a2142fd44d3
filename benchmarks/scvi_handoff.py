"""The hand-off to scvi-tools, checked in scvi-tools: a search's configuration trained there.

    python benchmarks/scvi_handoff.py --scvi-python /path/to/scvi-venv/bin/python [TAG ...]
        [--trials best default] [--n-mc 100] [--device cuda] [--out scvi_handoff]

``TAG`` names a finished search of ``search.py`` (``results/searches/TAG_uns.h5ad``; the
dataset is the part before ``_w``; default: the Cortex and PBMC4k ASHA searches with a
10% test split). For the best trial (and the default configuration, trial 0),
``sat.tl.scvi_kwargs`` gives the arguments of scvi-tools' ``SCVI``; scvi-tools trains
them, unchanged, on the search's training cells (its split rebuilt from the seed and
fractions recorded in ``uns["params"]``; scvi-tools keeps its own validation slice of
them for early stopping, as the hand-off says), and its marginal NLL per cell (100
importance samples) on the search's held-out cells, whose NLL was the search's loss,
stands beside that loss; on the test cells, beside the best model's test loss.
scvi-tools runs in its own virtual environment (``--scvi-python``), never imported here.
Writes ``results/OUT.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, write  # noqa: E402

import scanpy_autotune as sat  # noqa: E402
from scanpy_autotune._results import read_results  # noqa: E402
from scanpy_autotune._vae._data import make_split  # noqa: E402

SEARCHES = RESULTS / "searches"
TAGS = ["cortex_zeisel_3005x200_w2_asha_n100_s0_t0.1", "pbmc4k_10x_4271x2000_w2_asha_n100_s0_t0.1"]


def theirs(python: str, job: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job))
        out = subprocess.run(
            [python, str(Path(__file__).with_name("_scvi_handoff_side.py")), str(job_file)],
            capture_output=True, text=True,
        )
    if out.returncode != 0:
        raise RuntimeError(f"scvi-tools side failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def hand_off(tag: str, which: str, python: str, n_mc: int, device: str) -> dict:
    dataset = tag.split("_w")[0]
    searched = ad.read_h5ad(SEARCHES / f"{tag}_uns.h5ad")
    res = read_results(searched)
    params = res.params
    trial = None if which == "best" else int(res.default["trial_id"])
    kwargs = sat.tl.scvi_kwargs(searched, trial=trial)
    trial_id = int(res.best["trial_id"]) if trial is None else trial
    row = res.trials[res.trials["trial_id"] == trial_id].iloc[0]
    path = DATA / f"{dataset}.h5ad"
    n_obs = ad.read_h5ad(path, backed="r").n_obs
    if n_obs != int(params["n_cells"]):
        raise ValueError(f"{path} has {n_obs} cells; the search {tag} had {params['n_cells']}.")
    split = make_split(
        n_obs, train_size=float(params["train_size"]), test_size=float(params["test_size"]),
        validation_size=float(params["validation_size"]), seed=int(params["seed"]),
    )
    seed = int(params["seed"]) + trial_id  # each trial's seed in the search
    peer = theirs(python, {
        "data": str(path),
        "train": np.sort(np.concatenate([split.train, split.validation])).tolist(),
        "heldout": split.heldout.tolist(),
        "test": split.test.tolist(),
        "kwargs": kwargs,
        "seed": seed,
        "n_mc": n_mc,
        "accelerator": "gpu" if device.startswith("cuda") else "cpu",
    })
    ours_test = float("nan")  # the search scored only its best model on the test cells
    if which == "best":  # read_results keeps trial_id, loss and params of the best only
        ours_test = float(searched.uns["autotune"]["best"].get("test_loss", np.nan))
    return {
        "dataset": dataset,
        "configuration": which,
        "trial": trial_id,
        "held-out NLL ours": float(row["loss"]),
        "held-out NLL scvi-tools": peer["heldout_nll"],
        "difference %": 100 * (float(row["loss"]) - peer["heldout_nll"]) / peer["heldout_nll"],
        "test NLL ours": ours_test,
        "test NLL scvi-tools": peer["test_nll"],
        "epochs ours": int(row["n_epochs"]),
        "epochs scvi-tools": peer["epochs"],
        "train s scvi-tools": peer["seconds"],
        "cells train/held-out/test": (
            f"{len(split.train) + len(split.validation)}/{len(split.heldout)}/{len(split.test)}"
        ),
        "search": tag,
        "scvi-tools": peer["version"],
        "model kwargs": json.dumps(kwargs["model"]),
        "train kwargs": json.dumps(kwargs["train"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tags", nargs="*", default=TAGS, help="searches under results/searches/")
    parser.add_argument("--scvi-python", required=True, help="python of a venv with scvi-tools 1.4")
    parser.add_argument(
        "--trials", nargs="+", default=["best", "default"], choices=["best", "default"]
    )
    parser.add_argument("--n-mc", type=int, default=100)
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where scvi-tools trains"
    )
    parser.add_argument("--out", default="scvi_handoff", help="name of the results files")
    args = parser.parse_args()
    rows = []
    for tag in args.tags:
        for which in args.trials:
            rows.append(hand_off(tag, which, args.scvi_python, args.n_mc, args.device))
            print(rows[-1], flush=True)
    write(
        args.out, pd.DataFrame(rows),
        f"python benchmarks/scvi_handoff.py --scvi-python {args.scvi_python} "
        f"{' '.join(args.tags)} --trials {' '.join(args.trials)} --n-mc {args.n_mc} "
        f"--device {args.device} --out {args.out}",
        notes="held-out NLL ours: the trial's loss in the search (marginal NLL per cell of the "
        "held-out cells, 100 importance samples, lower is better); scvi-tools: the same "
        "configuration, from `sat.tl.scvi_kwargs`, trained by scvi-tools 1.4 on the search's "
        "training cells (validation slice included; scvi-tools draws its own 10% of them for "
        "early stopping) with the trial's seed, and `model.get_marginal_ll(n_mc_samples=100)` "
        "on the same held-out cells. test NLL: the search's untouched test cells (ours: the best "
        "model's test loss, recorded for the best trial only). Not carried over by the hand-off: "
        "a trial restores its best validation epoch, scvi-tools keeps the last one. "
        "2 torch threads (CPU).",
    )


if __name__ == "__main__":
    main()
