"""Adam over one flat parameter buffer.

``torch.optim.Adam`` updates each parameter tensor in turn; a small VAE has a
dozen of them and on the CPU a step cost more than the matrix products of a
minibatch. Here every parameter and its gradient are views into one
contiguous buffer, stepped by torch's fused Adam kernel (one pass over the
buffer) where the device has one. The update is ``torch.optim.Adam``'s
(L2 weight decay added to the gradient).
"""

from __future__ import annotations

import torch
from torch import nn


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
        kwargs = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        if capturable:
            kwargs.update(lr=torch.tensor(float(lr), device=self.flat.device), capturable=True)
            self.optimizer = torch.optim.Adam([self.flat], fused=True, **kwargs)
            return
        try:
            self.optimizer = torch.optim.Adam([self.flat], fused=True, **kwargs)
        except RuntimeError:  # no fused kernel for this device
            self.optimizer = torch.optim.Adam([self.flat], foreach=False, **kwargs)

    @property
    def lr(self) -> float:
        lr = self.optimizer.param_groups[0]["lr"]
        return float(lr) if isinstance(lr, torch.Tensor) else lr

    @lr.setter
    def lr(self, value: float) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        if isinstance(lr, torch.Tensor):
            lr.fill_(value)  # in place: a captured step reads this tensor
        else:
            self.optimizer.param_groups[0]["lr"] = value

    def zero_grad(self) -> None:
        self.flat.grad.zero_()

    def step(self) -> None:
        self.optimizer.step()
