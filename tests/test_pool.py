"""The local pool of worker processes."""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import process_running, worker_processes

from scanpy_autotune._search import _local_pool as _backends


@pytest.mark.slow
def test_pool_starts_every_worker_before_it_waits_on_one(monkeypatch):
    """Sending the context blocks until a worker has imported torch: all processes must exist by then.

    Started one after the other, 8 GPU workers took over a minute to start on a
    machine where one takes 8 s.
    """
    created: list[_backends._Slot] = []
    alive_at_first_send: list[int] = []
    original_init, original_send = _backends._Slot.__init__, _backends._Slot.send_context

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        created.append(self)

    def send(self, payload):
        if not alive_at_first_send:
            alive_at_first_send.append(sum(slot.alive() for slot in created))
        original_send(self, payload)

    monkeypatch.setattr(_backends._Slot, "__init__", init)
    monkeypatch.setattr(_backends._Slot, "send_context", send)
    pool = _backends.LocalPool(["cpu"] * 3)
    pool.start({"any": "context"})
    try:
        assert alive_at_first_send == [3]
        assert pool.free_slots() == 3
    finally:
        pool.shutdown()
    assert all(slot.process.returncode is not None for slot in created)


DRIVER = """
import sys
import anndata as ad
import numpy as np
import scanpy_autotune as sat

cortex = ad.read_h5ad(sys.argv[1])
adata = cortex[np.random.default_rng(0).choice(cortex.n_obs, 300, replace=False)].copy()
# One trial that would train for hours: the driver is killed long before it ends.
sat.tl.autotune(adata, max_evals=1, max_epochs=10**6, n_workers=1, gpus=None, progress=False)
"""


@pytest.mark.slow
def test_workers_end_when_the_driver_is_killed(cortex_path, tmp_path):
    """SIGKILL the driver mid-trial: its worker stops within seconds instead of training on."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), str(cortex_path)])
    try:
        workers = _wait_for(lambda: worker_processes(driver.pid), timeout=120)
        assert len(workers) == 1, "the driver never started its worker"
        time.sleep(2)  # into the trial
        assert process_running(workers[0])
    finally:
        driver.kill()
        driver.wait()
    gone = _wait_for(lambda: not process_running(workers[0]), timeout=30)
    if not gone:
        os.kill(workers[0], signal.SIGKILL)
    assert gone, "the worker kept training after its driver was killed"


def _wait_for(condition, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


def test_a_worker_that_cannot_start_leaves_none_of_the_others_running(monkeypatch):
    """Probe 24: the pool kept its workers only once all had started, so a failure to start the
    second left the first waiting for a context, out of the reach of ``shutdown``."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    pool = _backends.LocalPool(["cpu", "cuda:3"])
    with pytest.raises(ValueError, match=r"cuda:3 is not among CUDA_VISIBLE_DEVICES='0'"):
        pool.start({"any": "context"})
    assert pool._slots == [] and worker_processes(os.getpid()) == []


def test_a_ctrl_c_while_the_workers_stop_leaves_none_running(monkeypatch):
    """Probe 25: a Ctrl-C in one worker's stop ended the loop; the others waited on for messages from
    sender threads that nobody ended, holding the data (and a GPU) until the kernel exited."""
    import threading

    pool = _backends.LocalPool(["cpu"] * 3)
    pool.start(b"x" * 2_000_000)  # larger than a socket's buffer: each sender thread waits on its worker
    first = pool._slots[0]

    def interrupted(timeout=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(first.process, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pool.shutdown()
    monkeypatch.undo()
    assert _wait_for(lambda: worker_processes(os.getpid()) == [], timeout=10)
    assert _wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("to-worker-")], timeout=10)
    assert pool._slots == []


def test_a_trial_is_recorded_on_the_gpu_the_pool_gave_it():
    """Probe 24: a worker pinned to the pool's "cuda:2" sees that GPU as its "cuda:0", and every GPU
    trial of a search was recorded on "cuda:0"."""
    import types

    from scanpy_autotune._record import TrialRecord

    pool = _backends.LocalPool(["cuda:0", "cuda:1", "cuda:2"])
    record = TrialRecord(7, {"n_hidden": 64}, status="ok", loss=1.0, device="cuda:0")  # as the worker saw it
    event = pool._event(types.SimpleNamespace(device="cuda:2"), ("done", 7, record, None))
    assert event.record.device == event.device == "cuda:2"


def test_dask_refuses_the_local_pool_s_gpu_settings():
    from scanpy_autotune._search._slots import make_backend

    for kwargs in ({"gpus": [0, 1]}, {"gpus": None}, {"trials_per_gpu": 2}):
        with pytest.raises(ValueError, match=r"gpus= and trials_per_gpu= are for the local backend"):
            make_backend("dask", scheduler="tcp://127.0.0.1:1", **kwargs)  # refused before it connects


def test_worker_environment_pins_one_gpu_and_the_threads():
    env = _backends.worker_environment("cuda:1", 4, {"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == "4" and env["PATH"] == "/bin"
    # cuda:N counts among the GPUs this process sees, as torch does.
    assert _backends.worker_environment("cuda:1", 2, {"CUDA_VISIBLE_DEVICES": "2,3"})["CUDA_VISIBLE_DEVICES"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in _backends.worker_environment("cpu", 1, {})
    assert _backends.worker_environment("cpu", 2, {})["NUMBA_NUM_THREADS"] == "2"
    # one compile in the worker, not a pool of compiler processes per worker
    assert _backends.worker_environment("cpu", 2, {})["TORCHINDUCTOR_COMPILE_THREADS"] == "1"
    assert _backends.worker_environment("cpu", 2, {"TORCHINDUCTOR_COMPILE_THREADS": "4"})[
        "TORCHINDUCTOR_COMPILE_THREADS"] == "4"
    assert "OMP_WAIT_POLICY" not in _backends.worker_environment("cpu", 2, {})
    # extra settings (a scoring search's passive OpenMP threads) apply; a user's own setting wins
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    assert _backends.worker_environment("cpu", 2, {}, passive)["OMP_WAIT_POLICY"] == "PASSIVE"
    assert _backends.worker_environment("cpu", 2, {"OMP_WAIT_POLICY": "ACTIVE"}, passive)["OMP_WAIT_POLICY"] == "ACTIVE"
    with pytest.raises(ValueError, match="cuda:2 is not among CUDA_VISIBLE_DEVICES='0,1'"):
        _backends.worker_environment("cuda:2", 1, {"CUDA_VISIBLE_DEVICES": "0,1"})


def test_only_a_scoring_search_asks_for_passive_openmp_threads():
    from scanpy_autotune._search._slots import make_backend

    assert make_backend("local", n_workers=1, gpus=None).extra_env == {}
    scoring = make_backend("local", n_workers=1, gpus=None, passive_threads=True)
    assert scoring.extra_env == {"OMP_WAIT_POLICY": "PASSIVE"}


#: A worker's place in the order of starts (0, 1, ...), claimed atomically as the file
#: ``count_file.N``: workers start at once, and a counter read then written lets two take one place.
CLAIM_START_ORDER = """
    started = 0
    while True:
        try:
            os.close(os.open({count_file!r} + "." + str(started), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            break
        except FileExistsError:
            started += 1
"""

#: Put on a worker's PYTHONPATH: the first ``limit`` worker processes (counted in ``count_file``)
#: SIGKILL themselves as they start, before they import torch or read the trial context.
DIE_AT_START = """
import os, signal, sys
if "scanpy_autotune._search._worker" in sys.orig_argv:
""" + CLAIM_START_ORDER + """
    if started < {limit}:
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _workers_die_at_start(tmp_path, monkeypatch, limit: int):
    """Make the next ``limit`` worker processes of this test die while they start (a real SIGKILL)."""
    folder = tmp_path / "site"
    folder.mkdir()
    count_file = tmp_path / "started"
    (folder / "sitecustomize.py").write_text(DIE_AT_START.format(count_file=str(count_file), limit=limit))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    return count_file


@pytest.mark.slow
def test_a_worker_killed_while_it_starts_costs_no_trial(cortex, tmp_path, monkeypatch, caplog):
    """Probe 20: a worker killed as it started stopped the whole search with a BrokenPipeError.
    Now its trial, which never began, goes to a fresh worker."""
    import numpy as np

    import scanpy_autotune as sat

    count_file = _workers_die_at_start(tmp_path, monkeypatch, limit=2)
    adata = cortex[np.random.default_rng(0).choice(cortex.n_obs, 300, replace=False)].copy()
    with caplog.at_level("WARNING", logger="scanpy_autotune"):
        sat.tl.autotune(adata, max_evals=2, n_workers=1, max_epochs=2, n_mc=2, progress=False)
    trials = adata.uns["autotune"]["trials"]
    assert list(trials["status"]) == ["ok"] * 2  # nothing lost, nothing recorded as died
    assert len(list(tmp_path.glob(count_file.name + ".*"))) == 3  # two killed, the third ran every trial
    restarts = [r.getMessage() for r in caplog.records if "ended while it started" in r.getMessage()]
    assert restarts == ["the worker process on cpu ended while it started (killed by signal 9); "
                        "trial 0 goes to a fresh worker"] * 2


def test_workers_that_never_start_stop_the_search_with_what_to_check(cortex, tmp_path, monkeypatch):
    import scanpy_autotune as sat

    _workers_die_at_start(tmp_path, monkeypatch, limit=10**6)
    adata = cortex[:100].copy()
    with pytest.raises(sat.tl.BackendFailed, match=(
        r"after 0 finished trial\(s\).*RuntimeError: 3 worker processes on cpu in a row ended before they were "
        r"ready \(the last: killed by signal 9\).*can start \(imports torch\)"
    )):
        sat.tl.autotune(adata, max_evals=2, n_workers=1, max_epochs=2, n_mc=2, progress=False)
    assert "autotune" not in adata.uns
    assert worker_processes(os.getpid()) == []


def _unread_bytes(conn) -> int:
    """How many bytes wait in ``conn``'s socket (read nothing)."""
    import fcntl
    import struct
    import termios

    return struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


@pytest.mark.slow
def test_a_rung_report_of_a_worker_that_died_is_not_answered_to_its_replacement(cortex):
    """Probe 21: a worker killed while it waited at a rung left its report in the same poll as its
    death; the answer went to the fresh worker that re-ran the trial, one rung early, and the
    answer left over later crashed that worker. The dead worker's report is now dropped."""
    from scanpy_autotune._search._context import TrialContext
    from scanpy_autotune._vae._data import extract_counts, make_split

    data = extract_counts(cortex[:200].copy())
    split = make_split(data.n_obs, train_size=0.75, validation_size=0.1, seed=0)
    pool = _backends.LocalPool(["cpu"])
    pool.start(TrialContext(data=data, split=split, max_epochs=3, n_mc=2))
    try:
        pool.submit(0, {"n_hidden": 32}, [1])
        first = pool._slots[0]
        ready = 4 + len(pickle.dumps(("ready",), protocol=pickle.HIGHEST_PROTOCOL))  # length header, message
        assert _wait_for(lambda: _unread_bytes(first.conn) > ready, timeout=120), "the worker never reported"
        os.kill(first.process.pid, signal.SIGKILL)  # waiting for the rung's answer
        first.process.wait(timeout=10)
        assert pool.poll(1.0) == []  # the report died with its worker; the trial runs again
        assert pool._slots[0] is not first and pool._slots[0].trial_id == 0
        events = []
        deadline = time.monotonic() + 120
        while not any(e.kind == "done" for e in events) and time.monotonic() < deadline:
            for event in pool.poll(1.0):
                events.append(event)
                if event.kind == "report":  # as the runner does
                    pool.answer(event.trial_id, False)
        assert [(e.kind, e.n_epochs) for e in events if e.kind == "report"] == [("report", 1)]
        assert events[-1].kind == "done" and events[-1].record.status == "ok"
        time.sleep(1.0)
        assert pool._slots[0].alive(), "an answer left in its socket crashed the fresh worker"
    finally:
        pool.shutdown(kill=True)


#: Put on a worker's PYTHONPATH: worker processes after the first ``free`` (counted in ``count_file``)
#: wait, before they import torch or read the trial context, until ``release`` exists (at most 90 s).
WAIT_AT_START = """
import os, sys, time
if "scanpy_autotune._search._worker" in sys.orig_argv:
""" + CLAIM_START_ORDER + """
    if started >= {free}:
        deadline = time.monotonic() + 90
        while not os.path.exists({release!r}) and time.monotonic() < deadline:
            time.sleep(0.05)
        open({woke!r}, "w").write(str(os.path.exists({release!r})))
"""


def _poll_until(pool, wanted, timeout: float = 120) -> list:
    """Poll ``pool`` until ``wanted(events so far)``; every rung report is left unanswered."""
    events = []
    deadline = time.monotonic() + timeout
    while not wanted(events) and time.monotonic() < deadline:
        events.extend(pool.poll(0.5))
    assert wanted(events), f"not within {timeout} s: {events}"
    return events


@pytest.mark.slow
def test_a_fresh_worker_that_is_slow_to_start_holds_up_no_other_trial(cortex, tmp_path, monkeypatch):
    """The context is larger than the socket's buffer, and a fresh worker reads it only once it has
    imported torch. Sent from the driver's thread, it held every other trial's rung answers and
    results until then; a worker that hung while it started hung the whole search."""
    import socket

    import anndata as ad

    from scanpy_autotune._search._context import TrialContext
    from scanpy_autotune._vae._data import extract_counts, make_split

    folder, release, woke = tmp_path / "site", tmp_path / "release", tmp_path / "woke"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(WAIT_AT_START.format(
        count_file=str(tmp_path / "started"), free=2, release=str(release), woke=str(woke)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    cells = ad.concat([cortex] * 4, index_unique="-")  # a context of about 1 MB
    data = extract_counts(cells)
    split = make_split(data.n_obs, train_size=0.75, validation_size=0.1, seed=0)
    pool = _backends.LocalPool(["cpu", "cpu"])
    pool.start(TrialContext(data=data, split=split, max_epochs=2, n_mc=2))
    try:
        probe = socket.socket(fileno=os.dup(pool._slots[0].conn.fileno()))
        assert len(pool._payload) > 2 * probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        probe.close()
        for trial_id in (0, 1):
            pool.submit(trial_id, {"n_hidden": 16}, [1])
        _poll_until(pool, lambda events: sorted(e.trial_id for e in events if e.kind == "report") == [0, 1])
        first = pool._slots[0]
        os.kill(first.process.pid, signal.SIGKILL)  # while trial 0 waits at its rung
        first.process.wait(timeout=10)
        _poll_until(pool, lambda events: pool._slots[0] is not first)  # trial 0 went to a third worker ...
        assert pool._slots[0].trial_id == 0 and not pool._slots[0].ready and pool._slots[0].alive()
        pool.answer(1, False)
        done = _poll_until(pool, lambda events: any(e.kind == "done" for e in events))
        assert [(e.kind, e.trial_id) for e in done] == [("done", 1)] and done[0].record.status == "ok"
        assert not woke.exists()  # ... which had not even imported torch when trial 1 ended
        release.touch()
        events = _poll_until(pool, lambda events: any(e.kind == "report" for e in events))
        assert [(e.kind, e.trial_id, e.n_epochs) for e in events] == [("report", 0, 1)]
        pool.answer(0, False)
        events = _poll_until(pool, lambda events: any(e.kind == "done" for e in events))
        assert [(e.kind, e.trial_id) for e in events] == [("done", 0)] and events[0].record.status == "ok"
        assert woke.read_text() == "True"
    finally:
        pool.shutdown(kill=True)


#: A driver: imports the package (after putting the lab's folder first, or before), starts a worker
#: with the pool's own boot that runs the lab's ``report`` module, prints what the worker printed.
_DRIVER = """
import os, subprocess, sys
lab = {lab!r}
if {lab_first}:
    sys.path.insert(0, lab)
import scanpy_autotune
sys.path.insert(0, lab)
from scanpy_autotune._search._local_pool import WORKER_BOOT, driver_imports, worker_environment
env = worker_environment("cpu", 1, os.environ, imports=driver_imports())
run = subprocess.run([sys.executable, "-c", WORKER_BOOT, "report", "an argument"], env=env,
                     capture_output=True, text=True)
print(scanpy_autotune.__file__, run.stdout, run.stderr, sep="\\n")
"""

_REPORT = """
import os, sys
import scanpy_autotune, lab_objectives
print(scanpy_autotune.__file__, lab_objectives.NAME, os.environ.get("SCANPY_AUTOTUNE_DRIVER_IMPORTS"), sys.argv[1:])
"""


@pytest.mark.slow
def test_a_worker_imports_the_driver_s_copy_of_the_package_and_finds_its_modules(tmp_path):
    # probe 31: a script that put another copy of the package (or its objective's module) on sys.path
    # itself had workers import the installed copy instead, or fail to find the module; probe 33: and
    # one that imported the installed copy before it changed sys.path must not have workers import the
    # other, nor a copy in the working folder
    import shutil

    import scanpy_autotune

    lab = tmp_path / "lab code:v2"  # a folder name with os.pathsep in it
    shutil.copytree(Path(scanpy_autotune.__file__).parent, lab / "scanpy_autotune", ignore=shutil.ignore_patterns("__pycache__"))
    (lab / "lab_objectives.py").write_text("NAME = 'lab objectives'\n")
    (lab / "report.py").write_text(_REPORT)
    copy = str(lab / "scanpy_autotune" / "__init__.py")
    for lab_first, cwd in ((True, tmp_path), (False, lab)):
        driver = tmp_path / "driver.py"  # a script: its own folder, not the working one, is on its path
        driver.write_text(_DRIVER.format(lab=str(lab), lab_first=lab_first))
        run = subprocess.run([sys.executable, str(driver)], cwd=cwd, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        driver_copy, worker, *errors = run.stdout.split("\n")
        assert (driver_copy == copy) is lab_first  # else the copy a fresh interpreter imports
        assert worker == f"{driver_copy} lab objectives None ['an argument']", (lab_first, errors)

