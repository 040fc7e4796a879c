"""The chain twin: a simulated memecoin market served as real Solana JSON-RPC.

- :func:`generate_world` / :func:`load_world` — a seeded world of KOLs, tokens and trades, with its
  ground truth (trades, positions, latent traits, ``oracle_p3x``) as Parquet and its transactions
  rendered in mainnet's ``getTransaction`` shape (:mod:`kolray.sim.world`).
- :func:`start_server` — serve a world as Solana JSON-RPC from a background thread, with a clock,
  rate limits and faults (:mod:`kolray.sim.server`); ``kolray sim serve`` runs it from the CLI.

The generative model and how its latent traits show through what a tracker can observe are
described in :mod:`kolray.sim.market`, :mod:`kolray.sim.behaviour` and :mod:`kolray.sim.oracle`.
"""

from __future__ import annotations

from kolray.sim.server import ServerConfig, ServerHandle, start_server
from kolray.sim.world import World, WorldError, generate_world, load_world

__all__ = [
    "ServerConfig",
    "ServerHandle",
    "World",
    "WorldError",
    "generate_world",
    "load_world",
    "start_server",
]
