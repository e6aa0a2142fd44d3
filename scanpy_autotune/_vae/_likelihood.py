"""The training likelihood as one autograd node with an analytic backward.

Autograd through the plain element-wise log-probabilities (the tests'
reference, ``tests/_reference_likelihood.py``) records some forty kernels per minibatch, each a pass over a cells x genes
block; on the CPU that, not the matrix products, is where an epoch goes.
:class:`CountNLL` computes the same per-cell negative log-likelihood (without
``lgamma(x + 1)``) and its gradients with respect to the decoder's scale
logits, the log library, ``log theta`` and the zero-inflation logits in about a
third of the passes. The tests check both values and gradients against the
autograd reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


class NonZeros:
    """Where a dense minibatch is non-zero, found once and reused.

    On the CPU the terms that live only at non-zero counts (``lgamma``,
    ``digamma``) are computed there alone, from the entries' coordinates. On a
    GPU finding coordinates (``torch.nonzero``) makes the host wait for the
    device at every minibatch, while the same terms over the whole block cost
    next to nothing; there ``mask`` marks the non-zeros instead.

    Parameters
    ----------
    x
        The minibatch, cells x genes.
    dense
        Use ``mask`` rather than coordinates; default: on any device but the CPU.

    Attributes
    ----------
    rows, cols, flat
        Coordinates of the non-zero entries (row, column, flat position); ``None`` when dense.
    values
        The counts there; ``None`` when dense.
    mask
        ``x > 0`` when dense, else ``None``.
    """

    __slots__ = ("rows", "cols", "values", "flat", "mask")

    def __init__(self, x: torch.Tensor, dense: bool | None = None) -> None:
        if dense is None:
            dense = x.device.type != "cpu"
        self.mask = x > 0 if dense else None
        if dense:
            self.rows = self.cols = self.flat = self.values = None
            return
        flat = x.reshape(-1)
        self.flat = torch.nonzero(flat, as_tuple=True)[0]
        self.rows = torch.div(self.flat, x.shape[1], rounding_mode="floor")
        self.cols = self.flat - self.rows * x.shape[1]
        self.values = flat.index_select(0, self.flat)

    @classmethod
    def from_coordinates(
        cls,
        rows: torch.Tensor,
        cols: torch.Tensor,
        values: torch.Tensor,
        n_vars: int,
        flat: torch.Tensor | None = None,
    ) -> NonZeros:
        """The non-zeros of a minibatch densified from CSR rows, whose coordinates are already known.

        Saves the pass of ``torch.nonzero`` over the dense block. ``rows`` and
        ``cols`` are ``long``; entries must be distinct (a canonical CSR
        matrix's are). A stored zero among them adds nothing to the likelihood.
        ``flat`` (``rows * n_vars + cols``) where the caller has it already.
        """
        nz = cls.__new__(cls)
        nz.mask = None
        nz.rows, nz.cols, nz.values = rows, cols, values
        nz.flat = rows * n_vars + cols if flat is None else flat
        return nz


def _theta_at(
    theta: torch.Tensor,
    cols: torch.Tensor,
    flat: torch.Tensor,
    *fns: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, ...]:
    """``theta`` and each ``fn(theta)`` at the non-zero entries, for gene-wise (1-D) or per-cell (2-D) ``theta``.

    Gene-wise, each ``fn`` runs once per gene and is gathered at the entries'
    columns: far fewer evaluations of ``lgamma`` or ``digamma`` than one per
    non-zero.
    """
    if theta.dim() == 1:
        return theta.index_select(0, cols), *(fn(theta).index_select(0, cols) for fn in fns)
    at = theta.reshape(-1).index_select(0, flat)
    return at, *(fn(at) for fn in fns)


class CountNLL(torch.autograd.Function):
    """Per-cell ``-log p(x | mu, theta, pi)`` with ``log mu = log_softmax(h) + log_library``."""

    @staticmethod
    def forward(ctx, x, nz: NonZeros, kind: str, h, log_library, log_theta, pi_logits):
        log_softmax = torch.log_softmax(h, dim=-1)
        log_mu = log_softmax + log_library
        ctx.kind = kind
        ctx.theta_shape = None if log_theta is None else log_theta.shape
        if kind == "poisson":
            mu = log_mu.exp()
            per_cell = (x * log_mu).sum(-1) - mu.sum(-1)
            ctx.save_for_backward(x, log_softmax, mu)
            return -per_cell
        theta = log_theta.exp()
        log_theta_mu = torch.logaddexp(log_theta, log_mu)
        d = log_theta - log_theta_mu  # log(theta / (theta + mu))
        theta_d = theta * d
        x_term = x * (log_mu - log_theta_mu)
        if kind == "zinb":
            a = theta_d - pi_logits
            zero = x == 0
            dense = torch.where(zero, F.softplus(a), a) - F.softplus(-pi_logits) + x_term
            w = torch.where(zero, torch.sigmoid(a), 1.0)
            ctx.save_for_backward(x, log_softmax, theta, d, theta_d, w, pi_logits, nz.rows, nz.cols, nz.flat, nz.values)
        else:
            dense = theta_d + x_term
            ctx.save_for_backward(x, log_softmax, theta, d, theta_d, nz.rows, nz.cols, nz.flat, nz.values)
        if nz.mask is not None:
            lgamma_terms = torch.lgamma(x + theta) - torch.lgamma(theta)
            ctx.mask = nz.mask
            return -(dense + torch.where(nz.mask, lgamma_terms, 0.0)).sum(-1)
        ctx.mask = None
        per_cell = dense.sum(-1)
        theta_nz, lgamma_theta_nz = _theta_at(theta, nz.cols, nz.flat, torch.lgamma)
        lgamma_terms = torch.lgamma(nz.values + theta_nz) - lgamma_theta_nz
        per_cell = per_cell.index_add(0, nz.rows, lgamma_terms)
        return -per_cell

    @staticmethod
    def backward(ctx, grad_cell):
        go = grad_cell.unsqueeze(-1)
        if ctx.kind == "poisson":
            x, log_softmax, mu = ctx.saved_tensors
            g_log_mu = (mu - x) * go
            return (None, None, None, *_through_softmax(g_log_mu, log_softmax), None, None)
        if ctx.kind == "zinb":
            x, log_softmax, theta, d, theta_d, w, pi_logits, rows, cols, flat, values = ctx.saved_tensors
            t1 = w * theta
            g_pi = (w - torch.sigmoid(-pi_logits)) * go
        else:
            x, log_softmax, theta, d, theta_d, rows, cols, flat, values = ctx.saved_tensors
            t1 = theta.expand_as(x) if theta.dim() == 1 else theta
            g_pi = None
        r = -torch.expm1(d)  # mu / (theta + mu)
        g_log_mu = (t1 * r - x * (1 - r)) * go
        g_theta_elem = -g_log_mu - (t1 * d) * go
        g_h, g_lib = _through_softmax(g_log_mu, log_softmax)
        # d/dlog theta of -(lgamma(x + theta) - lgamma(theta)) at the non-zeros
        one_d = ctx.theta_shape is not None and len(ctx.theta_shape) == 1
        if ctx.mask is not None:
            g_lgamma = -theta * (torch.digamma(x + theta) - torch.digamma(theta)) * go
            g_log_theta = g_theta_elem + torch.where(ctx.mask, g_lgamma, 0.0)
            return None, None, None, g_h, g_lib, g_log_theta.sum(0) if one_d else g_log_theta, g_pi
        theta_nz, digamma_theta_nz = _theta_at(theta, cols, flat, torch.digamma)
        digamma_terms = torch.digamma(values + theta_nz) - digamma_theta_nz
        g_nz = -theta_nz * digamma_terms * grad_cell.index_select(0, rows)
        if one_d:
            g_log_theta = g_theta_elem.sum(0).index_add(0, cols, g_nz)
        else:
            g_log_theta = g_theta_elem.reshape(-1).index_add(0, flat, g_nz).reshape(g_theta_elem.shape)
        return None, None, None, g_h, g_lib, g_log_theta, g_pi


def _through_softmax(g_log_mu: torch.Tensor, log_softmax: torch.Tensor):
    """Gradients of ``log_mu = log_softmax(h) + log_library`` with respect to ``h`` and ``log_library``."""
    g_lib = g_log_mu.sum(-1, keepdim=True)
    g_h = g_log_mu - log_softmax.exp() * g_lib
    return g_h, g_lib


def count_nll(x, nz, kind, h, log_library, log_theta=None, pi_logits=None):
    """Per-cell negative log-likelihood (without ``lgamma(x + 1)``) through :class:`CountNLL`."""
    return CountNLL.apply(x, nz, kind, h, log_library, log_theta, pi_logits)
