"""Replay unpruned searches under candidate pruners (groundwork for issue 21).

    python benchmarks/pruning_replay.py

The unpruned journals hold every trial's whole validation-ELBO curve. Replaying
the trials in their completion order, each candidate pruner is told, at each of
its rungs, the trial's best validation ELBO so far (as the worker reports it)
and decides; a pruned trial costs its epochs up to the rung and has no loss. The
replay reports the epochs spent (the time, roughly) against the unpruned
search, and the best loss among the trials that were not pruned against the
unpruned best.

What it cannot show: with pruning, TPE sees pruned trials as bad and suggests
other configurations afterwards, and the trials finish in another order. So it
ranks candidates; the issue's targets are measured by real searches.

Writes ``results/pruning_replay.md``, and ``results/default_search_replay.md``: the default
search (the "auto" pruner and the convergence stop together) replayed the same way on the
unpruned 100-trial journals, the stop being the package's own ``ConvergenceStop``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, trial_loss, write  # noqa: E402

from scanpy_autotune._record import TrialRecord  # noqa: E402
from scanpy_autotune._search._convergence import ConvergenceStop  # noqa: E402
from scanpy_autotune._search._pruner import ASHAPruner, auto_min_epochs  # noqa: E402
from scanpy_autotune._search._tpe import startup_trials  # noqa: E402

SEARCHES = RESULTS / "searches"
JOURNALS = {
    "Cortex 100 x 400 epochs, 2 workers": "cortex_zeisel_3005x200_w2_none_n100_s0.jsonl",
    "Cortex 100 x 400 epochs, 1 worker": "cortex_zeisel_3005x200_w1_none_n100_s0.jsonl",
    "PBMC4k 100 x 400 epochs, 2 workers": "pbmc4k_10x_4271x2000_w2_none_n100_s0_t0.1.jsonl",
    "CBMC 100 x 400 epochs, 2 workers": "cbmc_citeseq_8617x2000_w2_none_n100_s0_t0.1.jsonl",
    "Cortex 40 x 100 epochs, 2 workers": "cortex_zeisel_3005x200_w2_none_n40_s0_e100.jsonl",
    "Cortex 40 x 100 epochs, 1 worker": "cortex_zeisel_3005x200_w1_none_n40_s0_e100.jsonl",
    **{
        f"README demo (pbmc68k 12 x 40 epochs), seed {seed}": f"pbmc68k_demo_none_n12_e40_s{seed}.jsonl"
        for seed in (0, 1, 2)
    },
    **{
        f"Cortex 20 x 400 epochs, 2 workers, seed {seed}": f"cortex_zeisel_3005x200_w2_none_n20_s{seed}.jsonl"
        for seed in (1, 2)
    },
}


class _Candidate:
    """A pruning rule for the replay: which table a trial reports to, and from which trial on."""

    def __init__(
        self, name: str, make: Callable[[int], list[ASHAPruner]], startup: int = 0, startup_from_rung: int = 0,
        trust: float | None = None, trust_after: int = 8,
    ) -> None:
        # startup: trials before it are never stopped; startup_from_rung: they are judged from that rung on;
        # trust: a rung stops a trial only once, over the trials finished so far (at least trust_after), the
        # Spearman correlation between their best validation ELBO up to the rung and their loss reaches it
        self.name, self.make, self.startup, self.startup_from_rung = name, make, startup, startup_from_rung
        self.trust, self.trust_after = trust, trust_after

    def _trusted(self, rung: int, finished: list[tuple[np.ndarray, float]]) -> bool:
        if self.trust is None:
            return True
        if len(finished) < self.trust_after:
            return False
        values = [-_best_up_to(curve, rung) for curve, _ in finished]
        return bool(spearmanr(values, [loss for _, loss in finished])[0] >= self.trust)

    def sequence(self, trials: list[dict], max_epochs: int) -> list[tuple[float, int]]:
        """Each trial under the rule, in completion order: its loss (infinite when stopped or failed) and epochs."""
        brackets = self.make(max_epochs)
        out: list[tuple[float, int]] = []
        finished: list[tuple[np.ndarray, float]] = []
        for k, trial in enumerate(trials):
            curve = np.array([np.nan if v is None else v for v in trial["history"]["validation_elbo"]], dtype=float)
            pruner = brackets[k % len(brackets)]
            stopped = None
            for index, rung in enumerate(pruner.rungs()):
                if rung > len(curve):
                    break
                stop = pruner.report(trial["trial_id"], rung, _best_up_to(curve, rung))
                judged = k >= self.startup or (self.startup_from_rung and index >= self.startup_from_rung)
                if stop and not trial.get("is_default") and judged and self._trusted(rung, finished):
                    stopped = rung
                    break
            if stopped is None:
                loss = trial_loss(trial)
                out.append((loss, trial["n_epochs"]))
                if math.isfinite(loss):
                    finished.append((curve, loss))
            else:
                out.append((math.inf, stopped))
        return out

    def replay(self, trials: list[dict], max_epochs: int) -> tuple[int, float, float]:
        """Epochs spent, the best loss kept, and the best loss after the first third of the trials."""
        seq = self.sequence(trials, max_epochs)
        third = math.ceil(len(seq) / 3)
        return sum(e for _, e in seq), _best(seq), _best(seq[:third])


def _best(seq: list[tuple[float, int]]) -> float:
    return min((loss for loss, _ in seq if math.isfinite(loss)), default=math.inf)


def _best_up_to(curve: np.ndarray, rung: int) -> float:
    """What a worker reports at a rung: the best validation ELBO so far."""
    seen = curve[:rung]
    return float(np.nanmax(seen)) if np.any(np.isfinite(seen)) else math.nan


def _asha(min_epochs: int | None = None, eta: int = 3) -> Callable[[int], list[ASHAPruner]]:
    return lambda max_epochs: [ASHAPruner(max_epochs, min_epochs=min_epochs, eta=eta)]


def _hyperband(n_brackets: int, eta: int = 3) -> Callable[[int], list[ASHAPruner]]:
    def make(max_epochs: int) -> list[ASHAPruner]:
        first = max(1, min(25, max_epochs // 10))
        return [
            ASHAPruner(max_epochs, min_epochs=min(first * eta**s, max_epochs - 1), eta=eta)
            for s in range(n_brackets)
        ]

    return make


CANDIDATES = [
    _Candidate("ASHA (today's opt-in: first rung min(25, epochs/10), eta 3)", _asha()),
    _Candidate("ASHA, no pruning in the first 20 trials (TPE's random start-up)", _asha(), startup=20),
    _Candidate("ASHA, first rung epochs/8", lambda m: [ASHAPruner(m, min_epochs=max(1, m // 8))]),
    _Candidate("ASHA, first rung epochs/4", lambda m: [ASHAPruner(m, min_epochs=max(1, m // 4))]),
    _Candidate("Hyperband, 2 brackets (trials alternate)", _hyperband(2)),
    _Candidate("Hyperband, 3 brackets (trials alternate)", _hyperband(3)),
    _Candidate("Hyperband, 2 brackets, none in the first 20", _hyperband(2), startup=20),
    _Candidate("ASHA, the first 20 trials judged from the second rung on", _asha(), startup=20, startup_from_rung=1),
    _Candidate("ASHA, the first 20 trials judged from the third rung on", _asha(), startup=20, startup_from_rung=2),
    _Candidate(
        "ASHA, first rung epochs/8, the first 20 judged from the second rung on",
        lambda m: [ASHAPruner(m, min_epochs=max(1, m // 8))], startup=20, startup_from_rung=1,
    ),
    _Candidate("ASHA, first rung min(25, epochs/4)", lambda m: [ASHAPruner(m, min_epochs=max(1, min(25, m // 4)))]),
    _Candidate(
        "ASHA, first rung min(25, epochs/4), the first 20 judged from the second rung on",
        lambda m: [ASHAPruner(m, min_epochs=max(1, min(25, m // 4)))], startup=20, startup_from_rung=1,
    ),
    *(
        _Candidate(
            f"ASHA, first rung min(25, epochs/4), a rung trusted once it ranks the finished trials at "
            f"Spearman >= {trust}",
            lambda m: [ASHAPruner(m, min_epochs=max(1, min(25, m // 4)))], trust=trust,
        )
        for trust in (0.6, 0.7)
    ),
]


#: The default search's pruning, before and since session 16, and the patience of "auto" for 100 trials.
DEFAULT_SEARCHES = [  # name, trials spared at the first rungs, how many rungs spare them, patience
    ("auto before session 16 (every trial judged from the first rung)", 0, 1, 12),
    ("auto before session 16 (every trial judged from the first rung)", 0, 1, 8),
    ("auto (TPE's start-up trials judged from the second rung)", startup_trials(100), 1, 12),
    ("auto (TPE's start-up trials judged from the second rung)", startup_trials(100), 1, 8),
    ("TPE's start-up trials judged from the third rung", startup_trials(100), 2, 8),
]
UNPRUNED_100 = [name for name in JOURNALS if " 100 x " in name]


def default_search_rows(trials: list[dict], search: str, max_epochs: int, full_epochs: int, full_best: float) -> list:
    """The pruning rule and the convergence stop replayed together on one unpruned journal."""
    rows = []
    for name, spared, spared_rungs, patience in DEFAULT_SEARCHES:
        rule = _Candidate(name, lambda m, spared=spared, spared_rungs=spared_rungs: [
            ASHAPruner(m, min_epochs=auto_min_epochs(m), startup_trials=spared, startup_rungs=spared_rungs)
        ])
        seq = rule.sequence(trials, max_epochs)
        stop = ConvergenceStop(patience, max_epochs=max_epochs)
        n = len(seq)
        for k, (loss, epochs) in enumerate(seq, 1):
            record = TrialRecord(trial_id=k, status="ok" if math.isfinite(loss) else "pruned",
                                 loss=loss, n_epochs=epochs)
            if stop.observe(record):
                n = k
                break
        gap = 100 * (_best(seq[:n]) - full_best) / full_best
        epochs = sum(e for _, e in seq[:n])
        rows.append({
            "search": search, "pruner": name, "patience": patience, "stopped after": n,
            "best vs unpruned": f"{gap:+.2f}%", "epochs spent": f"{100 * epochs / full_epochs:.1f}%",
            "speed-up": f"{full_epochs / epochs:.1f}x",
            "<= 1/3 of the trials, within 0.5%": "yes" if n <= len(trials) / 3 and gap <= 0.5 else "no",
        })
    return rows


def main() -> None:
    rows, default_rows = [], []
    for search, journal in JOURNALS.items():
        lines = [json.loads(line) for line in (SEARCHES / journal).read_text().splitlines()]
        header = lines[0]["settings"]
        trials = sorted((t for t in lines if t.get("kind") == "trial"), key=lambda t: t["completion_order"])
        full_epochs = sum(t["n_epochs"] for t in trials)
        full_best = min(map(trial_loss, trials))
        for candidate in CANDIDATES:
            epochs, best, best_at_third = candidate.replay(trials, int(header["max_epochs"]))
            rows.append({
                "search": search, "pruner": candidate.name,
                "epochs spent": f"{100 * epochs / full_epochs:.0f}%",
                "speed-up": f"{full_epochs / epochs:.2f}x",
                "best vs unpruned": f"{100 * (best - full_best) / full_best:+.2f}%",
                "after a third of the trials": f"{100 * (best_at_third - full_best) / full_best:+.2f}%",
            })
        if search in UNPRUNED_100:
            default_rows += default_search_rows(trials, search, int(header["max_epochs"]), full_epochs, full_best)
    write(
        "default_search_replay", pd.DataFrame(default_rows), "python benchmarks/pruning_replay.py",
        """
The default search's pruning and convergence stop replayed together on the unpruned 100-trial journals
(trials in completion order, the same configurations): "stopped after" counts the trials when the stop
fires, "best vs unpruned" compares the best loss the rule kept by then with the best of all 100 trials,
"epochs spent" is the share of the 100 trials' epochs (a proxy for wall time). The stop is the package's
ConvergenceStop (0.2% tolerance, at least 20 trials, a pruned trial counted as its share of 400 epochs).
Not a run with the rule on: TPE would propose other configurations after a prune.
""",
    )
    notes = """
Replay of unpruned journals (trials in completion order, the same configurations): "epochs spent" is
the share of the unpruned search's trial-epochs, a proxy for its time; "best vs unpruned" compares the
best loss among the trials the pruner let finish with the unpruned best ("after a third of the trials": the
same, over the first third of the trials in completion order). The default configuration is
never pruned. Not a run with the pruner on: TPE would suggest other configurations after a prune.
"""
    write("pruning_replay", pd.DataFrame(rows), "python benchmarks/pruning_replay.py", notes)
    print((RESULTS / "pruning_replay.md").read_text())


if __name__ == "__main__":
    main()
