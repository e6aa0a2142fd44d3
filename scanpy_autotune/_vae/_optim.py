"""Adam over one flat parameter buffer.

``torch.optim.Adam`` updates each parameter tensor in turn; a small VAE has a
dozen of them and its step costs more than the matrix products of a minibatch
on the CPU. Here every parameter and its gradient are views into one
contiguous buffer, so a step is a handful of kernels whatever the network's
depth. The update is ``torch.optim.Adam``'s (L2 weight decay added to the
gradient, ``eps`` added to the bias-corrected root of the second moment).
"""

from __future__ import annotations

import math

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
    """

    def __init__(
        self,
        module: nn.Module,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        params = [p for p in module.parameters() if p.requires_grad]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1) for p in params])
        self.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.data = self.flat[offset : offset + n].view_as(p)
            p.grad = self.grad[offset : offset + n].view_as(p)
            offset += n
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.steps = 0

    def zero_grad(self) -> None:
        self.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        grad = self.grad
        if self.weight_decay:
            grad = grad.add(self.flat, alpha=self.weight_decay)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2 = 1 - beta2**self.steps
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=-self.lr / bias_correction1)
