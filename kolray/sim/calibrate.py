"""``kolray sim calibrate``: a twin world's figures beside the real market's, row by row.

The real side comes from the real market data folder (see :func:`market_facts_dir`: the 4,898 real
bonding-curve calls in ``smugcalls-calls.jsonl``); the calls' figures are computed here from the
file, the published ones (graduation, dumps, a top trader's presence, leaderboards) are constants
below, with their sources. The twin side
is computed from a world's ground truth (``positions.parquet``, ``tokens.parquet``, the market counts
in ``world.json``).

Every row names the slice it compares (entry venue, market-cap range, horizon) and a tolerance. A
row is within when the twin's figure lies in the accepted range *widened by two standard errors of
the twin's own estimate* (counted in distinct tokens, since KOLs pile into the same tokens): a small
world is held to the same table as a large one, and is let off only by its own sampling noise.

The twin's market caps are in SOL; the real calls' in USD. A world states its SOL/USD rate
(``WorldParams.sol_usd``; $124 by default, kolscan's rate), and the slice of the twin compared with
the calls is its pump.fun opening buys within the real calls' p10-p90 market caps at that rate.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kolray.sim.params import DAY
from kolray.sim.world import World

FACTS_ENV = "KOLRAY_MARKET_FACTS_DIR"
CALLS_FILE = "smugcalls-calls.jsonl"
DEFAULT_SOL_USD = 124.0  # kolscan's rate on 2025-12-28; a world without its own uses this

# Marino et al., arXiv 2602.14860: every pump.fun launch of September 2025
LAUNCHES = 655_770
GRADUATED = 4_338
GRADUATION_SHARE = 0.0063  # the paper's figure (4,338 / 655,770 is 0.66%: its own rounding)
GRADUATION_MINUTES_MEDIAN = 4.4
DUMP_SHARE = 0.922  # tokens with ≥ 30 swaps that show a dump
GRAD_ABOVE_80 = 0.354  # P(graduate | virtual SOL > 80)
GRAD_ABOVE_80_TOP = 0.427  # the same with a top-100 trader present
VIRTUAL_SOL_80_LEVEL = 2 * math.log(80 / 30)  # curve price ∝ virtual SOL², 30 SOL at launch
PEAK_THRESHOLDS = (2.0, 3.0, 5.0, 10.0, 100.0)
PEAK_QUANTILES = (0.50, 0.75, 0.90, 0.95, 0.99)
SHARE_TOLERANCE = 0.20  # the bar: each P(peak ≥ m) within ±20% (relative)
QUANTILE_TOLERANCE = 0.15  # each peak quantile within ±15%


class MarketFactsError(RuntimeError):
    """The real market data is missing or unreadable; the message says where kolray looked."""


class Call(BaseModel):
    """One real call of ``smugcalls-calls.jsonl`` (the fields kolray uses)."""

    model_config = ConfigDict(extra="ignore")

    mint: str
    t: int
    mc: float = Field(ge=0)  # USD market cap at the call (one real call records 0)
    peak: float = Field(ge=0)  # highest multiple of ``mc`` reached after the call


class RealMarket(BaseModel):
    """The real figures a twin is held to."""

    calls: int
    mc_usd_p10: float
    mc_usd_p90: float
    peak_share: dict[str, float]  # "2" → share of calls whose peak ≥ 2x
    peak_quantile: dict[str, float]  # "0.5" → the median peak
    source: str


class CalibrationRow(BaseModel):
    """One figure: the real value, the twin's, and whether the twin is within tolerance."""

    figure: str
    slice: str
    real: float | None
    real_text: str
    twin: float | None
    low: float | None  # accepted range for the twin (before the sampling allowance)
    high: float | None
    tolerance: str
    n: int  # the twin's sample (distinct tokens, positions, KOL-days: see ``slice``)
    within: bool


class Calibration(BaseModel):
    world: str
    sol_usd: float
    rows: list[CalibrationRow]

    @property
    def all_within(self) -> bool:
        return all(row.within for row in self.rows)


def market_facts_dir(explicit: str | Path | None = None) -> Path:
    """The folder with the real calls: ``explicit``, ``$KOLRAY_MARKET_FACTS_DIR``, or
    the first ``shared/market`` beside the repository (or the current directory) or above it."""
    if explicit is None:
        explicit = os.environ.get(FACTS_ENV) or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not (path / CALLS_FILE).is_file():
            raise MarketFactsError(f"{path} has no {CALLS_FILE} (the real market data)")
        return path
    here = Path(__file__).resolve().parent
    looked: list[Path] = []
    for base in (Path.cwd().resolve(), here):
        for folder in (base, *base.parents):
            candidate = folder / "shared" / "market"
            if candidate in looked:
                continue
            looked.append(candidate)
            if (candidate / CALLS_FILE).is_file():
                return candidate
    raise MarketFactsError(
        f"real market data not found: no shared/market/{CALLS_FILE} beside or above the repository or "
        f"the current directory; set {FACTS_ENV} to the folder that holds {CALLS_FILE}"
    )


def load_calls(folder: Path) -> list[Call]:
    path = folder / CALLS_FILE
    calls = []
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                calls.append(Call.model_validate_json(line))
            except ValidationError as error:
                first = error.errors()[0]
                raise MarketFactsError(
                    f"{path}:{number}: not a call ({'.'.join(map(str, first['loc']))}: {first['msg']})"
                ) from None
    if not calls:
        raise MarketFactsError(f"{path} holds no calls")
    return calls


def real_market(folder: str | Path | None = None) -> RealMarket:
    """The real figures, computed from the calls file."""
    path = market_facts_dir(folder)
    calls = load_calls(path)
    peak = np.array([c.peak for c in calls])
    mc = np.array([c.mc for c in calls])
    return RealMarket(
        calls=len(calls),
        mc_usd_p10=float(np.quantile(mc, 0.10)),
        mc_usd_p90=float(np.quantile(mc, 0.90)),
        peak_share={f"{m:g}": float((peak >= m).mean()) for m in PEAK_THRESHOLDS},
        peak_quantile={f"{q:g}": float(np.quantile(peak, q)) for q in PEAK_QUANTILES},
        source=str(path / CALLS_FILE),
    )


def sol_usd_of(world: World) -> float:
    return float(getattr(world.params, "sol_usd", DEFAULT_SOL_USD))


def _share_row(
    figure: str,
    slice_: str,
    real: float,
    twin: float | None,
    n: int,
    rel: float,
    real_text: str | None = None,
) -> CalibrationRow:
    low, high = real * (1 - rel), real * (1 + rel)
    return _row(figure, slice_, real, real_text or f"{real:.1%}", twin, low, high, f"±{rel:.0%} relative", n)


def _row(
    figure: str,
    slice_: str,
    real: float | None,
    real_text: str,
    twin: float | None,
    low: float | None,
    high: float | None,
    tolerance: str,
    n: int,
    spread: float = 0.0,
) -> CalibrationRow:
    """``spread``: the twin estimate's standard error; the range widens by two of them."""
    if twin is None or not math.isfinite(twin):
        within = False
        twin = None
    else:
        lo = -math.inf if low is None else low - 2 * spread
        hi = math.inf if high is None else high + 2 * spread
        within = lo <= twin <= hi
    return CalibrationRow(
        figure=figure,
        slice=slice_,
        real=real,
        real_text=real_text,
        twin=twin,
        low=low,
        high=high,
        tolerance=tolerance,
        n=n,
        within=within,
    )


def _proportion_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.25 / max(n, 1)) / max(n, 1))


def _peak_rows(real: RealMarket, positions: pd.DataFrame, sol_usd: float) -> list[CalibrationRow]:
    lo_sol, hi_sol = real.mc_usd_p10 / sol_usd, real.mc_usd_p90 / sol_usd
    entries = positions[
        (positions["venue_at_entry"] == "pumpfun")
        & positions["market_cap_sol_at_entry"].between(lo_sol, hi_sol)
        & positions["max_multiple_7d"].notna()
    ]
    peak = entries["max_multiple_7d"].to_numpy(dtype=float)
    tokens = int(entries["mint"].nunique())
    what = (
        f"pump.fun opening buys at {lo_sol:.0f}–{hi_sol:.0f} SOL market cap (the calls' p10–p90 at "
        f"${sol_usd:g}/SOL), peak within 7 d; real: all {real.calls:,} calls"
    )
    rows = []
    for m in PEAK_THRESHOLDS:
        share = float((peak >= m).mean()) if len(peak) else None
        spread = _proportion_se(share or 0.0, tokens)
        real_share = real.peak_share[f"{m:g}"]
        if m >= 100:
            # Rare: 100x and beyond must be possible, at about the real rate (a few in a thousand).
            row = _row(
                f"P(peak ≥ {m:g}x)",
                what,
                real_share,
                f"{real_share:.1%}",
                share,
                real_share / 3,
                real_share * 3,
                "within 3x of the real share",
                tokens,
                spread,
            )
        else:
            row = _share_row(f"P(peak ≥ {m:g}x)", what, real_share, share, tokens, SHARE_TOLERANCE)
            row = _row(
                row.figure,
                what,
                row.real,
                row.real_text,
                share,
                row.low,
                row.high,
                row.tolerance,
                tokens,
                spread,
            )
        rows.append(row)
    for q in PEAK_QUANTILES:
        real_q = real.peak_quantile[f"{q:g}"]
        twin_q = float(np.quantile(peak, q)) if len(peak) else None
        # The quantile's sampling spread, from the order statistics around it (in distinct tokens).
        spread = 0.0
        if twin_q is not None and tokens:
            dq = 2 * math.sqrt(q * (1 - q) / tokens)
            lo_q, hi_q = np.quantile(peak, [max(q - dq, 0.0), min(q + dq, 1.0)])
            spread = float(hi_q - lo_q) / 4
        rows.append(
            _row(
                f"peak multiple p{round(q * 100)}",
                what,
                real_q,
                f"{real_q:.2f}x",
                twin_q,
                real_q * (1 - QUANTILE_TOLERANCE),
                real_q * (1 + QUANTILE_TOLERANCE),
                f"±{QUANTILE_TOLERANCE:.0%} relative",
                tokens,
                spread,
            )
        )
    return rows


def _market_rows(world: World, positions: pd.DataFrame) -> list[CalibrationRow]:
    market: dict[str, Any] = world.summary.get("market") or {}
    rows = []
    launches = market.get("launches")
    graduated = market.get("graduated")
    real_grad = GRADUATION_SHARE
    share = graduated / launches if launches else None
    rows.append(
        _row(
            "launches that graduate",
            "every launch of the world (real: pump.fun, September 2025)",
            real_grad,
            f"{real_grad:.2%} ({GRADUATED:,} of {LAUNCHES:,} launches)",
            share,
            real_grad * 0.75,
            real_grad * 1.25,
            "±25% relative",
            int(launches or 0),
            _proportion_se(share or 0.0, int(launches or 0)) if share is not None else 0.0,
        )
    )
    minutes = market.get("graduation_minutes_median")
    rows.append(
        _row(
            "median time from launch to graduation, minutes",
            "graduated tokens",
            GRADUATION_MINUTES_MEDIAN,
            f"{GRADUATION_MINUTES_MEDIAN:g} min",
            minutes,
            GRADUATION_MINUTES_MEDIAN / 2,
            GRADUATION_MINUTES_MEDIAN * 2,
            "within 2x",
            int(graduated or 0),
        )
    )
    active = market.get("traded")
    dumped = market.get("dumped")
    dump_share = dumped / active if active else None
    rows.append(
        _row(
            "tokens with real trading that show a dump",
            "tokens with ≥ 30 swaps (twin: ≥ 30 steps of 5 s of trading), a dump: a step return 4 robust "
            "σ (1.4826 × MAD) below the median, the launch block's sniper dump and a death's collapse "
            "included (the paper's rule)",
            DUMP_SHARE,
            f"{DUMP_SHARE:.1%}",
            dump_share,
            0.85,
            None,
            "at least 85%",
            int(active or 0),
            _proportion_se(dump_share or 0.0, int(active or 0)) if dump_share is not None else 0.0,
        )
    )
    above = market.get("above_80")
    above_grad = market.get("above_80_graduated")
    p_all = above_grad / above if above else None
    rows.append(
        _row(
            "P(graduate | virtual SOL > 80)",
            "tokens whose bonding curve held more than 80 virtual SOL",
            GRAD_ABOVE_80,
            f"{GRAD_ABOVE_80:.3f}",
            p_all,
            GRAD_ABOVE_80 * 0.75,
            GRAD_ABOVE_80 * 1.25,
            "±25% relative",
            int(above or 0),
            _proportion_se(p_all or 0.0, int(above or 0)) if p_all is not None else 0.0,
        )
    )
    lift, n_top, spread = _top_trader_lift(world, positions, p_all)
    real_lift = GRAD_ABOVE_80_TOP / GRAD_ABOVE_80
    rows.append(
        _row(
            "P(graduate | virtual SOL > 80): with a top trader present ÷ all",
            "tokens a top-decile KOL (by realised PnL) bought on the curve, against all tokens",
            real_lift,
            f"{GRAD_ABOVE_80_TOP} / {GRAD_ABOVE_80} = {real_lift:.2f}",
            lift,
            1.0,
            1.5,
            "some signal, not a lot: 1.0–1.5",
            n_top,
            spread,
        )
    )
    return rows


def _top_trader_lift(
    world: World, positions: pd.DataFrame, p_all: float | None
) -> tuple[float | None, int, float]:
    if p_all is None or p_all <= 0 or positions.empty:
        return None, 0, 0.0
    pnl = positions.groupby("wallet")["realised_pnl_sol"].sum()
    top = set(pnl[pnl >= pnl.quantile(0.9)].index)
    bought = positions[positions["wallet"].isin(top) & (positions["venue_at_entry"] == "pumpfun")]
    tokens = world.tokens()
    tokens = tokens[tokens["mint"].isin(set(bought["mint"]))]
    above = tokens[tokens["peak_level"] > VIRTUAL_SOL_80_LEVEL]
    if above.empty:
        return None, 0, 0.0
    p_top = float(above["migration_time"].notna().mean())
    n = len(above)
    return p_top / p_all, n, _proportion_se(p_top, n) / p_all


def _kol_rows(world: World, positions: pd.DataFrame) -> list[CalibrationRow]:
    rows = []
    closed = positions[positions["status"] == "closed"].copy()
    start = world.start
    days = world.params.days
    window_days = 30 if days >= 30 else days
    windows = max(int(days // window_days), 1)
    closed["window"] = ((closed["exit_time"] - start) // int(window_days * DAY)).astype(int)
    closed = closed[closed["window"] < windows]
    kols = world.kols()["wallet"]
    per = closed.groupby(["window", "wallet"])["realised_pnl_sol"].sum().unstack(fill_value=0.0)
    per = per.reindex(columns=kols, fill_value=0.0)
    span = f"{window_days:g}-day windows of realised PnL, {windows} window(s) × {len(kols)} KOLs"
    losing = float((per.to_numpy() < 0).mean()) if per.size else None
    n = int(per.size)
    rows.append(
        _row(
            "KOLs losing over a month",
            span,
            None,
            "most tracked wallets lose over a month",
            losing,
            0.5,
            0.9,
            "50–90%",
            n,
            _proportion_se(losing or 0.0, n) if losing is not None else 0.0,
        )
    )
    top = []
    for _, row in per.iterrows():
        values = np.sort(row.to_numpy())[::-1]
        k = max(math.ceil(len(values) / 10), 1)
        top.append(float(values[:k].mean()))
    rows.append(
        _row(
            "top decile's realised PnL over a month, SOL (per KOL)",
            span,
            None,
            "clearly profitable",
            float(np.median(top)) if top else None,
            10.0,
            None,
            "≥ +10 SOL",
            n,
        )
    )
    closed["day"] = (closed["exit_time"] // DAY).astype(int)
    daily = closed.groupby(["wallet", "day"])["realised_pnl_sol"].sum()
    best_day = daily.groupby("wallet").max()
    total = closed.groupby("wallet")["realised_pnl_sol"].sum().sort_values(ascending=False)
    leaders = total.index[: max(math.ceil(len(kols) / 10), 1)]
    best = float(best_day.reindex(leaders).median()) if len(best_day) else None
    rows.append(
        _row(
            "top KOLs' best day, realised SOL",
            "median over the top decile (by realised PnL) of each one's best UTC day",
            None,
            "tens to hundreds of SOL",
            best,
            10.0,
            1000.0,
            "10–1,000 SOL",
            len(leaders),
        )
    )
    trades = world.trades()
    per_day = trades.groupby([trades["wallet"], trades["block_time"] // DAY]).size()
    busiest = float(per_day.max()) if len(per_day) else None
    rows.append(
        _row(
            "busiest KOL-day, trades",
            "swaps of one KOL in one UTC day",
            250.0,
            "a KOL's day ranges from 1 to 250+ trades",
            busiest,
            100.0,
            None,
            "≥ 100",
            len(per_day),
        )
    )
    median_per_kol = per_day.groupby(level=0).median()
    quietest = float(median_per_kol.min()) if len(median_per_kol) else None
    rows.append(
        _row(
            "quietest KOL's median trades per active day",
            "swaps of one KOL in one UTC day with any",
            1.0,
            "1",
            quietest,
            None,
            3.0,
            "≤ 3",
            len(median_per_kol),
        )
    )
    wins = closed.assign(win=closed["multiple"] > 1.0).groupby(["wallet", "day"])["win"].agg(["mean", "size"])
    wins = wins[wins["size"] >= 3]["mean"]
    for q, low, high in ((0.25, 0.2, 0.5), (0.75, 0.5, 0.85)):
        value = float(wins.quantile(q)) if len(wins) else None
        rows.append(
            _row(
                f"daily win rate, p{round(q * 100)} over KOL-days",
                "KOL-days with ≥ 3 closed positions; a win: multiple > 1",
                None,
                "daily wins sit around 30–75%",
                value,
                low,
                high,
                f"{low:.0%}–{high:.0%}",
                len(wins),
            )
        )
    holds = closed.groupby("wallet")["hold_s"].median()
    fast = float((holds < 60).mean()) if len(holds) else None
    rows.append(
        _row(
            "KOLs whose median hold is under 60 s (farmers)",
            "closed positions per KOL",
            None,
            "copytrader farmers sell within ~30 s",
            fast,
            0.03,
            0.30,
            "3–30% of KOLs",
            len(holds),
        )
    )
    return rows


def calibrate(
    world: World, real: RealMarket | None = None, facts_dir: str | Path | None = None
) -> Calibration:
    """The calibration table of ``world`` against the real market (read from ``facts_dir``)."""
    real = real or real_market(facts_dir)
    sol_usd = sol_usd_of(world)
    positions = world.positions()
    rows = [
        *_peak_rows(real, positions, sol_usd),
        *_market_rows(world, positions),
        *_kol_rows(world, positions),
    ]
    return Calibration(world=str(world.path), sol_usd=sol_usd, rows=rows)


def write_calibration(world: World, table: Calibration) -> None:
    """Store the table in the world's ``world.json`` (key ``calibration``), the rest untouched."""
    path = world.path / "world.json"
    meta = json.loads(path.read_text())
    meta["calibration"] = {"sol_usd": table.sol_usd, "rows": [r.model_dump() for r in table.rows]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def format_table(table: Calibration) -> Iterable[str]:
    """The table as aligned text lines."""

    def fmt(value: float | None) -> str:
        if value is None:
            return "—"
        if abs(value) < 1:
            return f"{value:.3f}"
        return f"{value:,.2f}"

    yield f"{table.world}: SOL/USD {table.sol_usd:g}"
    header = ("figure", "real", "twin", "tolerance", "within", "n")
    body = [
        (r.figure, r.real_text, fmt(r.twin), r.tolerance, "yes" if r.within else "NO", str(r.n))
        for r in table.rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    yield "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    last_slice = None
    for r, b in zip(table.rows, body, strict=True):
        if r.slice != last_slice:
            yield f"-- {r.slice}"
            last_slice = r.slice
        yield "  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True))
    within = sum(r.within for r in table.rows)
    yield f"{within} of {len(table.rows)} rows within tolerance"
