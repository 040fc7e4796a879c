"""The PyTorch predictors. Both carry their input normalisation as buffers, so the statistics fitted
on the training split travel inside ``model.safetensors`` with the weights and Serve cannot apply
the wrong ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from kolray.learn.baselines import standardise_fit
from kolray.learn.embeddings import PeriodicEmbedding

# Standardised inputs are clipped: heavy-tailed on-chain features (market caps, sizes) would
# otherwise put a few rows at hundreds of standard deviations and dominate the first layer.
CLIP = 8.0


class FeatureNormalizer(nn.Module):
    """(x - mean) / std with NaN → 0 (the training mean), then clipped to ±CLIP."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def fit(self, x: np.ndarray) -> FeatureNormalizer:
        """Fit on the **training split only** (NaN-aware; a constant column keeps std 1)."""
        mean, std = standardise_fit(x)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise, fill NaN with 0 and clip."""
        z = (x - self.mean) / self.std
        z = torch.nan_to_num(z, nan=0.0, posinf=CLIP, neginf=-CLIP)
        return z.clamp(-CLIP, CLIP)


class TokenNet(nn.Module):
    """MLP: [Linear → LayerNorm → ReLU → Dropout] × depth → Linear(1). Returns logits of P(3x).

    With ``embed_dim > 0`` each standardised feature first goes through its own learned periodic
    embedding (:class:`~kolray.learn.embeddings.PeriodicEmbedding`), and the MLP reads their
    concatenation; with 0 it reads the standardised features (the weights of earlier versions)."""

    def __init__(
        self, n_features: int, widths: Sequence[int] = (128, 64), dropout: float = 0.1, embed_dim: int = 0
    ) -> None:
        super().__init__()
        if n_features < 1 or not widths or min(widths) < 1 or embed_dim < 0:
            raise ValueError(
                f"bad TokenNet sizes: n_features={n_features}, widths={list(widths)}, embed_dim={embed_dim}"
            )
        self.n_features = n_features
        self.widths = [int(w) for w in widths]
        self.dropout = float(dropout)
        self.embed_dim = int(embed_dim)
        self.normalizer = FeatureNormalizer(n_features)
        self.embedding = PeriodicEmbedding(n_features, self.embed_dim) if self.embed_dim else None
        layers: list[nn.Module] = []
        width_in = self.embedding.out_features if self.embedding is not None else n_features
        for width in self.widths:
            layers += [nn.Linear(width_in, width), nn.LayerNorm(width), nn.ReLU(), nn.Dropout(dropout)]
            width_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of P(3x), shape (batch,)."""
        z = self.normalizer(x)
        if self.embedding is not None:
            z = self.embedding(z, torch.isnan(x))
        return self.head(self.body(z)).squeeze(-1)

    def hparams(self) -> dict[str, object]:
        """The constructor arguments, stored beside the weights."""
        out: dict[str, object] = {
            "n_features": self.n_features,
            "widths": self.widths,
            "dropout": self.dropout,
        }
        if self.embed_dim:
            out["embed_dim"] = self.embed_dim
        return out


class KolNet(nn.Module):
    """Feature-token transformer: each scalar feature becomes a token (value × its own vector + its
    own bias, as in FT-Transformer), a learned [CLS] token is prepended, multi-head self-attention
    mixes them, and the [CLS] output feeds two separate heads: the 7-day and the 30-day 3x rate.
    Returns logits of shape (batch, 2); the rates are their sigmoid."""

    TARGETS = ("7d", "30d")

    def __init__(
        self,
        n_features: int,
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 2,
        dropout: float = 0.1,
        ff_mult: int = 2,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_features = n_features
        self.d_model, self.n_heads, self.n_layers = int(d_model), int(n_heads), int(n_layers)
        self.dropout, self.ff_mult = float(dropout), int(ff_mult)
        self.normalizer = FeatureNormalizer(n_features)
        self.value_weight = nn.Parameter(torch.randn(n_features, d_model) * 0.1)
        self.value_bias = nn.Parameter(torch.zeros(n_features, d_model))
        # Missing values get their own learned vector instead of pretending to be the mean.
        self.missing = nn.Parameter(torch.zeros(n_features, d_model))
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=d_model * ff_mult,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        # Nested-tensor fast path only matters for padded sequences; ours are dense.
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.heads = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Linear(d_model, d_model), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_model, 1)
                )
                for _ in self.TARGETS
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the 7-day and 30-day rates, shape (batch, 2)."""
        missing = torch.isnan(x).unsqueeze(-1)
        z = self.normalizer(x).unsqueeze(-1)  # (B, F, 1)
        tokens = z * self.value_weight + self.value_bias  # (B, F, D)
        tokens = torch.where(missing, self.missing.expand_as(tokens), tokens)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        pooled = self.norm(self.encoder(tokens)[:, 0])
        return torch.cat([head(pooled) for head in self.heads], dim=-1)

    def hparams(self) -> dict[str, object]:
        """The constructor arguments, stored beside the weights."""
        return {
            "n_features": self.n_features,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "n_layers": self.n_layers,
            "dropout": self.dropout,
            "ff_mult": self.ff_mult,
        }


def build_network(kind: str, hparams: dict[str, object]) -> nn.Module:
    """Rebuild a network from the hyper-parameters stored beside its weights."""
    params = dict(hparams)
    if kind == "token":
        return TokenNet(**params)  # type: ignore[arg-type]
    if kind == "kol":
        return KolNet(**params)  # type: ignore[arg-type]
    raise ValueError(f"unknown model kind {kind!r}: token or kol")
