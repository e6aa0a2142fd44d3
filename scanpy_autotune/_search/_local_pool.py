"""The local pool: one fresh Python interpreter per slot on this machine.

Each worker is started as ``python -c WORKER_BOOT scanpy_autotune._search._worker``
with its GPU (``CUDA_VISIBLE_DEVICES``) and thread count in its environment, so
both hold before anything in it imports torch; it imports this package from
the folder the driver imported it from, and it receives the trial context once
over a socket pair. Why fresh interpreters rather than ``multiprocessing`` or
joblib: a spawned process re-imports the user's ``__main__`` (a script without
an ``if __name__ == "__main__"`` guard would start a search in every worker),
and a joblib/loky pool decides itself when to start, reuse and kill its
workers, while this pool must pin each worker to its device before CUDA
starts, send the data once per worker rather than once per task, replace a
worker that died and run its trial once more, and answer pruning rungs in the
middle of a task.

This module does not import torch.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from ._backends import TRIAL_ATTEMPTS, Event

__all__ = ["START_ATTEMPTS", "LocalPool", "worker_environment"]

#: Workers in a row that may end before they are ready before the pool gives up.
START_ATTEMPTS = 3

logger = logging.getLogger("scanpy_autotune")


#: The environment variable that carries :func:`driver_imports` to a worker (removed there at once).
IMPORTS_VARIABLE = "SCANPY_AUTOTUNE_DRIVER_IMPORTS"

#: What a worker runs (``python -c WORKER_BOOT MODULE ARGS...``): this package from the folder the
#: driver imported it from, whatever the worker's own path holds (another copy installed, or one in
#: its working folder); the driver's other import folders after the worker's own, so that an
#: objective's module that the driver found through a sys.path it changed itself is found too
#: (appended, so that every module found before resolves as before); then MODULE as ``-m`` runs it.
WORKER_BOOT = f"""\
import importlib.util, json, os, runpy, sys
package, driver_path = json.loads(os.environ.pop({IMPORTS_VARIABLE!r}, "[null, []]"))
sys.path.extend(entry for entry in driver_path if entry not in sys.path)
if package is not None and os.path.isfile(os.path.join(package, "__init__.py")):
    spec = importlib.util.spec_from_file_location(
        "scanpy_autotune", os.path.join(package, "__init__.py"), submodule_search_locations=[package])
    sys.modules["scanpy_autotune"] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""


def driver_imports() -> tuple[str, list[str]]:
    """Where this process imported this package from, and its ``sys.path`` (absolute, once each)."""
    package = os.path.dirname(os.path.abspath(sys.modules["scanpy_autotune"].__file__))
    return package, _absolute_entries(sys.path)


def worker_environment(
    device: str, threads: int, environ: Mapping[str, str], extra: Mapping[str, str] | None = None,
    imports: tuple[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """The environment of a worker on ``device``: its thread count, and on a GPU that GPU alone.

    ``"cuda:N"`` is the N-th GPU this process sees, so under ``CUDA_VISIBLE_DEVICES=2,3``
    ``"cuda:1"`` is the GPU named ``3``. numba's thread pool gets the worker's
    thread count too, and TorchInductor (the compiled likelihood) compiles in
    the worker itself instead of starting a pool of compiler processes per
    worker. ``extra`` settings apply unless ``environ`` sets them (the user's
    own setting wins). ``imports`` (:func:`driver_imports`) go to
    :data:`WORKER_BOOT`.
    """
    env = dict(environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if imports is not None:
        env[IMPORTS_VARIABLE] = json.dumps([imports[0], list(imports[1])])
    env.setdefault("NUMBA_NUM_THREADS", str(threads))
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    for name, value in (extra or {}).items():
        env.setdefault(name, value)
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        visible = [v.strip() for v in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if "CUDA_VISIBLE_DEVICES" in environ and index >= len(visible):
            raise ValueError(f"{device} is not among CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']!r}")
        env["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else str(index)
    return env


def _absolute_entries(import_path: Sequence[str]) -> list[str]:
    """The entries of a ``sys.path``, absolute (``""`` is the working folder), once each, in order."""
    entries = []
    for entry in import_path:
        if not isinstance(entry, str):
            continue
        try:
            entries.append(os.path.abspath(entry or os.curdir))
        except OSError:  # the working folder was deleted
            continue
    return list(dict.fromkeys(entries))


class _Slot:
    """One worker process and the socket to it.

    The process starts at once. Messages to it (the trial context first) go
    out in order from a thread of their own: the context is larger than the
    socket's buffer, and a worker reads it only once it has imported torch
    (seconds), so sending it from the driver's thread held up every other
    trial's rung answers and results while a fresh worker started. The worker
    answers ``("ready",)`` once it holds the context: a worker whose socket
    ends before that died while it started, and never began a trial.
    """

    def __init__(self, device: str, threads: int, extra_env: Mapping[str, str] | None = None) -> None:
        self.device = device
        parent, child = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER_BOOT, "scanpy_autotune._search._worker", str(child.fileno()),
                 device, str(threads), str(os.getpid())],
                pass_fds=(child.fileno(),),
                env=worker_environment(device, threads, os.environ, extra_env, imports=driver_imports()),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches the driver only
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.ready = False  # the worker said it holds the context
        self.task: tuple[int, dict, list[int]] | None = None  # the trial it runs: id, params, rungs
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._sender = threading.Thread(
            target=self._send_outbox, name=f"to-worker-{self.process.pid}", daemon=True
        )
        self._sender.start()

    @property
    def trial_id(self) -> int | None:
        return None if self.task is None else self.task[0]

    def send_context(self, payload: bytes) -> None:
        """Send the pickled context; a worker already gone is found by ``poll`` (its socket ends)."""
        self._outbox.put(payload)

    def send(self, message: Any) -> None:
        """Send ``message`` after those sent before it, without waiting for the worker to read it."""
        self._outbox.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def _send_outbox(self) -> None:
        """The sender thread: send the outbox's messages in order until ``None``."""
        while (payload := self._outbox.get()) is not None:
            try:
                self.conn.send_bytes(payload)
            except OSError:  # the worker is gone: its socket's end is what poll reports
                return

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_status(self) -> str:
        """How the worker ended: ``killed by signal N``, ``exit code N`` (after waiting up to 5 s)."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "its socket closed, but the process had not ended 5 s later"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def abandon(self) -> None:
        """End the worker and its sender thread at once, waiting for neither (after a failed ``stop``)."""
        if self.alive():
            self.process.kill()
        self._close(timeout=1)

    def stop(self, kill: bool = False) -> None:
        if self.alive() and not kill:
            self.send(("stop",))
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.alive():
            self.process.kill()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # stuck in the kernel (a GPU driver): it ends when it can
                logger.warning("the worker process %d on %s did not end 5 s after SIGKILL", self.process.pid,
                               self.device)
        self._close(timeout=5)

    def _close(self, timeout: float) -> None:
        """End the sender thread, then close the socket.

        With the worker gone, a send in flight fails at once; the socket closes
        only after the thread has ended, so that it never writes to a file
        descriptor whose number was given out again.
        """
        self._outbox.put(None)
        self._sender.join(timeout=timeout)
        if not self._sender.is_alive():
            self.conn.close()


class LocalPool:
    """Spawned worker processes on this machine, one per slot.

    Parameters
    ----------
    devices
        One device per slot (``"cpu"`` or ``"cuda:N"``).
    threads_per_worker
        Torch threads of each CPU worker.
    extra_env
        Environment settings for every worker (:func:`worker_environment`).
    """

    name = "local"

    def __init__(
        self, devices: list[str], threads_per_worker: int = 1, extra_env: Mapping[str, str] | None = None
    ) -> None:
        if not devices:
            raise ValueError("The pool needs at least one worker.")
        self.devices = list(devices)
        self.threads = threads_per_worker
        self.extra_env = dict(extra_env or {})
        self.trials_per_gpu: int | None = None  # set by make_backend, for the search's record
        self._slots: list[_Slot] = []
        self._payload = b""
        self._failed_starts = 0  # workers in a row that ended before they were ready
        self._deaths: dict[int, int] = {}  # trial id -> workers that died while running it
        self._failure: Exception | None = None  # raised by the next poll

    @property
    def n_slots(self) -> int:
        return len(self.devices)

    def start(self, context: Any) -> None:
        """Start the workers and send each the trial context once."""
        self._payload = pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            for device in self.devices:
                self._slots.append(_Slot(device, self.threads, self.extra_env))
        except BaseException:  # a worker that cannot start: none of those started is left running
            self.shutdown(kill=True)
            raise
        for slot in self._slots:
            slot.send_context(self._payload)

    def free_slots(self) -> int:
        return sum(slot.task is None for slot in self._slots)

    def submit(self, trial_id: int, params: dict, rungs: list[int]) -> str:
        """Start a trial on a free slot; returns the slot's device."""
        index = next(i for i, s in enumerate(self._slots) if s.task is None)
        if not self._slots[index].alive():  # died while idle, or after its trial: a fresh one takes its place
            self._slots[index].stop(kill=True)
            self._fresh_slot(index)
        slot = self._slots[index]
        slot.task = (trial_id, params, list(rungs))
        slot.send(("trial", trial_id, params, list(rungs)))
        return slot.device

    def answer(self, trial_id: int, stop: bool) -> None:
        """Tell the trial waiting at a rung whether to stop."""
        for slot in self._slots:
            if slot.trial_id == trial_id:
                slot.send(bool(stop))
                return

    def poll(self, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` seconds for events from the running trials.

        A failure to replace a worker is raised once the events read before it
        are returned (the next call), so a trial that finished is never lost with it.
        """
        self._raise_failure()
        busy = [s for s in self._slots if s.task is not None]
        if not busy:
            return []
        ready = set(wait([s.conn for s in busy], timeout=timeout))
        events = []
        for index, slot in enumerate(self._slots):
            if slot.task is None or slot.conn not in ready:
                continue
            try:
                while slot.conn.poll():
                    message = slot.conn.recv()
                    if message[0] == "ready":
                        slot.ready, self._failed_starts = True, 0
                        continue
                    events.append(self._event(slot, message))
                    if message[0] == "done":
                        slot.task = None
                        break
            except (EOFError, OSError):  # the socket closed: the worker is gone
                # A rung report it sent before it died is answered by nobody: the trial's next
                # worker must not take that answer for its own first rung's.
                events = [e for e in events if not (e.kind == "report" and e.trial_id == slot.trial_id)]
                try:
                    if not slot.ready:
                        self._restart(index)
                    elif (event := self._died(index)) is not None:
                        events.append(event)
                except Exception as error:
                    self._failure = error
        if not events:
            self._raise_failure()
        return events

    def _raise_failure(self) -> None:
        """Raise (once) the failure a poll kept back for the events it returned."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _event(self, slot: _Slot, message: tuple) -> Event:
        if message[0] == "report":
            _, trial_id, n_epochs, value = message
            return Event("report", trial_id, n_epochs=n_epochs, value=value, device=slot.device)
        _, trial_id, record, model = message
        record.device = slot.device  # the pool's name: a worker pinned to "cuda:2" calls its one GPU "cuda:0"
        return Event("done", trial_id, record=record, model=model, device=slot.device)

    def _died(self, index: int) -> Event | None:
        """A worker died during its trial: the trial runs once more on a fresh worker, then counts as failed.

        As on Dask, a worker killed from outside (or by the machine running out of
        memory) costs a trial only when its retry dies too.
        """
        slot = self._slots[index]
        how = slot.exit_status()
        slot.stop(kill=True)
        trial_id = slot.trial_id
        self._deaths[trial_id] = deaths = self._deaths.get(trial_id, 0) + 1
        if deaths < TRIAL_ATTEMPTS:
            logger.warning(
                "trial %d: the worker process on %s died during it (%s); retrying it once on a fresh worker",
                trial_id, slot.device, how,
            )
            self._resend(index, slot.task)
            return None
        slot.task = None  # the slot's next trial starts a fresh worker (submit)
        return Event(
            "died", trial_id, device=slot.device,
            error=(
                f"WorkerDied: the worker process on {slot.device} died during the trial and its retry ({how}); "
                "it was killed from outside or ran out of memory"
            ),
        )

    def _restart(self, index: int) -> None:
        """A worker died before it was ready: its trial never began, and goes to a fresh worker.

        Raises
        ------
        RuntimeError
            When :data:`START_ATTEMPTS` workers in a row died while they started
            (a broken installation, a machine out of memory).
        """
        slot = self._slots[index]
        how = slot.exit_status()
        slot.stop(kill=True)
        self._failed_starts += 1
        if self._failed_starts >= START_ATTEMPTS:
            raise RuntimeError(
                f"{self._failed_starts} worker processes on {slot.device} in a row ended before they were ready "
                f"(the last: {how}); a worker's own error, if it printed one, is above. Check that "
                f"'{sys.executable} -m scanpy_autotune._search._worker' can start (imports torch) and that the "
                "machine has memory to spare."
            )
        logger.warning(
            "the worker process on %s ended while it started (%s); trial %d goes to a fresh worker",
            slot.device, how, slot.trial_id,
        )
        self._resend(index, slot.task)

    def _resend(self, index: int, task: tuple[int, dict, list[int]]) -> None:
        """Run ``task`` (trial id, params, rungs) on a fresh worker in slot ``index``."""
        fresh = self._fresh_slot(index)
        fresh.task = task
        fresh.send(("trial", *task))

    def _fresh_slot(self, index: int) -> _Slot:
        """A fresh worker in slot ``index`` (in place at once: ``shutdown`` reaches it whatever follows)."""
        self._slots[index] = slot = _Slot(self.devices[index], self.threads, self.extra_env)
        slot.send_context(self._payload)
        return slot

    def shutdown(self, kill: bool = False) -> None:
        """Stop every worker (``kill``: at once, abandoning running trials).

        A Ctrl-C or an error while one stops ends the others at once: none is
        left waiting for messages, holding the data (and a GPU).
        """
        slots, self._slots = self._slots, []
        try:
            for slot in slots:
                slot.stop(kill=kill or slot.task is not None)
        finally:
            for slot in slots:
                slot.abandon()
