"""``generate_world`` and ``load_world``: a whole twin world on disk, community by community.

A world of N KOLs is simulated as ``ceil(N / community_size)`` independent communities, each with its
own token universe. Each community is simulated, rendered to transactions, checked against the
position rules and written out before the next one starts, so memory stays bounded by one community
(about 250 KOLs) whatever N is.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kolray import __version__
from kolray.sim.behaviour import Ladder
from kolray.sim.chain import Renderer
from kolray.sim.market import level_of
from kolray.sim.oracle import oracle_p3x, oracle_p_peak
from kolray.sim.params import (
    DAY,
    LABEL_HORIZON_S,
    LAMPORTS_PER_SOL,
    TOKEN_DECIMALS,
    TOKEN_SUPPLY_RAW,
    WorldParams,
)
from kolray.sim.positions import build_positions
from kolray.sim.simulate import Community, CommunityResult
from kolray.sim.store import FORMAT_VERSION, ChainPart, PartWriter, read_world_json
from kolray.sim.tapes import TAPES_SCHEMA, Tapes, tapes_frame

Progress = Callable[[str, int, int], None]

SWAP_FIELDS = (
    "signature", "slot", "block_time", "wallet", "mint", "side", "token_amount", "token_decimals", "sol_amount",
    "dex", "program_id", "quote_mint", "quote_amount", "quote_decimals", "fee", "rent", "tips", "price_sol",
    "market_cap_sol",
)  # fmt: skip
TRADES_SCHEMA = pa.schema(
    [
        ("signature", pa.string()),
        ("slot", pa.int64()),
        ("block_time", pa.int64()),
        ("wallet", pa.string()),
        ("mint", pa.string()),
        ("side", pa.string()),
        ("token_amount", pa.int64()),
        ("token_decimals", pa.int32()),
        ("sol_amount", pa.int64()),
        ("dex", pa.string()),
        ("program_id", pa.string()),
        ("quote_mint", pa.string()),
        ("quote_amount", pa.int64()),
        ("quote_decimals", pa.int32()),
        ("fee", pa.int64()),
        ("rent", pa.int64()),
        ("tips", pa.int64()),
        ("price_sol", pa.float64()),
        ("market_cap_sol", pa.float64()),
        ("kol_index", pa.int32()),
        ("community", pa.int32()),
        ("route", pa.string()),
        ("opens_position", pa.bool_()),
    ]
)


POSITIONS_SCHEMA = pa.schema(
    [
        ("wallet", pa.string()),
        ("mint", pa.string()),
        ("seq", pa.int32()),
        ("entry_time", pa.int64()),
        ("exit_time", pa.int64()),
        ("entry_signature", pa.string()),
        ("exit_signature", pa.string()),
        ("status", pa.string()),
        ("cost_sol", pa.float64()),
        ("proceeds_sol", pa.float64()),
        ("fees_sol", pa.float64()),
        ("realised_pnl_sol", pa.float64()),
        ("multiple", pa.float64()),
        ("hold_s", pa.int64()),
        ("hold_weighted_s", pa.float64()),
        ("n_buys", pa.int32()),
        ("n_sells", pa.int32()),
        ("tokens_bought", pa.int64()),
        ("tokens_sold", pa.int64()),
        ("flags", pa.string()),
        ("venue_at_entry", pa.string()),
        ("market_cap_sol_at_entry", pa.float64()),
        ("label_3x", pa.bool_()),
        ("usable", pa.bool_()),
        ("oracle_p3x", pa.float64()),
        ("kol_style", pa.string()),
        ("token_quality", pa.float64()),
        ("entry_regime", pa.int8()),
        ("entry_level", pa.float64()),
        ("ladder_variant", pa.int8()),
        ("outcome", pa.string()),
        ("max_multiple_7d", pa.float64()),
        ("tracked_kols_before", pa.int32()),
        ("peak_3x", pa.bool_()),
        ("oracle_p_peak3x", pa.float64()),
        # The peak on the true tape (the prices the token traded at, every crowd included) within
        # 7 days of entry, over the tape's price at entry: what a reader of the chain can see.
        ("tape_max_multiple_7d", pa.float64()),
    ]
)
KOLS_SCHEMA = pa.schema(
    [("wallet", pa.string()), ("kol_index", pa.int32()), ("community", pa.int32()), ("style", pa.string())]
    + [(name, pa.float64()) for name in (
        "skill", "pick_coef", "herding", "momentum_pref", "freshness_h", "positions_per_day", "hour_center",
        "hour_concentration", "weekend_factor", "size_median_sol", "size_sigma", "conviction", "abandon_prob",
        "time_exit_rate_per_h", "split_buy_prob", "jito_prob")]
    + [("bot_fee_bps", pa.int32()), ("jupiter_prob", pa.float64()), ("fail_rate", pa.float64()),
       ("ladders", pa.string()), ("n_positions", pa.int32()), ("expected_p3x", pa.float64()),
       ("realised_3x_rate", pa.float64())]
)  # fmt: skip
TOKENS_SCHEMA = pa.schema(
    [
        ("mint", pa.string()),
        ("community", pa.int32()),
        ("token_index", pa.int32()),
        ("launch_time", pa.float64()),
        ("quality", pa.float64()),
        ("calm_level", pa.float64()),
        ("hype_levels", pa.list_(pa.float64())),
        ("hype_rate_per_h", pa.float64()),
        ("hype_end_rate_per_h", pa.float64()),
        ("death_rate_per_h", pa.float64()),
        ("sigma_per_sqrt_h", pa.float64()),
        ("tail_alpha", pa.float64()),
        ("death_time", pa.float64()),
        ("migration_time", pa.float64()),
        ("amm", pa.string()),
        ("peak_level", pa.float64()),
        ("kol_positions", pa.int32()),
        ("supply_raw", pa.int64()),
        ("decimals", pa.int32()),
    ]
)
KOL_DAILY_SCHEMA = pa.schema(
    [
        ("wallet", pa.string()),
        ("day", pa.int64()),
        ("n_next_7d", pa.int32()),
        ("oracle_rate_7d", pa.float64()),
        ("window_complete_7d", pa.bool_()),
        ("n_next_30d", pa.int32()),
        ("oracle_rate_30d", pa.float64()),
        ("window_complete_30d", pa.bool_()),
    ]
)


def _table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """A table with a fixed schema (the same for every community) and no pandas metadata."""
    return pa.Table.from_pandas(
        frame[schema.names], schema=schema, preserve_index=False
    ).replace_schema_metadata(None)


class WorldError(ValueError):
    """A world directory or its parameters are unusable; the message says why."""


@dataclass
class World:
    """A twin world on disk: ground truth as DataFrames on demand, the chain for the server."""

    path: Path
    meta: dict[str, Any]
    params: WorldParams = field(init=False)

    def __post_init__(self) -> None:
        self.params = WorldParams.from_dict(self.meta["params"])

    @property
    def summary(self) -> dict[str, Any]:
        return self.meta["summary"]

    @property
    def start(self) -> int:
        return int(self.meta["start"])

    @property
    def end(self) -> int:
        return int(self.meta["end"])

    def _read(self, name: str) -> pd.DataFrame:
        return pq.read_table(self.path / f"{name}.parquet").to_pandas()

    def kols(self) -> pd.DataFrame:
        return self._read("kols")

    def tokens(self) -> pd.DataFrame:
        return self._read("tokens")

    def trades(self) -> pd.DataFrame:
        return self._read("trades")

    def positions(self) -> pd.DataFrame:
        return self._read("positions")

    def kol_daily(self) -> pd.DataFrame:
        return self._read("kol_daily")

    def tapes(self) -> Tapes:
        """The true price tapes of the traded tokens (:mod:`kolray.sim.tapes`)."""
        return Tapes.read(self.path)

    def chain_parts(self) -> list[ChainPart]:
        return [ChainPart(self.path / "chain" / name) for name in self.meta["parts"]]


def load_world(directory: str | Path) -> World:
    """Open a world written by :func:`generate_world` (raises ``FileNotFoundError``/``WorldError``)."""
    path = Path(directory)
    try:
        meta = read_world_json(path)
    except ValueError as error:
        raise WorldError(str(error)) from error
    return World(path, meta)


def generate_world(
    out_dir: str | Path,
    kols: int = 100,
    days: float = 30.0,
    seed: int = 0,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    workers: int = 1,
    **overrides: Any,
) -> dict[str, Any]:
    """Simulate a world and write it to ``out_dir``; returns its summary (also in ``world.json``).

    Same arguments → the same bytes on disk, whatever ``workers`` (processes simulating communities
    in parallel). ``overrides`` set any other :class:`WorldParams` field. ``out_dir`` must not exist
    or be empty, unless ``overwrite``.
    """
    if workers < 1:
        raise WorldError(f"workers must be ≥ 1 (got {workers})")
    try:
        params = WorldParams(kols=kols, days=days, seed=seed, **overrides)
    except TypeError as error:
        raise WorldError(f"unknown world parameter: {error}") from error
    except ValueError as error:
        raise WorldError(str(error)) from error
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise WorldError(f"{out} is not empty (pass overwrite=True / --overwrite to replace it)")
        if not (out / "world.json").is_file():
            raise WorldError(f"{out} is not empty and is not a twin world: refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    writers: dict[str, pq.ParquetWriter] = {}
    counts: dict[str, int] = {}
    calibration: dict[str, list[float]] = {
        "closed": [],
        "three_x": [],
        "max_7d": [],
        "oracle": [],
        "label": [],
        "graduation_s": [],
    }
    n_parts = math.ceil(params.kols / params.community_size)
    parts = [f"part-{part:05d}" for part in range(n_parts)]

    def append(
        tables: dict[str, pa.Table], part_counts: dict[str, int], part_cal: dict[str, list[float]]
    ) -> None:
        for table_name, table in tables.items():
            if table_name not in writers:
                writers[table_name] = pq.ParquetWriter(
                    out / f"{table_name}.parquet", table.schema, compression="zstd"
                )
            writers[table_name].write_table(table)
        _merge_counts(counts, part_counts)
        for key, values in part_cal.items():
            calibration[key].extend(values)

    report("simulate", 0, n_parts)
    try:
        if workers <= 1 or n_parts == 1:
            for part in range(n_parts):
                append(*_community_job(params, part, out, lambda done, total: report("render", done, total)))
                report("simulate", part + 1, n_parts)
        else:
            # Communities are independent: simulate them in parallel, append them in order. At most
            # ``workers + 1`` are in flight, so memory stays bounded by a few communities.
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn")
            ) as pool:
                pending: dict[int, Any] = {}
                next_part = 0
                for part in range(n_parts):
                    while next_part < n_parts and len(pending) <= workers:
                        pending[next_part] = pool.submit(_community_job, params, next_part, out, None)
                        next_part += 1
                    append(*pending.pop(part).result())
                    report("simulate", part + 1, n_parts)
    finally:
        for writer in writers.values():
            writer.close()
    summary = _summary(params, counts, calibration, time.perf_counter() - started)
    meta = {
        "format": FORMAT_VERSION,
        "generator": f"kolray {__version__}",
        "params": params.to_dict(),
        "start": params.start,
        "end": params.end,
        "first_slot": counts.get("first_slot", 0),
        "last_slot": counts.get("last_slot", 0),
        "parts": parts,
        "summary": summary,
    }
    # Timing varies run to run; keep it out of the file so equal seeds give equal bytes.
    stable = {**meta, "summary": {k: v for k, v in summary.items() if k != "generation_s"}}
    (out / "world.json").write_text(json.dumps(stable, indent=1, sort_keys=True) + "\n")
    return summary


def _merge_counts(total: dict[str, int], part: dict[str, int]) -> None:
    for key, value in part.items():
        if key == "first_slot":
            total[key] = min(total.get(key, value), value)
        elif key == "last_slot":
            total[key] = max(total.get(key, value), value)
        else:
            total[key] = total.get(key, 0) + value


def _community_job(
    params: WorldParams, part: int, out: Path, progress: Callable[[int, int], None] | None
) -> tuple[dict[str, pa.Table], dict[str, int], dict[str, list[float]]]:
    """Simulate community ``part``, write its chain part, return its ground-truth tables."""
    first = part * params.community_size
    size = min(params.community_size, params.kols - first)
    result = Community(params, part, first, size).run()
    counts: dict[str, int] = {}
    calibration: dict[str, list[float]] = {
        "closed": [],
        "three_x": [],
        "max_7d": [],
        "oracle": [],
        "label": [],
        "graduation_s": [],
    }
    tables = _write_part(
        params,
        result,
        out / "chain" / f"part-{part:05d}",
        counts,
        calibration,
        progress or (lambda done, total: None),
    )
    return tables, counts, calibration


def _write_part(
    params: WorldParams,
    result: CommunityResult,
    directory: Path,
    counts: dict[str, int],
    calibration: dict[str, list[float]],
    progress: Callable[[int, int], None],
) -> dict[str, pa.Table]:
    writer = PartWriter(directory)
    renderer = Renderer(params, result)
    kol_wallets = {k.wallet for k in result.kols}
    for k in result.kols:
        writer.balance(k.wallet, 0, k.initial_balance)
    swaps: list[dict[str, Any]] = []
    extra: list[tuple[int, int, str, bool]] = []
    entry_signature: dict[int, str] = {}  # plan id → signature of its opening buy
    kinds: dict[str, int] = {}
    # Events to render; a trade may also need a funding transfer, so the count can run past this.
    traded = {t.token for t in result.trades} | {a.token for a in result.airdrops if a.token >= 0}
    total = len(traded) + sum(
        len(events)
        for events in (result.trades, result.failed, result.airdrops, result.sends, result.transfers)
    )
    for done, rendered in enumerate(renderer.render(), start=1):
        writer.add(
            rendered.signature,
            rendered.slot,
            rendered.block_time,
            rendered.result,
            rendered.wire,
            rendered.legacy,
            rendered.err,
            rendered.memo,
            rendered.addresses,
        )
        kinds[rendered.kind] = kinds.get(rendered.kind, 0) + 1
        counts["first_slot"] = min(counts.get("first_slot", rendered.slot), rendered.slot)
        counts["last_slot"] = max(counts.get("last_slot", rendered.slot), rendered.slot)
        meta = rendered.result["meta"]
        account_keys = rendered.result["transaction"]["message"]["accountKeys"]
        for i, address in enumerate(account_keys):
            if address in kol_wallets and meta["preBalances"][i] != meta["postBalances"][i]:
                writer.balance(address, rendered.slot, meta["postBalances"][i])
        for swap in rendered.swaps:
            row = {f: getattr(swap, f) for f in SWAP_FIELDS}
            swaps.append(row)
            trade = rendered.trade
            assert trade is not None  # a swap is rendered from a simulated trade
            extra.append((trade.kol, result.index, rendered.route, trade.opens))
            if trade.opens:
                entry_signature[trade.position] = swap.signature
        if done % 2000 == 0:
            progress(done, max(total, done))
    supplies = {t.mint: (TOKEN_SUPPLY_RAW, TOKEN_DECIMALS) for t in result.tokens if t.mint}
    for airdrop in result.airdrops:
        if airdrop.token < 0:
            supplies.setdefault(airdrop.mint, (10**18, TOKEN_DECIMALS))
    n_txs = writer.close(supplies)
    for kind, n in kinds.items():
        counts[f"tx_{kind}"] = counts.get(f"tx_{kind}", 0) + n
    counts["transactions"] = counts.get("transactions", 0) + n_txs

    # Ground truth: positions by the shared rules, joined to the latent plan of each entry.
    positions, untracked = build_positions(swaps, cutoff=params.end)
    by_signature = {p["entry_signature"]: p for p in positions}
    plans = [plan for plan in result.positions if plan.id in entry_signature]
    oracle = oracle_p3x([plan.entry for plan in plans], params) if plans else np.empty(0)
    oracle_peak = oracle_p_peak([plan.entry for plan in plans], params) if plans else np.empty(0)
    kols = {k.index: k for k in result.kols}
    tokens = result.tokens
    tapes_df = tapes_frame({tokens[i].mint: tape for i, tape in result.tapes.items()})
    tapes = Tapes(tapes_df)
    trade_levels = _trade_levels(swaps)
    mismatches = 0
    for plan, p3x, peak3x in zip(plans, oracle, oracle_peak, strict=True):
        position = by_signature.get(entry_signature[plan.id])
        if position is None:
            raise AssertionError(f"no ground-truth position opens at {entry_signature[plan.id]}")
        position.update(
            oracle_p3x=float(p3x),
            kol_style=kols[plan.kol].style,
            token_quality=tokens[plan.token].q,
            entry_regime=plan.entry.regime,
            entry_level=plan.entry.level,
            ladder_variant=plan.ladder,
            outcome=plan.outcome,
            max_multiple_7d=math.exp(plan.max_level_7d),
            tracked_kols_before=plan.kols_before,
            # What a follower could have taken: the price traded at ≥ 3x the entry within 7 days.
            peak_3x=plan.max_level_7d >= math.log(3.0),
            oracle_p_peak3x=float(peak3x),
            tape_max_multiple_7d=_tape_multiple(
                tapes,
                trade_levels,
                tokens[plan.token].mint,
                plan.entry_time,
                int(position["entry_time"]),
                plan.entry_pool_level,
            ),
        )
        planned = plan.outcome == "closed" and plan.planned_three_x
        if position["status"] == "closed" and planned != (position["multiple"] >= 3.0):
            mismatches += 1
    if len(plans) != len(positions) or mismatches:
        raise AssertionError(
            f"community {result.index}: {len(positions)} positions from swaps vs {len(plans)} planned, "
            f"{mismatches} with a different 3x outcome"
        )
    for key, value in result.market.items():
        counts[f"market_{key}"] = counts.get(f"market_{key}", 0) + value
    calibration["graduation_s"].extend(result.graduation_s)
    counts["positions"] = counts.get("positions", 0) + len(positions)
    counts["untracked_sells"] = counts.get("untracked_sells", 0) + sum(untracked.values())
    counts["trades"] = counts.get("trades", 0) + len(swaps)
    counts["tokens"] = counts.get("tokens", 0) + len({s["mint"] for s in swaps})
    closed = [p for p in positions if p["status"] == "closed"]
    calibration["closed"].append(len(closed))
    calibration["three_x"].append(sum(1 for p in closed if p["multiple"] >= 3.0))
    calibration["max_7d"].extend(p["max_multiple_7d"] for p in positions)
    calibration["oracle"].extend(p["oracle_p3x"] for p in positions if p["usable"])
    calibration["label"].extend(float(p["label_3x"]) for p in positions if p["usable"])

    trades = pd.DataFrame(swaps, columns=list(SWAP_FIELDS))
    trades["kol_index"] = [e[0] for e in extra]
    trades["community"] = [e[1] for e in extra]
    trades["route"] = [e[2] for e in extra]
    trades["opens_position"] = [e[3] for e in extra]
    positions_df = pd.DataFrame(positions, columns=POSITIONS_SCHEMA.names).sort_values(
        ["entry_time", "wallet", "mint", "seq"], kind="stable"
    )
    kol_df = _kols_table(result, positions_df)
    return {
        "trades": _table(trades, TRADES_SCHEMA),
        "positions": _table(positions_df, POSITIONS_SCHEMA),
        "kols": _table(kol_df, KOLS_SCHEMA),
        "tokens": _table(_tokens_table(result, positions_df), TOKENS_SCHEMA),
        "kol_daily": _table(_kol_daily(params, result, positions_df), KOL_DAILY_SCHEMA),
        "tapes": _table(tapes_df, TAPES_SCHEMA),
    }


def _trade_levels(swaps: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per mint, the block times (sorted) and log-price levels of the pool prices the tracked
    wallets' swaps left: prices the token traded at, between the tape's 5-s points."""
    per_sol = LAMPORTS_PER_SOL / 10**TOKEN_DECIMALS  # SOL per whole token → lamports per raw unit
    by_mint: dict[str, list[tuple[int, float]]] = {}
    for swap in swaps:
        price = swap["price_sol"]
        if price is not None and price > 0 and swap["block_time"] is not None:
            by_mint.setdefault(swap["mint"], []).append((int(swap["block_time"]), level_of(price * per_sol)))
    out = {}
    for mint, points in by_mint.items():
        points.sort()
        out[mint] = (np.array([t for t, _ in points]), np.array([x for _, x in points]))
    return out


def _tape_multiple(
    tapes: Tapes,
    trades: dict[str, tuple[np.ndarray, np.ndarray]],
    mint: str,
    entry_time: float,
    entry_block_time: int,
    pool_level: float,
) -> float:
    """The highest price the token traded at in the 7 days after the entry (its true tape, and the
    tracked wallets' swaps after the entry's second, as the analyzer reads them) over the entry's
    pool price, at least 1 (as ``peak_multiple``: a token that never rose peaked at the entry)."""
    if mint not in tapes or tapes.at(mint, entry_time) is None:
        return math.nan
    peak = tapes.peak(mint, entry_time, entry_time + LABEL_HORIZON_S)
    if mint in trades:
        times, levels = trades[mint]
        lo, hi = np.searchsorted(times, [entry_block_time, entry_block_time + LABEL_HORIZON_S], side="right")
        if hi > lo:
            peak = max(peak, float(levels[lo:hi].max()))
    return max(math.exp(peak - pool_level), 1.0)


def _ladder_json(ladders: tuple[Ladder, ...], weights: tuple[float, ...]) -> str:
    return json.dumps(
        [
            {
                "weight": w,
                "nodes": [
                    {
                        "lo": n.lo,
                        "hi": n.hi,
                        "on_lo": [n.on_lo.kind, n.on_lo.fraction, n.on_lo.next],
                        "on_hi": [n.on_hi.kind, n.on_hi.fraction, n.on_hi.next],
                    }
                    for n in ladder.nodes
                ],
            }
            for ladder, w in zip(ladders, weights, strict=True)
        ]
    )


def _kols_table(result: CommunityResult, positions: pd.DataFrame) -> pd.DataFrame:
    stats = positions.groupby("wallet").agg(
        n_positions=("seq", "size"), expected_p3x=("oracle_p3x", "mean"), realised_3x=("label_3x", "mean")
    )
    rows = []
    for k in result.kols:
        s = stats.loc[k.wallet] if k.wallet in stats.index else None
        rows.append(
            {
                "wallet": k.wallet,
                "kol_index": k.index,
                "community": result.index,
                "style": k.style,
                "skill": k.skill,
                "pick_coef": k.pick_coef,
                "herding": k.herding,
                "momentum_pref": k.momentum_pref,
                "freshness_h": k.freshness_h,
                "positions_per_day": k.positions_per_day,
                "hour_center": k.hour_center,
                "hour_concentration": k.hour_concentration,
                "weekend_factor": k.weekend_factor,
                "size_median_sol": k.size_median / LAMPORTS_PER_SOL,
                "size_sigma": k.size_sigma,
                "conviction": k.conviction,
                "abandon_prob": k.abandon_prob,
                "time_exit_rate_per_h": k.time_exit_rate,
                "split_buy_prob": k.split_buy_prob,
                "jito_prob": k.jito_prob,
                "bot_fee_bps": k.bot_fee_bps,
                "jupiter_prob": k.jupiter_prob,
                "fail_rate": k.fail_rate,
                "ladders": _ladder_json(k.ladders, k.ladder_weights),
                "n_positions": int(s["n_positions"]) if s is not None else 0,
                "expected_p3x": float(s["expected_p3x"]) if s is not None else float("nan"),
                "realised_3x_rate": float(s["realised_3x"]) if s is not None else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def _tokens_table(result: CommunityResult, positions: pd.DataFrame) -> pd.DataFrame:
    traded = positions.groupby("mint").size()
    rows = []
    for t in result.tokens:
        if t.mint not in traded.index:
            continue
        d = t.dynamics
        rows.append(
            {
                "mint": t.mint,
                "community": result.index,
                "token_index": t.index,
                "launch_time": t.launch,
                "quality": t.q,
                "calm_level": d.levels[0],
                "hype_levels": list(d.levels[1:]),
                "hype_rate_per_h": d.hype_rate,
                "hype_end_rate_per_h": d.hype_end_rate,
                "death_rate_per_h": d.death_rate,
                "sigma_per_sqrt_h": d.sigma,
                "tail_alpha": d.tail_alpha,
                "death_time": t.death_time if math.isfinite(t.death_time) else None,
                "migration_time": t.migration_time,
                "amm": t.amm,
                "peak_level": t.peak_level,
                "kol_positions": int(traded[t.mint]),
                "supply_raw": TOKEN_SUPPLY_RAW,
                "decimals": TOKEN_DECIMALS,
            }
        )
    return pd.DataFrame(rows, columns=TOKENS_SCHEMA.names)


def _kol_daily(params: WorldParams, result: CommunityResult, positions: pd.DataFrame) -> pd.DataFrame:
    """Per KOL and UTC day: the oracle 3x rate of the positions the KOL opens in the next 7 / 30 days.

    ``day`` is the day's start (unix seconds), the row's point in time; the windows are
    ``[day, day + 7 d)`` and ``[day, day + 30 d)``, as ``kolray.features`` defines the KOL targets.
    ``oracle_rate_*`` is the mean ``oracle_p3x`` of the window's positions (the expected 3x rate
    given the latent traits); ``window_complete_*`` tells whether the window lies inside the world.
    """
    first_day = params.start // DAY * DAY
    days = np.arange(first_day, params.end, DAY)
    rows = []
    by_wallet = {w: g for w, g in positions.groupby("wallet")}
    for k in result.kols:
        g = by_wallet.get(k.wallet)
        times = g["entry_time"].to_numpy() if g is not None else np.empty(0)
        orc = g["oracle_p3x"].to_numpy() if g is not None else np.empty(0)
        order = np.argsort(times, kind="stable")
        times, orc = times[order], orc[order]
        csum = np.concatenate([[0.0], np.cumsum(orc)])
        for day in days:
            row = {"wallet": k.wallet, "day": int(day)}
            for span, name in ((7, "7d"), (30, "30d")):
                lo = np.searchsorted(times, day, side="left")
                hi = np.searchsorted(times, day + span * DAY, side="left")
                n = int(hi - lo)
                row[f"n_next_{name}"] = n
                row[f"oracle_rate_{name}"] = float((csum[hi] - csum[lo]) / n) if n else None
                row[f"window_complete_{name}"] = bool(day + span * DAY <= params.end)
            rows.append(row)
    return pd.DataFrame(rows, columns=KOL_DAILY_SCHEMA.names)


def _summary(
    params: WorldParams, counts: dict[str, int], cal: dict[str, list[float]], seconds: float
) -> dict[str, Any]:
    closed = sum(cal["closed"])
    three = sum(cal["three_x"])
    max7 = np.asarray(cal["max_7d"])
    days = params.days
    oracle = np.asarray(cal["oracle"])
    label = np.asarray(cal["label"])
    return {
        "kols": params.kols,
        "days": days,
        "seed": params.seed,
        "tokens_traded": counts.get("tokens", 0),
        "trades": counts.get("trades", 0),
        "positions": counts.get("positions", 0),
        "closed_positions": closed,
        "untracked_sells": counts.get("untracked_sells", 0),
        "transactions": counts.get("transactions", 0),
        "transactions_by_kind": {k[3:]: v for k, v in sorted(counts.items()) if k.startswith("tx_")},
        "trades_per_kol_day": counts.get("trades", 0) / params.kols / days,
        "closed_3x_rate": three / closed if closed else None,
        "calls_reaching_2x": float((max7 >= 2).mean()) if len(max7) else None,
        "calls_reaching_3x": float((max7 >= 3).mean()) if len(max7) else None,
        "calls_reaching_5x": float((max7 >= 5).mean()) if len(max7) else None,
        "label_rate_usable": float(label.mean()) if len(label) else None,
        "oracle_mean_usable": float(oracle.mean()) if len(oracle) else None,
        "label_horizon_s": LABEL_HORIZON_S,
        "sol_usd": params.sol_usd,
        # Every launch of the world, the active ones (simulated), graduations and dumps: what
        # `kolray sim calibrate` holds against the published pump.fun figures.
        "market": {
            **{k[7:]: v for k, v in sorted(counts.items()) if k.startswith("market_")},
            "graduation_minutes_median": float(np.median(cal["graduation_s"]) / 60)
            if cal["graduation_s"]
            else None,
        },
        "generation_s": round(seconds, 1),
    }
