"""Start-up winners against random start-up draws in the default search, on data the winners did not come from.

    python benchmarks/startup_held_out.py run --dataset pbmc68k --startup none winners --seeds 0 1 2
    python benchmarks/startup_held_out.py run --dataset cellbench --startup none winners --seeds 0 1 2
    python benchmarks/startup_held_out.py run --dataset cortex_zeisel_3005x200 --seeds 0
    python benchmarks/startup_held_out.py run --dataset pbmc68k --max-evals 10   # a short search
    python benchmarks/startup_held_out.py report

``startup.py`` compared the two start-ups in 30-trial, one-worker searches
without the convergence stop. This script asks the question that decides the
default (issue 25): in a search that keeps every other default of
``sat.tl.autotune`` (100 trials at most, the ``"auto"`` pruner, the
convergence stop ``patience="auto"``, 2 CPU workers), does ``startup="winners"``
end the search sooner, or with a better model? Neither dataset gave a winner
in ``scanpy_autotune._search._startup.WINNERS``:

- ``pbmc68k``: the 700 PBMC cells behind Scanpy's pbmc68k_reduced, 765 genes;
- ``cellbench``: CellBench, 5 lung-cancer cell lines on 3 plates (909 cells),
  at its 2,000 most variable genes (Scanpy's ``highly_variable_genes`` on a
  log-normalised copy, flavor "seurat"; counts unchanged);
- a dataset a winner came from (e.g. ``cortex_zeisel_3005x200``), left out:
  "winners" there are the other datasets' winners only.

A seed fixes the cells of the split, so the two start-ups of one seed are
scored on the same cells. Journals go to ``results/searches/``, one row per
search to ``results/startup_held_out_runs.csv``; ``report`` writes
``results/startup_held_out.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, journal_trials, machine, markdown_table, trial_loss, write  # noqa: E402

import scanpy_autotune as sat  # noqa: E402
from scanpy_autotune._record import gain_over_default  # noqa: E402
from scanpy_autotune._search._startup import WINNERS  # noqa: E402

SEARCHES = RESULTS / "searches"
RUNS = RESULTS / "startup_held_out_runs.csv"
WORKERS = 2
N_VARIABLE_GENES = 2000
DEFAULT_MAX_EVALS = 100


def load(dataset: str) -> ad.AnnData:
    """The counts of one dataset, as the search receives them."""
    if dataset == "pbmc68k":
        return sat.datasets.pbmc68k_counts()
    if dataset != "cellbench":
        return ad.read_h5ad(DATA / f"{dataset}.h5ad")
    adata = ad.read_h5ad(DATA / "cellbench_5cl_3plates_909x16074.h5ad")
    normalised = adata.copy()
    sc.pp.normalize_total(normalised, target_sum=1e4)
    sc.pp.log1p(normalised)
    sc.pp.highly_variable_genes(normalised, n_top_genes=N_VARIABLE_GENES, flavor="seurat")
    return adata[:, normalised.var["highly_variable"].to_numpy()].copy()


def startup_for(dataset: str, startup: str) -> str | list[dict] | None:
    """The ``startup=`` argument: on a dataset a winner came from, the other datasets' winners only."""
    if startup == "none":
        return None
    others = [dict(w.params) for w in WINNERS if dataset not in w.source]
    return "winners" if len(others) == len(WINNERS) else others


def _journal(dataset: str, startup: str, seed: int, max_evals: int = DEFAULT_MAX_EVALS) -> Path:
    budget = "" if max_evals == DEFAULT_MAX_EVALS else f"_n{max_evals}"
    return SEARCHES / f"{dataset}_startup_{startup}_default{budget}_w{WORKERS}_s{seed}.jsonl"


def run(args: argparse.Namespace) -> None:
    SEARCHES.mkdir(parents=True, exist_ok=True)
    counts = load(args.dataset)
    for seed in args.seeds:
        for startup in args.startup:
            adata = counts.copy()  # the search writes its results into adata
            journal = _journal(args.dataset, startup, seed, args.max_evals)
            journal.unlink(missing_ok=True)
            start = time.perf_counter()
            sat.tl.autotune(
                adata, seed=seed, max_evals=args.max_evals, n_workers=WORKERS, gpus=None, progress=False, journal=journal,
                startup=startup_for(args.dataset, startup),
            )
            wall = time.perf_counter() - start
            params = adata.uns["autotune"]["params"]
            row = {
                "dataset": args.dataset, "shape": f"{adata.n_obs}x{adata.n_vars}", "startup": startup,
                "seed": seed, "max_evals": args.max_evals, "trials": len(journal_trials(journal)), "wall_s": round(wall, 1),
                "best_loss": float(adata.uns["autotune"]["best"]["loss"]),
                "stop_reason": str(params.get("stop_reason", "")), "machine": machine(),
            }
            print(row, flush=True)
            old = pd.read_csv(RUNS) if RUNS.exists() else pd.DataFrame()
            pd.concat([old, pd.DataFrame([row])], ignore_index=True).to_csv(RUNS, index=False)


def _vs_unpruned(dataset: str, seed: int, best: float) -> float:
    """Against the best of ``search.py``'s unpruned 100-trial search of the same data and seed, where one exists."""
    journal = SEARCHES / f"{dataset}_w{WORKERS}_none_n100_s{seed}.jsonl"
    if not journal.exists():
        return float("nan")
    reference = min(trial_loss(t) for t in journal_trials(journal))
    return 100 * (best - reference) / reference


def report(_: argparse.Namespace) -> None:
    runs = pd.read_csv(RUNS).drop_duplicates(["dataset", "max_evals", "startup", "seed"], keep="last")
    rows = []
    for (dataset, max_evals, seed), pair in runs.groupby(["dataset", "max_evals", "seed"]):
        if set(pair["startup"]) != {"none", "winners"}:
            continue  # both start-ups of this seed must have run
        searches = {s: journal_trials(_journal(dataset, s, seed, max_evals)) for s in ("none", "winners")}
        reference = min(trial_loss(t) for trials in searches.values() for t in trials)
        for startup, trials in searches.items():
            run_row = pair[pair["startup"] == startup].iloc[0]
            best_so_far = np.minimum.accumulate([trial_loss(t) for t in trials])
            reached = np.flatnonzero(best_so_far <= reference * 1.005)
            best = float(best_so_far[-1])
            best_trial = next(t for t in trials if trial_loss(t) == best)
            default = next(t for t in trials if t.get("is_default"))
            rows.append({
                "dataset": f"{dataset} ({run_row['shape']})", "max_evals": max_evals, "seed": seed,
                "startup": startup,
                "trials": len(trials), "wall_min": round(run_row["wall_s"] / 60, 1),
                "epochs_trained": int(sum(t.get("n_epochs") or 0 for t in trials)),
                "best_loss": best, "best_vs_reference_%": 100 * (best - reference) / reference,
                "gain_over_default_%": gain_over_default(best, trial_loss(default)),
                # completion order; one more than the search's trials when never reached
                "trials_to_within_0.5%": int(reached[0]) + 1 if reached.size else len(trials) + 1,
                "best_of_first_10_vs_reference_%": 100 * (best_so_far[min(9, len(trials) - 1)] - reference) / reference,
                "vs_unpruned_100_%": _vs_unpruned(dataset, seed, best),
                "best_trial_source": "default" if best_trial.get("is_default") else best_trial.get("startup") or "TPE",
            })
    table = pd.DataFrame(rows)
    means = table.groupby(["dataset", "max_evals", "startup"])[[
        "trials", "wall_min", "epochs_trained", "best_vs_reference_%", "gain_over_default_%",
        "trials_to_within_0.5%", "best_of_first_10_vs_reference_%"]].mean().round(2)
    notes = f"""
Every default of `sat.tl.autotune` (max_evals 100 unless the column says otherwise, pruner "auto", patience
"auto", 400 epochs; "auto" prunes no search under 30 trials), {WORKERS} CPU workers, `startup=None` against
`startup="winners"`. "reference" is the best held-out loss either search found on that seed (same seed: same
cells). trials_to_within_0.5% counts trials in completion order until the best so far is within 0.5% of the
reference; best_of_first_10 is the best of the first 10 finished trials (the default and, with winners, the
start-up configurations among them); vs_unpruned_100 compares with the unpruned 100-trial search of the same
data and seed (`search.py`), where one exists. Two workers and multi-threaded training make reruns of one
configuration differ by about 0.2%.

Means over the seeds of each dataset:

{markdown_table(means.reset_index())}
"""
    write("startup_held_out", table, "python benchmarks/startup_held_out.py run --dataset pbmc68k|cellbench "
          "[--max-evals 10] --seeds 0 1 2; python benchmarks/startup_held_out.py report", notes)
    print((RESULTS / "startup_held_out.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run")
    runner.add_argument("--dataset", required=True,
                        help="pbmc68k, cellbench, or a winner's dataset under ../shared/data (leave one out)")
    runner.add_argument("--startup", choices=("none", "winners"), nargs="+", default=["none", "winners"])
    runner.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    runner.add_argument("--max-evals", type=int, default=DEFAULT_MAX_EVALS)
    runner.set_defaults(handler=run)
    sub.add_parser("report").set_defaults(handler=report)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
