"""The likelihood's dense terms and their gradients in one compiled pass (CPU).

:class:`~._likelihood.CountNLL` already writes the backward by hand, but
eagerly each of its element-wise operations is still its own kernel: some
forty passes over the cells x genes block per minibatch, forward and
backward, each with its own call overhead and trip through memory. Compiled by
``torch.compile`` (TorchInductor's C++ backend, vectorised), the same
arithmetic is one loop that reads the block once and writes the per-cell NLL
and the gradients per unit of upstream gradient; the backward is then three
scalings. The loop is written for few transcendental calls per entry, which
are its cost. A 128 x 2000 ZINB minibatch, forward and backward, goes from
about 5.7 ms to 2.6 ms on two cores, the dense terms taking 1.1 ms of it
(``benchmarks/results/likelihood_candidates.md``). Terms that live only at the
non-zero counts (``lgamma``, and ``digamma`` as a vectorised series) are
computed on their coordinates.

The cost: a C++ compiler at run time and a compile the first time a process
meets a kind of likelihood (about 12 s on a machine's first ever call, 2 s
later, from TorchInductor's on-disk cache). :func:`compile_choice` therefore
compiles only where the training's likelihood work pays for it (and from 500
genes: with fewer, the loop is no faster than the eager kernels per epoch), and where
compiling fails (no compiler) the likelihood runs eagerly and the reason is
logged once as a warning. ``SCANPY_AUTOTUNE_COMPILE=0`` turns compiling off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch

from ._likelihood import NonZeros, _theta_at
from ._log import log_once

__all__ = ["COMPILE_ENV", "MIN_COMPILED_WORK", "compile_choice", "compiled_count_nll"]

#: Environment variable that turns the compiled likelihood off when set to ``0``.
COMPILE_ENV = "SCANPY_AUTOTUNE_COMPILE"
#: Training cells x genes x epochs from which compiling pays (about 3 s of eager likelihood,
#: against a compile of about 2 s from the disk cache); every real dataset is above it,
#: the test suite's and the demo's small trainings below.
MIN_COMPILED_WORK = 1e8
#: Genes from which the compiled loop beats the call overhead it adds: measured per epoch,
#: no gain at 200 genes (Cortex), 20-25% at 2000 (``benchmarks/results/cpu_floor.md``).
MIN_COMPILED_GENES = 500

_unavailable = ""
_compiled: dict[str, Callable] = {}


def compile_choice(
    device: torch.device, n_cells: int, n_genes: int, max_epochs: int, requested: bool | None
) -> tuple[bool, str]:
    """Whether training computes the likelihood through :func:`compiled_count_nll`, and why not.

    Parameters
    ----------
    device
        The training device (compiling is for the CPU; a GPU replays CUDA graphs).
    n_cells, n_genes, max_epochs
        Training cells, genes and the epoch cap: the likelihood work the compile must pay for.
    requested
        ``True``/``False`` force the choice on the CPU; ``None`` compiles when the
        work reaches :data:`MIN_COMPILED_WORK` and the genes
        :data:`MIN_COMPILED_GENES`, unless ``SCANPY_AUTOTUNE_COMPILE=0``.

    Returns
    -------
    use, reason
        ``reason`` is empty when the likelihood is compiled.
    """
    if requested is None:
        if os.environ.get(COMPILE_ENV, "1").strip() == "0":
            return False, f"{COMPILE_ENV}=0"
        if n_cells * n_genes * max_epochs < MIN_COMPILED_WORK:
            return False, "too little training for a compile to pay"
        if n_genes < MIN_COMPILED_GENES:
            return False, f"under {MIN_COMPILED_GENES} genes the compiled likelihood is no faster"
    elif not requested:
        return False, "compiling is turned off"
    if device.type != "cpu":
        return False, f"the compiled likelihood is for the CPU, training runs on {device.type}"
    if _unavailable:
        return False, _unavailable
    return True, ""


# -- the dense terms (pure tensor code, compiled) -----------------------------
def _digamma(y):
    """``digamma(y)`` for ``y > 0``: six steps of its recurrence, then its asymptotic series.

    Vectorised where ``torch.digamma`` on the CPU is not (about 10x faster on
    the non-zeros of a minibatch); absolute error about 1e-6 in float32, 1e-12 in float64.
    """
    shift = 1 / y + 1 / (y + 1) + 1 / (y + 2) + 1 / (y + 3) + 1 / (y + 4) + 1 / (y + 5)
    z = y + 6
    r = 1 / (z * z)
    series = r * (1 / 12 - r * (1 / 120 - r * (1 / 252 - r * (1 / 240 - r / 132))))
    return torch.log(z) - 0.5 / z - series - shift


def nonzero_terms_and_gradient(values, theta_nz, lgamma_theta_nz, digamma_theta_nz):
    """At the non-zero counts: ``lgamma(x + theta) - lgamma(theta)`` and minus its derivative in ``log theta``."""
    y = values + theta_nz
    return torch.lgamma(y) - lgamma_theta_nz, -theta_nz * (_digamma(y) - digamma_theta_nz)


# Written for few transcendental calls per entry, the loop's cost: log(theta + mu)
# and mu / (theta + mu) come from one exp and one log1p (softplus and sigmoid of
# log mu - log theta), as do softplus and sigmoid of the zero-inflation terms.
# mu itself is never formed for NB and ZINB: exp(log library) overflows float32
# above 88, which an early epoch with heavy dropout reaches, while eagerly
# (``logaddexp``) the loss stays finite and training recovers.
def _softmax_terms(h, log_library):
    """``softmax`` and ``log mu`` of the decoder's scale logits."""
    log_softmax = torch.log_softmax(h, dim=-1)
    return log_softmax.exp(), log_softmax + log_library


def _nb_terms(x, log_mu, log_theta):
    """``theta``, ``d = log(theta / (theta + mu))``, ``theta d``, ``x log(mu / (theta + mu))``, ``mu / (theta + mu)``."""
    theta = log_theta.exp()
    softplus_diff, r = _softplus_and_sigmoid(log_mu - log_theta)  # log((theta + mu) / theta), mu / (theta + mu)
    d = -softplus_diff
    return theta, d, theta * d, x * (log_mu - log_theta - softplus_diff), r


def _softplus_and_sigmoid(a):
    """``softplus(a)`` and ``sigmoid(a)`` from one ``exp(-|a|)``."""
    e = torch.exp(-a.abs())
    one_plus = 1 + e
    return a.clamp(min=0) + torch.log1p(e), torch.where(a >= 0, 1 / one_plus, e / one_plus)


def _nb_gradients(x, t1, r, d, softmax):
    """Per unit of upstream gradient: d NLL / d h, d log_library and the element-wise d log_theta."""
    g_log_mu = t1 * r - x * (1 - r)
    g_lib = g_log_mu.sum(-1, keepdim=True)
    return g_log_mu - softmax * g_lib, g_lib, -g_log_mu - t1 * d


def _zinb_dense(x, theta_d, x_term, pi_logits):
    a = theta_d - pi_logits
    zero = x == 0
    softplus_a, sigmoid_a = _softplus_and_sigmoid(a)
    softplus_neg_pi, sigmoid_neg_pi = _softplus_and_sigmoid(-pi_logits)
    dense = torch.where(zero, softplus_a, a) - softplus_neg_pi + x_term
    return dense, torch.where(zero, sigmoid_a, 1.0), sigmoid_neg_pi


def zinb_nll(x, h, log_library, log_theta, pi_logits):
    _, log_mu = _softmax_terms(h, log_library)
    _, _, theta_d, x_term, _ = _nb_terms(x, log_mu, log_theta)
    return -_zinb_dense(x, theta_d, x_term, pi_logits)[0].sum(-1)


def zinb_nll_and_gradients(x, h, log_library, log_theta, pi_logits):
    softmax, log_mu = _softmax_terms(h, log_library)
    theta, d, theta_d, x_term, r = _nb_terms(x, log_mu, log_theta)
    dense, w, sigmoid_neg_pi = _zinb_dense(x, theta_d, x_term, pi_logits)
    g_h, g_lib, g_theta = _nb_gradients(x, w * theta, r, d, softmax)
    return -dense.sum(-1), g_h, g_lib, g_theta, w - sigmoid_neg_pi


def nb_nll(x, h, log_library, log_theta):
    _, log_mu = _softmax_terms(h, log_library)
    _, _, theta_d, x_term, _ = _nb_terms(x, log_mu, log_theta)
    return -(theta_d + x_term).sum(-1)


def nb_nll_and_gradients(x, h, log_library, log_theta):
    softmax, log_mu = _softmax_terms(h, log_library)
    theta, d, theta_d, x_term, r = _nb_terms(x, log_mu, log_theta)
    g_h, g_lib, g_theta = _nb_gradients(x, theta.expand_as(x), r, d, softmax)
    return -(theta_d + x_term).sum(-1), g_h, g_lib, g_theta


def poisson_nll(x, h, log_library):
    _, log_mu = _softmax_terms(h, log_library)
    return -(x * log_mu - log_mu.exp()).sum(-1)


def poisson_nll_and_gradients(x, h, log_library):
    softmax, log_mu = _softmax_terms(h, log_library)
    mu = log_mu.exp()  # as eagerly: infinite only where the eager loss is too
    g_log_mu = mu - x
    g_lib = g_log_mu.sum(-1, keepdim=True)
    return -(x * log_mu - mu).sum(-1), g_log_mu - softmax * g_lib, g_lib


_DENSE = {
    ("zinb", False): zinb_nll,
    ("zinb", True): zinb_nll_and_gradients,
    ("nb", False): nb_nll,
    ("nb", True): nb_nll_and_gradients,
    ("poisson", False): poisson_nll,
    ("poisson", True): poisson_nll_and_gradients,
}


def _run_compiled(fn: Callable, *tensors: torch.Tensor):
    """``fn(*tensors)`` compiled (the minibatch size left dynamic), or ``None`` where compiling fails."""
    global _unavailable
    if _unavailable:
        return None
    compiled = _compiled.get(fn.__name__)
    if compiled is None:
        compiled = _compiled[fn.__name__] = torch.compile(fn)
    # One compiled loop for every minibatch size (full, last, evaluation) and every number of non-zeros.
    rows = tensors[0].shape[0]
    for tensor in tensors:
        if tensor.dim() and tensor.shape[0] == rows:
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
    try:
        return compiled(*tensors)
    except Exception as error:  # noqa: BLE001 - whatever stops the compiler, the eager path gives the same numbers
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        _unavailable = f"the likelihood could not be compiled ({type(error).__name__}: {reason[:300]})"
        # A warning: the user loses speed, and can stop the attempt with the setting.
        log_once(f"{_unavailable}; it runs eagerly (set {COMPILE_ENV}=0 to skip trying)", logging.WARNING)
        return None


class _UnitGradients:
    """The per-cell NLL and its gradients per unit of upstream gradient, computed in the forward pass."""

    __slots__ = ("nll", "g_h", "g_lib", "g_theta", "g_pi", "g_nonzero", "nz")


class _PrecomputedNLL(torch.autograd.Function):
    """Hands autograd the NLL whose gradients were computed with it; the backward only scales them."""

    @staticmethod
    def forward(ctx, terms: _UnitGradients, h, log_library, log_theta, pi_logits):
        ctx.terms = terms
        ctx.theta_per_gene = log_theta is not None and log_theta.dim() == 1
        return terms.nll

    @staticmethod
    def backward(ctx, grad_cell):
        terms: _UnitGradients = ctx.terms
        go = grad_cell.unsqueeze(-1)
        needs = ctx.needs_input_grad
        g_h = terms.g_h * go if needs[1] else None
        g_lib = terms.g_lib * go if needs[2] else None
        g_theta = None
        if needs[3]:
            nz = terms.nz
            at_nonzeros = terms.g_nonzero * grad_cell.index_select(0, nz.rows)
            if ctx.theta_per_gene:
                g_theta = (grad_cell.unsqueeze(0) @ terms.g_theta).squeeze(0).index_add(0, nz.cols, at_nonzeros)
            else:
                g_theta = (terms.g_theta * go).reshape(-1).index_add(0, nz.flat, at_nonzeros)
                g_theta = g_theta.reshape(terms.g_theta.shape)
        g_pi = terms.g_pi * go if needs[4] else None
        return None, g_h, g_lib, g_theta, g_pi


def compiled_count_nll(
    x: torch.Tensor,
    nz: NonZeros,
    kind: str,
    h: torch.Tensor,
    log_library: torch.Tensor,
    log_theta: torch.Tensor | None = None,
    pi_logits: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """What :func:`~._likelihood.count_nll` computes, its dense terms compiled.

    ``nz`` must hold coordinates (the CPU's :class:`~._likelihood.NonZeros`).
    Returns ``None`` where compiling is impossible; the caller then runs the
    eager node.
    """
    leaves = [t for t in (h, log_library, log_theta, pi_logits) if t is not None]
    with_gradients = torch.is_grad_enabled() and any(t.requires_grad for t in leaves)
    inputs = [x, h, log_library]
    if kind != "poisson":
        inputs.append(log_theta)
    if kind == "zinb":
        inputs.append(pi_logits)
    with torch.no_grad():
        out = _run_compiled(_DENSE[kind, with_gradients], *[t.detach() for t in inputs])
        if out is None:
            return None
        nll = out[0] if with_gradients else out
        g_nonzero = None
        if kind != "poisson":
            theta = log_theta.exp()
            if with_gradients:
                theta_nz, lgamma_theta_nz, digamma_theta_nz = _theta_at(
                    theta, nz.cols, nz.flat, torch.lgamma, torch.digamma
                )
                at_nonzeros = _run_compiled(
                    nonzero_terms_and_gradient, nz.values, theta_nz, lgamma_theta_nz, digamma_theta_nz
                )
                if at_nonzeros is None:
                    return None
                lgamma_terms, g_nonzero = at_nonzeros
            else:
                theta_nz, lgamma_theta_nz = _theta_at(theta, nz.cols, nz.flat, torch.lgamma)
                lgamma_terms = torch.lgamma(nz.values + theta_nz) - lgamma_theta_nz
            nll = nll.index_add(0, nz.rows, lgamma_terms, alpha=-1)
    if not with_gradients:
        return nll
    terms = _UnitGradients()
    terms.nll, terms.g_nonzero, terms.nz = nll, g_nonzero, nz
    terms.g_h, terms.g_lib = out[1], out[2]
    terms.g_theta = out[3] if kind != "poisson" else None
    terms.g_pi = out[4] if kind == "zinb" else None
    return _PrecomputedNLL.apply(terms, h, log_library, log_theta, pi_logits)
