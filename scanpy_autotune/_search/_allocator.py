"""The C allocator of a process that trains models: undo thresholds that make training slow.

Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` in its
environment (``distributed.nanny.pre-spawn-environ``) so that freed memory
goes back to the operating system quickly. Setting any of glibc's malloc
thresholds through the environment also switches off glibc's *dynamic* mmap
threshold, so every block above 128 KiB is a fresh ``mmap`` that is
page-faulted in and unmapped again when freed. A training step allocates and
frees dozens of such blocks (the activations of a minibatch), and epochs ran
about 40% slower in such a process (benchmarks/results/dask_overhead.md).
:func:`restore_dynamic_thresholds` sets the thresholds back to what glibc's
dynamic rule would reach for blocks of up to 32 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger("scanpy_autotune")

# glibc's environment variables for malloc thresholds; any of them disables the dynamic threshold.
MALLOC_ENVIRONMENT = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)
# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The ceiling of glibc's dynamic mmap threshold on 64-bit systems; glibc then trims at twice it.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD


def restore_dynamic_thresholds() -> bool:
    """Give this process glibc's large-block thresholds back when the environment fixed them.

    Returns
    -------
    bool
        Whether the thresholds were changed: only on Linux with glibc, and only
        when one of :data:`MALLOC_ENVIRONMENT` is set (otherwise glibc's
        dynamic threshold already does this).
    """
    found = [name for name in MALLOC_ENVIRONMENT if name in os.environ]
    if not found or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    changed = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if changed:
        logger.debug(
            "malloc thresholds set to mmap %d, trim %d bytes (the environment had %s)",
            MMAP_THRESHOLD, TRIM_THRESHOLD, ", ".join(found),
        )
    return changed
