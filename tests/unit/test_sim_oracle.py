"""``oracle_p3x`` is the true conditional probability under the twin's generative model.

The oracle solves the model's equations; these tests check it against the simulator itself: replaying
the same entry many times on fresh price paths (the future is random) must make 3x as often as the
oracle says. Also checked: the pieces the oracle relies on (execution math, thresholds, the dead-sale
distribution, the price path's bridge extremes).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kolray.sim.market import buy, price_of, reserves_at, sell, simulate_path, token_dynamics
from kolray.sim.oracle import DEAD_SALE_CAP_S, DEAD_SALE_DELAY_S, dead_sale_cdf, oracle_p3x, oracle_p_peak
from kolray.sim.params import (
    LAMPORTS_PER_SOL,
    MIGRATION_LEVEL,
    PUMPFUN_CREATOR_FEE_BPS,
    PUMPFUN_FEE_BPS,
    WorldParams,
)
from kolray.sim.simulate import Community
from kolray.sim.trading import Holding, sell_all_value, three_x_threshold

PARAMS = WorldParams(kols=30, days=6, seed=11)


@pytest.fixture(scope="module")
def community():
    community = Community(PARAMS, 0, 0, PARAMS.kols)
    result = community.run()
    return community, result


def test_oracle_matches_monte_carlo_of_the_simulator(community) -> None:
    sim, result = community
    plans = [p for p in result.positions if not p.entry.migrated]
    oracle = oracle_p3x([p.entry for p in plans], PARAMS)
    # The entries most likely to 3x (where a wrong oracle would show), plus a few ordinary ones.
    order = np.argsort(-oracle)
    picked = list(order[:5]) + list(order[len(order) // 3 :: max(len(order) // 3, 1)][:2])
    kols = {k.index: k for k in result.kols}
    rng = np.random.default_rng(2024)
    n = 1200
    z_scores = []
    for i in picked:
        plan = plans[i]
        entry = plan.entry
        kol = kols[plan.kol]
        token = result.tokens[plan.token]
        weights = np.asarray(entry.weights) / sum(entry.weights)
        hits = 0
        for _ in range(n):
            path = simulate_path(
                PARAMS, rng, 0.0, entry.dynamics, 60 * 86_400.0, x0=entry.level, regime0=entry.regime
            )
            ladder = entry.ladders[int(rng.choice(len(weights), p=weights))]
            _, three_x = sim.replay(kol, token, path, entry.holding, ladder, entry.budgets, rng)
            hits += three_x
        p = float(oracle[i])
        freq = hits / n
        se = math.sqrt(max(p * (1 - p), 1e-4) / n)
        z_scores.append((freq - p) / se)
        assert abs(freq - p) <= 4 * se + 0.002, f"entry {i}: oracle {p:.4f}, simulated {freq:.4f} (n={n})"
    assert max(oracle[picked]) > 0.05, "the check needs entries with a real chance of 3x"
    # No systematic bias across the entries either.
    assert abs(float(np.mean(z_scores))) < 4 / math.sqrt(len(z_scores))


def test_oracle_is_a_probability_and_zero_where_no_branch_reaches_3x(community) -> None:
    _, result = community
    oracle = oracle_p3x([p.entry for p in result.positions], PARAMS)
    assert np.all((oracle >= 0) & (oracle <= 1))
    styles = {k.index: k.style for k in result.kols}
    scalper = np.array([styles[p.kol] == "scalper" for p in result.positions])
    assert scalper.any() and np.all(oracle[scalper] == 0.0)  # scalpers' ladders top out below 3x
    assert oracle[~scalper].max() > 0


def test_dead_sale_distribution_matches_sampling() -> None:
    rng = np.random.default_rng(5)
    n = 200_000
    drop = rng.uniform(PARAMS.death_drop_min, PARAMS.death_drop_max, n)
    delay = np.minimum(rng.exponential(DEAD_SALE_DELAY_S, n), DEAD_SALE_CAP_S)
    loss = drop + (-PARAMS.dead_drift / 3600.0) * delay
    margins = np.array([2.9, 3.2, 4.0, 5.0, 5.5])
    expected = np.array([(loss <= m).mean() for m in margins])
    assert np.allclose(dead_sale_cdf(PARAMS, margins), expected, atol=0.005)
    assert dead_sale_cdf(PARAMS, np.array([np.inf, -np.inf])).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("venue", ["pumpfun", "pumpswap", "raydium_amm_v4"])
def test_split_trades_cost_what_one_trade_costs(venue: str) -> None:
    """The simulator splits some buys and sells into several transactions along the curve; the
    oracle prices them as one. On pump.fun that is exact up to each chunk's fee rounding; on the AMMs
    the LP fee of the first chunk stays in the pool and moves the second by about 1e-5."""
    level = 1.3
    tolerance = 3 if venue == "pumpfun" else 1e-4
    one = buy(venue, level, 3 * LAMPORTS_PER_SOL)
    first = buy(venue, level, LAMPORTS_PER_SOL)
    second = buy(venue, level, 2 * LAMPORTS_PER_SOL, (first.reserve_sol, first.reserve_tokens))
    lamports_per_token = one.sol_amount / one.token_amount
    gap = abs(first.token_amount + second.token_amount - one.token_amount) * lamports_per_token
    assert gap <= (tolerance if venue == "pumpfun" else tolerance * one.sol_amount)
    assert abs(first.sol_amount + second.sol_amount - one.sol_amount) <= 2
    out = sell(venue, level, one.token_amount)
    a = sell(venue, level, one.token_amount // 3)
    b = sell(venue, level, one.token_amount - one.token_amount // 3, (a.reserve_sol, a.reserve_tokens))
    gap = abs(a.sol_amount + b.sol_amount - out.sol_amount)
    assert gap <= (tolerance if venue == "pumpfun" else tolerance * out.sol_amount)


def test_pumpfun_fees_and_prices() -> None:
    fill = buy("pumpfun", 0.0, LAMPORTS_PER_SOL)
    assert fill.fee == -(-fill.pool_sol * PUMPFUN_FEE_BPS // 10_000)
    assert fill.creator_fee == -(-fill.pool_sol * PUMPFUN_CREATOR_FEE_BPS // 10_000)
    assert fill.sol_amount == fill.pool_sol + fill.fee + fill.creator_fee <= LAMPORTS_PER_SOL
    sol, tokens = reserves_at("pumpfun", 0.0)
    assert sol == 30 * LAMPORTS_PER_SOL and abs(sol / tokens - price_of(0.0)) < 1e-12
    # A round trip at one price loses the fees and the price impact, nothing else.
    back = sell("pumpfun", 0.0, fill.token_amount, (fill.reserve_sol, fill.reserve_tokens))
    assert 0.97 * fill.sol_amount < back.sol_amount < fill.sol_amount


def test_three_x_threshold_is_where_selling_everything_reaches_3x() -> None:
    holding = Holding(
        cost=2 * LAMPORTS_PER_SOL, tokens=buy("pumpfun", 1.0, 2 * LAMPORTS_PER_SOL).token_amount, proceeds=0
    )
    x = three_x_threshold(holding, "pumpfun", 0.0, 3.0)
    assert 1.0 + math.log(3) < x < 3.0
    assert sell_all_value(holding, x + 1e-6, "pumpfun") >= 3 * holding.cost
    assert sell_all_value(holding, x - 1e-4, "pumpfun") < 3 * holding.cost
    assert three_x_threshold(holding, "pumpfun", 0.0, 1.0) == math.inf
    done = Holding(cost=1, tokens=0, proceeds=3)
    assert three_x_threshold(done, "pumpfun", 0.0, 1.0) == -math.inf


def test_price_path_bridge_extremes_and_migration() -> None:
    rng = np.random.default_rng(1)
    dynamics = token_dynamics(PARAMS, 2.5)
    path = simulate_path(PARAMS, rng, 1_000.0, dynamics, 1_000.0 + 3 * 86_400)
    assert np.all(path.hi >= np.maximum(path.x[:-1], path.x[1:]) - 1e-12)
    assert np.all(path.lo <= np.minimum(path.x[:-1], path.x[1:]) + 1e-12)
    # The launch block: the first buyers take a fresh token to launch × e^U(0, launch_level_max) and
    # the snipers spike it e^U(sniper_lift_min, sniper_lift_max) above that, to dump within 5 s.
    assert PARAMS.sniper_lift_min <= path.x[0] <= PARAMS.launch_level_max + PARAMS.sniper_lift_max
    assert path.last_time >= min(path.death_time, 1_000.0 + 3 * 86_400)
    crossed = np.nonzero(path.hi >= MIGRATION_LEVEL)[0]
    assert path.migration_index == (int(crossed[0]) if len(crossed) else -1)


def test_peak_oracle_is_the_pareto_tail_and_matches_sampled_paths(community) -> None:
    """``oracle_p_peak3x``: P(the token trades at ≥ 3x the entry's pool price before it dies). For
    the twin's killed Brownian motion, the pool price being e^lift over the level the buy met, that
    is (3 e^lift)^-alpha exactly, whatever the entry level; sampled paths agree."""
    _, result = community
    plans = result.positions[:: max(len(result.positions) // 40, 1)]
    peak = oracle_p_peak([p.entry for p in plans], PARAMS)
    alphas = np.array([p.entry.dynamics.tail_alpha for p in plans])
    levels = np.array([p.entry.level for p in plans])
    migrated = np.array([p.entry.migrated for p in plans])
    target = math.log(3) + np.array([p.entry.pool_lift for p in plans])
    assert (target > math.log(3)).all()  # every opening buy lifts the price
    # With the curve's floor at the launch price (x = 0) the killed Brownian motion reaches x + d
    # first with probability sinh(alpha x) / sinh(alpha (x + d)); past migration, e^(-alpha d).
    floor = np.sinh(alphas * levels) / np.sinh(alphas * (levels + target))
    expected = np.where(migrated, np.exp(-alphas * target), floor)
    near = ~migrated & (levels + target > MIGRATION_LEVEL)  # the floor goes at migration
    assert np.allclose(peak[~near], expected[~near], atol=2e-3)
    assert np.all(peak[near] >= expected[near] - 2e-3) and np.all(peak <= np.exp(-alphas * target) + 2e-3)
    assert peak.std() > 0.02  # tokens differ: a signal to learn, not a constant
    rng = np.random.default_rng(7)
    # Sampled from a fresh curve (its floor and migration ahead): the check for entries on the curve.
    entry = max(
        (p.entry for p, v in zip(plans, peak, strict=True) if not p.entry.migrated),
        key=lambda e: float(oracle_p_peak([e], PARAMS)[0]),
    )
    n = 3000
    hits = sum(
        simulate_path(PARAMS, rng, 0.0, entry.dynamics, 30 * 86_400.0, x0=entry.level).hi.max() - entry.level
        >= math.log(3) + entry.pool_lift
        for _ in range(n)
    )
    p = float(oracle_p_peak([entry], PARAMS)[0])
    assert abs(hits / n - p) <= 4 * math.sqrt(p * (1 - p) / n)


def test_peaks_are_fat_tailed_and_most_tokens_die_fast() -> None:
    """Peaks after entry are Pareto-like: each 10x is about alpha decades rarer; 100x happens; a
    median token's life is minutes."""
    rng = np.random.default_rng(3)
    dynamics = token_dynamics(PARAMS, 0.0)
    n = 4000
    lives = []
    peaks = []
    for _ in range(n):
        path = simulate_path(PARAMS, rng, 0.0, dynamics, 30 * 86_400.0, x0=1.0)
        lives.append(path.death_time)
        peaks.append(math.exp(path.hi.max() - 1.0))
    peaks = np.array(peaks)
    alpha = dynamics.tail_alpha
    for m in (2.0, 3.0, 10.0):
        # Pareto m^-alpha far above the curve's floor at the launch price; from x = 1 the floor
        # takes a little: sinh(alpha) / sinh(alpha (1 + ln m)).
        expected = math.sinh(alpha) / math.sinh(alpha * (1 + math.log(m)))
        assert abs((peaks >= m).mean() - expected) <= 4 * math.sqrt(expected * (1 - expected) / n)
        assert expected > 0.75 * m**-alpha
    assert (peaks >= 100).mean() > 0
    assert 60 < float(np.median(lives)) < 1800
