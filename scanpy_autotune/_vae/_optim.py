"""Adam over one flat parameter buffer.

``torch.optim.Adam`` updates each parameter tensor in turn; a small VAE has a
dozen of them and on the CPU a step cost more than the matrix products of a
minibatch. Here every parameter and its gradient are views into one
contiguous buffer, stepped by torch's fused Adam kernel (one pass over the
buffer) where the device has one. The update is ``torch.optim.Adam``'s
(L2 weight decay added to the gradient).

Outside CUDA graphs the step calls torch's functional Adam (``torch.optim.adam.adam``,
what ``torch.optim.Adam.step`` itself calls) on state kept here: building a
``torch.optim.Optimizer`` imports ``torch._dynamo``, 2-3 s of every worker's
first trial on two cores, for no change in the numbers
(``benchmarks/results/worker_start.md``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.adam import adam


class FlatAdam:
    """Adam on the parameters of ``module``, re-housed as views of one buffer.

    Parameters
    ----------
    module
        Its parameters are moved into the flat buffer (values unchanged).
    lr, betas, eps, weight_decay
        As in ``torch.optim.Adam``.
    capturable
        Keep the step count and the learning rate in device tensors, so that
        the step can be captured in a CUDA graph and the learning rate still
        changed between replays (``reduce_lr_on_plateau``). CUDA only.
    """

    def __init__(
        self,
        module: nn.Module,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        capturable: bool = False,
    ) -> None:
        params = [p for p in module.parameters() if p.requires_grad]
        with torch.no_grad():
            self.flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
        self.flat.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.data = self.flat.data[offset : offset + n].view_as(p)
            p.grad = self.flat.grad[offset : offset + n].view_as(p)
            offset += n
        if capturable:
            self.optimizer = torch.optim.Adam(
                [self.flat], fused=True, capturable=True, lr=torch.tensor(float(lr), device=self.flat.device),
                betas=betas, eps=eps, weight_decay=weight_decay,
            )
            return
        self.optimizer = None
        self._lr, self._betas, self._eps, self._weight_decay = float(lr), betas, eps, weight_decay
        self._exp_avg = torch.zeros_like(self.flat.data)
        self._exp_avg_sq = torch.zeros_like(self.flat.data)
        self._fused = _has_fused_adam(self.flat.device)
        # torch.optim.Adam's step count: a float32 tensor on the device for the fused kernel, on the CPU otherwise.
        self._step = torch.zeros((), dtype=torch.float32, device=self.flat.device if self._fused else "cpu")

    @property
    def lr(self) -> float:
        if self.optimizer is None:
            return self._lr
        return float(self.optimizer.param_groups[0]["lr"])

    @lr.setter
    def lr(self, value: float) -> None:
        if self.optimizer is None:
            self._lr = float(value)
        else:
            self.optimizer.param_groups[0]["lr"].fill_(value)  # in place: a captured step reads this tensor

    def zero_grad(self) -> None:
        self.flat.grad.zero_()

    def step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()
            return
        with torch.no_grad():
            adam(
                [self.flat], [self.flat.grad], [self._exp_avg], [self._exp_avg_sq], [], [self._step],
                foreach=False, fused=self._fused, amsgrad=False, beta1=self._betas[0], beta2=self._betas[1],
                lr=self._lr, weight_decay=self._weight_decay, eps=self._eps, maximize=False,
            )


_FUSED_ADAM: dict[str, bool] = {}


def _has_fused_adam(device: torch.device) -> bool:
    """Whether torch has a fused Adam kernel for ``device``'s kind (the CPU has one from torch 2.4).

    Probed once per kind of device, on ``device`` itself (not on another GPU); only
    clones are stepped. Running out of memory is raised, not taken for a missing kernel.
    """
    if device.type not in _FUSED_ADAM:
        probe = torch.zeros(1, device=device)
        try:
            adam([probe.clone()], [probe], [probe.clone()], [probe.clone()], [], [probe[0].clone()], foreach=False,
                 fused=True, amsgrad=False, beta1=0.9, beta2=0.999, lr=0.0, weight_decay=0.0, eps=1.0, maximize=False)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError:  # NotImplementedError too: no fused kernel for this device
            _FUSED_ADAM[device.type] = False
        else:
            _FUSED_ADAM[device.type] = True
    return _FUSED_ADAM[device.type]
