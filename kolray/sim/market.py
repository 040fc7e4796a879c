"""Tokens, their price paths, and how trades execute on the bonding curve and the AMM pools.

A token's **log-price** ``x`` is measured from its launch price (``x = 0`` at launch, market cap
≈ 28 SOL). An active token (one that sees real trading) starts where its first buyers take it
(launch × e^U(0, launch_level_max)) and follows

    dx = kappa (c_r - x) dt + sigma dW      (t in hours)

until it dies at an exponential time of rate ``lam`` (rug, dev dump, attention gone). With the
defaults ``kappa = 0``: a Brownian motion killed at rate ``lam`` with ``sigma = sqrt(2 lam) / alpha``,
whose peak from any level is Pareto, P(peak ≥ m × now) = m^-alpha — the fat tail of the real calls
(the real calls of ``kolray sim calibrate``), scale-free, so 100x and beyond are possible and most tokens die.
``lam`` is the token's clock (lognormal across tokens): a median token runs and dumps within
minutes, a slow one over hours. ``alpha`` falls with the token's latent quality ``q`` (what a skilled
KOL perceives) and with a part nobody perceives. A regime ``r`` (calm, or hype episodes of several
sizes pulling toward higher fair levels ``c_r``) is still part of the model for ``kappa > 0``.

On the bonding curve a death takes the price back to about the launch price (everyone sells); on an
AMM pool it falls by a factor of 20–200 and drifts down from there.

The path is simulated on a grid of ``path_step_s`` seconds (the regime switches at grid points);
for every step the extremes of the Brownian bridge between the grid points are drawn too, so
barrier crossings (take-profit, stop-loss, migration) are monitored continuously, as the oracle
(:mod:`kolray.sim.oracle`) assumes.

The price of the path is the pool's marginal price before a tracked trade; each trade then executes
on the venue's constant-product curve (with its fees), so size and liquidity matter. When the path
first crosses :data:`MIGRATION_LEVEL` the bonding curve completes and the token moves to an AMM pool
(PumpSwap, or Raydium AMM v4 for a share of tokens) seeded with the curve's liquidity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kolray.sim.params import (
    CURVE_K,
    CURVE_VIRTUAL_SOL0,
    CURVE_VIRTUAL_TOKENS_AT_COMPLETION,
    HOUR,
    LAMPORTS_PER_SOL,
    LAUNCH_PRICE,
    MIGRATION_LEVEL,
    POOL_K,
    PUMPFUN_CREATOR_FEE_BPS,
    PUMPFUN_FEE_BPS,
    PUMPSWAP_CREATOR_FEE_BPS,
    PUMPSWAP_LP_FEE_BPS,
    PUMPSWAP_PROTOCOL_FEE_BPS,
    RAYDIUM_FEE_BPS,
    TOKEN_SUPPLY_RAW,
    WorldParams,
)


@dataclass(frozen=True, slots=True)
class TokenDynamics:
    """The latent parameters of a token's price process (all rates per hour).

    Regime 0 is calm; regimes 1..K are hype episodes of increasing size.
    """

    levels: tuple[float, ...]  # fair level per regime
    hype_rate: float  # calm → some hype regime
    hype_probs: tuple[float, ...]  # which hype regime an episode is
    hype_end_rate: float  # hype → calm
    death_rate: float
    sigma: float  # per sqrt(hour)
    kappa: float = 0.0  # pull toward the regime's level, per hour
    tail_alpha: float = math.inf  # P(peak ≥ m × now) = m^-alpha when kappa = 0 (for the record)

    @property
    def regimes(self) -> int:
        return len(self.levels)

    def generator(self) -> np.ndarray:
        """The regime chain's rate matrix Q (rows sum to zero)."""
        r = self.regimes
        q = np.zeros((r, r))
        q[0, 1:] = self.hype_rate * np.asarray(self.hype_probs)
        q[1:, 0] = self.hype_end_rate
        q[np.arange(r), np.arange(r)] = -q.sum(axis=1)
        return q


def token_dynamics(params: WorldParams, q: float, z: float = 0.0, w: float = 0.0) -> TokenDynamics:
    """A token's dynamics from its perceived quality ``q`` and two unperceived draws ``z``, ``w``
    (standard normal): ``z`` moves its tail index, ``w`` its clock."""
    alpha = max(
        params.tail_alpha - params.tail_alpha_q * q + params.tail_alpha_noise * z, params.tail_alpha_min
    )
    death = max(params.death_rate0 * math.exp(params.death_rate_sigma * w), params.death_rate_min)
    sigma = math.sqrt(2 * death) / alpha
    calm = min(max(params.calm_c0 + params.calm_c1 * q, params.calm_floor), MIGRATION_LEVEL - 0.3)
    if params.hype_rate0 <= 0:
        return TokenDynamics(
            levels=(calm,),
            hype_rate=0.0,
            hype_probs=(),
            hype_end_rate=0.0,
            death_rate=death,
            sigma=sigma,
            kappa=params.kappa,
            tail_alpha=alpha,
        )
    lift = params.hype_h0 * math.exp(params.hype_h1 * q)
    probs = np.asarray(params.hype_size_probs, dtype=float)
    return TokenDynamics(
        levels=(calm, *(calm + lift * size for size in params.hype_sizes)),
        hype_rate=params.hype_rate0 * math.exp(params.hype_rate_q * q),
        hype_probs=tuple(float(v) for v in probs / probs.sum()),
        hype_end_rate=params.hype_end_rate,
        death_rate=death,
        sigma=sigma,
        kappa=params.kappa,
        tail_alpha=alpha,
    )


@dataclass(slots=True)
class TokenPath:
    """One token's life: the price grid, its bridge extremes, regimes, migration and death.

    ``x[i]`` is the log-price at ``launch + i * step``; ``hi[i]``/``lo[i]`` the max/min of the
    path between grid points ``i`` and ``i + 1`` and ``regime[i]`` the regime during that step.
    The grid ends at death or at the end of the world.
    """

    launch: float
    step: float
    x: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    regime: np.ndarray
    death_time: float  # may lie after the end of the world (then the token outlives it)
    death_drop: float  # log drop of the price at death on an AMM pool
    curve_dead_level: float  # where the price settles if the token dies on the bonding curve
    migration_index: int  # first step whose bridge crosses MIGRATION_LEVEL, or -1
    dead_drift: float  # per second, after death on an AMM pool

    @property
    def last_time(self) -> float:
        return self.launch + (len(self.x) - 1) * self.step

    def index_at(self, t: float) -> int:
        """Grid index of the last grid point at or before ``t`` (clamped to the grid)."""
        i = int((t - self.launch) // self.step)
        return min(max(i, 0), len(self.x) - 1)

    def migrated_at(self, t: float) -> bool:
        """Whether the curve had completed by time ``t`` (its migration step has ended)."""
        if self.migration_index < 0:
            return False
        return t >= self.launch + (self.migration_index + 1) * self.step

    def level_at(self, t: float) -> float:
        """The price level at ``t``: the grid value while alive, the dead price afterwards.

        A token that dies on the bonding curve falls back to about its launch price (everyone sells;
        a curve's price can never go below its start). On an AMM pool it drops 20-200x and keeps
        drifting down.
        """
        if t < self.death_time:
            return float(self.x[self.index_at(t)])
        if not self.migrated_at(self.death_time):
            return self.curve_dead_level
        at_death = float(self.x[self.index_at(self.death_time)])
        return at_death - self.death_drop + self.dead_drift * (t - self.death_time)


def simulate_path(
    params: WorldParams,
    rng: np.random.Generator,
    launch: float,
    dynamics: TokenDynamics,
    until: float,
    x0: float | None = None,
    regime0: int | None = None,
) -> TokenPath:
    """Simulate a token's price from launch until its death or ``until``, whichever is first.

    The first buyers (the dev, snipers) take a fresh token to launch × e^U(0, launch_level_max)
    within its first block (its calm level when ``kappa > 0``), so the path starts there;
    ``x0``/``regime0`` start it elsewhere (the oracle's Monte Carlo check).
    """
    step = params.path_step_s
    dt = step / HOUR
    death_time = launch + rng.exponential(1.0 / dynamics.death_rate) * HOUR
    drop = rng.uniform(params.death_drop_min, params.death_drop_max)
    end = min(death_time, until)
    n = max(math.ceil((end - launch) / step), 1) + 1
    kappa, sigma = dynamics.kappa, dynamics.sigma
    start = rng.uniform(0.0, params.launch_level_max) if kappa == 0 else dynamics.levels[0]
    x = np.empty(n)
    x[0] = start if x0 is None else x0
    if x0 is None and params.sniper_lift_max > 0 and dynamics.regimes == 1 and kappa == 0:
        # The launch block's snipers and the dev buy the token up and dump within seconds: the path
        # opens with a spike and the dump (pump.fun's first dump); the market then starts from ``start``.
        lift = rng.uniform(params.sniper_lift_min, params.sniper_lift_max)
        x[0] = min(start + lift, MIGRATION_LEVEL - 0.3)
    if dynamics.regimes == 1 and kappa == 0:
        # A Brownian motion: no regimes to draw, the path is a cumulative sum (most tokens live
        # minutes, so this is most of the twin's paths and per-call overhead is what counts).
        regime = np.zeros(n - 1, dtype=np.int8)
        np.cumsum(sigma * math.sqrt(dt) * rng.standard_normal(n - 1), out=x[1:])
        x[1:] += start if x0 is None else x0
    else:
        # Regimes: exponential holding times, switching at grid points; a hype episode's size is
        # drawn when it starts.
        regime = np.empty(n - 1, dtype=np.int8)
        hype_probs = np.asarray(dynamics.hype_probs)

        def draw_hype() -> int:
            return 1 + int(rng.choice(len(hype_probs), p=hype_probs))

        r = 0 if regime0 is None else int(regime0)
        i = 0
        while i < n - 1:
            rate = dynamics.hype_end_rate if r else dynamics.hype_rate
            stay = math.ceil(rng.exponential(1.0 / rate) / dt) if rate > 0 else n
            regime[i : i + stay] = r
            i += stay
            if i < n - 1:
                r = 0 if r else draw_hype()
        # Exact OU transition over a step: x[i+1] = d x[i] + (1 - d) c[r_i] + sd z_i, solved chunk by
        # chunk as a scaled cumulative sum (chunks keep d^-j small enough for full float precision).
        decay = math.exp(-kappa * dt)
        sd = sigma * math.sqrt((1 - decay**2) / (2 * kappa) if kappa > 0 else dt)
        levels = np.asarray(dynamics.levels)[regime]
        u = (1 - decay) * levels + sd * rng.standard_normal(n - 1)
        chunk = 256
        back = decay ** -np.arange(1, chunk + 1)
        fwd = decay ** np.arange(1, chunk + 1)
        for begin in range(0, n - 1, chunk):
            stop = min(begin + chunk, n - 1)
            m = stop - begin
            acc = np.cumsum(u[begin:stop] * back[:m])
            x[begin + 1 : stop + 1] = fwd[:m] * (x[begin] + acc)
    var = sigma**2 * dt
    a, b = x[:-1], x[1:]
    half = (b - a) / 2
    mid = (a + b) / 2
    # P(max > m | a, b) = exp(-2 (m-a)(m-b) / var)  →  m = mid + sqrt(half² - var ln(u) / 2)
    hi = mid + np.sqrt(half**2 - var * np.log(rng.random(n - 1)) / 2)
    lo = mid - np.sqrt(half**2 - var * np.log(rng.random(n - 1)) / 2)
    crossed = np.nonzero(hi >= MIGRATION_LEVEL)[0]
    # A curve's price cannot fall below its launch price: touching it, the curve is empty and the
    # token is dead (its paths end there; the oracle has the same absorbing floor).
    first_mig = int(crossed[0]) if len(crossed) else n
    floor = np.nonzero(lo[:first_mig] <= 0.0)[0]
    if len(floor):
        k = int(floor[0])
        death_time = launch + (k + 0.5) * step
        x, hi, lo, regime = x[: k + 2], hi[: k + 1], lo[: k + 1], regime[: k + 1]
        crossed = crossed[crossed <= k]
    return TokenPath(
        launch=launch,
        step=step,
        x=x,
        hi=hi,
        lo=lo,
        regime=regime,
        death_time=death_time,
        death_drop=drop,
        curve_dead_level=float(rng.uniform(0.0, params.curve_dead_max)),
        migration_index=int(crossed[0]) if len(crossed) else -1,
        dead_drift=params.dead_drift / HOUR,
    )


def crowd_profile(u: np.ndarray, tau_in: float, tau_out: float) -> np.ndarray:
    """Share of a crowd's SOL in the reserves ``u`` seconds after the buy that drew it: followers
    arrive within seconds (``tau_in``) and leave over minutes (``tau_out``); 0 before the buy."""
    u = np.maximum(u, 0.0)
    return -np.expm1(-u / tau_in) * np.exp(-u / tau_out)


def crowd_impact(path: TokenPath, crowd_sol: np.ndarray, first: int, last: int) -> np.ndarray:
    """The log-price lift of ``crowd_sol`` (SOL the crowds hold at grid points ``first..last - 1``).

    On a constant-product pool the price goes as the SOL reserve squared, so SOL ``c`` added to a
    reserve ``V`` lifts the log-price by ``2 ln(1 + c / V)``; ``V`` is the curve's virtual SOL (or
    the AMM pool's) at the path's level. On the curve the lift stops short of the completion level:
    the migration stays where the path (and the oracle) puts it.
    """
    return crowd_lift(path, crowd_sol[first:last], first, last)


def crowd_lift(path: TokenPath, sol: np.ndarray, first: int, last: int) -> np.ndarray:
    """:func:`crowd_impact` of the SOL ``sol`` held in the reserves at grid points ``first..last - 1``."""
    x = path.x[first:last]
    migrated = np.zeros(len(x), dtype=bool)
    if path.migration_index >= 0:
        migrated = np.arange(first, last) > path.migration_index
    k = np.where(migrated, POOL_K, CURVE_K)
    reserve = np.sqrt(k * LAUNCH_PRICE) * np.exp(x / 2) / 1e9  # SOL
    lift = 2 * np.log1p(sol / reserve)
    top = np.maximum(x, np.append(path.hi, path.x[-1])[first:last])
    room = np.maximum(MIGRATION_LEVEL - 0.02 - top, 0.0)
    return np.where(migrated, lift, np.minimum(lift, room))


# Execution on the venues. Prices are lamports per raw token unit; log-level x → price.


def price_of(level: float) -> float:
    return LAUNCH_PRICE * math.exp(level)


def level_of(price: float) -> float:
    """The log-price level of ``price`` (lamports per raw token unit): :func:`price_of`'s inverse."""
    return math.log(price / LAUNCH_PRICE)


def market_cap_sol(level: float) -> float:
    return price_of(level) * TOKEN_SUPPLY_RAW / LAMPORTS_PER_SOL


@dataclass(slots=True, frozen=True)
class Fill:
    """One executed trade, with what the venue's event reports.

    ``sol_amount`` is what the wallet paid (buy) or received (sell) in lamports, venue fees
    included — the ``Swap.sol_amount`` of the trade. ``pool_sol`` is the SOL that entered or left
    the reserves; ``reserve_sol``/``reserve_tokens`` are the (virtual) reserves *after* the trade.
    """

    venue: str
    side: str
    token_amount: int
    sol_amount: int
    pool_sol: int
    fee: int  # protocol fee (pump.fun) / protocol fee (PumpSwap) / LP fee (Raydium)
    creator_fee: int
    lp_fee: int
    reserve_sol_before: int
    reserve_tokens_before: int
    reserve_sol: int
    reserve_tokens: int


def _ceil_bps(amount: int, bps: int) -> int:
    return -((-amount * bps) // 10_000)


def reserves_at(venue: str, level: float) -> tuple[int, int]:
    """(SOL, token) reserves whose ratio is the price at ``level`` (virtual ones on the curve)."""
    price = price_of(level)
    k = CURVE_K if venue == "pumpfun" else POOL_K
    return round(math.sqrt(k * price)), round(math.sqrt(k / price))


def buy(venue: str, level: float, budget: int, reserves: tuple[int, int] | None = None) -> Fill:
    """Spend about ``budget`` lamports (fees included) at marginal log-price ``level``.

    ``reserves`` continues from a previous fill's reserves instead (a buy split into several
    transactions then costs exactly what one buy of the total would).
    """
    sol_r, tok_r = reserves if reserves is not None else reserves_at(venue, level)
    k = float(sol_r) * float(tok_r)  # the invariant of these very reserves
    if venue == "pumpfun":
        pool_in = budget * 10_000 // (10_000 + PUMPFUN_FEE_BPS + PUMPFUN_CREATOR_FEE_BPS)
        fee, creator = _ceil_bps(pool_in, PUMPFUN_FEE_BPS), _ceil_bps(pool_in, PUMPFUN_CREATOR_FEE_BPS)
        lp = 0
        paid = pool_in + fee + creator
        into_pool = pool_in
    elif venue == "pumpswap":
        total_bps = PUMPSWAP_LP_FEE_BPS + PUMPSWAP_PROTOCOL_FEE_BPS + PUMPSWAP_CREATOR_FEE_BPS
        pool_in = budget * 10_000 // (10_000 + total_bps)
        lp = _ceil_bps(pool_in, PUMPSWAP_LP_FEE_BPS)
        fee = _ceil_bps(pool_in, PUMPSWAP_PROTOCOL_FEE_BPS)
        creator = _ceil_bps(pool_in, PUMPSWAP_CREATOR_FEE_BPS)
        paid = pool_in + lp + fee + creator
        into_pool = pool_in + lp  # the LP fee stays in the pool
    else:  # Raydium AMM v4: the fee is taken from the input and stays in the pool
        lp = _ceil_bps(budget, RAYDIUM_FEE_BPS)
        fee = creator = 0
        paid = into_pool = budget
        pool_in = budget - lp
    tokens = max(int(tok_r - k / (sol_r + pool_in)), 1)
    return Fill(
        venue=venue,
        side="buy",
        token_amount=tokens,
        sol_amount=paid,
        pool_sol=pool_in,
        fee=fee,
        creator_fee=creator,
        lp_fee=lp,
        reserve_sol_before=sol_r,
        reserve_tokens_before=tok_r,
        reserve_sol=sol_r + into_pool,
        reserve_tokens=tok_r - tokens,
    )


def sell(venue: str, level: float, tokens: int, reserves: tuple[int, int] | None = None) -> Fill:
    """Sell ``tokens`` raw units at marginal log-price ``level`` (or from ``reserves``)."""
    sol_r, tok_r = reserves if reserves is not None else reserves_at(venue, level)
    k = float(sol_r) * float(tok_r)  # the invariant of these very reserves
    if venue == "raydium_amm_v4":
        lp = _ceil_bps(tokens, RAYDIUM_FEE_BPS)
        out = int(sol_r - k / (tok_r + tokens - lp))
        return Fill(venue, "sell", tokens, out, out, 0, 0, lp, sol_r, tok_r, sol_r - out, tok_r + tokens)
    out = int(sol_r - k / (tok_r + tokens))
    if venue == "pumpfun":
        fee, creator, lp = _ceil_bps(out, PUMPFUN_FEE_BPS), _ceil_bps(out, PUMPFUN_CREATOR_FEE_BPS), 0
        left_pool = out
    else:
        lp = _ceil_bps(out, PUMPSWAP_LP_FEE_BPS)
        fee = _ceil_bps(out, PUMPSWAP_PROTOCOL_FEE_BPS)
        creator = _ceil_bps(out, PUMPSWAP_CREATOR_FEE_BPS)
        left_pool = out - lp
    received = max(out - fee - creator - lp, 0)
    return Fill(
        venue=venue,
        side="sell",
        token_amount=tokens,
        sol_amount=received,
        pool_sol=out,
        fee=fee,
        creator_fee=creator,
        lp_fee=lp,
        reserve_sol_before=sol_r,
        reserve_tokens_before=tok_r,
        reserve_sol=sol_r - left_pool,
        reserve_tokens=tok_r + tokens,
    )


def curve_real_reserves(virtual_sol: int, virtual_tokens: int) -> tuple[int, int]:
    """pump.fun's real (SOL, token) reserves: the virtual ones minus the curve's virtual offsets."""
    return (
        max(virtual_sol - CURVE_VIRTUAL_SOL0, 0),
        max(virtual_tokens - CURVE_VIRTUAL_TOKENS_AT_COMPLETION, 0),
    )
