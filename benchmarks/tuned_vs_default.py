"""The tuned configuration against the default (the 2019 study's Table 5), from a finished search.

    python benchmarks/tuned_vs_default.py TAG [TAG ...] [--seeds 3] [--no-retrain] [--device cuda] [--out NAME]

``TAG`` names a run of ``search.py`` (``results/searches/TAG_uns.h5ad``; the
dataset is the part before ``_w``). On the search's own split, the best
configuration (seed of its trial) and the default configuration (``--seeds``
seeds, to show seed-to-seed noise) are trained again as the search trained
them, and each is scored: held-out marginal NLL, train and held-out ELBO, and
the scVI imputation score (10% of non-zero counts corrupted; retrained on the
corrupted counts unless ``--no-retrain``). When the search kept a test split
(``search.py run --test-size``), the loss on those untouched cells is reported
too. Writes ``results/OUT.md`` and ``.csv`` (default OUT: tuned_vs_default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, write  # noqa: E402

from scanpy_autotune import Model  # noqa: E402
from scanpy_autotune._vae import resolve_hyperparameters  # noqa: E402
from scanpy_autotune._vae._data import DeviceCounts, extract_counts, make_split  # noqa: E402

SEARCHES = RESULTS / "searches"


def score(
    model: Model, adata: ad.AnnData, n_mc: int, retrain: bool, max_epochs: int, has_test: bool, seed: int
) -> dict:
    # The corruption and the retraining follow the model's seed, so the default's seeds show imputation noise too.
    imputation = model.imputation_score(adata, retrain=retrain, max_epochs=max_epochs, seed=seed)
    return {
        "heldout_nll": model.marginal_nll(adata, n_mc=n_mc, cells="heldout"),
        "test_nll": model.marginal_nll(adata, n_mc=n_mc, cells="test") if has_test else float("nan"),
        "train_elbo": model.elbo(adata, cells="train"),
        "heldout_elbo": model.elbo(adata, cells="heldout"),
        "imputation_median": imputation["median"],
        "imputation_mean": imputation["mean"],
        "epochs": model.train_result.n_epochs,
    }


def compare(tag: str, seeds: int, retrain: bool, device: str) -> list[dict]:
    dataset = tag.split("_w")[0]
    uns = ad.read_h5ad(SEARCHES / f"{tag}_uns.h5ad").uns["autotune"]
    params, best = uns["params"], uns["best"]
    adata = ad.read_h5ad(DATA / f"{dataset}.h5ad")
    data = extract_counts(adata)
    split = make_split(
        data.n_obs, train_size=float(params["train_size"]), test_size=float(params["test_size"]),
        validation_size=float(params["validation_size"]), seed=int(params["seed"]),
    )
    counts = DeviceCounts(data, device)
    max_epochs, n_mc, seed = int(params["max_epochs"]), int(params["n_mc"]), int(params["seed"])
    has_test = float(params["test_size"]) > 0
    runs = [("tuned", dict(best["params"]), seed + int(best["trial_id"]), float(best["loss"]))]
    runs += [("default", {}, seed + k, float(uns["default"]["loss"]) if k == 0 else float("nan"))
             for k in range(seeds)]
    rows = []
    for name, hyper, trial_seed, search_loss in runs:
        model = Model.fit_prepared(data, counts, split, resolve_hyperparameters(hyper), seed=trial_seed,
                                   max_epochs=max_epochs)
        row = {"dataset": dataset, "search": tag, "configuration": name, "seed": trial_seed,
               "search_loss": search_loss}
        row.update(score(model, adata, n_mc, retrain, max_epochs, has_test, trial_seed))
        row["params"] = ", ".join(f"{k}={v}" for k, v in sorted(hyper.items())) or "scVI defaults"
        rows.append(row)
        print(row, flush=True)
    return rows


def summary(table: pd.DataFrame) -> str:
    lines = []
    for tag, group in table.groupby("search", sort=False):
        tuned = group[group["configuration"] == "tuned"].iloc[0]
        default = group[group["configuration"] == "default"]["heldout_nll"]
        noise = float(default.std(ddof=1)) if len(default) > 1 else float("nan")
        gap = float(default.mean() - tuned["heldout_nll"])
        verdict = "beats" if gap > noise else "does not beat"
        lines.append(
            f"- {tag}: tuned {tuned['heldout_nll']:.2f} against default {default.mean():.2f} "
            f"+- {noise:.2f} (sd over {len(default)} seeds): the tuned configuration {verdict} the "
            f"default by more than its seed-to-seed noise (gap {gap:.2f})."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tags", nargs="+")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-retrain", action="store_true", help="impute with the trained models")
    parser.add_argument("--device", default="cpu", help="where the models train (cpu, cuda)")
    parser.add_argument("--out", default="tuned_vs_default", help="name of the results files")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [row for tag in args.tags for row in compare(tag, args.seeds, not args.no_retrain, args.device)]
    table = pd.DataFrame(rows)
    write(
        args.out, table,
        "python benchmarks/tuned_vs_default.py " + " ".join(args.tags) + f" --seeds {args.seeds}"
        + (" --no-retrain" if args.no_retrain else "") + f" --device {args.device} --out {args.out}",
        notes=summary(table) + "\n\nheldout_nll / test_nll: marginal NLL per cell (100 importance samples, "
        "lower is better); ELBO per cell (higher is better); imputation: per-cell median absolute error "
        "on 10% corrupted non-zero counts, median and mean over cells (lower is better). "
        f"NaN search_loss: a seed the search did not run. numpy {np.__version__}.",
    )
    print(table.to_string())


if __name__ == "__main__":
    main()
