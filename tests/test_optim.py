"""FlatAdam: torch.optim.Adam's updates over one flat buffer, without building a torch optimizer."""

import pytest
import torch

from scanpy_autotune._vae import _optim
from scanpy_autotune._vae._optim import FlatAdam


def _module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))


@pytest.mark.parametrize("fused", [True, False])
def test_flat_adam_steps_exactly_like_torch_adam(monkeypatch, fused):
    """Same values after 12 steps with weight decay and a learning rate halved half-way (reduce_lr_on_plateau),
    with the fused kernel and with the per-tensor update torch falls back on without one."""
    monkeypatch.setattr(_optim, "_has_fused_adam", lambda device_type: fused)
    ours, reference = _module(), _module()
    flat = FlatAdam(ours, lr=1e-2, eps=0.01, weight_decay=1e-3)
    adam = torch.optim.Adam(reference.parameters(), lr=1e-2, eps=0.01, weight_decay=1e-3, foreach=False)
    x = torch.randn(16, 6)
    for step in range(12):
        if step == 6:
            flat.lr *= 0.5
            adam.param_groups[0]["lr"] *= 0.5
        flat.zero_grad()
        adam.zero_grad()
        ours(x).pow(2).mean().backward()
        reference(x).pow(2).mean().backward()
        flat.step()
        adam.step()
    assert flat.lr == pytest.approx(5e-3)
    for mine, theirs in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours[0].weight, _module()[0].weight)  # it did train

