"""The CPU cores this process may use, which is not always the machine's.

``os.cpu_count()`` counts every core of the machine. A Slurm job, ``taskset``
or ``docker --cpuset-cpus`` gives the process fewer (its CPU affinity), and
``docker --cpus`` or a Kubernetes CPU limit caps the time it may use (a
cgroup CPU quota); a Slurm site that neither pins nor constrains its jobs'
cores still says how many a task was given (``SLURM_CPUS_PER_TASK``, or the
job's on this node: ``SLURM_CPUS_ON_NODE``). A search
sized from ``os.cpu_count()`` on a 4-core job of a 128-core node starts 128
workers that share 4 cores. A user's ``OMP_NUM_THREADS`` caps the threads of
each worker, as it caps torch's own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["cgroup_cpu_limit", "thread_ceiling", "usable_cores"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(environ: Mapping[str, str] = os.environ) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota and Slurm's allocation.

    Parameters
    ----------
    environ
        The environment: ``SLURM_CPUS_PER_TASK``, or without it
        ``SLURM_CPUS_ON_NODE`` (the job's cores on this node).

    Returns
    -------
    int
        At least 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    slurm = _positive_int(environ.get("SLURM_CPUS_PER_TASK")) or _positive_int(environ.get("SLURM_CPUS_ON_NODE"))
    for limit in (cgroup_cpu_limit(), slurm):
        if limit is not None:
            cores = min(cores, limit)
    return max(1, cores)


def thread_ceiling(environ: Mapping[str, str] = os.environ) -> int | None:
    """The threads the user allows each process (``OMP_NUM_THREADS``), or ``None`` when not set.

    Parameters
    ----------
    environ
        The environment.

    Returns
    -------
    int or None
        The first level of ``OMP_NUM_THREADS`` (it may list one per nesting level).
    """
    value = environ.get("OMP_NUM_THREADS")
    return _positive_int(value.split(",")[0]) if value else None


def _positive_int(text: str | None) -> int | None:
    """``text`` as a positive integer (digits only), or ``None`` (not set, or not one)."""
    text = (text or "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT, self_cgroup: str | None = None) -> int | None:
    """The smallest CPU quota of this process's cgroup and its parents, in whole cores (rounded up).

    Parameters
    ----------
    root
        Where the cgroup file system is mounted.
    self_cgroup
        The text of ``/proc/self/cgroup`` (default: read it).

    Returns
    -------
    int or None
        ``None`` without a quota (or without cgroups).
    """
    if self_cgroup is None:
        try:
            self_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            self_cgroup = ""
    quotas = [q for q in (*_v2_quotas(root, self_cgroup), *_v1_quotas(root, self_cgroup)) if q is not None]
    if not quotas:
        return None
    return max(1, math.ceil(min(quotas) - 1e-9))


def _v2_quotas(root: Path, self_cgroup: str) -> list[float | None]:
    """cgroup v2: ``cpu.max`` ("quota period", or "max period") of the process's cgroup and each parent."""
    path = next((line[3:] for line in self_cgroup.splitlines() if line.startswith("0::")), None)
    if path is None:
        return []
    return [_ratio(_fields(folder / "cpu.max")) for folder in _up_to(root / path.strip().lstrip("/"), root)]


def _v1_quotas(root: Path, self_cgroup: str) -> list[float | None]:
    """cgroup v1: ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us`` of the cgroup and each parent (-1: none)."""
    for line in self_cgroup.splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if "cpu" not in controllers.split(","):
            continue
        for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
            if mount.is_dir():
                # inside a container's namespace its cgroup is the mount's root, whatever the path says
                folder = mount / path.strip().lstrip("/")
                return [
                    _ratio(_fields(f / "cpu.cfs_quota_us") + _fields(f / "cpu.cfs_period_us"))
                    for f in _up_to(folder if folder.is_dir() else mount, mount)
                ]
    return []


def _up_to(folder: Path, top: Path) -> list[Path]:
    """``folder`` and each folder above it, up to ``top``."""
    folders = [folder]
    while folder != top and top in folder.parents:
        folder = folder.parent
        folders.append(folder)
    return folders


def _fields(path: Path) -> list[str]:
    """The whitespace-separated fields of a cgroup file, none when it cannot be read."""
    try:
        return path.read_text().split()
    except OSError:
        return []


def _ratio(fields: list[str]) -> float | None:
    """Quota over period, or ``None`` for no quota ("max", -1) or an unreadable file."""
    try:
        quota, period = float(fields[0]), float(fields[1])
    except (IndexError, ValueError):  # "max" or damaged
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period
