"""The scVI generative model: encoder, decoder and the VAE that joins them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._compiled_likelihood import compiled_count_nll
from ._likelihood import NonZeros, count_nll

_VAR_EPS = 1e-4
_LOG_2PI = math.log(2 * math.pi)


class FCLayers(nn.Module):
    """``n_layers`` x (Linear, BatchNorm, ReLU, Dropout); the batch one-hot joins every layer's input."""

    def __init__(self, n_in: int, n_out: int, n_layers: int, n_batch: int, dropout_rate: float):
        super().__init__()
        self.n_batch = n_batch if n_batch > 1 else 0
        dims = [n_in] + [n_out] * n_layers
        self.linears = nn.ModuleList(
            nn.Linear(d_in + self.n_batch, d_out) for d_in, d_out in zip(dims[:-1], dims[1:])
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(d_out, momentum=0.01, eps=1e-3) for d_out in dims[1:]
        )
        self.dropout_rate = dropout_rate

    def forward(self, h: torch.Tensor, batch_onehot: torch.Tensor | None) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms):
            if batch_onehot is not None:
                h = torch.cat([h, batch_onehot], dim=-1)
            h = F.relu(norm(linear(h)))
            if self.dropout_rate > 0:
                h = F.dropout(h, self.dropout_rate, self.training)
        return h


class GaussianEncoder(nn.Module):
    """Maps its input to the mean and variance of a diagonal Gaussian."""

    def __init__(self, n_in, n_out, n_hidden, n_layers, n_batch, dropout_rate):
        super().__init__()
        self.body = FCLayers(n_in, n_hidden, n_layers, n_batch, dropout_rate)
        self.mean_var = nn.Linear(n_hidden, 2 * n_out)

    def forward(self, x, batch_onehot):
        mean, raw_var = self.mean_var(self.body(x, batch_onehot)).chunk(2, dim=-1)
        return mean, raw_var.exp() + _VAR_EPS


def _normal_kl(mean, var, prior_mean, prior_var):
    """KL(N(mean, var) || N(prior_mean, prior_var)) summed over the last axis."""
    return 0.5 * (
        prior_var.log() - var.log() + (var + (mean - prior_mean) ** 2) / prior_var - 1
    ).sum(-1)


def _normal_log_prob(x, mean, var):
    return -0.5 * (((x - mean) ** 2) / var + var.log() + _LOG_2PI).sum(-1)


class VAE(nn.Module):
    """scVI's variational autoencoder for counts.

    Parameters
    ----------
    n_genes
        Number of genes.
    n_batch
        Number of batches (1: no batch covariate).
    n_hidden, n_latent, n_layers, dropout_rate
        Architecture; dropout acts in the encoders only, as in scVI.
    reconstruction_loss
        ``"zinb"``, ``"nb"`` or ``"poisson"``.
    dispersion
        ``"gene"`` (one per gene) or ``"gene-batch"`` (one per gene and batch).
    use_observed_lib_size
        Use each cell's total count as library size instead of a latent one.
    library_prior
        Mean and variance of the log library size per batch (from training cells).
    """

    def __init__(
        self,
        n_genes: int,
        n_batch: int = 1,
        *,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        reconstruction_loss: str = "zinb",
        dispersion: str = "gene",
        use_observed_lib_size: bool = False,
        library_prior: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        super().__init__()
        self.n_genes, self.n_batch, self.n_latent = n_genes, n_batch, n_latent
        self.reconstruction_loss = reconstruction_loss
        self.dispersion = dispersion
        self.use_observed_lib_size = use_observed_lib_size
        self.z_encoder = GaussianEncoder(n_genes, n_latent, n_hidden, n_layers, n_batch, dropout_rate)
        if not use_observed_lib_size:
            self.l_encoder = GaussianEncoder(n_genes, 1, n_hidden, 1, n_batch, dropout_rate)
        self.decoder = FCLayers(n_latent, n_hidden, n_layers, n_batch, 0.0)
        n_heads = 2 if reconstruction_loss == "zinb" else 1
        self.px_heads = nn.Linear(n_hidden, n_heads * n_genes)
        if reconstruction_loss != "poisson":
            n_disp = n_batch if dispersion == "gene-batch" else 1
            self.log_theta = nn.Parameter(torch.randn(n_disp, n_genes))
        if library_prior is None:
            library_prior = (torch.zeros(n_batch), torch.ones(n_batch))
        self.register_buffer("library_mean", library_prior[0].reshape(-1).clone())
        self.register_buffer("library_var", library_prior[1].reshape(-1).clone())
        #: Compute the likelihood through :mod:`._compiled_likelihood` (training decides).
        self.compiled_likelihood = False

    # -- pieces ---------------------------------------------------------------
    def batch_onehot(self, batch: torch.Tensor) -> torch.Tensor | None:
        if self.n_batch <= 1:
            return None
        return F.one_hot(batch, self.n_batch).to(self.library_mean.dtype)

    def encode(self, x_log1p, onehot):
        """Parameters of q(z|x) and, for a latent library, q(l|x)."""
        z_mean, z_var = self.z_encoder(x_log1p, onehot)
        if self.use_observed_lib_size:
            return z_mean, z_var, None, None
        l_mean, l_var = self.l_encoder(x_log1p, onehot)
        return z_mean, z_var, l_mean, l_var

    def decode(self, z, onehot, batch):
        """Scale logits ``h`` (``mu = softmax(h) * library``), ``log_theta`` and (ZINB) ``pi_logits``."""
        heads = self.px_heads(self.decoder(z, onehot))
        if self.reconstruction_loss == "zinb":
            scale_logits, pi_logits = heads.split(self.n_genes, dim=-1)
        else:
            scale_logits, pi_logits = heads, None
        log_theta = None
        if self.reconstruction_loss != "poisson":
            log_theta = self.log_theta[batch] if self.log_theta.shape[0] > 1 else self.log_theta[0]
        return scale_logits, log_theta, pi_logits

    def reconstruction_nll(self, x, nz, scale_logits, log_library, log_theta, pi_logits):
        """Per-cell -log p(x|z, l) without the lgamma(x + 1) constant."""
        if self.compiled_likelihood and nz.mask is None:
            nll = compiled_count_nll(x, nz, self.reconstruction_loss, scale_logits, log_library, log_theta, pi_logits)
            if nll is not None:
                return nll
        return count_nll(x, nz, self.reconstruction_loss, scale_logits, log_library, log_theta, pi_logits)

    # -- the ELBO ---------------------------------------------------------------
    def forward(self, x, x_log1p, log_library, batch, nz: NonZeros | None = None):
        """Per-cell reconstruction NLL (without constant), KL of z and KL of l (one sample).

        ``nz``: the non-zeros of ``x`` where the caller knows them already.
        """
        onehot = self.batch_onehot(batch)
        z_mean, z_var, l_mean, l_var = self.encode(x_log1p, onehot)
        z = z_mean + z_var.sqrt() * torch.randn_like(z_mean)
        kl_z = 0.5 * (z_var + z_mean**2 - 1 - z_var.log()).sum(-1)
        if l_mean is None:
            log_lib = log_library.unsqueeze(-1)
            kl_l = torch.zeros_like(kl_z)
        else:
            log_lib = l_mean + l_var.sqrt() * torch.randn_like(l_mean)
            prior_mean = self.library_mean[batch].unsqueeze(-1)
            prior_var = self.library_var[batch].unsqueeze(-1)
            kl_l = _normal_kl(l_mean, l_var, prior_mean, prior_var)
        h, log_theta, pi_logits = self.decode(z, onehot, batch)
        recon = self.reconstruction_nll(x, NonZeros(x) if nz is None else nz, h, log_lib, log_theta, pi_logits)
        return recon, kl_z, kl_l

    @torch.no_grad()
    def importance_log_weights(self, x, x_log1p, log_library, batch, n_mc):
        """``n_mc x cells`` log importance weights log p(x, z, l) - log q(z, l | x)."""
        onehot = self.batch_onehot(batch)
        z_mean, z_var, l_mean, l_var = self.encode(x_log1p, onehot)
        nz = NonZeros(x)
        weights = []
        for _ in range(n_mc):
            z = z_mean + z_var.sqrt() * torch.randn_like(z_mean)
            log_w = _normal_log_prob(z, 0.0, torch.ones_like(z)) - _normal_log_prob(z, z_mean, z_var)
            if l_mean is None:
                log_lib = log_library.unsqueeze(-1)
            else:
                log_lib = l_mean + l_var.sqrt() * torch.randn_like(l_mean)
                prior_mean = self.library_mean[batch].unsqueeze(-1)
                prior_var = self.library_var[batch].unsqueeze(-1)
                log_w = log_w + _normal_log_prob(log_lib, prior_mean, prior_var)
                log_w = log_w - _normal_log_prob(log_lib, l_mean, l_var)
            h, log_theta, pi_logits = self.decode(z, onehot, batch)
            log_w = log_w - self.reconstruction_nll(x, nz, h, log_lib, log_theta, pi_logits)
            weights.append(log_w)
        return torch.stack(weights)
