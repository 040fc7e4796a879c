"""A small, deterministic world to serve: for the serving tests, the benchmark and UI screenshots.

:func:`populate` writes tracked KOLs (valid keys, names) and their swaps — closed winners and
losers, some 3x+, open positions at the end, tokens shared between KOLs — into a database and
runs the real analyzer, so positions and ``kol_stats`` are exactly what production has.
:func:`register_models` trains small token and KOL models quickly (no Tune), registers, evaluates
(report + plots) and optionally promotes them, so the registry holds real, verified versions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from kolray.analyzer import analyze
from kolray.datasets import load_dataset, write_dataset
from kolray.db.tables import Kol, SwapRow
from kolray.features import KOL_FEATURES, KOL_TARGETS, TOKEN_FEATURES
from kolray.features.definitions import KOL_PERSISTENCE
from kolray.learn import registry
from kolray.learn.stage import evaluate_version
from kolray.learn.train import (
    KOLTrainConfig,
    TokenTrainConfig,
    fit_kol_baselines,
    fit_token_baselines,
    kol_arrays,
    token_arrays,
    train_kol_model,
    train_token_model,
)
from kolray.serve.holder import ModelHolder
from kolray.serve.lookup import DEFAULT_SOURCE
from kolray.serve.service import KolrayService, LocalReloader, LocalScorer

DAY = 86_400
SOL = 1_000_000_000
NAMES = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
]  # fmt: skip


def pubkey(seed: int, *parts: object) -> str:
    """A valid, canonical base58 public key derived from the seed (deterministic)."""
    from solders.keypair import Keypair

    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return str(Keypair.from_seed(digest).pubkey())


@dataclass
class SampleWorld:
    wallets: list[str]
    names: list[str | None]
    mints: list[str]
    start: int
    end: int
    swaps: int
    positions_open: int = 0
    analyze_summary: dict[str, Any] = field(default_factory=dict)


def populate(
    engine: Engine, n_kols: int = 12, days: int = 40, seed: int = 0, end: int = 1_717_200_000
) -> SampleWorld:
    """Insert KOLs and swaps ending at ``end`` (unix seconds) and run the analyzer."""

    rng = np.random.default_rng(seed)
    start = end - days * DAY
    wallets = [pubkey(seed, "kol", k) for k in range(n_kols)]
    # The last KOL stays unnamed: the UI and API must cope with wallets without names.
    names: list[str | None] = [NAMES[k % len(NAMES)] for k in range(n_kols)]
    names[-1] = None
    mints = [pubkey(seed, "mint", m) for m in range(max(20, n_kols * 4))]
    skill = np.linspace(0.05, 0.45, n_kols)
    rng.shuffle(skill)
    rows: list[dict[str, Any]] = []
    counter = 0

    def swap(wallet: str, mint: str, side: str, t: int, tokens: int, lamports: int, price: float) -> None:
        nonlocal counter
        counter += 1
        rows.append(
            {
                "signature": hashlib.sha256(f"{seed}-{counter}".encode()).hexdigest()[:64],
                "slot": t * 2 + counter % 2,
                "block_time": t,
                "wallet": wallet,
                "mint": mint,
                "side": side,
                "token_amount": tokens,
                "token_decimals": 6,
                "sol_amount": lamports,
                "dex": str(rng.choice(["pumpfun", "raydium", "meteora"])),
                "fee": 5000,
                "tips": 0,
                "rent": 0,
                "price_sol": price,
            }
        )

    open_count = 0
    for k, wallet in enumerate(wallets):
        n_positions = int(rng.integers(10, 26))
        entries = np.sort(rng.integers(start, end - 3600, n_positions))
        used: set[str] = set()
        for t_entry in entries:
            mint = str(rng.choice([m for m in mints if m not in used] or mints))
            used.add(mint)
            price = float(10 ** rng.uniform(-7, -4))
            lamports = int(SOL * float(np.clip(rng.lognormal(0.0, 0.6), 0.05, 20.0)))
            tokens = int(lamports / SOL / price * 1e6)
            swap(wallet, mint, "buy", int(t_entry), tokens, lamports, price)
            # Positions entered in the last two days stay open (a trader's live book).
            if t_entry > end - 2 * DAY:
                open_count += 1
                continue
            hit = rng.random() < skill[k]
            multiple = float(rng.uniform(3.0, 9.0) if hit else np.clip(rng.lognormal(-0.4, 0.5), 0.02, 2.9))
            hold = int(np.clip(rng.lognormal(np.log(6 * 3600), 1.0), 120, 5 * DAY))
            t_exit = min(int(t_entry) + hold, end - 60)
            swap(wallet, mint, "sell", t_exit, tokens, int(lamports * multiple), price * multiple)
    with engine.begin() as conn:
        conn.execute(
            insert(Kol),
            [
                {"wallet": w, "name": n, "links": [], "active": True}
                for w, n in zip(wallets, names, strict=True)
            ],
        )
        conn.execute(insert(SwapRow), rows)
    summary = analyze(engine, full=True)
    return SampleWorld(
        wallets=wallets,
        names=names,
        mints=mints,
        start=start,
        end=end,
        swaps=len(rows),
        positions_open=open_count,
        analyze_summary=summary.to_dict(),
    )


@dataclass
class SampleModels:
    token: list[str]
    kol: list[str]


def _time_splits(frame: Any, column: str, embargo_s: int) -> dict[str, Any]:
    """60/20/20 by time with an embargo gap before val and before test."""
    t = frame[column].to_numpy()
    lo, hi = int(t.min()), int(t.max()) + 1
    usable = hi - lo - 2 * embargo_s
    t1 = lo + int(usable * 0.6)
    t2 = t1 + embargo_s + int(usable * 0.2)
    masks = {"train": t < t1, "val": (t >= t1 + embargo_s) & (t < t2), "test": t >= t2 + embargo_s}
    return {name: frame[mask].reset_index(drop=True) for name, mask in masks.items()}


def write_datasets(storage_uri: str, seed: int = 0, rows: int = 3000) -> tuple[str, str]:
    """Token and KOL datasets in the feature pipeline's exact columns (``kolray.features``), with
    random features and a planted signal: what the sample models train on. Returns the versions."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    start = 1_700_000_000
    # Token: one row per buy; P(3x) rises with the KOL's record and the token's market cap.
    x = rng.normal(size=(rows, len(TOKEN_FEATURES))).astype(np.float32)
    signal = x[:, TOKEN_FEATURES.index("kol_rate_3x")] + 0.8 * x[:, TOKEN_FEATURES.index("log_mcap")]
    p = 1 / (1 + np.exp(-(signal * 1.5 - 2.5)))
    label = (rng.random(rows) < p).astype(np.int8)
    token = pd.DataFrame(x, columns=TOKEN_FEATURES)
    token.insert(0, "wallet", [pubkey(seed, "kol", int(k)) for k in rng.integers(0, 40, rows)])
    token.insert(1, "mint", [pubkey(seed, "mint", int(m)) for m in rng.integers(0, 400, rows)])
    token.insert(2, "entry_time", np.sort(rng.integers(start, start + 90 * DAY, rows)).astype(np.int64))
    token.insert(3, "entry_signature", [f"sample-{seed}-{i}" for i in range(rows)])
    token["label_3x"] = label
    token["multiple"] = np.where(label == 1, rng.uniform(3, 10, rows), rng.uniform(0, 2.9, rows))
    token["oracle_p3x"] = p
    token_manifest = write_dataset(
        "token",
        _time_splits(token, "entry_time", DAY),
        feature_columns=list(TOKEN_FEATURES),
        label_columns=["label_3x"],
        id_columns=["wallet", "mint", "entry_time", "entry_signature"],
        eval_only_columns=["multiple", "oracle_p3x"],
        time_column="entry_time",
        horizon_s=7 * DAY,
        embargo_s=DAY,
        source={"sample": True, "seed": seed},
        storage_uri=storage_uri,
    )
    # KOL: one row per KOL per day; future 3x rates follow the past ones with noise.
    n = rows // 2
    x = rng.normal(size=(n, len(KOL_FEATURES))).astype(np.float32)
    past7 = rng.beta(1, 6, n).astype(np.float32)
    past30 = np.clip(past7 + rng.normal(0, 0.05, n), 0, 1).astype(np.float32)
    kol = pd.DataFrame(x, columns=KOL_FEATURES)
    kol["rate_3x_past_7d"], kol["rate_3x_past_30d"] = past7, past30
    kol.insert(0, "wallet", [pubkey(seed, "kol", int(k)) for k in rng.integers(0, 40, n)])
    kol.insert(1, "day", (start + np.sort(rng.integers(0, 180, n)) * DAY).astype(np.int64))
    kol[KOL_TARGETS[0]] = np.clip(past7 + rng.normal(0, 0.05, n), 0, 1)
    kol[KOL_TARGETS[1]] = np.clip(past30 + rng.normal(0, 0.03, n), 0, 1)
    kol["n_next_7d"] = rng.integers(1, 20, n)
    kol["n_next_30d"] = kol["n_next_7d"] + rng.integers(0, 40, n)
    kol_manifest = write_dataset(
        "kol",
        _time_splits(kol, "day", 30 * DAY),
        feature_columns=list(KOL_FEATURES),
        label_columns=list(KOL_TARGETS),
        id_columns=["wallet", "day"],
        eval_only_columns=["n_next_7d", "n_next_30d"],
        time_column="day",
        horizon_s=30 * DAY,
        embargo_s=30 * DAY,
        persistence_features=dict(KOL_PERSISTENCE),
        source={"sample": True, "seed": seed},
        storage_uri=storage_uri,
    )
    return token_manifest.version, kol_manifest.version


def register_models(
    storage_uri: str, versions: int = 1, promote: bool = True, seed: int = 0, reports: bool = True
) -> SampleModels:
    """Train, register (and evaluate: report + plots) ``versions`` small token and KOL models on
    :func:`write_datasets`; promote the first of each when ``promote``. About a second per model
    on one core, plus a few for each report."""
    import torch

    torch.set_num_threads(1)
    token_version, kol_version = write_datasets(storage_uri, seed)
    token_ds = load_dataset("token", token_version, storage_uri)
    kol_ds = load_dataset("kol", kol_version, storage_uri)
    token_data, kol_data = token_arrays(token_ds), kol_arrays(kol_ds)
    out = SampleModels(token=[], kol=[])
    for i in range(versions):
        token_model, _ = train_token_model(
            token_data, TokenTrainConfig(widths=[16], max_epochs=3, seed=seed + i, device="cpu")
        )
        meta = registry.register(
            token_model,
            dataset_version=token_ds.version,
            baselines=fit_token_baselines(token_data) if reports else None,
            storage_uri=storage_uri,
        )
        out.token.append(meta.version)
        kol_model, _ = train_kol_model(
            kol_data,
            KOLTrainConfig(d_model=8, n_heads=2, n_layers=1, max_epochs=3, seed=seed + i, device="cpu"),
        )
        meta = registry.register(
            kol_model,
            dataset_version=kol_ds.version,
            baselines=fit_kol_baselines(kol_data) if reports else None,
            storage_uri=storage_uri,
        )
        out.kol.append(meta.version)
    for name, listed in (("token", out.token), ("kol", out.kol)):
        if reports:
            for version in listed:
                evaluate_version(name, version, storage_uri=storage_uri, n_boot=10)
        if promote:
            registry.promote(name, listed[0], reason="sample", storage_uri=storage_uri)
    return out


class UnknownFeatures:
    """A feature source that knows nothing: every feature NaN, which the models impute with their
    training means (the population prior). No database work at all, so the benchmark can measure
    the serving path (HTTP, Serve hops, batching, the model) apart from the feature lookup.
    Production serving uses :func:`kolray.serve.lookup.database_features`."""

    def __init__(self, engine: Engine) -> None:
        self.token_columns = list(TOKEN_FEATURES)
        self.kol_columns = list(KOL_FEATURES)

    def _nan(self, n: int, columns: list[str]) -> Any:
        import pandas as pd

        return pd.DataFrame(np.full((n, len(columns)), np.nan, dtype=np.float32), columns=columns)

    def token_features(self, items: Any) -> Any:
        return self._nan(len(items), self.token_columns)

    def kol_features(self, wallets: Any, as_of: int) -> Any:
        return self._nan(len(wallets), self.kol_columns)


def unknown_features(engine: Engine) -> UnknownFeatures:
    return UnknownFeatures(engine)


def app_config(
    env: dict[str, str],
    port: int,
    *,
    feature_source: str | None = None,
    ui: bool = True,
    registry_poll_s: float = 10.0,
    host: str = "127.0.0.1",
) -> Any:
    """A declarative Serve config for the app on ``host:port`` whose replicas see ``env`` (the
    KOLRAY_* settings of a test or benchmark). Declarative, like ``kolray serve``, so that hot
    reload works."""
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(
        {
            "http_options": {"host": host, "port": port},
            "applications": [
                {
                    "name": "kolray",
                    "route_prefix": "/",
                    "import_path": "kolray.serve.app:build",
                    "args": {"feature_source": feature_source or DEFAULT_SOURCE, "ui": ui},
                    # An empty KOLRAY_API_KEY: the admin routes are open whatever the caller's shell has.
                    "runtime_env": {"env_vars": {"KOLRAY_API_KEY": "", **env}},
                    "deployments": [
                        {
                            "name": "KolrayApi",
                            "user_config": {"registry_poll_s": registry_poll_s, "feature_ttl_s": 10.0},
                        }
                    ],
                }
            ],
        }
    )


def local_service(db_url: str, store: str, api_key: str = "") -> tuple[KolrayService, dict[str, ModelHolder]]:
    """The API's service in this process, without Ray: each model's holder set to its champion (if
    there is one), reloads applied to the holders directly."""
    holders = {m: ModelHolder(m, storage_uri=store) for m in ("token", "kol")}
    for holder in holders.values():
        holder.configure(None)
    service = KolrayService(
        token=LocalScorer(holders["token"]),
        kol=LocalScorer(holders["kol"]),
        database_url=db_url,
        storage_uri=store,
        reloader=LocalReloader(holders),
        api_key=api_key,
    )
    return service, holders
