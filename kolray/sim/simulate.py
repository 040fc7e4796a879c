"""The market of one community of KOLs: tokens launch, KOLs pick them, positions play out.

Everything here decides *what happens* (trades, transfers, airdrops, failures) and the latent state
behind it; :mod:`kolray.sim.chain` turns the events into transactions. A world is a set of
independent communities (each with its own KOLs and tokens), so memory is bounded by one community.

Point in time: a KOL's choice uses only the present (token quality as the KOL perceives it, how many
tracked KOLs bought the token in the last hours, its recent return and age). The future of the price
path is never consulted for a decision, so given the state at entry the path after entry is
independent of the choice — which is what makes ``oracle_p3x`` the true conditional probability.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from kolray.sim import keys
from kolray.sim.behaviour import Action, Kol, Ladder, buy_times, sample_kols
from kolray.sim.market import (
    Fill,
    TokenDynamics,
    TokenPath,
    buy,
    crowd_impact,
    crowd_lift,
    crowd_profile,
    level_of,
    sell,
    simulate_path,
    token_dynamics,
)
from kolray.sim.oracle import DEAD_SALE_CAP_S, DEAD_SALE_DELAY_S, EntryState
from kolray.sim.params import (
    DUST_FRACTION,
    HOUR,
    LAMPORTS_PER_SOL,
    MIGRATION_LEVEL,
    WorldParams,
)
from kolray.sim.tapes import TokenTape, tape_of
from kolray.sim.trading import Holding, apply, venue_for

VIRTUAL_SOL_80_LEVEL = 2 * math.log(80 / 30)  # the curve's price ∝ virtual SOL²: 30 SOL at launch

DUMP_MIN_STEPS = 30  # the published dump rule: tokens with ≥ 30 swaps (a step of the path stands for a swap)
DUMP_SIGMAS = 4.0
RECENT_WINDOW_S = 1800  # "recent" KOL buys of a token, for herding
MOMENTUM_S = 120


@dataclass(slots=True)
class Token:
    index: int
    mint: str
    launch: float
    q: float
    dynamics: TokenDynamics
    amm: str
    path: TokenPath | None = None
    recent_buys: deque = field(default_factory=deque)
    kol_wallets: set = field(default_factory=set)
    death_time: float = math.inf
    migration_time: float | None = None
    peak_level: float = 0.0
    # Followers' SOL in the reserves and the log-price lift it makes, per grid point of the path.
    crowd: np.ndarray | None = None
    impact: np.ndarray | None = None

    def market(self) -> tuple[TokenPath, np.ndarray]:
        """The path and the crowd's log-price impact of a token being simulated."""
        if self.path is None or self.impact is None:
            raise RuntimeError(f"token {self.index} has no simulated path: not launched, or dead")
        return self.path, self.impact


@dataclass(slots=True)
class Trade:
    """A successful swap by a KOL (a ground-truth trade once it has a signature)."""

    time: float
    kol: int
    token: int
    side: Literal["buy", "sell"]
    fill: Fill
    route: str  # "direct" or "jupiter"
    position: int  # -1: an untracked sell (tokens received, never bought)
    opens: bool = False
    close_account: bool = False  # the sell empties the token account and closes it


@dataclass(slots=True)
class FailedTrade:
    time: float
    kol: int
    token: int
    side: Literal["buy", "sell"]
    venue: str
    route: str
    budget: int  # lamports (buy) or tokens (sell) the attempt was for
    level: float


@dataclass(slots=True)
class Airdrop:
    time: float
    kol: int
    mint: str
    amount: int
    sender: str
    memo: str | None
    token: int = -1  # a community token (promotion) or -1 (spam mint)


@dataclass(slots=True)
class TokenSend:
    time: float
    kol: int
    token: int
    amount: int
    to: str


@dataclass(slots=True)
class SolTransfer:
    time: float
    kol: int
    to: str
    lamports: int


@dataclass(slots=True)
class PositionPlan:
    """The latent truth of one position (the analyzer must rebuild the observable part)."""

    id: int
    kol: int
    token: int
    entry_time: float
    entry: EntryState
    ladder: int
    outcome: str  # "closed", "abandoned", "open_at_end"
    planned_three_x: bool
    max_level_7d: float  # highest price within H of entry, relative to the entry's pool price (log)
    entry_pool_level: float  # the log-price the opening transaction leaves (its swap's pool price)
    kols_before: int
    entry_trade: Trade | None = None


@dataclass(slots=True)
class CommunityResult:
    index: int
    kols: list[Kol]
    tokens: list[Token]
    trades: list[Trade]
    failed: list[FailedTrade]
    airdrops: list[Airdrop]
    sends: list[TokenSend]
    transfers: list[SolTransfer]
    positions: list[PositionPlan]
    market: dict[str, int] = field(default_factory=dict)
    graduation_s: list[float] = field(default_factory=list)
    tapes: dict[int, TokenTape] = field(default_factory=dict)  # token index → its true price tape


def is_dump(returns: np.ndarray) -> bool:
    """Whether a return series holds a dump: a drop below the median by more than 4 robust standard
    deviations (1.4826 × the median absolute deviation), the published dump rule (see ``kolray.sim.calibrate``)."""
    median = float(np.median(returns))
    scale = 1.4826 * float(np.median(np.abs(returns - median)))
    return bool(returns.min() < median - DUMP_SIGMAS * scale)


def _rng(params: WorldParams, community: int, purpose: int, *more: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([params.seed, community, purpose, *more]))


class Community:
    """Simulates one community from the world start to its end."""

    def __init__(self, params: WorldParams, index: int, first_kol: int, n_kols: int) -> None:
        self.params = params
        self.index = index
        self.start = float(params.start)
        self.end = float(params.end)
        wallets = [keys.kol_wallet(params.seed, first_kol + i) for i in range(n_kols)]
        self.kols = sample_kols(params, _rng(params, index, 1), first_kol, wallets)
        self.tokens: list[Token] = []
        self.trades: list[Trade] = []
        self.failed: list[FailedTrade] = []
        self.airdrops: list[Airdrop] = []
        self.sends: list[TokenSend] = []
        self.transfers: list[SolTransfer] = []
        self.positions: list[PositionPlan] = []
        self.rng = _rng(params, index, 2)
        self.held: list[dict[int, float]] = [{} for _ in self.kols]  # token → time the position ends
        self.excluded: list[set[int]] = [set() for _ in self.kols]
        self.market: dict[str, int] = dict.fromkeys(
            ("launches", "active_tokens", "graduated", "above_80", "above_80_graduated", "traded", "dumped"),
            0,
        )
        self.graduation_s: list[float] = []
        self.tapes: dict[int, TokenTape] = {}

    # Tokens

    def _launch_tokens(self) -> list[tuple[float, int]]:
        p = self.params
        rng = _rng(p, self.index, 3)
        first = self.start - p.warmup_days * 86_400
        rate = max(p.tokens_per_kol_day * len(self.kols), p.min_launches_per_day) / 86_400
        # Every launch, then the active ones: the rest die untraded in their first minute (counted).
        launches = rng.poisson(rate * (self.end - self.start))
        n = rng.binomial(rng.poisson(rate * (self.end - first)), p.active_share)
        self.market["launches"] = int(launches)
        times = np.sort(rng.uniform(first, self.end, n))
        q = rng.standard_normal(n)
        z = rng.standard_normal(n)
        w = rng.standard_normal(n)
        amm = np.where(rng.random(n) < p.raydium_share, "raydium_amm_v4", "pumpswap")
        for i in range(n):
            token_index = len(self.tokens)
            self.tokens.append(
                Token(
                    index=token_index,
                    mint="",  # derived once the token trades (a key derivation costs ~0.4 ms)
                    launch=float(times[i]),
                    q=float(q[i]),
                    dynamics=token_dynamics(p, float(q[i]), float(z[i]), float(w[i])),
                    amm=str(amm[i]),
                )
            )
        return [(t.launch, t.index) for t in self.tokens]

    def _mint(self, token: Token) -> str:
        if not token.mint:
            token.mint = keys.mint_address(self.params.seed, self.index, token.index)
        return token.mint

    def _materialise(self, token: Token) -> None:
        """Simulate the token's path (its own random stream: independent of simulation order)."""
        path = simulate_path(
            self.params, _rng(self.params, self.index, 4, token.index), token.launch, token.dynamics, self.end
        )
        token.path = path
        token.crowd = np.zeros(len(path.x))
        token.impact = np.zeros(len(path.x))
        token.death_time = path.death_time
        if path.migration_index >= 0:
            token.migration_time = path.launch + (path.migration_index + 0.5) * path.step
        token.peak_level = float(path.hi.max()) if len(path.hi) else 0.0
        if self.start <= token.launch < self.end:
            self._count(token, path)

    def _count(self, token: Token, path: TokenPath) -> None:
        """The market's figures over active tokens launched in the world (``world.json``)."""
        m = self.market
        m["active_tokens"] += 1
        if token.migration_time is not None and token.migration_time < self.end:
            m["graduated"] += 1
            self.graduation_s.append(token.migration_time - token.launch)
        if token.peak_level > VIRTUAL_SOL_80_LEVEL:
            m["above_80"] += 1
            m["above_80_graduated"] += token.migration_time is not None and token.migration_time < self.end
        # The published dumps: among tokens with ≥ 30 swaps, those with at least one 4σ drop by a
        # robust rule. The twin's stand-in for a swap is a step of its path (5 s of trading): a token
        # that trades for ≥ 30 steps, whose step returns (its death's collapse included) hold one
        # below median - 4 × 1.4826 × MAD.
        returns = np.diff(path.x)
        if path.death_time < self.end:
            last = float(path.x[-1])
            dead = path.curve_dead_level if not path.migrated_at(path.death_time) else last - path.death_drop
            returns = np.append(returns, dead - last)
        if len(returns) < DUMP_MIN_STEPS:
            return
        m["traded"] += 1
        m["dumped"] += is_dump(returns)

    # The main loop

    def run(self) -> CommunityResult:
        launches = self._launch_tokens()
        intents: list[tuple[float, int]] = []
        for k, kol in enumerate(self.kols):
            for t in buy_times(kol, self.start, self.end, _rng(self.params, self.index, 5, k)):
                intents.append((float(t), k))
        intents.sort()
        alive: dict[int, Token] = {}
        next_launch = 0
        for t, k in intents:
            while next_launch < len(launches) and launches[next_launch][0] <= t:
                token = self.tokens[launches[next_launch][1]]
                self._materialise(token)
                alive[token.index] = token
                next_launch += 1
            for index in [i for i, tok in alive.items() if tok.death_time <= t]:
                dead = alive.pop(index)
                self._keep_tape(dead)
                dead.path = dead.crowd = dead.impact = None  # positions planned their trades; free memory
            self._decide(t, k, alive)
        for token in alive.values():
            self._keep_tape(token)
        # Tokens launched after the last decision still exist on chain only through noise; their
        # paths are simulated all the same, so the market's figures cover every launch.
        for _, index in launches[next_launch:]:
            token = self.tokens[index]
            self._materialise(token)
            token.path = None
        self._noise()
        used = {e.token for events in (self.trades, self.failed, self.sends) for e in events}
        used |= {a.token for a in self.airdrops if a.token >= 0}
        for index in sorted(used):
            self._mint(self.tokens[index])
        return CommunityResult(
            self.index,
            self.kols,
            self.tokens,
            self.trades,
            self.failed,
            self.airdrops,
            self.sends,
            self.transfers,
            self.positions,
            self.market,
            self.graduation_s,
            self.tapes,
        )

    def _keep_tape(self, token: Token) -> None:
        """A traded token's true tape, once no KOL can draw another crowd to it."""
        if token.kol_wallets and token.path is not None and token.impact is not None:
            self.tapes[token.index] = tape_of(token.path, token.impact, self.end)

    def _decide(self, t: float, k: int, alive: dict[int, Token]) -> None:
        p = self.params
        kol = self.kols[k]
        held = self.held[k]
        cands = [
            tok
            for tok in alive.values()
            if t - tok.launch <= p.max_token_age_h * HOUR
            and held.get(tok.index, -math.inf) < t
            and tok.index not in self.excluded[k]
        ]
        if not cands:
            return
        q = np.array([c.q for c in cands])
        recent = np.empty(len(cands))
        momentum = np.empty(len(cands))
        age_h = np.array([(t - c.launch) / HOUR for c in cands])
        for j, c in enumerate(cands):
            while c.recent_buys and c.recent_buys[0] < t - RECENT_WINDOW_S:
                c.recent_buys.popleft()
            recent[j] = len(c.recent_buys)
            path, impact = c.market()
            i = path.index_at(t)
            back = max(i - int(MOMENTUM_S / path.step), 0)
            momentum[j] = path.x[i] + impact[i] - path.x[back] - impact[back]
        seen = q + kol.perception_sd * self.rng.standard_normal(len(cands))
        utility = (
            kol.pick_coef * seen
            + kol.herding * np.log1p(recent)
            + kol.momentum_pref * momentum
            - age_h / kol.freshness_h
            + self.rng.gumbel(size=len(cands))
        )
        best = int(np.argmax(utility))
        if seen[best] < p.pick_bar:
            return  # nothing looks good enough: the KOL passes
        self._open(t, kol, cands[best])

    def _open(self, t: float, kol: Kol, token: Token) -> None:
        rng = self.rng
        path, impact = token.market()
        i_e = path.index_at(t)
        level = float(path.x[i_e] + impact[i_e])
        migrated = path.migrated_at(t)
        venue = venue_for(migrated, token.amm)
        size = kol.size_median * math.exp(kol.size_sigma * rng.standard_normal() + kol.conviction * token.q)
        if rng.random() < 0.03 and kol.style != "farmer":  # the occasional outsized bet (not a farmer's bait)
            size *= rng.pareto(1.5) + 2
        size = int(min(max(size, 0.01 * LAMPORTS_PER_SOL), 250 * LAMPORTS_PER_SOL))
        parts = 1 if rng.random() >= kol.split_buy_prob else int(rng.integers(2, 4))
        budgets = _split(size, parts, rng)
        route = "jupiter" if rng.random() < kol.jupiter_prob else "direct"
        holding, fills = _sequential_buys(venue, level, budgets)
        ladder_index = int(
            rng.choice(len(kol.ladders), p=np.asarray(kol.ladder_weights) / sum(kol.ladder_weights))
        )
        position_id = len(self.positions)
        kols_before = len(token.kol_wallets - {kol.index})
        token.kol_wallets.add(kol.index)
        token.recent_buys.append(t)
        entry = EntryState(
            level=level,
            regime=int(path.regime[min(i_e, len(path.regime) - 1)]),
            migrated=migrated,
            amm=token.amm,
            dynamics=token.dynamics,
            time_exit_rate=kol.time_exit_rate,
            abandon_prob=kol.abandon_prob,
            budgets=budgets,
            holding=holding,
            ladders=kol.ladders,
            weights=kol.ladder_weights,
            curve_dead_max=self.params.curve_dead_max,
            pool_lift=level_of(fills[0].reserve_sol / fills[0].reserve_tokens) - level,
        )
        trade_time = t
        first_trade = None
        for n, fill in enumerate(fills):
            self._maybe_fail(trade_time, kol, token, "buy", venue, route, fill.sol_amount, level)
            trade = Trade(trade_time, kol.index, token.index, "buy", fill, route, position_id, opens=n == 0)
            self.trades.append(trade)
            first_trade = first_trade or trade
            trade_time += float(rng.uniform(0.5, 4.0))
        self._draw_crowd(t, kol, token, size)
        own = [(t, sum(_sol_in(fill) for fill in fills))]
        outcome, end_time, three_x = self._play(
            t, trade_time, kol, token, holding, kol.ladders[ladder_index], budgets, route, position_id, own
        )
        assert token.crowd is not None  # set with the path, in _materialise
        hold_in_reserves(path, token.crowd, impact, own)
        self.held[kol.index - self.kols[0].index][token.index] = end_time
        horizon_end = min(path.index_at(t + 7 * 86_400), len(path.hi) - 1)
        stop = max(horizon_end, i_e + 1)
        window = path.hi[i_e:stop] + impact[i_e:stop]
        # The chain's entry price is the pool's after the opening transaction (the KOL's own buy
        # included): the peaks a reader of the chain measures are over that price.
        pool_level = level + entry.pool_lift
        self.positions.append(
            PositionPlan(
                id=position_id,
                kol=kol.index,
                token=token.index,
                entry_time=t,
                entry=entry,
                ladder=ladder_index,
                outcome=outcome,
                planned_three_x=three_x,
                max_level_7d=max(float(window.max()) - pool_level, 0.0) if len(window) else 0.0,
                entry_pool_level=pool_level,
                kols_before=kols_before,
                entry_trade=first_trade,
            )
        )

    def _draw_crowd(self, t: float, kol: Kol, token: Token, size: int) -> None:
        """The followers a buy draws: their SOL enters the reserves within seconds and leaves over
        minutes, lifting the price for everyone who trades the token then (the KOL's own exits too)."""
        path, impact = token.market()
        crowd = token.crowd
        assert crowd is not None  # set with the path, in _materialise
        # Bigger buys draw more (followers see the size), and each buy's crowd varies.
        sol = (
            kol.following_sol * math.sqrt(size / kol.size_median) * math.exp(0.5 * self.rng.standard_normal())
        )
        first = path.index_at(t) + 1
        last = min(first + math.ceil(6 * kol.crowd_out_s / path.step), len(path.x))
        if first >= last:
            return
        u = path.launch + np.arange(first, last) * path.step - t
        crowd[first:last] += sol * crowd_profile(u, kol.crowd_in_s, kol.crowd_out_s)
        impact[first:last] = crowd_impact(path, crowd, first, last)

    def replay(
        self,
        kol: Kol,
        token: Token,
        path: TokenPath,
        holding: Holding,
        ladder: Ladder,
        budgets: list[int],
        rng: np.random.Generator,
    ) -> tuple[str, bool]:
        """Play one position opened at the start of ``path`` with the simulator's own rules.

        For checks of the oracle against Monte Carlo: returns the outcome and whether it made 3x,
        and leaves the community's record of trades untouched.
        """
        saved = (self.trades, self.failed, self.rng, self.end, token.path, token.impact)
        self.trades, self.failed, self.rng, self.end, token.path = [], [], rng, math.inf, path
        token.impact = np.zeros(len(path.x))  # no crowds: the oracle's own market
        try:
            outcome, _, three_x = self._play(
                path.launch, path.launch, kol, token, holding, ladder, budgets, "direct", 0, None
            )
        finally:
            self.trades, self.failed, self.rng, self.end, token.path, token.impact = saved
        return outcome, three_x

    def _play(
        self,
        t_entry: float,
        t_after: float,
        kol: Kol,
        token: Token,
        holding: Holding,
        ladder: Ladder,
        budgets: list[int],
        route: str,
        position_id: int,
        own: list[tuple[float, float]] | None,
    ) -> tuple[str, float, bool]:
        """Walk the token's path from the entry and emit the position's trades.

        ``own`` starts as ``[(entry time, SOL the entry put in the reserves)]``; each later trade
        appends the SOL the position then holds there (its buys' SOL in proportion to the tokens
        still held), and the levels the position trades at include it: a KOL's exits meet the lift
        of its own buy, as on a real pool. ``None``: no such lift (the oracle's replays).
        Returns the outcome, the time the position stops being held, and whether it made 3x.
        """
        rng = self.rng
        path, imp = token.market()
        x = path.x
        crowd = token.crowd
        own_sol = own[-1][1] if own else 0.0
        window_from, window = 0, np.empty(0)

        def lift(i: int) -> float:
            """The crowds' lift at grid point ``i`` with the position's own SOL added."""
            nonlocal window_from, window
            if own_sol <= 0:
                return float(imp[i])
            assert crowd is not None  # set with the path, in _materialise
            if not window_from <= i < window_from + len(window):
                # Blocks of grid points: one vectorised call per block, not one per step.
                end = min(i + 512, len(x))
                window_from, window = i, crowd_lift(path, crowd[i:end] + own_sol, i, end)
            return float(window[i - window_from])

        j = path.index_at(t_entry)
        entry_level = float(x[j]) + lift(j)
        node = ladder.nodes[0]
        exit_at = t_entry + rng.exponential(1.0 / kol.time_exit_rate) * HOUR
        entry_budget = sum(budgets)
        bought = holding.tokens
        last = t_after
        last_index = len(x) - 1
        variance_per_s = token.dynamics.sigma**2 / HOUR
        # After an action inside a step, the rest of that step: (from, its max, its min). A token
        # moves tens of percent a minute, so the next node's barriers can be touched within the
        # same step: the rest is the Brownian bridge from the action's level to the step's end.
        rest: tuple[float, float, float] | None = None
        while True:
            step_start = path.launch + j * path.step
            step_end = step_start + path.step
            if path.death_time < step_end:
                return self._after_death(kol, token, holding, bought, route, position_id, last)
            if j >= last_index or step_start >= self.end:
                return "open_at_end", math.inf, False
            lo = entry_level + math.log(node.lo)
            hi = entry_level + math.log(node.hi)
            # The crowds' lift holds over a step (it changes over seconds to minutes).
            since, top, bottom = (
                rest if rest is not None else (step_start, path.hi[j] + lift(j), path.lo[j] + lift(j))
            )
            hit_hi = top >= hi
            hit_lo = bottom <= lo
            if hit_hi and hit_lo:
                hit_hi = rng.random() < 0.5
                hit_lo = not hit_hi
            if hit_hi or hit_lo:
                level = hi if hit_hi else lo
                action = node.on_hi if hit_hi else node.on_lo
                migrated = path.migration_index >= 0 and (
                    j > path.migration_index or (j == path.migration_index and level >= MIGRATION_LEVEL)
                )
                when = max(since + rng.random() * (step_end - since), last + 1.0)
                if when >= self.end:
                    return "open_at_end", math.inf, False
                venue = venue_for(migrated, token.amm)
                closing = action.kind == "sell" and (action.next is None or action.fraction >= 1.0)
                before = holding.tokens
                holding, last = self._execute(
                    kol,
                    token,
                    holding,
                    action,
                    level,
                    venue,
                    route,
                    position_id,
                    when,
                    entry_budget,
                    bought,
                    closing,
                )
                if action.kind == "add":
                    bought += holding.tokens - before
                if own is not None:
                    if action.kind == "add":
                        own_sol += _sol_in(self.trades[-1].fill)
                    else:
                        # Dust left by a closing sale stays in the wallet, not in the reserves' lift.
                        own_sol = 0.0 if closing or not before else own_sol * holding.tokens / before
                    own.append((last, own_sol))
                    window = np.empty(0)
                if closing:
                    return "closed", last, holding.three_x
                assert action.next is not None  # None only closes the position
                node = ladder.nodes[action.next]
                left = step_end - when
                if left > 0:
                    var = variance_per_s * left
                    end_level = x[j + 1] + lift(j)
                    half, mid = (end_level - level) / 2, (end_level + level) / 2
                    u1, u2 = 1.0 - rng.random(), 1.0 - rng.random()
                    rest = (
                        when,
                        mid + math.sqrt(half * half - var * math.log(u1) / 2),
                        mid - math.sqrt(half * half - var * math.log(u2) / 2),
                    )
                else:
                    rest = None
                    j += 1
                continue
            if exit_at < step_end:
                when = max(step_end, last + 1.0)
                if when >= self.end:
                    return "open_at_end", math.inf, False
                level = float(x[j + 1]) + lift(j + 1)
                migrated = path.migration_index >= 0 and j >= path.migration_index
                venue = venue_for(migrated, token.amm)
                holding, last = self._execute(
                    kol,
                    token,
                    holding,
                    Action("sell", 1.0, None),
                    level,
                    venue,
                    route,
                    position_id,
                    when,
                    entry_budget,
                    bought,
                    True,
                )
                if own is not None:
                    own.append((last, 0.0))
                return "closed", last, holding.three_x
            rest = None
            j += 1

    def _after_death(
        self, kol: Kol, token: Token, holding: Holding, bought: int, route: str, position_id: int, last: float
    ) -> tuple[str, float, bool]:
        rng = self.rng
        path, _ = token.market()
        if rng.random() < kol.abandon_prob:
            return "abandoned", math.inf, False
        when = max(path.death_time + min(rng.exponential(DEAD_SALE_DELAY_S), DEAD_SALE_CAP_S), last + 1.0)
        if when >= self.end:
            return "open_at_end", math.inf, False
        level = path.level_at(when)
        migrated = path.migration_index >= 0
        venue = venue_for(migrated, token.amm)
        holding, last = self._execute(
            kol,
            token,
            holding,
            Action("sell", 1.0, None),
            level,
            venue,
            route,
            position_id,
            when,
            0,
            bought,
            True,
        )
        return "closed", last, holding.three_x

    def _execute(
        self,
        kol: Kol,
        token: Token,
        holding: Holding,
        action,
        level: float,
        venue: str,
        route: str,
        position_id: int,
        when: float,
        entry_budget: int,
        bought: int,
        closing: bool,
    ) -> tuple[Holding, float]:
        """Apply a ladder action and record its trade(s); returns the holding and the last trade time."""
        rng = self.rng
        if action.kind == "add":
            new, fill = apply(holding, action, level, venue, entry_budget)
            self._maybe_fail(when, kol, token, "buy", venue, route, fill.sol_amount, level)
            self.trades.append(Trade(when, kol.index, token.index, "buy", fill, route, position_id))
            return new, when
        _, whole = apply(holding, action, level, venue, entry_budget)
        amount = whole.token_amount
        dust = 0
        if closing and rng.random() < 0.06:
            # Leave dust (≤ 0.1% of what the position bought): the position closes all the same.
            dust = min(int(bought * rng.uniform(0.0001, 0.0009)), amount - 1)
            amount -= dust
        chunks = _split(amount, 2 if rng.random() < 0.15 else 1, rng)
        reserves = None
        t = when
        for n, chunk in enumerate(chunks):
            fill = sell(venue, level, chunk, reserves)
            reserves = (fill.reserve_sol, fill.reserve_tokens)
            self._maybe_fail(t, kol, token, "sell", venue, route, chunk, level)
            last_chunk = n == len(chunks) - 1
            self.trades.append(
                Trade(
                    t,
                    kol.index,
                    token.index,
                    "sell",
                    fill,
                    route,
                    position_id,
                    close_account=closing and last_chunk and dust == 0 and rng.random() < 0.7,
                )
            )
            if not last_chunk:
                t += float(rng.uniform(1.0, 8.0))
        # Sequential chunks on a constant-product pool pay what one sale pays (to rounding): the
        # holding follows the actual fills so the ground truth is exact.
        sold = sum(chunks)
        got = sum(tr.fill.sol_amount for tr in self.trades[-len(chunks) :])
        assert dust <= DUST_FRACTION * bought
        return Holding(cost=holding.cost, tokens=holding.tokens - sold, proceeds=holding.proceeds + got), t

    def _maybe_fail(
        self,
        t: float,
        kol: Kol,
        token: Token,
        side: Literal["buy", "sell"],
        venue: str,
        route: str,
        amount: int,
        level: float,
    ) -> None:
        if self.rng.random() < kol.fail_rate:
            self.failed.append(
                FailedTrade(
                    t - float(self.rng.uniform(1.0, 6.0)),
                    kol.index,
                    token.index,
                    side,
                    venue,
                    route,
                    amount,
                    level,
                )
            )

    # Noise: airdrops, token sends, SOL transfers

    def _noise(self) -> None:
        p = self.params
        rng = _rng(p, self.index, 6)
        days = (self.end - self.start) / 86_400
        for k, kol in enumerate(self.kols):
            for t in np.sort(
                rng.uniform(self.start, self.end, rng.poisson(p.spam_airdrops_per_kol_day * days))
            ):
                spam = int(rng.integers(0, 64))
                self.airdrops.append(
                    Airdrop(
                        float(t),
                        kol.index,
                        keys.spam_mint(p.seed, self.index, spam),
                        int(10 ** rng.uniform(6, 12)),
                        keys.spammer(p.seed, self.index, spam % 8),
                        _SPAM_MEMOS[spam % len(_SPAM_MEMOS)] if rng.random() < 0.6 else None,
                    )
                )
            for t in np.sort(
                rng.uniform(self.start, self.end, rng.poisson(p.sol_transfers_per_kol_day * days))
            ):
                self.transfers.append(
                    SolTransfer(
                        float(t),
                        kol.index,
                        keys.outside_wallet(p.seed, self.index, int(rng.integers(0, 256))),
                        int(10 ** rng.uniform(8, 10.5)),
                    )
                )
            for t in np.sort(
                rng.uniform(self.start, self.end, rng.poisson(p.promo_airdrops_per_kol_day * days))
            ):
                self._promo(float(t), k, kol, rng)

    def _promo(self, t: float, k: int, kol: Kol, rng: np.random.Generator) -> None:
        """A token's dev sends the KOL tokens to shill; the KOL may sell or pass some on."""
        live = [
            tok
            for tok in self.tokens
            if tok.launch <= t < tok.death_time
            and t - tok.launch < 12 * HOUR
            and tok.index not in self.held[k]  # never tokens of a position (held now or before)
            and tok.index not in self.excluded[k]
        ]
        if not live:
            return
        token = live[int(rng.integers(0, len(live)))]
        self.excluded[k].add(token.index)  # the KOL never buys it afterwards: no position mixes with gifts
        amount = int(10 ** rng.uniform(10, 12.5))
        self.airdrops.append(
            Airdrop(
                t,
                kol.index,
                self._mint(token),
                amount,
                keys.dev_wallet(self.params.seed, self.index, token.index),
                None,
                token.index,
            )
        )
        left = amount
        when = t
        if rng.random() < 0.3:
            part = amount // int(rng.integers(2, 5))
            when += float(rng.uniform(60, 3 * 3600))
            if when < min(self.end, token.death_time):
                self.sends.append(
                    TokenSend(
                        when,
                        kol.index,
                        token.index,
                        part,
                        keys.outside_wallet(self.params.seed, self.index, int(rng.integers(0, 256))),
                    )
                )
                left -= part
        if rng.random() < 0.6:
            when += float(rng.uniform(300, 8 * 3600))
            if when < min(self.end, token.death_time):
                path = token.path or simulate_path(
                    self.params,
                    _rng(self.params, self.index, 4, token.index),
                    token.launch,
                    token.dynamics,
                    self.end,
                )
                level = path.level_at(when)
                migrated = path.migrated_at(when)
                fill = sell(venue_for(migrated, token.amm), level, left)
                self.trades.append(
                    Trade(
                        when,
                        kol.index,
                        token.index,
                        "sell",
                        fill,
                        "direct",
                        -1,
                        close_account=rng.random() < 0.5,
                    )
                )


_SPAM_MEMOS = (
    "Congratulations! Claim your reward at solreward.example",
    "You are eligible for the airdrop: visit claim-sol.example",
    "Exclusive whitelist spot reserved for you",
)


def hold_in_reserves(
    path: TokenPath, crowd: np.ndarray, impact: np.ndarray, own: list[tuple[float, float]]
) -> None:
    """Put a position's own SOL into a token's reserves: ``own`` is ``[(time, SOL held from then)]``
    (from :meth:`Community._play`); each amount holds from the grid point after its time to the
    one after the next, the last to the path's end. ``crowd`` and ``impact`` are updated in place,
    so the true tape and the accounts show the KOL's own buys and sells, as the chain does.
    """
    first = path.index_at(own[0][0]) + 1
    last = first
    for (begin, sol), (end, _) in zip(own, [*own[1:], (math.inf, 0.0)], strict=True):
        a = path.index_at(begin) + 1
        b = len(path.x) if math.isinf(end) else path.index_at(end) + 1
        if sol > 0 and b > a:
            crowd[a:b] += sol
            last = max(last, b)
    if last > first:
        impact[first:last] = crowd_impact(path, crowd, first, last)


def _sol_in(fill: Fill) -> float:
    """SOL a buy left in the reserves (fees that stay in the pool included)."""
    return (fill.reserve_sol - fill.reserve_sol_before) / LAMPORTS_PER_SOL


def _split(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    if parts <= 1:
        return [total]
    weights = rng.dirichlet(np.full(parts, 3.0))
    chunks = [max(int(total * w), 1) for w in weights[:-1]]
    chunks.append(max(total - sum(chunks), 1))
    return chunks


def _sequential_buys(venue: str, level: float, budgets: list[int]) -> tuple[Holding, list[Fill]]:
    """A split buy executes along the curve, chunk after chunk: it costs what one big buy would."""
    fills = []
    reserves = None
    for b in budgets:
        fill = buy(venue, level, b, reserves)
        reserves = (fill.reserve_sol, fill.reserve_tokens)
        fills.append(fill)
    holding = Holding(
        cost=sum(f.sol_amount for f in fills), tokens=sum(f.token_amount for f in fills), proceeds=0
    )
    return holding, fills
