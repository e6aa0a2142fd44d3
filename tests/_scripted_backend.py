"""An in-process backend that plays scripted trials, so the runner's logic is tested in milliseconds.

It keeps the :class:`scanpy_autotune._search._backends.Backend` contract: every
submitted trial sends its ``report`` events one at a time (waiting for the
runner's answer at each) and ends in exactly one ``done`` or ``died`` event.
What each trial does comes from a script: ``script(trial_id, params)`` returns
a :class:`Plan`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scanpy_autotune._record import TrialRecord
from scanpy_autotune._search._backends import Event


@dataclass
class Plan:
    """What one scripted trial does.

    Attributes
    ----------
    curve
        Validation ELBO per epoch; the trial reports ``max(curve[:rung])`` at each rung it reaches.
    loss
        Its loss when it finishes; NaN makes it fail like a NaN objective.
    end
        ``"done"`` (finishes), ``"died"`` (its worker dies after its reports), ``"hang"``
        (never ends), ``"interrupt"`` (the driver gets Ctrl-C while it runs).
    """

    curve: list[float] = field(default_factory=lambda: [-100.0] * 10)
    loss: float = 100.0
    end: str = "done"


@dataclass
class _Trial:
    trial_id: int
    params: dict
    plan: Plan
    rungs: list[int]
    device: str
    waiting: bool = False
    stopped_at: int = -1
    next_rung: int = 0


class ScriptedBackend:
    """Runs scripted trials in this process, ``n_slots`` at a time."""

    name = "scripted"

    def __init__(self, script: Callable[[int, dict], Plan], n_slots: int = 2) -> None:
        self.script = script
        self._n_slots = n_slots
        self.running: dict[int, _Trial] = {}
        self.started = False
        self.shut_down_with: bool | None = None
        self.submitted: list[int] = []
        self.params: dict[int, dict] = {}
        self.answers: list[tuple[int, bool]] = []

    @property
    def n_slots(self) -> int:
        return self._n_slots

    def start(self, context) -> None:
        self.started = True

    def free_slots(self) -> int:
        return self._n_slots - len(self.running)

    def submit(self, trial_id: int, params: dict, rungs: list[int]) -> str:
        assert self.started and self.free_slots() > 0
        device = f"slot{len(self.submitted) % self._n_slots}"
        self.running[trial_id] = _Trial(trial_id, dict(params), self.script(trial_id, params), list(rungs), device)
        self.submitted.append(trial_id)
        self.params[trial_id] = dict(params)
        return device

    def answer(self, trial_id: int, stop: bool) -> None:
        trial = self.running[trial_id]
        assert trial.waiting, "answered a trial that is not waiting at a rung"
        self.answers.append((trial_id, stop))
        trial.waiting = False
        if stop:
            trial.stopped_at = trial.rungs[trial.next_rung - 1]

    def poll(self, timeout: float) -> list[Event]:
        events = []
        for trial in list(self.running.values()):
            if trial.waiting:
                continue
            event = self._step(trial)
            if event is not None:
                events.append(event)
        if not events:
            time.sleep(min(timeout, 0.01))
        return events

    def _step(self, trial: _Trial) -> Event | None:
        plan = trial.plan
        reachable = [r for r in trial.rungs if r <= len(plan.curve)]
        if trial.stopped_at < 0 and trial.next_rung < len(reachable):
            rung = reachable[trial.next_rung]
            trial.next_rung += 1
            trial.waiting = True
            value = max(plan.curve[:rung])
            return Event("report", trial.trial_id, n_epochs=rung, value=value, device=trial.device)
        if plan.end == "hang":
            return None
        if plan.end == "interrupt":
            raise KeyboardInterrupt
        del self.running[trial.trial_id]
        if plan.end == "died":
            return Event("died", trial.trial_id, error="WorkerDied: scripted", device=trial.device)
        n_epochs = trial.stopped_at if trial.stopped_at >= 0 else len(plan.curve)
        record = TrialRecord(
            trial.trial_id, trial.params, device=trial.device, n_epochs=n_epochs,
            history={"train_elbo": plan.curve[:n_epochs], "validation_elbo": plan.curve[:n_epochs]},
        )
        if trial.stopped_at >= 0:
            record.status, record.pruned_at = "pruned", trial.stopped_at - 1
        elif math.isfinite(plan.loss):
            record.status, record.loss = "ok", plan.loss
        else:
            record.error = "FloatingPointError: the loss is not finite (nan)"
        return Event("done", trial.trial_id, record=record, device=trial.device)

    def shutdown(self, kill: bool = False) -> None:
        self.shut_down_with = kill
        self.running.clear()
