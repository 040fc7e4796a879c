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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "ServerConfig": "kolray.sim.server",
    "ServerHandle": "kolray.sim.server",
    "start_server": "kolray.sim.server",
    "World": "kolray.sim.world",
    "WorldError": "kolray.sim.world",
    "generate_world": "kolray.sim.world",
    "load_world": "kolray.sim.world",
}


def __getattr__(name: str) -> Any:
    # Lazy: importing kolray.sim (e.g. for the CLI's --help) does not load numpy, pyarrow, solders.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'kolray.sim' has no attribute {name!r}")
