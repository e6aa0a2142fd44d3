"""Whole searches: wall time, trials per hour, best loss against the default configuration.

    python benchmarks/search.py run --dataset cortex_zeisel_3005x200 --workers 2 [--pruner asha]
    python benchmarks/search.py run --dataset cortex_zeisel_3005x200 --gpus 1 --trials-per-gpu 4 --max-evals 20
    python benchmarks/search.py run --dataset cortex_zeisel_3005x200 --gpus all --timeout 90   # GPU defaults
    python benchmarks/search.py report

``run`` appends one row to ``results/search_runs.csv`` and keeps the search's
journal and trials table under ``results/searches/``. A search longer than one
sitting runs in segments: ``--stop-at N`` ends a segment once N trials are in
the journal, as Ctrl-C does (the trials running then are thrown away and count
as wasted time; the search keeps its whole budget, so TPE's start-up and the
"auto" pruner, which depend on ``max_evals``, are those of the unbroken search),
and the next call with ``--resume`` goes on; the row is written when all ``--max-evals`` trials
exist, with the segments' wall times summed and the worker-seconds each
segment's end wasted reported beside it. ``report`` turns the rows into
``results/runtime.md`` (the 2019 study's Table 1, CPU and GPU runs),
``results/search_scaling.md`` (issue: 2 workers against 1) and
``results/pruning.md`` (ASHA against no pruning) and ``results/top_bottom.md``
(the best and worst 10 finished trials of each 100-trial search).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import anndata as ad
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DATA,
    RESULTS,
    journal_trials,
    machine,
    markdown_table,
    tpe_startup_suffix,
    write_keeping_notes,
)

import scanpy_autotune as sat  # noqa: E402
from scanpy_autotune._search._tpe import MAX_STARTUP_TRIALS, startup_trials  # noqa: E402
from scanpy_autotune.cli._main import _terminate as terminate_as_ctrl_c  # noqa: E402

RUNS = RESULTS / "search_runs.csv"
SEARCHES = RESULTS / "searches"


def run_tag(dataset: str, workers: int, pruner: str, max_evals: int, seed: int,
            max_epochs: int | None = None, test_size: float = 0.0, gpu: bool = False,
            patience: str = "none", tpe_startup: int = MAX_STARTUP_TRIALS) -> str:
    """The name of a run's files under ``results/searches/`` (``workers``: parallel trials).

    ``tpe_startup``: TPE's random start-up trials; runs from before it scaled
    with the budget had 20, and their names no suffix.
    """
    tag = f"{dataset}_w{workers}_{pruner}_n{max_evals}_s{seed}"
    if patience != "none":
        tag += f"_p{patience}"
    tag += tpe_startup_suffix(tpe_startup)
    if max_epochs is not None:
        tag += f"_e{max_epochs}"
    if test_size > 0:
        tag += f"_t{test_size:g}"
    if gpu:
        tag += "_gpu"
    return tag


def seconds_per_epoch(trials: pd.DataFrame) -> float:
    """Trial time (set-up and scoring included) per epoch trained, over all trials."""
    return float(trials["duration_s"].sum() / max(trials["n_epochs"].sum(), 1))


class FinishTimes(logging.Handler):
    """Collects when each trial of this process's search finished (from the search's own log lines).

    With ``stop_after`` it interrupts the search (a real SIGINT, as Ctrl-C)
    once that many trials finished in this process: the search logs a trial
    after its journal line is written, so the trial is kept.
    """

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__(logging.INFO)
        self.times: list[float] = []
        self.stop_after = stop_after

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("trial %d") and ":" in record.msg:
            if "started" not in record.msg:
                self.times.append(time.perf_counter())
                if self.stop_after is not None and len(self.times) == self.stop_after:
                    os.kill(os.getpid(), signal.SIGINT)


def tail_idle_s(finish_times: list[float], start: float, end: float, workers: int) -> float:
    """Worker-seconds a segment's end wasted, against one unbroken run.

    Each worker's last piece of work in the segment ended at one of the last
    ``workers`` finishes (or the segment's start): a worker that ran out of
    trials sat idle from then on, and a trial cut by Ctrl-C is thrown away.
    """
    last = ([start] * workers + sorted(finish_times))[-workers:]
    return float(sum(end - t for t in last))


def count_or(word: str):
    """An argparse type: a count, or ``word`` (``all`` GPUs, ``auto`` trials per GPU)."""
    return lambda text: text if text == word else int(text)


def pruner_settings(args: argparse.Namespace) -> tuple[str | None, dict | None]:
    """``pruner`` and ``pruner_kwargs`` for ``sat.tl.autotune`` (``--startup-rungs`` goes with ``--pruner auto``)."""
    if args.startup_rungs is None:
        return (None if args.pruner == "none" else args.pruner), None
    if args.pruner != "auto":
        raise SystemExit("--startup-rungs goes with --pruner auto.")
    return "auto", {"startup_rungs": args.startup_rungs}


def run(args: argparse.Namespace) -> None:
    # Ctrl-C and `kill` end a segment cleanly (the finished trials kept, the segment recorded), also for a
    # process started in the background, which would otherwise ignore SIGINT (and --stop-at with it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate_as_ctrl_c)
    adata = ad.read_h5ad(DATA / f"{args.dataset}.h5ad")
    pruner, pruner_kwargs = pruner_settings(args)
    on_gpu = args.gpus != 0
    # With "all" GPUs or "auto" trials per GPU the slots are known after the search; the tag says "auto".
    workers = (args.gpus * args.trials_per_gpu if isinstance(args.gpus, int) and isinstance(args.trials_per_gpu, int)
               else "auto") if on_gpu else args.workers
    tag = run_tag(args.dataset, workers, args.pruner, args.max_evals, args.seed, args.max_epochs, args.test_size,
                  gpu=on_gpu, patience=args.patience, tpe_startup=startup_trials(args.max_evals)) + args.label
    SEARCHES.mkdir(parents=True, exist_ok=True)
    journal = SEARCHES / f"{tag}.jsonl"
    segments_file = SEARCHES / f"{tag}.segments.jsonl"
    if not args.resume:
        journal.unlink(missing_ok=True)
        segments_file.unlink(missing_ok=True)
    if args.stop_at is not None and not 0 < args.stop_at < args.max_evals:
        raise SystemExit(f"--stop-at {args.stop_at} must lie between 0 and --max-evals {args.max_evals}.")
    done = len(journal_trials(journal)) if journal.exists() else 0
    stop_after = None if args.stop_at is None else args.stop_at - done
    if stop_after is not None and stop_after <= 0:
        raise SystemExit(f"The journal {journal} already holds {args.stop_at} trials or more; raise --stop-at.")
    finishes = FinishTimes(stop_after)
    package_log = logging.getLogger("scanpy_autotune")
    package_log.addHandler(finishes)
    package_log.setLevel(logging.INFO)  # the finish lines are INFO; Scanpy's default verbosity hides them
    start = time.perf_counter()
    interrupted = False
    try:
        sat.tl.autotune(
            adata, max_evals=args.max_evals, max_epochs=args.max_epochs,
            n_workers=None if on_gpu else args.workers,
            gpus=args.gpus if on_gpu else None, trials_per_gpu=args.trials_per_gpu, seed=args.seed,
            pruner=pruner, pruner_kwargs=pruner_kwargs, journal=journal, progress=False,
            test_size=args.test_size, timeout=args.timeout,
            patience=None if args.patience == "none" else "auto" if args.patience == "auto" else int(args.patience),
        )
    except KeyboardInterrupt:  # the finished trials are in the journal (and in adata.uns, when any finished)
        interrupted = True
    end = time.perf_counter()
    wall = end - start
    uns = adata.uns.get("autotune")
    trials = uns["trials"] if uns is not None else pd.DataFrame()
    if workers == "auto":  # the slots the search chose (GPUs x trials per GPU)
        workers = int(uns["params"]["n_workers"]) if uns is not None else 1
    segment = {"date": time.strftime("%Y-%m-%d %H:%M"), "wall_s": wall, "interrupted": interrupted,
               "trials_before": len(trials) - len(finishes.times), "trials_after": len(trials),
               "tail_idle_s": tail_idle_s(finishes.times, start, end, workers)}
    with segments_file.open("a") as out:
        out.write(json.dumps(segment) + "\n")
    if interrupted:
        print(f"segment done: {segment}; go on with --resume", flush=True)
        return
    segments = [json.loads(line) for line in segments_file.read_text().splitlines() if line.strip()]
    wall = sum(s["wall_s"] for s in segments)
    trials.to_csv(SEARCHES / f"{tag}_trials.csv", index=False)
    # The search's adata.uns alone, for benchmarks/render_plots.py (plots read only uns).
    ad.AnnData(uns={"autotune": uns}).write_h5ad(SEARCHES / f"{tag}_uns.h5ad", compression="gzip")
    row = {
        "dataset": args.dataset,
        "workers": workers,
        "device": f"{args.gpus} GPU x {uns['params']['trials_per_gpu']} trials" if on_gpu else "cpu",
        "pruner": args.pruner,
        "patience": args.patience,
        "startup_rungs": 1 if args.pruner == "auto" and args.startup_rungs is None else args.startup_rungs,
        "tpe_startup_trials": int(uns["params"].get("tpe_startup_trials", MAX_STARTUP_TRIALS)),
        "stop_reason": str(uns["params"].get("stop_reason", "")),
        "max_evals": args.max_evals,
        "seed": args.seed,
        "max_epochs": int(uns["params"]["max_epochs"]),
        "test_size": args.test_size,
        "test_loss": float(uns["best"].get("test_loss", float("nan"))),
        "wall_s": wall,
        "segments": len(segments),
        # Idle worker-seconds at the ends of all but the last segment: what splitting the run added.
        "segment_idle_s": sum(s["tail_idle_s"] for s in segments[:-1]),
        "trials_per_hour": len(trials) / wall * 3600,
        "mean_epochs": float(trials["n_epochs"].mean()),
        "s_per_epoch": seconds_per_epoch(trials),
        "trials": len(trials),
        "ok": int((trials["status"] == "ok").sum()),
        "pruned": int((trials["status"] == "pruned").sum()),
        "failed": int((trials["status"] == "fail").sum()),
        "default_loss": float(uns["default"]["loss"]),
        "best_loss": float(uns["best"]["loss"]),
        "best_trial": int(uns["best"]["trial_id"]),
        "gain_%": 100 * (uns["best"]["loss"] - uns["default"]["loss"]) / uns["default"]["loss"],
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "label": args.label,
    }
    old = pd.read_csv(RUNS) if RUNS.exists() else pd.DataFrame()
    pd.concat([old, pd.DataFrame([row])], ignore_index=True).to_csv(RUNS, index=False)
    print(row, flush=True)


def report(_: argparse.Namespace) -> None:
    runs = pd.read_csv(RUNS)
    if "test_size" not in runs:
        runs["test_size"] = 0.0
    runs["test_size"] = runs["test_size"].fillna(0.0)
    runs["device"] = runs["device"].fillna("cpu") if "device" in runs else "cpu"
    runs["patience"] = runs["patience"].fillna("none") if "patience" in runs else "none"
    if "tpe_startup_trials" not in runs:
        runs["tpe_startup_trials"] = MAX_STARTUP_TRIALS
    runs["tpe_startup_trials"] = runs["tpe_startup_trials"].fillna(MAX_STARTUP_TRIALS).astype(int)
    runs["label"] = runs["label"].fillna("") if "label" in runs else ""
    runs = runs.drop_duplicates(
        ["dataset", "device", "workers", "pruner", "patience", "max_evals", "max_epochs", "seed", "test_size",
         "tpe_startup_trials", "label"],
        keep="last",
    )
    runs = with_trial_columns(runs)
    (RESULTS / "runtime.md").write_text(runtime(runs))
    runs = runs[runs["device"] == "cpu"]
    if "segments" not in runs:
        runs["segments"] = 1
    runs["segments"] = runs["segments"].fillna(1).astype(int)
    columns = ["dataset", "workers", "pruner", "max_evals", "tpe_startup_trials", "max_epochs", "test_size", "segments", "wall_s",
               "trials_per_hour", "mean_epochs", "ok", "pruned", "failed", "default_loss", "best_loss", "gain_%"]
    sections = []
    converging = runs[runs["patience"] != "none"]
    runs = runs[runs["patience"] == "none"]
    plain = runs[runs["pruner"] == "none"]
    # A rerun (--label) is compared only with runs of the same label: the code may have got faster between them.
    for (dataset, max_evals, max_epochs, _), group in plain.groupby(["dataset", "max_evals", "max_epochs", "label"]):
        by_workers = group.drop_duplicates("workers", keep="last").set_index("workers")
        if {1, 2} <= set(by_workers.index):
            one, two = by_workers.loc[1], by_workers.loc[2]
            sections.append(
                f"- {dataset}, {max_evals} trials, max_epochs {max_epochs}: wall-time ratio 1 worker / 2 workers = "
                f"{one['wall_s'] / two['wall_s']:.2f} (target >= 1.8); best loss 1 worker "
                f"{one['best_loss']:.2f} vs 2 workers {two['best_loss']:.2f} "
                f"({100 * (one['best_loss'] - two['best_loss']) / two['best_loss']:+.2f}%, target within 0.5%)"
            )
    asha = runs[runs["pruner"] == "asha"]
    pruning = []
    for _, row in asha.iterrows():
        base = baselines(plain, row)
        if len(base):
            b = base.iloc[-1]
            pruning.append(
                f"- {row['dataset']}, {row['max_evals']} trials, max_epochs {row['max_epochs']}, test split "
                f"{row['test_size']:g}: ASHA {b['wall_s'] / row['wall_s']:.2f}x faster "
                f"(target >= 3x){segment_note(b, row)}; best loss {row['best_loss']:.2f} vs {b['best_loss']:.2f} "
                f"without pruning ({loss_gap(row, b):+.2f}%, "
                f"target within 0.5%){earlier_baselines(base, row)}"
            )
    header = f"Machine: {machine()}\n\nCommand: `python benchmarks/search.py run ...` then `python benchmarks/search.py report`\n"
    write_keeping_notes(RESULTS / "search_scaling.md",
        "# Search wall time, 2 workers against 1\n\n" + header + "\n"
        + markdown_table(plain[columns]) + "\n\n" + "\n".join(sections) + "\n"
        "\nThe 2019 scVI autotune study: Cortex 1256.03 -> 1218.52 (-3.0%) in 9 hours on a GPU "
        "(its Cortex had 558 genes; these files have 200, so the losses are not comparable in value).\n"
    )
    write_keeping_notes(RESULTS / "pruning.md",
        "# Asynchronous successive halving (ASHA) against no pruning\n\n" + header + "\n"
        + markdown_table(runs[runs["workers"] == 2][columns]) + "\n\n" + "\n".join(pruning) + "\n"
    )
    write_keeping_notes(RESULTS / "top_bottom.md",
        "# Top-10 and bottom-10 trials of each 100-trial search (the 2019 study's Tables 2-4)\n\n"
        + header + "\n" + top_bottom(runs[runs["max_evals"] >= 100]) + "\n"
    )
    write_keeping_notes(RESULTS / "convergence.md", convergence(converging, plain, header))
    print((RESULTS / "search_scaling.md").read_text())
    print((RESULTS / "pruning.md").read_text())
    print((RESULTS / "convergence.md").read_text())


def convergence(converging: pd.DataFrame, plain: pd.DataFrame, header: str) -> str:
    """Searches with the convergence stop (and their pruner) against the same search run to the end unpruned."""
    lines = []
    for _, row in converging.iterrows():
        base = baselines(plain, row)
        if not len(base):
            continue
        b = base.iloc[-1]
        lines.append(
            f"- {row['dataset']}{row['label']}, pruner {row['pruner']}, patience {row['patience']}: ended after "
            f"{int(row['trials'])} of {int(row['max_evals'])} trials ({row['stop_reason']}); "
            f"{row['wall_s'] / 60:.1f} min against {b['wall_s'] / 60:.1f} min for all "
            f"{int(b['ok'] + b['pruned'] + b['failed'])} trials "
            f"unpruned (**{b['wall_s'] / row['wall_s']:.2f}x** less wall time); best {row['best_loss']:.2f} "
            f"against {b['best_loss']:.2f} (**{loss_gap(row, b):+.2f}%**)"
            f"{earlier_baselines(base, row)}"
        )
    columns = [c for c in ("dataset", "label", "workers", "pruner", "patience", "max_evals", "tpe_startup_trials", "test_size", "trials", "wall_s",
                           "ok", "pruned", "failed", "default_loss", "best_loss", "gain_%", "stop_reason")
               if c in converging]
    return (
        "# Searches that stop on convergence, against the full unpruned search\n\n" + header + "\n"
        + markdown_table(converging[columns]) + "\n\n" + "\n".join(lines) + "\n"
    )


def loss_gap(row: pd.Series, base: pd.Series) -> float:
    """How far ``row``'s best loss lies above ``base``'s, in percent."""
    return 100 * (row["best_loss"] - base["best_loss"]) / base["best_loss"]


def baselines(plain: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """The unpruned runs to compare ``row`` with, oldest first: same data, workers, budget, seed and cells."""
    base = plain[(plain["dataset"] == row["dataset"]) & (plain["workers"] == row["workers"])
                 & (plain["max_evals"] == row["max_evals"]) & (plain["seed"] == row["seed"])
                 & (plain["max_epochs"] == row["max_epochs"]) & (plain["test_size"] == row["test_size"])
                 & (plain["tpe_startup_trials"] == row["tpe_startup_trials"])]
    return base.sort_values("date", kind="stable")


def earlier_baselines(base: pd.DataFrame, row: pd.Series) -> str:
    """The comparison with each earlier unpruned run (its code may have been slower per epoch than the latest's)."""
    notes = [
        f"{b['wall_s'] / row['wall_s']:.2f}x less wall time and {loss_gap(row, b):+.2f}% "
        f"against the unpruned run of {b['date']} ({b['wall_s'] / 60:.1f} min, best {b['best_loss']:.2f}, "
        f"{b['s_per_epoch']:.3f} s per epoch against {row['s_per_epoch']:.3f})"
        for _, b in base.iloc[:-1].iterrows()
    ]
    return "".join(f"; {note}" for note in notes)


def segment_note(base: pd.Series, row: pd.Series) -> str:
    """How a ratio reads once the idle time that splitting a run into segments added is taken out."""
    split = [run for run in (base, row) if run["segments"] > 1]
    if not split:
        return ""

    def net(run: pd.Series) -> float:
        return run["wall_s"] - (run["segment_idle_s"] / run["workers"] if run["segments"] > 1 else 0.0)

    counts = ", ".join(f"{int(run['segments'])} segments" for run in split)
    return f" ({counts}; {net(base) / net(row):.2f}x without their ends' idle workers)"


def with_trial_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``trials`` and ``s_per_epoch`` filled in from each run's trials table where missing."""
    runs = runs.copy()
    for column in ("trials", "s_per_epoch"):
        if column not in runs:
            runs[column] = float("nan")
    for index, run in runs.iterrows():  # rows written before these columns: read them off the trials table
        # The row cannot tell an explicit epoch cap from the default one: look for both names.
        names = [run_tag(run["dataset"], run["workers"], run["pruner"], run["max_evals"], run["seed"],
                         cap, run["test_size"], gpu=run["device"] != "cpu", tpe_startup=run["tpe_startup_trials"])
                 for cap in (None, run["max_epochs"])]
        path = next((p for p in (SEARCHES / f"{n}_trials.csv" for n in names) if p.exists()), None)
        if pd.isna(run["s_per_epoch"]) and path is not None:
            trials = pd.read_csv(path)
            runs.loc[index, "trials"] = len(trials)
            runs.loc[index, "s_per_epoch"] = seconds_per_epoch(trials)
    return runs


def runtime(runs: pd.DataFrame) -> str:
    """The 2019 study's Table 1: wall time, trials per hour and seconds per epoch of each search."""
    runs = runs.copy()
    runs["min_per_100_trials"] = 100 / runs["trials_per_hour"] * 60  # a search cut by --timeout: projected
    columns = ["dataset", "device", "workers", "pruner", "max_epochs", "trials", "wall_s", "trials_per_hour",
               "min_per_100_trials", "mean_epochs", "s_per_epoch", "default_loss", "best_loss", "gain_%", "machine"]
    return (
        "# Search runtime (the 2019 study's Table 1)\n\n"
        "Command: `python benchmarks/search.py run ...` then `python benchmarks/search.py report`\n\n"
        + markdown_table(runs[columns].sort_values(["dataset", "device", "pruner", "workers"]))
        + "\n\nworkers: trials run at once (CPU worker processes, or GPU slots); s_per_epoch: trial time "
        "(set-up and scoring included) per epoch trained, summed over trials; a GPU search may have been cut "
        "by a timeout, so trials can be fewer than planned; min_per_100_trials: minutes for 100 trials at the "
        "run's pace (a projection for such a run). The 2019 study: 100 trials on Cortex in 9 hours "
        "on one GPU.\n"
    )


TRIAL_COLUMNS = ["trial_id", "status", "loss", "n_latent", "n_hidden", "n_layers", "dropout_rate",
                 "reconstruction_loss", "lr", "n_epochs", "duration_s"]


def top_bottom(runs: pd.DataFrame, n: int = 10) -> str:
    """Markdown sections: the ``n`` best and ``n`` worst finished trials of each run (pruned ones excluded)."""
    parts = []
    for _, run in runs.iterrows():
        # Runs at the default epoch cap (the row cannot tell an explicit one from it).
        tag = run_tag(run["dataset"], run["workers"], run["pruner"], run["max_evals"], run["seed"],
                      None, run["test_size"], tpe_startup=run["tpe_startup_trials"]) + run["label"]
        path = SEARCHES / f"{tag}_trials.csv"
        if not path.exists():
            continue
        trials = pd.read_csv(path)
        ok = trials[trials["status"] == "ok"].sort_values("loss")
        ok = ok[[c for c in TRIAL_COLUMNS if c in ok.columns]].assign(loss=ok["loss"].map("{:.2f}".format))
        title = f"## {run['dataset']}{run['label']}, {run['workers']} worker(s), pruner {run['pruner']}"
        if run["test_size"] > 0:
            title += f", {run['test_size']:g} of cells kept as a test split"
        note = f"{len(ok)} finished trials of {len(trials)}; loss: held-out marginal NLL per cell."
        parts += [title, note, "### Top 10", markdown_table(ok.head(n)),
                  "### Bottom 10", markdown_table(ok.tail(n).iloc[::-1]), ""]
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", default="cortex_zeisel_3005x200")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--pruner", default="none", choices=["none", "auto", "asha", "median"])
    r.add_argument("--patience", default="none", help="the convergence stop: none (every trial), auto or N")
    r.add_argument("--max-evals", type=int, default=100)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--max-epochs", type=int, default=None, help="default: sat.tl.default_max_epochs")
    r.add_argument("--test-size", type=float, default=0.0, help="fraction of cells kept untouched for a test loss")
    r.add_argument("--resume", action="store_true", help="keep an existing journal and resume it")
    r.add_argument("--gpus", type=count_or("all"), default=0,
                   help="GPUs to use: a count or 'all' (0: CPU workers, --workers of them)")
    r.add_argument("--trials-per-gpu", type=count_or("auto"), default="auto",
                   help="trials sharing each GPU: a count or 'auto' (the package's default)")
    r.add_argument("--timeout", type=float, default=None, help="seconds; the search stops with what it finished")
    r.add_argument("--label", default="", help="appended to the run's file names (a rerun beside an earlier one)")
    r.add_argument("--startup-rungs", type=int, default=None,
                   help="with --pruner auto: TPE's start-up trials are spared at this many rungs (auto: 1)")
    r.add_argument("--stop-at", type=int, default=None,
                   help="end this segment once this many trials exist; go on later with --resume")
    sub.add_parser("report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    {"run": run, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
