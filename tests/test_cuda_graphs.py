"""The training step replayed as CUDA graphs: when it is used, and that it changes no number.

The choice and the optimizer it needs are checked on the CPU; the graphed training
itself needs a CUDA device (tests marked ``cuda``, run by ``benchmarks/gpu_session.sh``).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import scanpy_autotune as sat
from scanpy_autotune._vae._optim import FlatAdam
from scanpy_autotune._vae._step import GRAPHS_ENV, graphs_choice


@pytest.mark.parametrize(
    ("device", "dense", "requested", "env", "use", "reason"),
    [
        ("cuda", True, None, None, True, ""),
        ("cuda", True, None, "0", False, "turned off"),
        ("cuda", True, False, None, False, "turned off"),
        ("cuda", False, None, None, False, "need dense counts"),
        ("cpu", True, None, None, False, "need a CUDA device, training runs on cpu"),
        ("cpu", True, True, None, False, "need a CUDA device"),
    ],
)
def test_graphs_are_used_on_cuda_with_dense_counts_unless_turned_off(
    monkeypatch, device, dense, requested, env, use, reason
):
    if env is None:
        monkeypatch.delenv(GRAPHS_ENV, raising=False)
    else:
        monkeypatch.setenv(GRAPHS_ENV, env)
    chosen, why = graphs_choice(torch.device(device), SimpleNamespace(dense=dense), requested)
    assert chosen is use and reason in why and (why == "") is use


def test_the_capturable_optimizer_steps_exactly_like_the_plain_one():
    """Under graphs the learning rate is a device tensor changed in place; the updates must not change."""
    torch.manual_seed(0)
    modules = [torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)) for _ in range(2)]
    modules[1].load_state_dict(modules[0].state_dict())
    optimizers = [FlatAdam(m, lr=1e-2, eps=0.01, weight_decay=1e-6, capturable=c) for m, c in zip(modules, (False, True))]
    assert isinstance(optimizers[1].optimizer.param_groups[0]["lr"], torch.Tensor)
    lr_tensor = optimizers[1].optimizer.param_groups[0]["lr"]
    x = torch.randn(16, 6)
    for step in range(12):
        if step == 6:
            for opt in optimizers:
                opt.lr *= 0.5  # reduce_lr_on_plateau
        for module, opt in zip(modules, optimizers):
            opt.zero_grad()
            module(x).pow(2).mean().backward()
            opt.step()
    assert optimizers[1].optimizer.param_groups[0]["lr"] is lr_tensor  # changed in place, not replaced
    assert optimizers[0].lr == pytest.approx(5e-3) and optimizers[1].lr == pytest.approx(5e-3, rel=1e-6)
    torch.testing.assert_close(optimizers[0].flat.detach(), optimizers[1].flat.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.cuda
def test_graphed_training_gives_the_eager_numbers(cortex):
    eager = sat.Model.fit(cortex, max_epochs=30, seed=0, device="cuda", cuda_graphs=False)
    graphed = sat.Model.fit(cortex, max_epochs=30, seed=0, device="cuda", cuda_graphs=True)
    np.testing.assert_allclose(graphed.history.to_numpy(), eager.history.to_numpy(), rtol=2e-3)
    nll_eager = eager.marginal_nll(cortex, n_mc=50, cells="heldout")
    nll_graphed = graphed.marginal_nll(cortex, n_mc=50, cells="heldout")
    assert abs(nll_graphed - nll_eager) / abs(nll_eager) < 1e-3


@pytest.mark.cuda
def test_a_step_that_cannot_be_captured_trains_eagerly_and_says_why(cortex, caplog):
    from scanpy_autotune._vae._data import DeviceCounts, extract_counts
    from scanpy_autotune._vae._module import VAE
    from scanpy_autotune._vae._step import GraphedTrainStep, TrainStep

    class SyncingStep(TrainStep):
        def __call__(self, rows):
            super().__call__(rows)
            float(self.total)  # waits for the device: not capturable

    counts = DeviceCounts(extract_counts(cortex), "cuda")
    module = VAE(cortex.n_vars).to("cuda")
    optimizer = FlatAdam(module, lr=1e-3, eps=0.01, capturable=True)
    total = torch.zeros((), device="cuda")
    step = GraphedTrainStep(SyncingStep(module, counts, optimizer, torch.ones((), device="cuda"), total))
    rows = torch.arange(128, device="cuda")
    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        for _ in range(6):
            step(rows)
    assert step.failed and not step.graphs
    assert "CUDA graph capture failed" in caplog.text and "training eagerly" in caplog.text
    assert torch.isfinite(total) and float(total) != 0.0  # every step ran (eagerly)
