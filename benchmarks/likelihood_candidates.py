"""How to compute the ZINB likelihood on the CPU: the candidates of issue 23, timed on real minibatches.

    python benchmarks/likelihood_candidates.py

Per 128-cell minibatch (the first 128 cells of each dataset, random decoder
outputs), 2 threads:

- eager: the hand-written autograd node ``CountNLL``, forward and backward;
- compiled: ``compiled_count_nll`` (what training uses on the CPU), forward and backward;
- the dense terms and their gradients alone, by ``torch.compile`` (the compiled
  path's core) and by a Numba kernel written for this comparison (parallel
  over cells, ``fastmath``; the same arithmetic, checked against it).

Writes ``results/likelihood_candidates.md``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import anndata as ad
import numba
import numpy as np
import pandas as pd
import torch
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, write  # noqa: E402

from scanpy_autotune._vae._compiled_likelihood import (  # noqa: E402
    _run_compiled,
    compiled_count_nll,
    zinb_nll_and_gradients,
)
from scanpy_autotune._vae._likelihood import CountNLL, NonZeros  # noqa: E402

DATASETS = ["cortex_zeisel_3005x200", "pbmc4k_10x_4271x2000"]


@njit(parallel=True, fastmath=True, cache=True)
def zinb_fused(x, h, lib, log_theta, pi, nll, g_h, g_lib, g_theta, g_pi):
    n, g = x.shape
    theta = np.exp(log_theta)
    for i in prange(n):
        m = -np.inf
        for j in range(g):
            if h[i, j] > m:
                m = h[i, j]
        s = 0.0
        for j in range(g):
            s += math.exp(h[i, j] - m)
        lse = m + math.log(s)
        acc = 0.0
        gl = 0.0
        for j in range(g):
            ls = h[i, j] - lse
            log_mu = ls + lib[i]
            lt = log_theta[j]
            hi = max(lt, log_mu)
            ltm = hi + math.log1p(math.exp(-abs(lt - log_mu)))
            d = lt - ltm
            th = theta[j]
            theta_d = th * d
            xv = x[i, j]
            x_term = xv * (log_mu - ltm)
            p = pi[i, j]
            a = theta_d - p
            e_negpi = math.exp(-abs(p))
            sp_negpi = max(-p, 0.0) + math.log1p(e_negpi)
            sig_negpi = 1.0 / (1.0 + e_negpi) if p < 0 else e_negpi / (1.0 + e_negpi)
            if xv == 0:
                ea = math.exp(-abs(a))
                dense = max(a, 0.0) + math.log1p(ea) - sp_negpi
                w = 1.0 / (1.0 + ea) if a >= 0 else ea / (1.0 + ea)
            else:
                dense = a - sp_negpi + x_term
                w = 1.0
            acc += dense
            t1 = w * th
            r = -math.expm1(d)
            glm = t1 * r - xv * (1 - r)
            g_theta[i, j] = -glm - t1 * d
            g_pi[i, j] = w - sig_negpi
            g_h[i, j] = glm
            gl += glm
        for j in range(g):
            g_h[i, j] -= math.exp(h[i, j] - lse) * gl
        nll[i] = -acc
        g_lib[i] = gl



def _milliseconds(fn, n: int = 300) -> float:
    for _ in range(20):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def measure(name: str) -> dict:
    X = ad.read_h5ad(DATA / f"{name}.h5ad").X
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    x = torch.tensor(X[:128], dtype=torch.float32)
    n_genes = x.shape[1]
    gen = torch.Generator().manual_seed(0)
    h = (torch.randn(128, n_genes, generator=gen) * 0.5).requires_grad_()
    lib = torch.log(x.sum(1, keepdim=True)).requires_grad_()
    lt = (torch.randn(n_genes, generator=gen) * 0.3).requires_grad_()
    pi = (torch.randn(128, n_genes, generator=gen) - 2).requires_grad_()
    nz = NonZeros(x)
    leaves = [t.detach() for t in (h, lib, lt, pi)]
    outs = [np.empty(128, np.float32), np.empty((128, n_genes), np.float32), np.empty(128, np.float32),
            np.empty((128, n_genes), np.float32), np.empty((128, n_genes), np.float32)]
    numba_args = (x.numpy(), leaves[0].numpy(), leaves[1].numpy().ravel(), leaves[2].numpy(), leaves[3].numpy())

    def numba_terms():
        zinb_fused(*numba_args, *outs)

    def compiled_terms():
        with torch.no_grad():
            return _run_compiled(zinb_nll_and_gradients, x, *leaves)

    numba_terms()
    reference = compiled_terms()
    assert reference is not None, "torch.compile is not available here"
    max_difference = max(
        float(np.abs(ours.reshape(theirs.shape) - theirs.numpy()).max()) for ours, theirs in zip(outs, reference)
    )
    return {
        "dataset": name, "genes": n_genes,
        "eager node fwd+bwd ms": _milliseconds(lambda: CountNLL.apply(x, nz, "zinb", h, lib, lt, pi).sum().backward()),
        "compiled node fwd+bwd ms": _milliseconds(
            lambda: compiled_count_nll(x, nz, "zinb", h, lib, lt, pi).sum().backward()
        ),
        "dense terms torch.compile ms": _milliseconds(compiled_terms),
        "dense terms numba ms": _milliseconds(numba_terms),
        "numba vs torch.compile max abs difference": max_difference,
    }


def main() -> None:
    torch.set_num_threads(2)
    numba.set_num_threads(2)
    table = pd.DataFrame([measure(name) for name in DATASETS])
    write(
        "likelihood_candidates", table, "python benchmarks/likelihood_candidates.py",
        notes=(
            "Milliseconds per 128-cell ZINB minibatch, 2 threads. The numba kernel computes what "
            "`zinb_nll_and_gradients` computes (per-cell NLL without the non-zero lgamma terms, "
            "gradients per unit of upstream gradient), parallel over cells with fastmath; without "
            "Intel's SVML its exp/log calls are scalar, which is why it loses to TorchInductor's "
            "vectorised loop."
        ),
    )
    print(table.to_string())


if __name__ == "__main__":
    main()
