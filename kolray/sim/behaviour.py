"""KOLs: latent traits, how they pick tokens, and how they manage a position (exit ladders).

A KOL's latent traits show through what the analyzer can see:

- **skill** sets how strongly the KOL picks high-quality tokens (the pick utility weighs ``q``), so a
  skilled KOL's closed positions have a higher win rate and mean multiple, and their buys are early
  on tokens that other KOLs later pile into;
- **style** (farmer / scalper / swing / diamond hands) sets the exit ladder: take-profit levels,
  stop-losses, partial sells and time exits — visible as hold durations and exit multiples. A farmer
  buys, lets its followers in and sells within seconds to a minute (copying one loses); a scalper
  holds minutes, a swing trader tens of minutes, diamond hands hours;
- **herding** makes a KOL follow tokens other tracked KOLs bought recently (consensus);
- **sizing** is heavy-tailed, with *conviction*: a KOL buys more of tokens it likes (high ``q``);
- **activity**: positions per day, active hours and a weekend factor;
- **following**: the SOL its copy-traders put in after each of its buys; the crowd arrives within
  seconds and leaves over minutes, and its SOL moves the price on the curve (a farmer's audience is
  what it sells into).

An exit ladder is a small automaton of :class:`Node` s. In a node the position waits until the
price (relative to the first buy) touches ``lo`` or ``hi``; the action there (sell a fraction, or add)
leads to the next node. Besides the barriers, a KOL exits everything at market at a Poisson rate
``time_exit_rate`` (boredom, need of SOL) and, when the token dies, sells what is left or abandons it.
All of these are memoryless, so the probability of every outcome is computable exactly
(:mod:`kolray.sim.oracle`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kolray.sim.params import LAMPORTS_PER_SOL, STYLES, WorldParams


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # "sell" | "add"
    fraction: float  # of the tokens held (sell) or of the first buy's SOL (add)
    next: int | None  # next node index; None when the position is closed


@dataclass(frozen=True, slots=True)
class Node:
    lo: float  # price multiple of the first buy
    hi: float
    on_lo: Action
    on_hi: Action


@dataclass(frozen=True, slots=True)
class Ladder:
    nodes: tuple[Node, ...]


@dataclass(slots=True)
class Kol:
    index: int
    wallet: str
    style: str
    skill: float
    pick_coef: float  # weight of token quality in the pick utility
    herding: float  # weight of log(1 + recent KOL buys of the token)
    momentum_pref: float  # weight of the token's last-30-minute return
    freshness_h: float  # prefers tokens younger than about this (hours)
    positions_per_day: float
    hour_center: float  # UTC hour of peak activity
    hour_concentration: float
    weekend_factor: float
    size_median: int  # lamports
    size_sigma: float
    conviction: float  # size multiplier per unit of token quality (log scale)
    abandon_prob: float  # leaves a dead token unsold
    time_exit_rate: float  # per hour
    split_buy_prob: float  # the first buy comes as 2-3 transactions at once
    ladders: tuple[Ladder, ...]
    ladder_weights: tuple[float, ...]
    jito_prob: float
    bot_fee_bps: int  # 0, or a bot's fee taken as a plain transfer
    bot_account: int
    jupiter_prob: float
    priority_micro_lamports: int
    fail_rate: float
    initial_balance: int
    perception_sd: float = 1.0  # noise on the token quality the KOL perceives
    following_sol: float = 0.0  # SOL the KOL's followers put in after a typical buy
    crowd_in_s: float = 10.0  # time constant of the followers' arrival
    crowd_out_s: float = 120.0  # time constant of their exit
    traits: dict[str, float] = field(default_factory=dict)


def _farmer(rng: np.random.Generator) -> tuple[tuple[Ladder, ...], tuple[float, ...]]:
    # The stop is wide: a farmer waits the seconds its crowd takes to arrive, then sells into it.
    tp = rng.uniform(1.15, 1.5)
    sl = rng.uniform(0.55, 0.75)
    main = Ladder((Node(sl, tp, Action("sell", 1.0, None), Action("sell", 1.0, None)),))
    return (main,), (1.0,)


def _scalper(rng: np.random.Generator) -> tuple[tuple[Ladder, ...], tuple[float, ...]]:
    # Wide enough that, at a memecoin's volatility (tens of percent a minute), a scalp lasts minutes.
    tp = rng.uniform(1.6, 2.2)
    sl = rng.uniform(0.5, 0.7)
    first = rng.uniform(0.6, 0.85)
    runner = rng.uniform(2.4, 2.9)
    main = Ladder(
        (
            Node(sl, tp, Action("sell", 1.0, None), Action("sell", first, 1)),
            Node(1.0, runner, Action("sell", 1.0, None), Action("sell", 1.0, None)),
        )
    )
    quick = Ladder((Node(sl, tp, Action("sell", 1.0, None), Action("sell", 1.0, None)),))
    return (main, quick), (0.75, 0.25)


def _swing(rng: np.random.Generator, dca: bool) -> tuple[tuple[Ladder, ...], tuple[float, ...]]:
    tp1 = rng.uniform(1.7, 2.5)
    f1 = rng.uniform(0.2, 0.5)
    tp2 = rng.uniform(3.2, 5.5)
    be = rng.uniform(1.0, 1.3)
    sl = rng.uniform(0.5, 0.65)
    nodes = [
        Node(sl, tp1, Action("sell", 1.0, None), Action("sell", f1, 1)),
        Node(be, tp2, Action("sell", 1.0, None), Action("sell", 1.0, None)),
    ]
    if dca:
        # Average down once at 0.75x, with a wider stop afterwards.
        nodes[0] = Node(0.75, tp1, Action("add", 0.5, 2), Action("sell", f1, 1))
        nodes.append(Node(sl * 0.8, tp1, Action("sell", 1.0, None), Action("sell", f1, 1)))
    main = Ladder(tuple(nodes))
    # The alternate plan lets more of the position run further.
    greedy = Ladder(
        (
            Node(sl, tp1, Action("sell", 1.0, None), Action("sell", f1 * 0.7, 1)),
            Node(be, tp2 * 1.6, Action("sell", 1.0, None), Action("sell", 1.0, None)),
        )
    )
    return (main, greedy), (0.8, 0.2)


def _diamond(rng: np.random.Generator, pyramid: bool) -> tuple[tuple[Ladder, ...], tuple[float, ...]]:
    tp1 = rng.uniform(3.3, 4.0)
    f1 = rng.uniform(0.6, 0.95)
    tp2 = rng.uniform(6.0, 15.0)
    # After the first target a trailing stop under it, placed so that the position is 3x whichever
    # of the two fills it: the first target is where a diamond-hands KOL locks the 3x in.
    trail = min(max(tp1 * rng.uniform(0.6, 0.9), (3.4 - f1 * tp1) / (1 - f1)), tp1 * 0.95)
    sl = rng.uniform(0.25, 0.4)
    nodes: tuple[Node, ...]
    if pyramid:
        nodes = (
            Node(sl, 1.6, Action("sell", 1.0, None), Action("add", 0.5, 1)),
            Node(0.85, tp1, Action("sell", 1.0, None), Action("sell", f1, 2)),
            Node(trail, tp2, Action("sell", 1.0, None), Action("sell", 1.0, None)),
        )
    else:
        nodes = (
            Node(sl, tp1, Action("sell", 1.0, None), Action("sell", f1, 1)),
            Node(trail, tp2, Action("sell", 1.0, None), Action("sell", 1.0, None)),
        )
    main = Ladder(nodes)
    # Sometimes the diamond takes half early instead.
    early = Ladder(
        (
            Node(sl, 2.0, Action("sell", 1.0, None), Action("sell", 0.5, 1)),
            Node(1.2, tp2 * 0.6, Action("sell", 1.0, None), Action("sell", 1.0, None)),
        )
    )
    return (main, early), (0.8, 0.2)


def sample_kols(
    params: WorldParams, rng: np.random.Generator, first_index: int, wallets: list[str]
) -> list[Kol]:
    """Draw the latent traits of ``len(wallets)`` KOLs."""
    kols = []
    weights = np.asarray(params.style_weights, dtype=float)
    weights = weights / weights.sum()
    for offset, wallet in enumerate(wallets):
        style = STYLES[int(rng.choice(len(STYLES), p=weights))]
        skill = float(np.clip(rng.standard_normal(), -2.5, 2.5))
        # Time exits per hour: a farmer sells within about 20-60 s, a scalper within minutes, a
        # swing trader within tens of minutes, diamond hands within hours (≥ 0.06 per hour, so a
        # position outlives the 7-day label horizon with probability < e^-10).
        if style == "farmer":
            ladders, lw = _farmer(rng)
            time_exit = rng.uniform(60.0, 180.0)
            abandon = rng.beta(1.2, 12)
            ppd_scale = 4.0
        elif style == "scalper":
            ladders, lw = _scalper(rng)
            time_exit = rng.uniform(6.0, 20.0)
            abandon = rng.beta(1.5, 8)
            ppd_scale = 2.0
        elif style == "swing":
            ladders, lw = _swing(rng, dca=rng.random() < 0.25)
            time_exit = rng.uniform(1.0, 4.0)
            abandon = rng.beta(2, 6)
            ppd_scale = 1.0
        else:
            ladders, lw = _diamond(rng, pyramid=rng.random() < 0.4)
            time_exit = rng.uniform(0.08, 0.4)
            abandon = rng.beta(3, 4)
            ppd_scale = 0.6
        ppd = (
            params.positions_per_day_median
            * ppd_scale
            * math.exp(params.positions_per_day_sigma * rng.standard_normal())
        )
        size = params.size_median_sol * math.exp(params.size_sigma * rng.standard_normal())
        following = params.following_sol_median * math.exp(params.following_sigma * rng.standard_normal())
        if style == "farmer":
            # A farmer farms because it has an audience, sized to its bait: its buys draw about
            # ``farmer_following`` times their own SOL.
            size *= params.farmer_size
            following = params.farmer_following * size * math.exp(0.3 * rng.standard_normal())
        crowd_in = float(rng.uniform(params.crowd_in_min_s, params.crowd_in_max_s))
        crowd_out = float(rng.uniform(params.crowd_out_min_s, params.crowd_out_max_s))
        kols.append(
            Kol(
                index=first_index + offset,
                wallet=wallet,
                style=style,
                skill=skill,
                pick_coef=max(params.skill_pick + params.skill_slope * skill, -0.3),
                herding=float(rng.uniform(0.0, params.herding_max)),
                momentum_pref=float(rng.uniform(0.0, 1.5)),
                freshness_h=float(rng.uniform(0.1, 1.0)),
                positions_per_day=float(np.clip(ppd, 0.3, 150.0)),
                hour_center=float(rng.uniform(0, 24)),
                hour_concentration=float(rng.uniform(0.3, 2.0)),
                weekend_factor=float(rng.uniform(0.5, 1.3)),
                size_median=int(np.clip(size, 0.05, 60.0) * LAMPORTS_PER_SOL),
                # A farmer's bait is a routine size (its crowd is sized to it).
                size_sigma=float(rng.uniform(0.25, 0.6)) * (0.2 if style == "farmer" else 1.0),
                conviction=float(rng.uniform(params.conviction_min, params.conviction_max))
                * (style != "farmer"),
                abandon_prob=float(abandon),
                time_exit_rate=float(time_exit),
                split_buy_prob=float(rng.uniform(0.0, 0.35)),
                ladders=ladders,
                ladder_weights=lw,
                jito_prob=float(rng.choice([0.0, 0.3, 0.9])),
                bot_fee_bps=int(rng.choice([0, 0, 100])),
                bot_account=int(rng.integers(0, 2)),
                jupiter_prob=float(params.jupiter_share * rng.uniform(0, 2)),
                priority_micro_lamports=int(10 ** rng.uniform(3.5, 6.5)),
                fail_rate=float(params.failed_tx_rate * rng.uniform(0.2, 2.0)),
                initial_balance=int(rng.uniform(30, 400) * LAMPORTS_PER_SOL + size * 20 * LAMPORTS_PER_SOL),
                perception_sd=params.perception_sd0 * math.exp(-params.perception_skill * skill),
                following_sol=float(following),
                crowd_in_s=crowd_in,
                crowd_out_s=crowd_out,
            )
        )
    return kols


def hour_profile(kol: Kol, hours: np.ndarray) -> np.ndarray:
    """Relative activity at UTC hours (von Mises shape, mean ≈ 1 over a day)."""
    angle = 2 * math.pi * (hours - kol.hour_center) / 24.0
    raw = np.exp(kol.hour_concentration * np.cos(angle))
    return raw / np.i0(kol.hour_concentration)


def buy_times(kol: Kol, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    """Times of the KOL's buy decisions: a Poisson process shaped by hour of day and weekday."""
    days = (end - start) / 86_400
    peak = (
        math.exp(kol.hour_concentration) / float(np.i0(kol.hour_concentration)) * max(kol.weekend_factor, 1.0)
    )
    n = rng.poisson(kol.positions_per_day * days * peak)
    t = np.sort(rng.uniform(start, end, n))
    hours = (t % 86_400) / 3600.0
    weekday = ((t // 86_400).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (3)
    weight = hour_profile(kol, hours) * np.where(weekday >= 5, kol.weekend_factor, 1.0)
    keep = rng.random(n) < weight / peak
    return t[keep]
