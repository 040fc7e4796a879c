"""Learned embeddings of numerical features for the token network.

An MLP on standardised scalars struggles with the step-like, heavy-tailed relations of on-chain
features (a KOL's 3x rate matters above some level, a market cap below another). Giving each
feature its own small learned representation first helps: "periodic" embeddings (Gorishniy,
Rubachev, Babenko 2022, "On Embeddings for Numerical Features in Tabular Deep Learning", PLR
variant) map a standardised value ``z`` to ``ReLU(W_j [sin(2π c_j z), cos(2π c_j z)] + b_j)``
with learned frequencies ``c_j`` per feature ``j``. A missing value gets its own learned vector
instead of pretending to be the mean.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PeriodicEmbedding(nn.Module):
    """(batch, features) standardised values → (batch, features × dim) embeddings (PLR)."""

    def __init__(self, n_features: int, dim: int = 8, n_frequencies: int = 8, sigma: float = 0.1) -> None:
        super().__init__()
        if n_features < 1 or dim < 1 or n_frequencies < 1 or sigma <= 0:
            raise ValueError(
                f"bad PeriodicEmbedding sizes: n_features={n_features}, dim={dim}, "
                f"n_frequencies={n_frequencies}, sigma={sigma}"
            )
        self.n_features, self.dim, self.n_frequencies = n_features, dim, n_frequencies
        # Small initial frequencies: the embedding starts close to a smooth function of z.
        self.frequencies = nn.Parameter(torch.randn(n_features, n_frequencies) * sigma)
        bound = 1 / math.sqrt(2 * n_frequencies)
        self.weight = nn.Parameter(torch.empty(n_features, 2 * n_frequencies, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, dim).uniform_(-bound, bound))
        self.missing = nn.Parameter(torch.zeros(n_features, dim))

    @property
    def out_features(self) -> int:
        return self.n_features * self.dim

    def forward(self, z: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """``z``: standardised values with NaN already replaced; ``missing``: where they were NaN."""
        angles = 2 * math.pi * self.frequencies * z.unsqueeze(-1)  # (B, F, K)
        periodic = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # (B, F, 2K)
        embedded = torch.relu(torch.einsum("bfk,fkd->bfd", periodic, self.weight) + self.bias)
        embedded = torch.where(missing.unsqueeze(-1), self.missing.expand_as(embedded), embedded)
        return embedded.flatten(1)
