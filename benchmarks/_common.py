"""Shared by the benchmark scripts: where the data is, what machine this is, how results are written."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from scanpy_autotune._search._journal import _parse_lines as parse_journal_lines
from scanpy_autotune._search._tpe import MAX_STARTUP_TRIALS

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAT_DATA", ROOT.parent / "shared" / "data"))
# SAT_RESULTS: write elsewhere (a device machine writes where its files come back from).
RESULTS = Path(os.environ.get("SAT_RESULTS", ROOT / "benchmarks" / "results"))


def machine() -> str:
    """CPU model, cores and GPU of this machine, in one line."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "no GPU"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            gpu = ", ".join(out.stdout.strip().splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    import torch

    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; python {platform.python_version()}"
    )


def markdown_table(table: pd.DataFrame) -> str:
    """A Markdown table (no extra dependency); floats with 4 significant digits."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * table.shape[1]]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def write(name: str, table: pd.DataFrame, command: str, notes: str = "") -> Path:
    """Write ``results/{name}.csv`` and ``results/{name}.md`` (table, machine, command, date).

    Hand-written notes at the end of an existing ``{name}.md`` (from its first
    "Notes (" line) are kept below the new table.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / f"{name}.csv", index=False)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"# {name}\n\n{markdown_table(table)}\n\n"
        f"- machine: {machine()}\n- command: `{command}`\n- date: {stamp}\n"
    )
    if notes:
        text += f"\n{notes.strip()}\n"
    path = RESULTS / f"{name}.md"
    write_keeping_notes(path, text)
    return path


def write_keeping_notes(path: Path, text: str) -> None:
    """Write a generated report, keeping the hand-written notes (from the first "Notes (" line) of the old one."""
    notes = ""
    if path.exists():
        old = path.read_text()
        start = old.find("\nNotes (")
        notes = old[start:] if start >= 0 else ""
    path.write_text(text + notes)


@contextmanager
def checked_out(revision: str) -> Iterator[Path]:
    """This repository at ``revision``, in a temporary git worktree (removed on leaving)."""
    with tempfile.TemporaryDirectory() as folder:
        worktree = Path(folder) / revision
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), revision],
                       check=True, capture_output=True)
        try:
            yield worktree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=True)


def run_with_package_from(source: Path, code: str, *args: str, environ: Mapping[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter that imports scanpy_autotune from ``source``; the JSON it prints last.

    ``code`` prints a JSON object whose ``"source"`` is ``scanpy_autotune.__file__``, checked to lie in ``source``.
    ``environ``: the child's environment (``os.environ`` by default), ``PYTHONPATH`` set to ``source``.
    """
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
        env={**(os.environ if environ is None else environ), "PYTHONPATH": str(source)},
        cwd=tempfile.gettempdir(),  # not this tree's copy
    ).stdout.strip().splitlines()[-1]
    result = json.loads(out)
    assert Path(result.pop("source")).is_relative_to(source), "imported another copy of the package"
    return result


def runs_before(revision: str, run: Callable[[Path], dict], times: int = 2) -> list[dict]:
    """``times`` results of ``run`` on this repository at ``revision`` (a temporary worktree), as table rows."""
    rows = []
    with checked_out(revision) as worktree:
        for _ in range(times):
            rows.append({"code": f"before ({revision})", **run(worktree)})
            print(rows[-1], flush=True)
    return rows


#: The small integration search of the tests and the tutorial, in a fresh process (``run_with_package_from``):
#: 4 trials of 15 epochs on the 360 CellBench cells of ``tests/data`` (:data:`SMALL_CELLBENCH`), 2 workers.
INTEGRATION_SEARCH_CHILD = r"""
import json, sys, time
import anndata as ad
import scanpy_autotune as sat

adata = ad.read_h5ad(sys.argv[1])
start = time.perf_counter()
sat.tl.autotune(adata, batch_key="batch", labels_key="cell_type", objective="integration", max_evals=4,
                max_epochs=15, n_workers=2, n_mc=20, seed=0, progress=False)
wall = time.perf_counter() - start
trials = adata.uns["autotune"]["trials"].sort_values("trial_id")
print(json.dumps({"source": sat.__file__, "wall_s": wall,
                  "trial_s": [round(float(d), 2) for d in trials["duration_s"]],
                  "total": [round(float(t), 6) for t in trials["total"]]}))
"""
SMALL_CELLBENCH = str(ROOT / "tests" / "data" / "cellbench_360x400.h5ad")


class EpochClock:
    """A ``callback`` for ``sat.Model.fit`` that records when each epoch ends (and never stops training)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def __call__(self, epoch: int, train_elbo: float, validation_elbo: float) -> bool:
        self.ends.append(time.perf_counter())
        return False

    def seconds_per_epoch(self, statistic: Callable[[np.ndarray], float] = np.median) -> float:
        """``statistic`` of the times between consecutive epoch ends (set-up and first-call costs excluded)."""
        return float(statistic(np.diff(self.ends))) if len(self.ends) > 1 else float("nan")


def trial_loss(trial: dict) -> float:
    """A journal trial's loss, infinite for a trial that did not finish (pruned, failed)."""
    return float(trial["loss"]) if trial["status"] == "ok" and trial["loss"] is not None else np.inf


def journal_trials(path: Path) -> list[dict]:
    """A journal's trials as stored, in the order they finished (read as the package reads journals:
    a last line cut short by a crash is left out)."""
    lines, _ = parse_journal_lines(path)
    trials = [line for _, line in lines if line.get("kind") == "trial"]
    return sorted(trials, key=lambda t: t["completion_order"])


def tpe_startup_suffix(tpe_startup: int) -> str:
    """How a run's file names say TPE's random start-up trials: nothing for hyperopt's 20, else ``_tpeN``."""
    return "" if int(tpe_startup) == MAX_STARTUP_TRIALS else f"_tpe{int(tpe_startup)}"
