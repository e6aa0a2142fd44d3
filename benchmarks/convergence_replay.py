"""Replay finished searches' journals under the convergence stop (issue 25).

    python benchmarks/convergence_replay.py [--patience 8 10 12 15 20] [--tol 0 0.001 0.002 0.005] [--min-trials 15 20]

The rule is the package's own (``ConvergenceStop``): it stops a search after
the k-th finished trial (in completion order) when at least ``min_trials``
have finished and the last ``patience`` trials' worth of training has not
improved the best loss by more than ``tol`` (relative); a pruned trial counts
as the share of the 400 epochs it trained. Gaps are taken against the best of
the unpruned 100-trial search of the same data. Replaying a journal shows where
that search would have stopped and how far its best was then from the best of
all its trials. This is an offline replay of searches that ran to the end: a
search that stops does not change the trials before the stop, so the replay is
exact for the stop and the best at the stop; the wall time saved is estimated
from the trials' own durations. The issue's targets need real runs with the
rule on (the default search ending on its own on Cortex, PBMC4k and CBMC).

Writes ``results/convergence_replay.md``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, journal_trials, write  # noqa: E402

from scanpy_autotune._record import TrialRecord  # noqa: E402
from scanpy_autotune._search._convergence import ConvergenceStop  # noqa: E402

SEARCHES = RESULTS / "searches"
#: The unpruned 100-trial searches the issue's table comes from, then pruned ones,
#: then searches the rule was not chosen on (shorter budgets).
JOURNALS = {
    "Cortex, 2 workers, no pruning": "cortex_zeisel_3005x200_w2_none_n100_s0.jsonl",
    "Cortex, 1 worker, no pruning": "cortex_zeisel_3005x200_w1_none_n100_s0.jsonl",
    "PBMC4k, 2 workers, no pruning": "pbmc4k_10x_4271x2000_w2_none_n100_s0_t0.1.jsonl",
    "CBMC, 2 workers, no pruning": "cbmc_citeseq_8617x2000_w2_none_n100_s0_t0.1.jsonl",
    "Cortex, 2 workers, ASHA": "cortex_zeisel_3005x200_w2_asha_n100_s0.jsonl",
    "PBMC4k, 2 workers, ASHA": "pbmc4k_10x_4271x2000_w2_asha_n100_s0_t0.1.jsonl",
    "CBMC, 2 workers, ASHA": "cbmc_citeseq_8617x2000_w2_asha_n100_s0_t0.1.jsonl",
    "Cortex, 2 workers, every default, pruned trials not counted (ran all 100)": (
        "cortex_zeisel_3005x200_w2_auto_n100_s0_pauto_pruned_uncounted.jsonl"
    ),
    "Cortex 40 trials x 100 epochs, 2 workers, no pruning": "cortex_zeisel_3005x200_w2_none_n40_s0_e100.jsonl",
    "Cortex 40 trials x 100 epochs, 1 worker, no pruning": "cortex_zeisel_3005x200_w1_none_n40_s0_e100.jsonl",
}
UNPRUNED_100 = list(JOURNALS)[:4]
#: The unpruned search each search's best is compared with.
REFERENCE = {name: name for name in JOURNALS} | {
    "Cortex, 2 workers, ASHA": "Cortex, 2 workers, no pruning",
    "PBMC4k, 2 workers, ASHA": "PBMC4k, 2 workers, no pruning",
    "CBMC, 2 workers, ASHA": "CBMC, 2 workers, no pruning",
    "Cortex, 2 workers, every default, pruned trials not counted (ran all 100)": "Cortex, 2 workers, no pruning",
}


def replay(trials: list[dict], patience: int, tol: float, min_trials: int) -> tuple[int, float]:
    """Where the rule stops (trials finished) and the best loss then."""
    stop = ConvergenceStop(patience, tolerance=tol, min_trials=min_trials, max_epochs=400)
    best = math.inf
    for k, trial in enumerate(trials, 1):
        record = TrialRecord.from_json(trial)
        if record.succeeded:
            best = min(best, record.loss)
        if stop.observe(record):
            return k, best
    return len(trials), best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patience", type=int, nargs="+", default=[8, 10, 12, 15, 20])
    parser.add_argument("--tol", type=float, nargs="+", default=[0.0, 0.001, 0.002, 0.005])
    parser.add_argument("--min-trials", type=int, nargs="+", default=[15, 20])
    args = parser.parse_args()
    searches = {name: journal_trials(SEARCHES / f) for name, f in JOURNALS.items()}
    own_best = {name: min(t["loss"] for t in ts if t["status"] == "ok") for name, ts in searches.items()}
    finals = {name: own_best[REFERENCE[name]] for name in searches}
    rows = []
    for patience, tol, min_trials in itertools.product(args.patience, args.tol, args.min_trials):
        row = {"patience": patience, "tol": tol, "min_trials": min_trials}
        meets = True
        for name, trials in searches.items():
            stop, best = replay(trials, patience, tol, min_trials)
            gap = 100 * (best - finals[name]) / abs(finals[name])
            seconds = sum(t["duration_s"] for t in trials[:stop]) / max(1e-9, sum(t["duration_s"] for t in trials))
            row[name] = f"{stop} / {gap:.2f}% / {100 * seconds:.0f}%"
            if name in UNPRUNED_100 and (stop > len(trials) / 3 or gap > 0.5):
                meets = False
        row["unpruned 100: <= 1/3 trials, within 0.5%"] = "yes" if meets else "no"
        rows.append(row)
    notes = """
Each search cell: trials finished when the rule stops / best then against the best of all the
search's trials, for pruned searches against the unpruned 100-trial search of the same data / share of the search's
trial-seconds spent by then. A pruned trial counts as the share of 400 epochs it trained. Last column: whether the rule
meets issue 25's first target on the four unpruned 100-trial searches (stop within a third of the
trials, best within 0.5%). Offline replay of finished journals, not a run with the rule on.
"""
    write("convergence_replay", pd.DataFrame(rows), "python benchmarks/convergence_replay.py", notes)


if __name__ == "__main__":
    main()
