"""How many trials share a GPU (``trials_per_gpu="auto"``).

One trial of the default model leaves a modern GPU mostly idle: each
minibatch is a few hundred small kernels, and launching them from Python takes
longer than running them. Several trials on one GPU fill it, as long as

- each has a CPU core to launch its kernels from (``cores // gpus`` trials), and
- their memory fits: a CUDA context per process (about 0.5 GiB), the counts on
  the device (dense counts and their ``log1p`` up to 1 GiB, CSR beyond) and the
  model with its optimizer and activations, all in the GPU's *free* memory
  with a margin.

The GPU's free memory is read with ``nvidia-smi`` (no CUDA context is created
in the driver process, which would hold memory for the whole search); where
that is not available, with torch, from the device's total memory. This
module imports no torch at import time.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass

__all__ = ["GPUInfo", "auto_trials_per_gpu", "describe_gpus", "trial_device_bytes"]

logger = logging.getLogger("scanpy_autotune")

#: Memory of one process's CUDA context and the allocator's slack, in bytes.
CUDA_CONTEXT_BYTES = 600 * 2**20
#: Share of a GPU's free memory the trials may plan to use.
MEMORY_MARGIN = 0.8
#: Counts up to this size are kept dense on the device (``_vae._data.DENSE_LIMIT_BYTES``).
DENSE_LIMIT_BYTES = 1 << 30


@dataclass(frozen=True)
class GPUInfo:
    """A GPU as the search sees it: its index among the visible GPUs and its memory."""

    index: int
    free_bytes: int
    total_bytes: int


def trial_device_bytes(
    n_obs: int, n_vars: int, nnz: int, *, n_hidden: int = 256, n_layers: int = 5, batch_size: int = 128
) -> int:
    """What one trial holds on its GPU, in bytes, for the largest network a space can draw.

    The counts (dense counts and ``log1p`` counts, float32, or CSR when larger
    than 1 GiB), the model with its gradients and Adam's two moments, and a
    minibatch's activations (about 40 ``batch x genes`` float32 temporaries in
    the likelihood's forward and backward), plus the CUDA context. The
    defaults are the default space's largest network (5 layers of 256 units).
    """
    dense = n_obs * n_vars * 4
    counts = 2 * dense if dense <= DENSE_LIMIT_BYTES else nnz * 8 + (n_obs + 1) * 8
    per_cell = n_obs * 4 * 4  # library, log library, batch, lgamma(x + 1)
    weights = 2 * n_vars * n_hidden + (n_layers - 1) * n_hidden**2
    model = 4 * weights * 4  # parameters, gradients, Adam's m and v
    activations = 40 * batch_size * n_vars * 4
    return CUDA_CONTEXT_BYTES + counts + per_cell + model + activations


def _visible_indices(n_rows: int) -> list[int] | None:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(n_rows))
    try:
        return [int(v) for v in visible.split(",") if v.strip()]
    except ValueError:  # UUIDs: the order nvidia-smi lists is not theirs
        return None


def describe_gpus() -> list[GPUInfo]:
    """The visible GPUs' free and total memory (``nvidia-smi``, or torch where it is missing)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.free,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        )
        rows = [[int(v) * 2**20 for v in line.split(",")] for line in out.stdout.strip().splitlines()]
        indices = _visible_indices(len(rows))
        if indices is not None and all(0 <= i < len(rows) for i in indices):
            return [GPUInfo(k, rows[i][0], rows[i][1]) for k, i in enumerate(indices)]
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    import torch

    gpus = []
    for k in range(torch.cuda.device_count()):
        total = int(torch.cuda.get_device_properties(k).total_memory)
        gpus.append(GPUInfo(k, int(0.9 * total), total))  # free memory unknown: a tenth taken
    return gpus


def auto_trials_per_gpu(gpus: list[GPUInfo], cores: int, bytes_per_trial: int) -> tuple[int, str]:
    """Trials per GPU: as many as the cores can feed and the least free GPU can hold.

    Returns
    -------
    n, reason
        At least 1, and a sentence that says what limited it.
    """
    by_cores = max(1, cores // max(1, len(gpus)))
    least_free = min(g.free_bytes for g in gpus)
    by_memory = max(1, int(MEMORY_MARGIN * least_free // max(1, bytes_per_trial)))
    n = min(by_cores, by_memory)
    limit = "the CPU cores (one per trial)" if by_cores <= by_memory else "the GPU memory"
    reason = (
        f"{n} trial(s) per GPU, limited by {limit}: {cores} cores for {len(gpus)} GPU(s) feed "
        f"{by_cores}; {least_free / 2**30:.1f} GiB free on the fullest GPU hold {by_memory} trials "
        f"of {bytes_per_trial / 2**30:.2f} GiB"
    )
    return n, reason
