"""The reference count log-likelihoods the tests check the package's fused likelihood against.

The ``log_*`` functions are the exact element-wise log-probability masses,
written plainly in torch: the tests compare them with :mod:`scipy.stats`, and
through them autograd checks the training likelihood of
:mod:`scanpy_autotune._vae._likelihood` (values and gradients). That one
drops ``lgamma(x + 1)``, which does not depend on the parameters, and
evaluates ``lgamma(x + theta) - lgamma(theta)``, which vanishes at ``x = 0``,
on the non-zero entries only (:class:`scanpy_autotune._vae._likelihood.NonZeros`).

Parameters are given as the decoder produces them: ``log_mu`` (log mean),
``log_theta`` (log inverse dispersion) and ``pi_logits`` (logit of the
zero-inflation probability).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-8


def log_nb(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """Element-wise negative binomial log-pmf with mean ``mu`` and inverse dispersion ``theta``."""
    theta = log_theta.exp()
    log_theta_mu = torch.logaddexp(log_theta, log_mu)
    return (
        theta * (log_theta - log_theta_mu)
        + x * (log_mu - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


def log_zinb(
    x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor, pi_logits: torch.Tensor
) -> torch.Tensor:
    """Element-wise zero-inflated negative binomial log-pmf.

    The zero-inflation probability is ``sigmoid(pi_logits)``.
    """
    theta = log_theta.exp()
    log_theta_mu = torch.logaddexp(log_theta, log_mu)
    log_nb_zero = theta * (log_theta - log_theta_mu)
    case_zero = F.softplus(log_nb_zero - pi_logits) - F.softplus(-pi_logits)
    case_nonzero = -F.softplus(pi_logits) + log_nb(x, log_mu, log_theta)
    return torch.where(x > 0, case_nonzero, case_zero)


def log_poisson(x: torch.Tensor, log_mu: torch.Tensor) -> torch.Tensor:
    """Element-wise Poisson log-pmf with mean ``exp(log_mu)``."""
    return x * log_mu - log_mu.exp() - torch.lgamma(x + 1)


def count_nll_reference(kind, x, h, log_library, log_theta=None, pi_logits=None) -> torch.Tensor:
    """Per-cell ``-log p(x)`` of decoder outputs (``log mu = log_softmax(h) + log_library``), plainly.

    What :func:`scanpy_autotune._vae._likelihood.count_nll` and the compiled
    likelihood compute, plus the ``lgamma(x + 1)`` they drop (added back here
    so the value is the exact mass).
    """
    log_mu = torch.log_softmax(h, -1) + log_library
    if kind == "zinb":
        elem = log_zinb(x, log_mu, log_theta, pi_logits)
    elif kind == "nb":
        elem = log_nb(x, log_mu, log_theta)
    else:
        elem = log_poisson(x, log_mu)
    return -(elem + torch.lgamma(x + 1)).sum(-1)
