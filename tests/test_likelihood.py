import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _reference_likelihood import count_nll_reference, log_nb, log_poisson, log_zinb
from scipy import stats

from scanpy_autotune._vae._likelihood import NonZeros, count_nll

F64 = torch.float64  # float64 throughout, without touching torch's global default


@pytest.fixture
def params():
    rng = np.random.default_rng(0)
    x = rng.negative_binomial(2, 0.3, size=(6, 9)).astype(float)
    x[rng.random(x.shape) < 0.5] = 0
    mu = rng.uniform(0.1, 20, size=x.shape)
    theta = rng.uniform(0.2, 5, size=x.shape[1])
    pi = rng.uniform(0.05, 0.6, size=x.shape)
    return x, mu, theta, pi


def test_nb_matches_scipy(params):
    x, mu, theta, _ = params
    ours = log_nb(torch.tensor(x), torch.tensor(np.log(mu)), torch.tensor(np.log(theta))).numpy()
    # scipy's nbinom(n, p): n = theta, p = theta / (theta + mu)
    ref = stats.nbinom.logpmf(x, theta, theta / (theta + mu))
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_zinb_matches_scipy_mixture(params):
    x, mu, theta, pi = params
    logits = np.log(pi / (1 - pi))
    ours = log_zinb(
        torch.tensor(x), torch.tensor(np.log(mu)), torch.tensor(np.log(theta)), torch.tensor(logits)
    ).numpy()
    nb = stats.nbinom.pmf(x, theta, theta / (theta + mu))
    ref = np.log(pi * (x == 0) + (1 - pi) * nb)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_poisson_matches_scipy(params):
    x, mu, _, _ = params
    ours = log_poisson(torch.tensor(x), torch.tensor(np.log(mu))).numpy()
    np.testing.assert_allclose(ours, stats.poisson.logpmf(x, mu), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["zinb", "nb", "poisson"])
@pytest.mark.parametrize("theta_per_cell", [False, True])
@pytest.mark.parametrize("found", ["coordinates", "mask", "csr"])
def test_fused_likelihood_matches_autograd(params, kind, theta_per_cell, found):
    """The fused node equals the exact likelihood (minus lgamma(x+1)), values and gradients.

    ``mask`` is the GPU's way to the non-zero terms (no ``torch.nonzero``), checked here on the CPU;
    ``csr``: coordinates known from the CSR rows the minibatch was densified from.
    """
    x, _, _, _ = params
    x = torch.tensor(x)
    gen = torch.Generator().manual_seed(1)
    n, g = x.shape

    def leaves():
        h = torch.randn(n, g, generator=gen, dtype=F64)
        lib = torch.randn(n, 1, generator=gen, dtype=F64) + 3
        lt = torch.randn(n, g, generator=gen, dtype=F64) if theta_per_cell else torch.randn(g, generator=gen, dtype=F64)
        pi = torch.randn(n, g, generator=gen, dtype=F64)
        return [t.requires_grad_() for t in (h, lib, lt, pi)]

    a = leaves()
    b = [t.detach().clone().requires_grad_() for t in a]
    lt_a = None if kind == "poisson" else a[2]
    lt_b = None if kind == "poisson" else b[2]
    pi_a = a[3] if kind == "zinb" else None
    pi_b = b[3] if kind == "zinb" else None
    if found == "csr":
        csr = sp.csr_matrix(x.numpy())
        rows = torch.from_numpy(np.repeat(np.arange(n), np.diff(csr.indptr)))
        nz = NonZeros.from_coordinates(rows, torch.from_numpy(csr.indices).long(), torch.from_numpy(csr.data), g)
    else:
        nz = NonZeros(x, dense=found == "mask")
    assert (nz.mask is not None) == (found == "mask")
    fused = count_nll(x, nz, kind, a[0], a[1], lt_a, pi_a)
    ref = count_nll_reference(kind, x, b[0], b[1], lt_b, pi_b)
    np.testing.assert_allclose(fused.detach().numpy(), ref.detach().numpy(), rtol=1e-9)
    weights = torch.linspace(0.5, 1.5, n, dtype=F64)
    (fused * weights).sum().backward()
    (ref * weights).sum().backward()
    for ta, tb in zip(a, b):
        if tb.grad is None:
            assert ta.grad is None or torch.all(ta.grad == 0)
            continue
        np.testing.assert_allclose(ta.grad.numpy(), tb.grad.numpy(), rtol=1e-7, atol=1e-9)


def test_non_zeros_use_coordinates_on_the_cpu():
    x = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    nz = NonZeros(x)
    assert nz.mask is None
    assert nz.rows.tolist() == [0, 1, 1] and nz.cols.tolist() == [1, 0, 2] and nz.values.tolist() == [2.0, 1.0, 3.0]
    assert NonZeros(x, dense=True).mask.tolist() == [[False, True, False], [True, False, True]]
