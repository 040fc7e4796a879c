"""Knobs of the chain twin, and the on-chain constants it renders.

Everything that shapes a world lives in :class:`WorldParams` (written to ``world.json``), so a world
can be regenerated from its own directory. The defaults are calibrated against the real market
(``kolray sim calibrate`` against the real market data; ``tests/integration/test_sim_calibration.py``
holds a world to that table).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

# Programs and well-known accounts (their public mainnet ids)
SYSTEM_PROGRAM = "11111111111111111111111111111111"
TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
ATA_PROGRAM = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
COMPUTE_BUDGET_PROGRAM = "ComputeBudget111111111111111111111111111111"
MEMO_PROGRAM = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
RENT_SYSVAR = "SysvarRent111111111111111111111111111111111"
PUMPFUN_PROGRAM = "6EF8rrecthR5Dkzon8Nwu78hRvfCKubJ14M5uBEwF6P"
PUMPSWAP_PROGRAM = "pAMMBay6oceH9fJKBRHGP5D4bD4sWpmSwMn52FMfXEA"
RAYDIUM_AMM_V4_PROGRAM = "675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8"
JUPITER_V6_PROGRAM = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4"
OPENBOOK_PROGRAM = "srmqPvymJeFKQ4zGQed1GFppgkRHL9kaELCbyksJtPX"
WSOL_MINT = "So11111111111111111111111111111111111111112"

PUMPFUN_GLOBAL = "4wTV1YmiEkRvAtNtsSGPtUrqRYQMe5SKy2uB4Jjaxnjf"
PUMPFUN_FEE_RECIPIENT = "CebN5WGQ4jvEPvsVU4EoHEpgzq1VV7AbicfhtW4xC9iM"
PUMPFUN_EVENT_AUTHORITY = "Ce6TQqeHC9p8KetsN6JsjHK7UTZk7nasjjnr7XxXp9F1"
PUMPSWAP_GLOBAL_CONFIG = "ADyA8hdefvWN2dbGGWFotbzWxrAvLW83WG6QCVXvJKqw"
PUMPSWAP_EVENT_AUTHORITY = "GS4CU59F31iL7aR2Q8zVS8DRrcRnXX1yjQ66TqNVQnaR"
PUMPSWAP_FEE_RECIPIENT = "7VtfL8fvgNfhz17qKRMjzQEXgbdpnHHHQRh54R9jP2RJ"
PUMPSWAP_FEE_RECIPIENT_ATA = "7GFUN3bWzJMKMRZ34JLsvcqdssDbXnp589SiE33KVwcC"
RAYDIUM_AUTHORITY = "5Q544fKrFoe6tsEbD7S8EmxGTJYAKtTVhAW5Q5pge4j1"
JUPITER_EVENT_AUTHORITY = "D8cy77BBepLMngZx6ZukaTff5hCt1HrWyKk3Hnd9oitf"
JITO_TIP_ACCOUNTS = (
    "96gYZGLnJYVFmbjzopPSU6QiEV5fGqZNyN9nmNhvrZU5",
    "HFqU5x63VTqvQss8hp11i4wVV8bD44PvwucfZ2bU7gRe",
    "Cw8CFyM9FkoMi7K7Crf6HNQqf4uEMzpKw6QNghXLvLkY",
    "ADaUMid9yfUytqMBgopwjb2DTLSokTSzL1zt6iGPaS49",
    "DfXygSm4jCyNCybVYYK6DwvWqjKee8pbDmJGcLWNDXjh",
    "ADuUkR4vqLUMWXxW9gh6D6L8pMSawimctcNZ5pGwDcEt",
    "DttWaMuVvTiduZRnguLF7jNxTgiMBZ1hyAumKUiL2KRL",
    "3AVi9Tg9Uo68tJfuvoKvqKNWKkC5wPdSSdeBnizKZ6jT",
)
# Trading bots that take their fee as a plain top-level transfer (counted as ``tips`` by the
# fixtures' rules): BullX- and Photon-style fee wallets.
BOT_FEE_ACCOUNTS = (
    "9RYJ3qr5eU5xAooqVcbmdeusjcViL5Nkiq7Gske3tiKq",
    "AVUCZyuT35YSuj4RH7fwiyPu82Djn2Hfg7y2ND2XcnZH",
)

# Programs whose accounts never get a signature index (mainnet serves them, a twin need not).
INFRA_ACCOUNTS = frozenset(
    {
        SYSTEM_PROGRAM,
        TOKEN_PROGRAM,
        ATA_PROGRAM,
        COMPUTE_BUDGET_PROGRAM,
        MEMO_PROGRAM,
        RENT_SYSVAR,
        PUMPFUN_PROGRAM,
        PUMPSWAP_PROGRAM,
        RAYDIUM_AMM_V4_PROGRAM,
        JUPITER_V6_PROGRAM,
        OPENBOOK_PROGRAM,
        WSOL_MINT,
        PUMPFUN_GLOBAL,
        PUMPFUN_FEE_RECIPIENT,
        PUMPFUN_EVENT_AUTHORITY,
        PUMPSWAP_GLOBAL_CONFIG,
        PUMPSWAP_EVENT_AUTHORITY,
        PUMPSWAP_FEE_RECIPIENT,
        PUMPSWAP_FEE_RECIPIENT_ATA,
        RAYDIUM_AUTHORITY,
        JUPITER_EVENT_AUTHORITY,
        *JITO_TIP_ACCOUNTS,
        *BOT_FEE_ACCOUNTS,
    }
)

# Amounts
LAMPORTS_PER_SOL = 1_000_000_000
TOKEN_ACCOUNT_RENT = 2_039_280  # a 165-byte SPL token account
MINT_RENT = 1_461_600
TOKEN_DECIMALS = 6
TOKEN_SUPPLY_RAW = 1_000_000_000 * 10**TOKEN_DECIMALS  # pump.fun: one billion tokens

# pump.fun bonding curve (virtual reserves, constant product)
CURVE_VIRTUAL_SOL0 = 30 * LAMPORTS_PER_SOL
CURVE_VIRTUAL_TOKENS0 = 1_073_000_000 * 10**TOKEN_DECIMALS
CURVE_REAL_TOKENS0 = 793_100_000 * 10**TOKEN_DECIMALS
CURVE_K = float(CURVE_VIRTUAL_SOL0) * float(CURVE_VIRTUAL_TOKENS0)
# The curve completes when its real token reserves are sold: virtual tokens left = this.
CURVE_VIRTUAL_TOKENS_AT_COMPLETION = CURVE_VIRTUAL_TOKENS0 - CURVE_REAL_TOKENS0
POOL_BASE_AT_MIGRATION = TOKEN_SUPPLY_RAW - CURVE_REAL_TOKENS0  # tokens seeded into the AMM pool

# Prices: lamports per raw token unit. Log-levels ``x`` are ln(price / launch price).
LAUNCH_PRICE = CURVE_VIRTUAL_SOL0 / CURVE_VIRTUAL_TOKENS0
MIGRATION_PRICE = CURVE_K / float(CURVE_VIRTUAL_TOKENS_AT_COMPLETION) ** 2
MIGRATION_LEVEL = math.log(MIGRATION_PRICE / LAUNCH_PRICE)  # ≈ 2.69: the curve completes at ~14.7x
POOL_K = float(POOL_BASE_AT_MIGRATION) ** 2 * MIGRATION_PRICE  # quote × base of a fresh AMM pool

# Venue fees in basis points (values of 2025)
PUMPFUN_FEE_BPS = 95
PUMPFUN_CREATOR_FEE_BPS = 5
PUMPSWAP_LP_FEE_BPS = 20
PUMPSWAP_PROTOCOL_FEE_BPS = 5
PUMPSWAP_CREATOR_FEE_BPS = 5
RAYDIUM_FEE_BPS = 25

# Time
SLOTS_PER_SECOND = 2.5  # 400 ms slots
GENESIS_SLOT = 322_000_000  # slot at the default world start (2025-03-01): close to mainnet then
DEFAULT_START = 1_740_787_200  # 2025-03-01T00:00:00Z
HOUR = 3600.0
DAY = 86_400

LABEL_HORIZON_S = 7 * DAY  # docs/features.md: label_3x within H = 7 days of entry
DUST_FRACTION = 0.001  # docs/analysis.md: a position closes when ≤ 0.1% of its bought tokens remain
THREE_X = 3.0

STYLES = ("farmer", "scalper", "swing", "diamond")
VENUES = ("pumpfun", "pumpswap", "raydium_amm_v4")


@dataclass(frozen=True)
class WorldParams:
    """Everything that determines a world. Same params (incl. seed) → the same bytes on disk."""

    kols: int = 100
    days: float = 30.0
    seed: int = 0
    start: int = DEFAULT_START
    # KOLs are simulated in communities of at most this many; each community trades its own token
    # universe. Memory is bounded by one community, whatever the number of KOLs.
    community_size: int = 250
    # Launches per KOL per day (every launch, as pump.fun counts them). Only ``active_share`` of them
    # see real trading (0.63% of pump.fun launches graduate; calibrated by `kolray sim calibrate`);
    # the rest die in their first minute at the launch price, untraded, and are
    # only counted (they never reach a KOL's screen and leave nothing on chain).
    tokens_per_kol_day: float = 105.0
    # A community of a few KOLs still watches a whole market (else a small world has nothing to buy).
    min_launches_per_day: float = 6000.0
    active_share: float = 0.115
    # Tokens already trading when the world starts are launched this long before it.
    warmup_days: float = 0.5
    # SOL/USD rate the world assumes (to hold its SOL market caps against the real USD ones).
    sol_usd: float = 124.0

    # Price process of an active token. The log-price x (relative to launch) is a Brownian motion
    # killed at the token's death rate lam (per hour), with volatility sigma = sqrt(2 lam) / alpha:
    # the future peak from any level is then Pareto, P(peak ≥ m × now) = m^-alpha (the real calls'
    # peaks are close to that with alpha ≈ 1.3), and lam sets the clock (a median token lives a few
    # minutes; a slow one hours). alpha = tail_alpha - tail_alpha_q q + tail_alpha_noise z: q is the
    # quality skilled KOLs perceive, z a part nobody does. The optional OU pull (kappa > 0) toward
    # regime levels and the hype regimes of earlier worlds remain in the model (hype_rate0 > 0).
    tail_alpha: float = 1.52
    tail_alpha_q: float = 0.55
    tail_alpha_noise: float = 0.12
    tail_alpha_min: float = 0.55
    death_rate0: float = 15.0  # per hour: the median token's clock
    death_rate_sigma: float = 1.1  # lognormal spread of the clock across tokens
    death_rate_min: float = 0.3  # every token dies well within the 7-day label horizon
    launch_level_max: float = 1.0  # the first buyers take a token to launch × e^U(0, this)
    # ... after the launch block's snipers spiked it by e^U(min, max) and dumped (its first 5 s).
    sniper_lift_min: float = 0.5
    sniper_lift_max: float = 1.0
    kappa: float = 0.0
    calm_c0: float = 1.4
    calm_c1: float = 0.45
    calm_floor: float = 0.8
    hype_h0: float = 0.95
    hype_h1: float = 0.15
    hype_sizes: tuple[float, ...] = (0.5, 1.0, 1.3)
    hype_size_probs: tuple[float, ...] = (0.45, 0.4, 0.15)
    hype_rate0: float = 0.0
    hype_rate_q: float = 0.2
    hype_end_rate: float = 1.0
    death_drop_min: float = math.log(20.0)  # at death on an AMM the price drops 20-200x
    death_drop_max: float = math.log(200.0)
    dead_drift: float = -0.05  # per hour after death on an AMM
    curve_dead_max: float = 0.15  # at death on the curve the price falls back to launch × e^U(0, this)
    path_step_s: float = 5.0
    raydium_share: float = 0.25  # migrations that go to Raydium AMM v4 rather than PumpSwap

    # KOL population
    # Farmers buy, let their followers in and sell within a minute; scalpers take minutes, swing
    # traders tens of minutes, diamond hands hours.
    style_weights: tuple[float, ...] = (0.1, 0.3, 0.35, 0.25)
    positions_per_day_median: float = 9.0  # buy decisions; a KOL passes when nothing looks good
    positions_per_day_sigma: float = 0.9
    size_median_sol: float = 2.0
    size_sigma: float = 0.8
    skill_pick: float = 1.1  # pick utility: (skill_pick + skill_slope * skill) * q
    skill_slope: float = 0.9
    herding_max: float = 1.6
    # A KOL perceives a token's quality q with noise of sd perception_sd0 × exp(-perception_skill ×
    # skill) and buys its best candidate only when that looks above pick_bar: a skilled KOL's record
    # shows its skill over time, an unskilled one buys what only looks good.
    perception_sd0: float = 1.0
    perception_skill: float = 0.7
    pick_bar: float = 0.4
    # A KOL sizes up on tokens it rates: size × exp(conviction × q), conviction ~ U(min, max).
    conviction_min: float = 0.0
    conviction_max: float = 0.35
    max_token_age_h: float = 12.0
    # Followers: every KOL buy draws a crowd of copy-traders whose SOL enters the token's reserves
    # within seconds (time constant U(crowd_in_min_s, crowd_in_max_s)) and leaves over minutes
    # (U(crowd_out_min_s, crowd_out_max_s)); the crowd's size is the KOL's following (lognormal
    # across KOLs; a farmer's about ``farmer_following`` times its own buys) times a per-buy draw.
    following_sol_median: float = 2.0
    following_sigma: float = 0.8
    farmer_following: float = 5.0
    farmer_size: float = 1.5  # a farmer buys big: its size is the bait its followers see
    crowd_in_min_s: float = 3.0
    crowd_in_max_s: float = 15.0
    crowd_out_min_s: float = 60.0
    crowd_out_max_s: float = 240.0

    # Noise on the chain
    failed_tx_rate: float = 0.04
    spam_airdrops_per_kol_day: float = 0.4
    promo_airdrops_per_kol_day: float = 0.08
    sol_transfers_per_kol_day: float = 0.15
    jupiter_share: float = 0.2

    def __post_init__(self) -> None:
        problems = []
        if not (1 <= self.kols <= 1_000_000):
            problems.append(f"kols must be between 1 and 1000000 (got {self.kols})")
        if not (0 < self.days <= 3650):
            problems.append(f"days must be > 0 and ≤ 3650 (got {self.days})")
        if not (0 <= self.seed < 2**63):
            problems.append(f"seed must be a non-negative 63-bit integer (got {self.seed})")
        if self.community_size < 1:
            problems.append("community_size must be ≥ 1")
        if self.kappa < 0 or self.path_step_s <= 0 or self.tail_alpha_min <= 0 or self.death_rate_min <= 0:
            problems.append("path_step_s, tail_alpha_min and death_rate_min must be > 0, kappa ≥ 0")
        if not 0 < self.active_share <= 1 or self.sol_usd <= 0:
            problems.append("active_share must be in (0, 1] and sol_usd > 0")
        if len(self.style_weights) != len(STYLES) or min(self.style_weights) < 0:
            problems.append(f"style_weights needs {len(STYLES)} non-negative weights ({', '.join(STYLES)})")
        if len(self.hype_sizes) != len(self.hype_size_probs) or not self.hype_sizes:
            problems.append("hype_sizes and hype_size_probs need the same (non-zero) length")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def end(self) -> int:
        return self.start + round(self.days * DAY)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("style_weights", "hype_sizes", "hype_size_probs"):
            out[name] = list(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldParams:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("style_weights", "hype_sizes", "hype_size_probs"):
            if name in values:
                values[name] = tuple(values[name])
        if len(values.get("style_weights", STYLES)) == len(STYLES) - 1:
            values["style_weights"] = (0.0, *values["style_weights"])  # a world from before farmers
        return cls(**values)


def slot_at(params: WorldParams, t: float) -> int:
    """The slot in which a transaction at unix time ``t`` (float seconds) lands."""
    return GENESIS_SLOT + math.floor((t - params.start) * SLOTS_PER_SECOND)


def slot_start(start: int, slot: int) -> float:
    """Unix time (float seconds) at which ``slot`` begins in a world that starts at ``start``: the
    exact chain time of a twin transaction (``blockTime`` is this, floored)."""
    return start + (slot - GENESIS_SLOT) / SLOTS_PER_SECOND


def block_time_of_slot(params: WorldParams, slot: int) -> int:
    """A slot's ``blockTime``: whole seconds, never decreasing with the slot."""
    return params.start + math.floor((slot - GENESIS_SLOT) / SLOTS_PER_SECOND)
