"""One optimisation step per minibatch, eager or replayed as a CUDA graph.

On a GPU a minibatch of the default model is a few hundred small kernels, and
launching them from Python takes longer than running them (about 4.7 ms per
step on an H200, ``benchmarks/results/peer_scvi_gpu.md``): the device waits
for the host. A CUDA graph records the whole step (the rows' gather, forward,
backward and Adam) once and replays it with one launch. Nothing in the step
waits for the device: the KL weight, the learning rate and the epoch's ELBO
sum live in device tensors, the rows enter through a fixed buffer that is
overwritten before each replay, and the non-zeros of a minibatch are a mask
(:class:`~scanpy_autotune._vae._likelihood.NonZeros` on a GPU), not a
data-dependent index. A trial has at most two minibatch shapes (full ones and
the last), so at most two graphs.

Graphs are used on CUDA devices with dense counts only. CSR counts are
densified per minibatch through ``repeat_interleave``, whose output size
depends on the data, so that path stays eager. Where capture fails (an
operation that cannot be captured, an old driver), training goes on eagerly
and the reason is logged once per process. ``SCANPY_AUTOTUNE_CUDA_GRAPHS=0``
turns graphs off (the search's workers inherit it).
"""

from __future__ import annotations

import os

import torch

from ._data import DeviceCounts
from ._log import log_once
from ._module import VAE
from ._optim import FlatAdam

__all__ = ["GRAPHS_ENV", "GraphedTrainStep", "TrainStep", "graphs_choice"]

#: Environment variable that turns CUDA graphs off when set to ``0``.
GRAPHS_ENV = "SCANPY_AUTOTUNE_CUDA_GRAPHS"
#: Eager steps of a shape before it is captured (allocator and library warm-up).
WARMUP_STEPS = 3

def graphs_choice(device: torch.device, data: DeviceCounts, requested: bool | None) -> tuple[bool, str]:
    """Whether training on ``device`` replays CUDA graphs, and why not when it does not.

    Parameters
    ----------
    device
        The training device.
    data
        The counts on it (graphs need dense counts).
    requested
        ``True``/``False`` force the choice where possible; ``None`` follows
        :data:`GRAPHS_ENV` (on unless it is ``0``).

    Returns
    -------
    use, reason
        ``reason`` is empty when graphs are used.
    """
    if requested is None:
        requested = os.environ.get(GRAPHS_ENV, "1").strip() != "0"
    if not requested:
        return False, "CUDA graphs are turned off"
    if device.type != "cuda":
        return False, f"CUDA graphs need a CUDA device, training runs on {device.type}"
    if not data.dense:
        return False, "CUDA graphs need dense counts; these are densified per minibatch from CSR"
    return True, ""


class TrainStep:
    """One eager optimisation step on the given rows.

    Parameters
    ----------
    module, data, optimizer
        The VAE, its counts on the device and its optimizer.
    kl_weight
        0-d device tensor: the weight of KL(z) in the loss (set per epoch).
    total
        0-d device tensor: the step adds its minibatch's summed negative ELBO
        (without ``lgamma(x + 1)``), so an epoch needs one read of it.
    """

    def __init__(
        self, module: VAE, data: DeviceCounts, optimizer: FlatAdam, kl_weight: torch.Tensor, total: torch.Tensor
    ) -> None:
        self.module, self.data, self.optimizer = module, data, optimizer
        self.kl_weight, self.total = kl_weight, total

    def __call__(self, rows: torch.Tensor) -> None:
        x, x_log1p, nz = self.data.rows_and_nonzeros(rows)
        recon, kl_z, kl_l = self.module(x, x_log1p, self.data.log_library[rows], self.data.batch[rows], nz)
        loss = (recon + self.kl_weight * kl_z + kl_l).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.total += (recon + kl_z + kl_l).detach().sum()


class GraphedTrainStep:
    """:class:`TrainStep` captured once per minibatch size and replayed.

    The first :data:`WARMUP_STEPS` minibatches of each size run eagerly on a
    side stream (they are real steps); the next is captured and replayed, and
    so is every later one of that size. If a capture fails, this and every
    later step run eagerly, and the reason is logged once.
    """

    def __init__(self, step: TrainStep) -> None:
        self.step = step
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.rows: dict[int, torch.Tensor] = {}
        self.warm: dict[int, int] = {}
        self.failed = ""
        self.pool = None
        self.side = torch.cuda.Stream(device=step.data.device)

    def __call__(self, rows: torch.Tensor) -> None:
        if self.failed:
            self.step(rows)
            return
        size = int(rows.shape[0])
        graph = self.graphs.get(size)
        if graph is None:
            if self.warm.get(size, 0) < WARMUP_STEPS:
                self._eager_on_side_stream(rows)
                self.warm[size] = self.warm.get(size, 0) + 1
                return
            graph = self._capture(rows)
            if graph is None:
                self.step(rows)
                return
        self.rows[size].copy_(rows)
        graph.replay()

    def _eager_on_side_stream(self, rows: torch.Tensor) -> None:
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            self.step(rows)
        torch.cuda.current_stream().wait_stream(self.side)

    def _capture(self, rows: torch.Tensor) -> torch.cuda.CUDAGraph | None:
        size = int(rows.shape[0])
        static = rows.clone()
        graph = torch.cuda.CUDAGraph()
        try:
            torch.cuda.synchronize(self.step.data.device)
            with torch.cuda.graph(graph, pool=self.pool):
                self.step(static)
        except Exception as error:  # noqa: BLE001 - any capture failure means: train eagerly
            self.failed = f"{type(error).__name__}: {error}"
            torch.cuda.synchronize(self.step.data.device)
            log_once(f"CUDA graph capture failed ({self.failed}); training eagerly")
            return None
        if self.pool is None:
            self.pool = graph.pool()
        self.graphs[size], self.rows[size] = graph, static
        return graph
