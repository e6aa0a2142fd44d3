"""The search on a real Dask cluster (``distributed.LocalCluster`` of 2 worker processes)."""

import logging
import os
import signal
import sys
import time

import anndata as ad
import numpy as np
import pytest
from _helpers import interrupt_when, journal_trials

import scanpy_autotune as sat

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow  # end-to-end: real worker processes

SMALL = dict(max_epochs=4, n_mc=5, progress=False)


def _subset(cortex: ad.AnnData, n: int = 400) -> ad.AnnData:
    return cortex[np.random.default_rng(0).choice(cortex.n_obs, n, replace=False)].copy()


@pytest.fixture
def small(cortex):
    return _subset(cortex)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes (each trial gets a process of its own)."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # worker restarts are expected
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _wait_for_two_workers(client) -> None:
    """Tests that kill workers leave the cluster whole for the next test."""
    client.wait_for_workers(2, timeout=60)


def test_dask_search_has_the_local_schema(small, client):
    from scanpy_autotune._search._dask._worker import fetch_count

    before = client.run(fetch_count)
    dask_run = small.copy()
    sat.tl.autotune(dask_run, backend="dask", client=client, max_evals=6, **SMALL)
    after = client.run(fetch_count)
    # the data reaches each worker process once, not once per trial
    assert all(after[w] - before.get(w, 0) <= 1 for w in after) and sum(after.values()) >= 1
    local_run = small.copy()
    sat.tl.autotune(local_run, max_evals=2, n_workers=2, **{**SMALL, "max_epochs": 2})

    ours, theirs = dask_run.uns["autotune"], local_run.uns["autotune"]
    assert set(ours) == set(theirs)
    assert list(ours["trials"].columns) == list(theirs["trials"].columns)
    assert set(ours["history"]) == set(theirs["history"])
    assert set(ours["params"]) == set(theirs["params"])
    assert ours["params"]["backend"] == "dask" and ours["params"]["n_workers"] == 2

    trials = ours["trials"]
    assert list(trials["trial_id"]) == list(range(6))
    assert (trials["status"] == "ok").all() and np.isfinite(trials["loss"]).all()
    assert set(trials["device"]) == {"cpu"}
    assert bool(trials.iloc[0]["is_default"]) and ours["default"]["trial_id"] == 0
    assert ours["best"]["loss"] == trials["loss"].min()
    assert dask_run.obsm["X_autotune"].shape == (small.n_obs, ours["best"]["params"]["n_latent"])
    assert client.scheduler_info(n_workers=-1)["workers"]  # the user's client stays open


def _search_tasks(dask_scheduler) -> list[str]:
    return [str(key) for key in dask_scheduler.tasks if str(key).startswith("scanpy-autotune-")]


def test_the_cluster_keeps_no_trial_result_after_the_search(small, client):
    """Probe 19: a finished trial's future, held in a reference cycle until Python's garbage collector
    ran, kept its result on the cluster (and closing the cluster warned that it lost it)."""
    import gc

    gc.disable()  # what a reference cycle holds stays held: the driver must release it itself
    try:
        sat.tl.autotune(small, backend="dask", client=client, max_evals=2, **{**SMALL, "max_epochs": 2})
        deadline = time.monotonic() + 10
        while client.run_on_scheduler(_search_tasks) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.run_on_scheduler(_search_tasks) == []
    finally:
        gc.enable()


def _callbacks_running(dask_worker) -> dict:
    from scanpy_autotune._search._dask._worker import PAUSED_CALLBACKS

    return {n: dask_worker.periodic_callbacks[n].is_running() for n in PAUSED_CALLBACKS if n in dask_worker.periodic_callbacks}


def test_worker_profilers_are_paused_during_the_search_only(small, client):
    """The 10-20 ms callbacks (profiler, tick) that take the GIL from training are off while trials run."""
    from distributed import get_worker

    before = client.run(_callbacks_running)
    assert before and all(all(running.values()) and running for running in before.values())

    def objective(model, heldout):  # runs in the worker, right after training
        return 1.0 if not any(_callbacks_running(get_worker()).values()) else 2.0

    sat.tl.autotune(small, backend="dask", client=client, max_evals=3, objective=objective, **SMALL)
    assert list(small.uns["autotune"]["trials"]["loss"]) == [1.0, 1.0, 1.0]
    assert client.run(_callbacks_running) == before


def _set_allowed_failures(client, n: int) -> int:
    """Worker deaths the scheduler absorbs by rescheduling a task before it raises KilledWorker."""

    def swap(dask_scheduler, n=n):
        old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, n
        return old

    return client.run_on_scheduler(swap)


def test_worker_killed_mid_search(small, client, tmp_path):
    """A worker SIGKILLed during a trial costs nothing: the trial runs again; max_evals records.

    With ``allowed-failures`` 0 the scheduler gives up on the task at once
    (``KilledWorker``) and the backend itself starts the trial again.
    """
    marker = tmp_path / "killed-once"

    def objective(model, heldout):
        try:  # exactly one trial of the two running at once wins the marker
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return model.marginal_nll(heldout, n_mc=3, cells="all")
        os.kill(os.getpid(), signal.SIGKILL)

    old = _set_allowed_failures(client, 0)
    try:
        sat.tl.autotune(
            small, backend="dask", client=client, max_evals=5, objective=objective, **SMALL
        )
    finally:
        _set_allowed_failures(client, old)
    assert marker.exists()
    trials = small.uns["autotune"]["trials"]
    assert len(trials) == 5 and sorted(trials["trial_id"]) == list(range(5))
    assert (trials["status"] == "ok").all(), trials[["trial_id", "status", "error"]]
    _wait_for_two_workers(client)


def test_trial_that_kills_its_worker_twice_fails(small, client):
    """The default trial (n_hidden=128) kills every worker it runs on: retried once, then failed.

    With the default ``allowed-failures`` the scheduler restarts the task
    itself after a worker death; the trial still runs at most twice.
    """

    def objective(model, heldout):
        if model.hyperparameters["n_hidden"] == 128:
            os.kill(os.getpid(), signal.SIGKILL)
        return model.marginal_nll(heldout, n_mc=3, cells="all")

    sat.tl.autotune(
        small, backend="dask", client=client, max_evals=3, objective=objective,
        space={"n_hidden": [16, 32]}, **SMALL,
    )
    trials = small.uns["autotune"]["trials"].set_index("trial_id")
    assert sorted(trials.index) == [0, 1, 2]
    assert trials.loc[0, "status"] == "fail" and trials.loc[0, "error"].startswith("WorkerDied")
    assert (trials.loc[[1, 2], "status"] == "ok").all()
    _wait_for_two_workers(client)


def _lost(x):
    raise RuntimeError("the workers holding the data died")


def test_lost_data_is_sent_again_when_a_send_drops(client, monkeypatch):
    """Re-sending the search's data survives a scatter whose connection drops (a worker restarting
    under it), and gives up with a clear error when the cluster never takes it."""
    from distributed.comm.core import CommClosedError

    from scanpy_autotune._search._dask import DaskBackend, _driver
    from scanpy_autotune._search._dask._protocol import SearchRef

    backend = DaskBackend.create(client=client)
    backend._payload = np.arange(10)  # scattered whole, as the real payload (one object)
    backend._ref = SearchRef("resend-test")
    lost = client.submit(_lost, 0, pure=False)  # a future whose data no worker holds
    distributed.wait([lost])
    backend._payload_future = lost
    scatter = client.scatter
    drops = []

    def dropping(*args, **kwargs):
        if len(drops) < 2:
            drops.append(1)
            raise CommClosedError("in <TCP (closed) ConnectionPool.scatter>: Stream is closed")
        return scatter(*args, **kwargs)

    monkeypatch.setattr(client, "scatter", dropping)
    backend._check_payload()
    assert len(drops) == 2 and backend._payload_future.status == "finished"
    assert client.get_dataset(backend._ref.dataset).result().tolist() == list(range(10))

    def never(*args, **kwargs):
        raise CommClosedError("in <TCP (closed) ConnectionPool.scatter>: Stream is closed")

    backend._payload_future = lost
    monkeypatch.setattr(client, "scatter", never)
    monkeypatch.setattr(_driver, "RESEND_PAYLOAD_S", 1.5)
    with pytest.raises(RuntimeError, match="lost the search's data.*within 2 s.*CommClosedError"):
        backend._check_payload()
    client.unpublish_dataset(backend._ref.dataset)


def test_rung_reports_reach_the_pruner(small, client, monkeypatch):
    """Trials report at the rungs through Dask queues and stop when the driver says so."""
    from scanpy_autotune._search._dask import DaskBackend

    answers = []
    answer = DaskBackend.answer

    def counting(self, trial_id, stop):
        answers.append((trial_id, stop))
        return answer(self, trial_id, stop)

    monkeypatch.setattr(DaskBackend, "answer", counting)
    sat.tl.autotune(small, backend="dask", client=client, max_evals=6, pruner="asha",
                    pruner_kwargs=dict(min_epochs=1, eta=2, min_trials_per_rung=1), **SMALL)
    trials = small.uns["autotune"]["trials"]
    assert len(trials) == 6 and set(trials["status"]) <= {"ok", "pruned"}
    assert {trial_id for trial_id, _ in answers} == set(range(6))  # every trial reached rung 1
    stopped = {trial_id for trial_id, stop in answers if stop}
    assert stopped == set(trials.loc[trials["status"] == "pruned", "trial_id"])
    for _, row in trials[trials["status"] == "pruned"].iterrows():
        assert row["n_epochs"] < SMALL["max_epochs"]






def test_ctrl_c_of_the_driver_then_resume(small, client, tmp_path):
    journal = tmp_path / "search.jsonl"
    max_evals = 6
    watcher = interrupt_when(journal, 2)
    with pytest.raises(KeyboardInterrupt):
        sat.tl.autotune(small, backend="dask", client=client, max_evals=max_evals,
                        journal=journal, **SMALL)
    watcher.join()
    kept = journal_trials(journal)
    assert 2 <= len(kept) < max_evals
    assert sorted(small.uns["autotune"]["trials"]["trial_id"]) == sorted(r["trial_id"] for r in kept)

    sat.tl.autotune(small, backend="dask", client=client, max_evals=max_evals,
                    journal=journal, **SMALL)
    final = journal_trials(journal)
    ids = [r["trial_id"] for r in final]
    assert len(ids) == max_evals == len(set(ids))
    assert final[: len(kept)] == kept  # resumed trials are kept as they were, not re-run
    assert len(small.uns["autotune"]["trials"]) == max_evals


def test_workers_read_data_path(small, client, tmp_path):
    path = tmp_path / "small.h5ad"
    small.write_h5ad(path)
    sat.tl.autotune(small, backend="dask", client=client, data_path=path, max_evals=2,
                    include_default=False, **SMALL)
    trials = small.uns["autotune"]["trials"]
    assert len(trials) == 2 and (trials["status"] == "ok").all()

    other = small[:300].copy()
    other.write_h5ad(path)
    with pytest.raises(ValueError, match="does not hold the counts"):
        sat.tl.autotune(small, backend="dask", client=client, data_path=path, max_evals=2, **SMALL)



def _leave_a_stale_gather(client) -> bool:
    """Cancel gathers at successive points until one leaves the client's shared gather stale.

    This is the state Ctrl-C during ``future.result()`` can leave behind
    (dask/distributed#8514); returns False where this ``distributed`` never does.
    """
    import asyncio

    done = client.submit(int, 7, pure=False)
    assert done.result() == 7

    async def cancel_after(n_steps: int) -> bool:
        task = asyncio.ensure_future(client._gather([done]))
        for _ in range(n_steps):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except BaseException:
            pass
        return client._gather_future is not None

    return any(client.sync(cancel_after, n) for n in range(30))


def test_a_gather_left_stale_by_ctrl_c_does_not_break_the_next_search(small, client):
    from scanpy_autotune._search._dask import clear_stale_gather

    if not _leave_a_stale_gather(client):
        pytest.skip("this distributed leaves no stale gather after a cancelled one")
    assert client._gather_future.done()
    sat.tl.autotune(small, backend="dask", client=client, max_evals=2, include_default=False,
                    **SMALL)
    trials = small.uns["autotune"]["trials"]
    assert len(trials) == 2 and (trials["status"] == "ok").all()

    assert _leave_a_stale_gather(client)
    clear_stale_gather(client)
    assert client._gather_future is None
    assert client.gather(client.submit(int, 3, pure=False)) == 3



def _hold_the_lock_and_use_the_loop(ref):
    """A task that fetches as ``worker_context`` does: under the worker's lock, through its loop.

    Then asks for the search's context again, as a task restarted after the
    search ended would.
    """
    import time

    from distributed import Event, get_client

    from scanpy_autotune._search._dask._worker import worker_context, worker_state

    state = worker_state()
    with state.lock:
        Event("holding-the-lock").set()
        time.sleep(1.0)  # the driver's client.run(forget_context) reaches the loop meanwhile
        fetched = get_client().get_dataset(ref.dataset).result()
    try:
        worker_context(ref)
    except RuntimeError as err:
        return fetched, str(err), ref.search_id in state.contexts
    return fetched, "", ref.search_id in state.contexts


def test_forgetting_a_search_while_a_task_fetches_does_not_deadlock():
    import threading

    from scanpy_autotune._search._dask._protocol import SearchRef
    from scanpy_autotune._search._dask._worker import forget_context, register_worker_state

    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
    ) as cluster, distributed.Client(cluster) as own:
        register_worker_state(own)
        ref = SearchRef("forget-test")
        payload = own.scatter(41, broadcast=True)
        own.publish_dataset(payload, name=ref.dataset)
        task = own.submit(_hold_the_lock_and_use_the_loop, ref, pure=False)
        assert distributed.Event("holding-the-lock", client=own).wait(timeout=60)
        forgot = threading.Thread(target=own.run, args=(forget_context, ref.search_id))
        forgot.start()
        forgot.join(timeout=30)
        assert not forgot.is_alive(), "client.run(forget_context) waited for the task's lock"
        fetched, error, cached = task.result(timeout=30)
    assert fetched == 41
    assert error == "the search forget-test has ended on the driver" and not cached


def _state_id(dask_worker) -> int:
    from scanpy_autotune._search._dask._worker import worker_state

    return id(worker_state(dask_worker))


def test_each_worker_keeps_its_state_across_registrations(client):
    """Every search registers the worker state again; the workers keep the one they have."""
    from scanpy_autotune._search._dask._worker import register_worker_state

    register_worker_state(client)
    before = client.run(_state_id)
    register_worker_state(client)
    assert len(before) == 2 and client.run(_state_id) == before


def test_gpu_resources_are_the_slots(small, caplog):
    """Workers with ``--resources GPU=1``: one trial per GPU unit, on CUDA when torch sees one."""
    import torch

    from scanpy_autotune._search._dask import DaskBackend

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=False, resources={"GPU": 1},
        dashboard_address=":0",
    ) as cluster, distributed.Client(cluster) as gpu_client:
        backend = DaskBackend.create(client=gpu_client)
        assert backend.n_slots == 2 and backend.resources == {"GPU": 1}
        assert DaskBackend.create(client=gpu_client, n_workers=1).n_slots == 1
        with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
            sat.tl.autotune(small, backend="dask", client=gpu_client, max_evals=2,
                            include_default=False, **{**SMALL, "max_epochs": 2})
        trials = small.uns["autotune"]["trials"]
        assert (trials["status"] == "ok").all()
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        assert all(device.startswith(expected) for device in trials["device"])
        blind = [r.getMessage() for r in caplog.records if "torch sees no CUDA device" in r.getMessage()]
        if torch.cuda.is_available():
            assert blind == []
        else:  # both workers declare a GPU that torch cannot see: said once, naming them
            assert len(blind) == 1 and blind[0].startswith("dask: 2 worker(s) declare a GPU")
            assert all(address in blind[0] for address in gpu_client.scheduler_info()["workers"])
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=3, processes=False, dashboard_address=":0",
    ) as cluster, distributed.Client(cluster) as cpu_client:
        backend = DaskBackend.create(client=cpu_client)
        assert backend.n_slots == 3 and backend.resources is None


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(), ValueError, "client="),
        (dict(client="tcp://127.0.0.1:1"), ValueError, "distributed.Client"),
        (dict(scheduler="tcp://127.0.0.1:8786", client=object()), ValueError, "not both"),
        (dict(scheduler="tcp://127.0.0.1:8786", data_path="/nonexistent/x.h5ad"), ValueError,
         "data_path"),
        (dict(scheduler="tcp://127.0.0.1:8786", data_path=123), ValueError,
         r"data_path=123 must be the path of an .h5ad file"),
        ("closed", ValueError, r"client= is closed; pass an open distributed.Client"),
    ],
)
def test_bad_dask_arguments_fail_fast(small, kwargs, error, message):
    if kwargs == "closed":
        with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
            closed = distributed.Client(cluster)
            closed.close()
        kwargs = dict(client=closed)
    with pytest.raises(error, match=message):
        sat.tl.autotune(small, backend="dask", max_evals=2, **SMALL, **kwargs)
    assert "autotune" not in small.uns


def test_without_distributed_the_error_names_the_extra(small, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ImportError, match=r'the "dask" extra \(in a clone of scanpy-autotune: pip install -e "\.\[dask\]"\)'):
        sat.tl.autotune(small, backend="dask", scheduler="tcp://127.0.0.1:8786", max_evals=2,
                        **SMALL)
    assert "autotune" not in small.uns


def test_an_address_that_never_answers_dask_fails_fast(small):
    """A scheduler= that accepts connections but never speaks Dask (a dashboard's or another
    HTTP port) is refused after the connect timeout; ``distributed.Client`` alone waits forever."""
    import http.server
    import socketserver
    import threading

    import dask

    server = socketserver.TCPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"tcp://127.0.0.1:{server.server_address[1]}"
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), pytest.raises(
            ValueError, match=r"cannot connect to the Dask scheduler at scheduler='tcp://127\.0\.0\.1:"
            r"\d+' \(TimeoutError: no Dask handshake within 2 s\)",
        ):
            sat.tl.autotune(small, backend="dask", scheduler=address, max_evals=2, **SMALL)
    finally:
        server.shutdown()
        server.server_close()
    assert "autotune" not in small.uns


_KILLED_DRIVER = """
import sys
import anndata as ad
import scanpy_autotune as sat
sat.tl.autotune(ad.read_h5ad(sys.argv[1]), backend="dask", scheduler=sys.argv[2], max_evals=50,
                max_epochs=400, n_mc=5, progress=False)
"""


def _ended_searches(dask_worker) -> list[str]:
    from scanpy_autotune._search._dask._worker import worker_state

    return sorted(worker_state(dask_worker).ended)


def test_data_left_by_a_killed_driver_is_removed_by_the_next_search(small, client, tmp_path):
    """A driver killed mid-search cannot unpublish its data; the next search on the cluster
    removes it (and has the workers forget its context), and keeps a live driver's data."""
    import subprocess
    import time

    from scanpy_autotune._search._dask._protocol import SearchRef, payload_owner

    small.write_h5ad(tmp_path / "small.h5ad")
    with distributed.Client(client.scheduler.address, set_as_default=False) as live:
        alive = SearchRef("live-search", driver=live.id)  # another driver, still running
        live.publish_dataset(live.scatter(1, hash=False), name=alive.dataset)
        driver = subprocess.Popen(
            [sys.executable, "-c", _KILLED_DRIVER, str(tmp_path / "small.h5ad"),
             client.scheduler.address],
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and driver.poll() is None:
                owners = [payload_owner(name) for name in client.list_datasets()]
                killed = [owner for owner in owners if owner and owner[0] != "live-search"]
                if killed:
                    break
                time.sleep(0.2)
            assert killed, "the driver never published its data"
        finally:
            driver.kill()
            driver.wait()
        (search_id, _), = killed
        left = [name for name in client.list_datasets() if payload_owner(name)]
        assert len(left) == 2  # the killed driver's and the live one's

        sat.tl.autotune(small, backend="dask", client=client, max_evals=2, include_default=False,
                        **SMALL)
        assert (small.uns["autotune"]["trials"]["status"] == "ok").all()
        assert list(client.list_datasets()) == [alive.dataset]
        assert all(search_id in ended for ended in client.run(_ended_searches).values())
        live.unpublish_dataset(alive.dataset)
    _wait_for_two_workers(client)


def test_a_cluster_closed_mid_search_keeps_the_finished_trials_and_says_so(small, tmp_path):
    """The scheduler goes away: no minute of retries; the trials that finished are kept."""
    import threading
    import time

    from _helpers import journal_trials as finished

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    own = distributed.Client(cluster)
    journal = tmp_path / "search.jsonl"

    def close_after_two_trials():
        deadline = time.time() + 300
        while time.time() < deadline:
            if journal.exists() and len(finished(journal)) >= 2:
                cluster.close()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=close_after_two_trials, daemon=True)
    watcher.start()
    try:
        with pytest.raises(sat.tl.BackendFailed) as info:
            sat.tl.autotune(small, max_evals=12, backend="dask", client=own, journal=journal, **SMALL)
    finally:
        watcher.join()
        own.close()
    message = str(info.value)
    assert "which are kept" in message
    assert "no longer answers" in message or "client is clos" in message  # no minute of retries
    kept = small.uns["autotune"]["trials"]
    assert len(kept) >= 2 and set(kept["trial_id"]) == {t["trial_id"] for t in finished(journal)}
