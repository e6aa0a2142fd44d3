"""The compiled likelihood (:mod:`scanpy_autotune._vae._compiled_likelihood`) against the autograd reference.

Compiling needs a C++ compiler, which every machine this suite runs on has; the
first compile of a process takes some seconds, hence ``slow``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _reference_likelihood import count_nll_reference

import scanpy_autotune as sat
from scanpy_autotune._vae import _compiled_likelihood
from scanpy_autotune._vae._compiled_likelihood import (
    MIN_COMPILED_WORK,
    compile_choice,
    compiled_count_nll,
)
from scanpy_autotune._vae._likelihood import NonZeros, count_nll

F64 = torch.float64
CPU = torch.device("cpu")


def _counts(n, g, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.negative_binomial(2, 0.3, size=(n, g)).astype(float)
    x[rng.random(x.shape) < 0.5] = 0
    return torch.tensor(x)


def _leaves(n, g, theta_per_cell, seed=1):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, g, generator=gen, dtype=F64)
    lib = torch.randn(n, 1, generator=gen, dtype=F64) + 3
    lt = torch.randn(n, g, generator=gen, dtype=F64) if theta_per_cell else torch.randn(g, generator=gen, dtype=F64)
    pi = torch.randn(n, g, generator=gen, dtype=F64)
    return [t.requires_grad_() for t in (h, lib, lt, pi)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zinb", "nb", "poisson"])
@pytest.mark.parametrize("theta_per_cell", [False, True])
def test_compiled_values_and_gradients_match_autograd(kind, theta_per_cell):
    # Two minibatch sizes through one compiled loop (the size is dynamic), like full and last minibatches.
    for n in (7, 12):
        x = _counts(n, 9, seed=n)
        a = _leaves(n, 9, theta_per_cell)
        b = [t.detach().clone().requires_grad_() for t in a]
        lt_a, lt_b = (None, None) if kind == "poisson" else (a[2], b[2])
        pi_a, pi_b = (a[3], b[3]) if kind == "zinb" else (None, None)
        ours = compiled_count_nll(x, NonZeros(x), kind, a[0], a[1], lt_a, pi_a)
        assert ours is not None, _compiled_likelihood._unavailable
        ref = count_nll_reference(kind, x, b[0], b[1], lt_b, pi_b)
        np.testing.assert_allclose(ours.detach().numpy(), ref.detach().numpy(), rtol=1e-9)
        weights = torch.linspace(0.5, 1.5, n, dtype=F64)
        (ours * weights).sum().backward()
        (ref * weights).sum().backward()
        for leaf_a, leaf_b in zip(a, b):
            if leaf_b.grad is None:
                assert leaf_a.grad is None
                continue
            np.testing.assert_allclose(leaf_a.grad.numpy(), leaf_b.grad.numpy(), rtol=1e-7, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zinb", "nb"])
def test_a_huge_library_size_stays_finite_as_eagerly(kind):
    """In float32, exp(log library) overflows above 88; an early epoch with heavy dropout gets there.

    Eagerly (``logaddexp``) the loss and its gradients stay finite, and so must
    the compiled pass's: forming mu = softmax x library made them NaN, and the
    trial was recorded as diverged at its first epoch.
    """
    n, g = 6, 700
    x = _counts(n, g, seed=3).float()
    a = [t.detach().float() for t in _leaves(n, g, False)]
    a[1] = a[1] + 120.0  # library sizes around exp(123): infinite in float32
    b = [t.clone().requires_grad_() for t in a]
    a = [t.requires_grad_() for t in a]
    pi_a, pi_b = (a[3], b[3]) if kind == "zinb" else (None, None)
    ours = compiled_count_nll(x, NonZeros(x), kind, a[0], a[1], a[2], pi_a)
    assert ours is not None, _compiled_likelihood._unavailable
    eager = count_nll(x, NonZeros(x), kind, b[0], b[1], b[2], pi_b)
    assert torch.isfinite(eager).all() and torch.isfinite(ours).all()
    np.testing.assert_allclose(ours.detach().numpy(), eager.detach().numpy(), rtol=1e-5)
    ours.sum().backward()
    eager.sum().backward()
    for leaf_a, leaf_b in zip(a, b):
        if leaf_b.grad is None:
            continue
        assert torch.isfinite(leaf_a.grad).all()
        np.testing.assert_allclose(leaf_a.grad.numpy(), leaf_b.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_compiled_values_without_gradients_match_the_eager_node():
    x = _counts(10, 9)
    h, lib, lt, pi = (t.detach() for t in _leaves(10, 9, False))
    with torch.no_grad():
        ours = compiled_count_nll(x, NonZeros(x), "zinb", h, lib, lt, pi)
    assert ours is not None and not ours.requires_grad
    eager = count_nll(x, NonZeros(x), "zinb", h, lib, lt, pi)
    np.testing.assert_allclose(ours.numpy(), eager.numpy(), rtol=1e-10)


@pytest.mark.slow
def test_training_with_the_compiled_likelihood_follows_the_eager_one(cortex):
    """Same seed, same minibatches: the two paths differ only by float32 rounding."""
    eager = sat.Model.fit(cortex, max_epochs=6, seed=0, device="cpu", compiled_likelihood=False)
    compiled = sat.Model.fit(cortex, max_epochs=6, seed=0, device="cpu", compiled_likelihood=True)
    assert compiled.module.compiled_likelihood and not eager.module.compiled_likelihood
    np.testing.assert_allclose(compiled.train_result.train_elbo, eager.train_result.train_elbo, rtol=2e-4)
    np.testing.assert_allclose(compiled.train_result.validation_elbo, eager.train_result.validation_elbo, rtol=2e-4)
    torch.manual_seed(0)  # the same importance samples for both
    nll_eager = eager.marginal_nll(cortex, n_mc=20, cells="heldout")
    torch.manual_seed(0)
    nll_compiled = compiled.marginal_nll(cortex, n_mc=20, cells="heldout")
    assert abs(nll_compiled - nll_eager) / nll_eager < 1e-3


def test_compile_choice_follows_the_work_the_setting_and_the_device(monkeypatch):
    monkeypatch.delenv(_compiled_likelihood.COMPILE_ENV, raising=False)
    monkeypatch.setattr(_compiled_likelihood, "_unavailable", "")
    big = int(MIN_COMPILED_WORK // (2000 * 400)) + 1
    assert compile_choice(CPU, big, 2000, 400, None) == (True, "")
    use, why = compile_choice(CPU, big - 2, 2000, 400, None)
    assert not use and "too little" in why
    use, why = compile_choice(CPU, 10**7, 200, 400, None)  # Cortex-sized genes: no faster compiled
    assert not use and "genes" in why
    assert compile_choice(CPU, 10, 10, 1, True) == (True, "")
    use, why = compile_choice(CPU, big, 2000, 400, False)
    assert not use and "off" in why
    use, why = compile_choice(torch.device("cuda"), big, 2000, 400, True)
    assert not use and "cuda" in why
    monkeypatch.setenv(_compiled_likelihood.COMPILE_ENV, "0")
    use, why = compile_choice(CPU, big, 2000, 400, None)
    assert not use and "SCANPY_AUTOTUNE_COMPILE=0" in why


@pytest.mark.slow
def test_without_a_compiler_training_is_eager_with_the_same_numbers_and_says_why(tmp_path, cortex_path):
    """A real failed compile: no C++ compiler (``CXX`` names none) and an empty compile cache."""
    script = tmp_path / "fit.py"
    script.write_text(
        "import logging, sys, json\n"
        "import anndata as ad\n"
        "import scanpy_autotune as sat\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        f"adata = ad.read_h5ad({str(cortex_path)!r})\n"
        "runs = [sat.Model.fit(adata, max_epochs=3, seed=0, device='cpu', compiled_likelihood=c) for c in (True, False)]\n"
        "print(json.dumps([m.train_result.train_elbo for m in runs]))\n"
    )
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    with_compile, eager = json.loads(out.stdout.strip().splitlines()[-1])
    assert with_compile == eager
    assert out.stderr.count("the likelihood could not be compiled") == 1, out.stderr[-3000:]
