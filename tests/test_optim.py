"""FlatAdam: torch.optim.Adam's updates over one flat buffer, without building a torch optimizer."""

import pytest
import torch

from scanpy_autotune._vae import _optim
from scanpy_autotune._vae._optim import FlatAdam


def _module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def test_the_cpu_has_a_fused_adam_from_torch_2_4():
    assert _optim._has_fused_adam(torch.device("cpu")) is (_torch_version() >= (2, 4))


@pytest.mark.parametrize("per_tensor", [False, True])
def test_flat_adam_steps_exactly_like_torch_adam(monkeypatch, per_tensor):
    """The same values, bit for bit, as torch.optim.Adam of the same kind after 12 steps with weight decay
    and a learning rate halved half-way (reduce_lr_on_plateau): with the fused kernel where the CPU has
    one, and with the per-tensor update torch falls back on without one."""
    if per_tensor:
        monkeypatch.setitem(_optim._FUSED_ADAM, "cpu", False)
    fused = _optim._has_fused_adam(torch.device("cpu"))
    assert fused is (not per_tensor and _torch_version() >= (2, 4))
    ours, reference = _module(), _module()
    flat = FlatAdam(ours, lr=1e-2, eps=0.01, weight_decay=1e-3)
    # torch's Adam over the same kind of flat buffer (what FlatAdam was before; its kernel's results
    # depend on the buffer's length, so per-parameter tensors may differ in the last bit)
    buffer = FlatAdam(reference).flat
    kind = dict(fused=True) if fused else dict(foreach=False)
    adam = torch.optim.Adam([buffer], lr=1e-2, eps=0.01, weight_decay=1e-3, **kind)
    x = torch.randn(16, 6)
    for step in range(12):
        if step == 6:
            flat.lr *= 0.5
            adam.param_groups[0]["lr"] *= 0.5
        flat.zero_grad()
        buffer.grad.zero_()
        ours(x).pow(2).mean().backward()
        reference(x).pow(2).mean().backward()
        flat.step()
        adam.step()
    assert flat.lr == pytest.approx(5e-3)
    for mine, theirs in zip(ours.parameters(), reference.parameters()):
        assert torch.equal(mine, theirs)
    assert not torch.equal(ours[0].weight, _module()[0].weight)  # it did train
