"""The FVAE objective, term by term, for diagonal Gaussians (O(d) per frame).

Every function returns one value per frame (sums over the feature or latent dimension), so that padded
frames can be dropped by ``masked_mean`` before anything is averaged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_nll(x: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
    """-log N(x; mean, diag(scale)^2), summed over the last dim: (..., d) -> (...); ``scale`` is the std, > 0."""
    z = (x - mean) / scale
    # vecdot: the sum of squares without a squared copy of z; forward + backward measured 20% faster on CPU
    return 0.5 * torch.linalg.vecdot(z, z) + (scale.log().sum(-1) + 0.5 * x.shape[-1] * _LOG_2PI)


def kl_to_unit_gaussian(mu: Tensor, logvar: Tensor, prior_mean: float = 0.0) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(prior_mean * 1, I)), summed over the last dim: (..., r) -> (...)."""
    return 0.5 * ((mu - prior_mean).square() + logvar.exp() - 1.0 - logvar).sum(-1)


def unit_gaussian_log_prob(z: Tensor, mean: float) -> Tensor:
    """log N(z; mean * 1, I), summed over the last dim: (..., r) -> (...)."""
    return -0.5 * (z - mean).square().sum(-1) - 0.5 * z.shape[-1] * _LOG_2PI


def repulsive_gamma(z1: Tensor, z2: Tensor, prior_mean_z2: float) -> Tensor:
    """Single-sample Gamma = log p2(z2) - log p1(z1), with p1 = N(0, I), p2 = N(prior_mean_z2, I)."""
    return unit_gaussian_log_prob(z2, prior_mean_z2) - unit_gaussian_log_prob(z1, 0.0)


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of per-frame values over the frames where ``mask`` is true (all frames when mask is None)."""
    return masked_frame_means(values.unsqueeze(-1), mask)[0]


def masked_frame_means(values: Tensor, mask: Tensor | None) -> Tensor:
    """Means of k per-frame quantities at once, over the frames where ``mask`` is true: (..., k) -> (k,).

    One weighted sum for all k: a handful of kernels however many loss terms there are. Elementwise, not a
    matrix product, so that autocast leaves it in the values' precision.
    """
    flat = values.reshape(-1, values.shape[-1])
    if mask is None:
        return flat.mean(0)
    weights = mask.reshape(-1, 1).to(values.dtype)
    return (flat * weights).sum(0) / weights.sum().clamp_min(1.0)
