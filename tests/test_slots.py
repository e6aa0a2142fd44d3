"""Slots: how many trials run at once and where, trials_per_gpu="auto" against described machines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scanpy_autotune._search._cores import cgroup_cpu_limit, thread_ceiling, usable_cores
from scanpy_autotune._search._gpu_sizing import (
    CUDA_CONTEXT_BYTES,
    GPUInfo,
    _visible_indices,
    auto_trials_per_gpu,
    trial_device_bytes,
)
from scanpy_autotune._search._slots import parse_gpus, plan_local_slots

GiB = 2**30
H200 = GPUInfo(0, 139 * GiB, 141 * GiB)
CORTEX = trial_device_bytes(3005, 200, 3005 * 200 // 3)
PBMC4K = trial_device_bytes(4271, 2000, 870_065)


def test_a_trial_holds_its_context_counts_model_and_activations():
    # Cortex: dense counts and log1p counts (2 x 2.4 MB) are tiny beside the context
    assert CUDA_CONTEXT_BYTES < CORTEX < CUDA_CONTEXT_BYTES + 64 * 2**20
    # a million cells x 720 genes do not fit the dense limit: CSR, 8 bytes per stored count
    big = trial_device_bytes(1_000_000, 720, 200_000_000)
    assert 1.6e9 < big - CUDA_CONTEXT_BYTES < 1.8e9


def test_a_trial_is_sized_for_the_largest_network_of_its_space():
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from scanpy_autotune._search._search import _trial_device_bytes
    from scanpy_autotune._search._space import build_space
    from scanpy_autotune._vae import HYPERPARAMETERS
    from scanpy_autotune._vae._data import CountData

    X = sp.random(3005, 2000, density=0.1, format="csr", dtype=np.float32, random_state=0)
    data = CountData(X=X, batch=np.zeros(3005, dtype=np.int64), batch_categories=["0"],
                     obs_names=pd.Index([str(i) for i in range(3005)]), var_names=pd.Index([str(g) for g in range(2000)]))
    default = _trial_device_bytes(data, build_space(None, HYPERPARAMETERS))
    assert default == trial_device_bytes(3005, 2000, X.nnz)  # the 2019 space: at most 5 layers of 256
    wide = build_space({"n_hidden": [128, 2048], "n_layers": ("int", 1, 3), "batch_size": 512}, HYPERPARAMETERS)
    assert _trial_device_bytes(data, wide) == trial_device_bytes(3005, 2000, X.nnz, n_hidden=2048, n_layers=3, batch_size=512)
    # weights, gradients and Adam's moments of 2 x 2000 x 2048 + 2 x 2048^2 parameters, and 4x the activations
    assert _trial_device_bytes(data, wide) - default == 16 * (2 * 2000 * 2048 + 2 * 2048**2 - (2 * 2000 * 256 + 4 * 256**2)) + 40 * (512 - 128) * 2000 * 4


def test_auto_is_limited_by_the_cores_on_a_large_gpu():
    n, reason = auto_trials_per_gpu([H200], cores=16, bytes_per_trial=PBMC4K)
    assert n == 16 and "limited by the CPU cores" in reason and "16 cores for 1 GPU(s)" in reason


def test_auto_is_limited_by_the_fullest_gpu_memory():
    small = [GPUInfo(0, 8 * GiB, 16 * GiB), GPUInfo(1, 3 * GiB, 16 * GiB)]  # GPU 1 is mostly taken
    n, reason = auto_trials_per_gpu(small, cores=64, bytes_per_trial=GiB)
    assert n == 2 and "limited by the GPU memory" in reason and "3.0 GiB free" in reason  # 0.8 x 3 GiB / 1 GiB
    one, _ = auto_trials_per_gpu([GPUInfo(0, GiB // 2, GiB)], cores=8, bytes_per_trial=GiB)
    assert one == 1  # never fewer than one trial


def test_plan_with_auto_and_with_an_explicit_number():
    plan = plan_local_slots(None, "all", "auto", cores=16, visible_gpus=1, gpu_info=[H200], bytes_per_trial=CORTEX)
    assert plan.devices == ["cuda:0"] * 16 and plan.trials_per_gpu == 16 and plan.threads_per_worker == 1
    two = [GPUInfo(0, 139 * GiB, 141 * GiB), GPUInfo(1, 139 * GiB, 141 * GiB)]
    plan = plan_local_slots(None, "all", "auto", cores=16, visible_gpus=2, gpu_info=two, bytes_per_trial=CORTEX)
    assert plan.devices == ["cuda:0"] * 8 + ["cuda:1"] * 8
    plan = plan_local_slots(None, [1], 3, cores=16, visible_gpus=2, gpu_info=two)
    assert plan.devices == ["cuda:1"] * 3 and plan.trials_per_gpu == 3 and "as asked" in plan.reason
    plan = plan_local_slots(5, "all", "auto", cores=16, visible_gpus=1, gpu_info=[H200], bytes_per_trial=CORTEX)
    assert len(plan.devices) == 5  # n_workers caps the slots
    cpu = plan_local_slots(None, "all", "auto", cores=4, visible_gpus=0)
    assert cpu.devices == ["cpu"] * 4 and cpu.trials_per_gpu is None


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "four"])
def test_trials_per_gpu_is_auto_or_a_positive_integer(bad):
    with pytest.raises(ValueError, match="trials_per_gpu"):
        plan_local_slots(None, "all", bad, cores=4, visible_gpus=1, gpu_info=[H200])


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _visible_indices(4) == [0, 1, 2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _visible_indices(4) == [2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f2a,GPU-1b3c")
    assert _visible_indices(4) is None  # UUIDs: fall back to torch's view


def test_parse_gpus():
    assert parse_gpus("all") == "all" and parse_gpus("None") is None and parse_gpus(0) is None
    assert parse_gpus(2) == 2 and parse_gpus([0, 2]) == [0, 2]
    for bad in ("bogus", [0, "1"], [], -1, True):
        with pytest.raises(ValueError, match="gpus="):
            parse_gpus(bad)
    with pytest.raises(ValueError, match=r"gpus=\[0, 0, 1\] names GPU\(s\) \[0\] more than once"):
        parse_gpus([0, 0, 1])


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_a_process_given_one_core_plans_one_cpu_worker():
    # as a Slurm job or taskset gives it: os.cpu_count() still counts the machine's cores
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "from scanpy_autotune._search._slots import plan_local_slots\n"
        "plan = plan_local_slots(None, None)\n"
        "print(os.cpu_count(), plan.devices, plan.threads_per_worker)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert out[1].strip() == "['cpu'] 1"
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores({}) == min(affinity, cgroup_cpu_limit() or affinity)  # no Slurm variables


def _cgroup_tree(root, files):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_quota_of_the_process_and_its_parents(tmp_path):
    root = _cgroup_tree(tmp_path, {
        "cpu.max": "max 100000\n",
        "kubepods/cpu.max": "250000 100000\n",  # 2.5 cores: 3 workers share them
        "kubepods/pod1/cpu.max": "max 100000\n",
    })
    assert cgroup_cpu_limit(root, "0::/kubepods/pod1\n") == 3
    _cgroup_tree(tmp_path, {"kubepods/pod1/cpu.max": "50000 100000\n"})
    assert cgroup_cpu_limit(root, "0::/kubepods/pod1\n") == 1  # half a core: still one worker
    assert cgroup_cpu_limit(root, "0::/\n") is None  # a container's own namespace without a limit
    assert cgroup_cpu_limit(tmp_path / "absent", "0::/\n") is None


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    root = _cgroup_tree(tmp_path, {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    })
    v1 = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"
    assert cgroup_cpu_limit(root, v1) == 2
    _cgroup_tree(tmp_path, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1\n"})
    assert cgroup_cpu_limit(root, v1) is None
    assert cgroup_cpu_limit(root, "") is None
    # a quota on a parent (a pod, a slice) holds for its children, as on v2
    _cgroup_tree(tmp_path, {"cpu,cpuacct/docker/cpu.cfs_quota_us": "150000\n",
                            "cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(root, v1) == 2
    # inside a container's namespace the host's path does not exist there: the mount's root is its cgroup
    assert cgroup_cpu_limit(root, "4:cpu,cpuacct:/kubepods/x\n") is None


def test_slurm_s_allocation_caps_the_cores_and_omp_num_threads_the_threads_of_each_worker():
    # a Slurm site that neither pins nor constrains cores still sets SLURM_CPUS_PER_TASK
    machine = usable_cores({})
    assert usable_cores({"SLURM_CPUS_PER_TASK": "1"}) == 1
    assert usable_cores({"SLURM_CPUS_PER_TASK": str(machine + 8)}) == machine  # never more than the affinity
    assert usable_cores({"SLURM_CPUS_PER_TASK": "not a number"}) == machine
    assert usable_cores({"SLURM_CPUS_PER_TASK": "2_0"}) == machine  # int() would read 20
    assert usable_cores({"SLURM_CPUS_ON_NODE": "1"}) == 1  # a job without --cpus-per-task
    assert thread_ceiling({"OMP_NUM_THREADS": " 3"}) == 3 and thread_ceiling({"OMP_NUM_THREADS": "4,2"}) == 4
    assert thread_ceiling({}) is None and thread_ceiling({"OMP_NUM_THREADS": "0"}) is None
    # one worker on 8 cores takes 8 threads, or the user's OMP_NUM_THREADS when fewer, and says so
    assert plan_local_slots(1, None, cores=8, thread_limit=99).threads_per_worker == 8
    plan = plan_local_slots(1, None, cores=8, thread_limit=2)
    assert plan.devices == ["cpu"] and plan.threads_per_worker == 2
    assert plan_local_slots(None, None, cores=8, thread_limit=2).threads_per_worker == 1
    gpu = plan_local_slots(None, "all", 2, cores=16, visible_gpus=1, gpu_info=[H200], thread_limit=3)
    assert gpu.threads_per_worker == 3
    assert plan_local_slots(1, None, cores=8, thread_limit=99).reason.endswith(", 8 torch thread(s) each")
    assert plan.reason.startswith("1 CPU worker(s) on 8 usable core(s)")
    assert plan.reason.endswith(", 2 torch thread(s) each (OMP_NUM_THREADS; 8 without it)")
    assert gpu.reason.endswith("; 3 torch thread(s) each (OMP_NUM_THREADS; 8 without it)")
