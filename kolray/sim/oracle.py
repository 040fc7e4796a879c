"""``oracle_p3x``: the exact probability that a position realises 3x within the label horizon.

Given the latent state at entry — the token's dynamics (calm and hype fair levels, hype start/end
rates, death rate), its current regime and price level, whether the curve has migrated, the KOL's
exit ladders (with their weights), time-exit rate and abandon probability, and the entry fills — the
rest of the position is driven by the future of the price: the diffusion, when the next hype starts
or ends, when the token dies. This module computes

    P(the position closes with proceeds ≥ 3 × cost)

**analytically** (no sampling). The price is a time-homogeneous regime-switching diffusion, the
killing events (token death, time exit) are memoryless and every ladder node is a two-barrier
problem. For a node with barriers ``lo < hi`` the probabilities ``f_r(x)`` of a 3x outcome from
level ``x`` in regime ``r`` solve the coupled ODEs (backward Kolmogorov equations with killing)

    sigma²/2 f_r'' + kappa (c_r - x) f_r' + Σ_s Q_rs f_s - (lam + theta) f_r
        = -(lam · w · G(x - y*) + theta · 1{x ≥ x*})

where ``Q`` is the regime chain's rate matrix (calm → hype of each size, hype → calm), ``w`` the probability that the KOL sells after
a death, ``G`` the closed-form probability that that sale reaches the 3x level ``y*``
(:func:`dead_sale_cdf`) and ``x*`` the level from which selling everything at market reaches 3x.
``f_r(lo)`` and ``f_r(hi)`` are the values after the barrier actions: a constant for a closing sell,
the next node's values otherwise. The bonding-curve migration is one more barrier (fees and
liquidity change there). The ODEs are solved by second-order finite differences on 250 points per
node (a block-tridiagonal system), batched across positions; the tests check the result against
Monte Carlo runs of the simulator itself.

Followers' crowds (:mod:`kolray.sim.simulate`) are outside the model: a crowd lifts the price for a
minute or two after each KOL buy, so a position's exits see the base path plus the crowds known at
its entry. The oracle takes the entry level (crowd included) as the start of the base diffusion: it
is exact for the market without crowds and approximate with them (on the default world the realised
3x count is 759 against 847.5 expected, the follower's peak_3x 11,314 against 11,365).

The label horizon H = 7 days: time exits happen at ≥ 0.06 per hour for every KOL, so a position
is still open after H with probability < e^-10; the infinite-horizon value is the 7-day one to
within that bound. Two simplifications, both far below the precision of any estimate: dust left by a final
sell (≤ 0.1% of the tokens) is ignored, and a sell the simulator splits into several transactions is
priced as one (exact on pump.fun; on an AMM the first chunk's LP fee moves the price of the next by
~1e-5). Either could flip a label only for an exit within 0.1% of 3x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kolray.sim.behaviour import Ladder
from kolray.sim.market import TokenDynamics
from kolray.sim.params import MIGRATION_LEVEL, WorldParams
from kolray.sim.trading import Holding, apply, three_x_threshold, venue_for

GRID_POINTS = 250
DEAD_SALE_DELAY_S = 120.0  # mean delay of the sale after a token's death
DEAD_SALE_CAP_S = 1800.0

Values = tuple[float, ...]  # one value per regime


@dataclass(slots=True)
class EntryState:
    """What the oracle conditions on for one opening buy."""

    level: float  # absolute log-price at entry
    regime: int
    migrated: bool
    amm: str  # venue after migration
    dynamics: TokenDynamics
    time_exit_rate: float  # per hour
    abandon_prob: float
    budgets: list[int]
    holding: Holding  # after the entry buys
    ladders: tuple[Ladder, ...]
    weights: tuple[float, ...]
    curve_dead_max: float = 0.15  # WorldParams.curve_dead_max: the dead price on the curve
    # The opening transaction's pool price over ``level`` (log): the KOL's own buy, over which a
    # reader of the chain measures the token's peak.
    pool_lift: float = 0.0


@dataclass(slots=True)
class _Problem:
    lo: float
    hi: float
    start: float
    dynamics: TokenDynamics
    kill_exit: float
    death_weight: float  # 1 - abandon probability: the KOL sells what is left after a death
    death_from: float  # a dead sale at level y reaches 3x iff y ≥ death_from
    dead_on_curve: bool  # a death here happens on the bonding curve
    exit_from: float  # x*: time exits at x ≥ x* are 3x
    lo_ref: int | Values  # int: index of another problem; else known values
    hi_ref: int | Values
    height: int = 0
    value: Values = ()


@dataclass(slots=True)
class _Tree:
    problems: list[_Problem] = field(default_factory=list)


def _label(holding: Holding, regimes: int) -> Values:
    v = 1.0 if holding.three_x else 0.0
    return (v,) * regimes


def _build(
    tree: _Tree,
    state: EntryState,
    ladder: Ladder,
    node_index: int,
    start: float,
    holding: Holding,
    migrated: bool,
    depth: int = 0,
) -> int | Values:
    if depth > 12:
        raise ValueError("exit ladder too deep (cycle?)")
    node = ladder.nodes[node_index]
    lo = state.level + math.log(node.lo)
    hi = state.level + math.log(node.hi)
    if not lo < start < hi:
        raise ValueError(f"ladder node {node_index} does not bracket its entry level")
    venue = venue_for(migrated, state.amm)

    def outcome(action, level: float) -> int | Values:
        after, _ = apply(holding, action, level, venue, sum(state.budgets))
        if action.next is None or after.tokens <= 0:
            return _label(after, state.dynamics.regimes)
        return _build(tree, state, ladder, action.next, level, after, migrated, depth + 1)

    lo_ref = outcome(node.on_lo, lo)
    if not migrated and lo < 0.0:
        # The curve's floor: at the launch price the token is dead; the KOL sells at the dead price
        # (or abandons the bag), as after any death on the curve.
        lo = 0.0
        dead_from = three_x_threshold(holding, venue, -12.0, 0.0)
        if dead_from == -math.inf:
            dead_p = 1.0
        elif dead_from == math.inf:
            dead_p = 0.0
        else:
            dead_p = min(max((state.curve_dead_max - dead_from) / state.curve_dead_max, 0.0), 1.0)
        lo_ref = ((1.0 - state.abandon_prob) * dead_p,) * state.dynamics.regimes
    if not migrated and hi > MIGRATION_LEVEL:
        region_hi = MIGRATION_LEVEL
        hi_ref = _build(tree, state, ladder, node_index, MIGRATION_LEVEL, holding, True, depth + 1)
    else:
        region_hi = hi
        hi_ref = outcome(node.on_hi, hi)
    # If the token dies the KOL keeps the bag (probability ``abandon_prob``) or sells it at the dead
    # price (see :func:`dead_sale_cdf`).
    problem = _Problem(
        lo=lo,
        hi=region_hi,
        start=start,
        dynamics=state.dynamics,
        kill_exit=state.time_exit_rate,
        death_weight=1.0 - state.abandon_prob,
        death_from=three_x_threshold(holding, venue, lo - 12.0, region_hi),
        dead_on_curve=venue == "pumpfun",
        exit_from=three_x_threshold(holding, venue, lo, region_hi),
        lo_ref=lo_ref,
        hi_ref=hi_ref,
    )
    # A node from which no outcome can be 3x (both barrier outcomes 0, no time-exit or dead sale
    # reaching 3x) has the value 0 exactly: no ODE to solve. Scalpers' ladders are all like this.
    zero = (0.0,) * state.dynamics.regimes
    if (
        lo_ref == zero
        and hi_ref == zero
        and problem.exit_from == math.inf
        and (problem.death_from == math.inf or problem.death_weight == 0.0)
    ):
        return zero
    tree.problems.append(problem)
    return len(tree.problems) - 1


def _solve_small(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve the stack of small systems ``a @ x = b`` (shapes (m, R, R) and (m, R, K)).

    Gaussian elimination without pivoting, vectorised across the stack: the matrices here are
    strictly diagonally dominant (killing and switching rates sit on the diagonal), so no pivot is
    needed, and for R ≤ 4 this is several times faster than ``np.linalg.solve`` on small stacks.
    """
    a = a.copy()
    b = b.copy()
    r = a.shape[1]
    for col in range(r):
        pivot = a[:, col, col]
        for row in range(col + 1, r):
            factor = a[:, row, col] / pivot
            a[:, row, col:] -= factor[:, None] * a[:, col, col:]
            b[:, row] -= factor[:, None] * b[:, col]
    x = np.empty_like(b)
    for row in range(r - 1, -1, -1):
        acc = b[:, row].copy()
        for col in range(row + 1, r):
            acc -= a[:, row, col][:, None] * x[:, col]
        x[:, row] = acc / a[:, row, row][:, None]
    return x


def _solve_batch(problems: list[_Problem], params: WorldParams) -> None:
    """Solve the node ODEs of ``problems`` (whose barrier values are known) at their start levels."""
    m = len(problems)
    n = GRID_POINTS
    r = problems[0].dynamics.regimes
    lo = np.array([p.lo for p in problems])
    hi = np.array([p.hi for p in problems])
    start = np.array([p.start for p in problems])
    levels = np.array([p.dynamics.levels for p in problems])  # (m, R)
    rates = np.array([p.dynamics.generator() for p in problems])  # (m, R, R)
    kd = np.array([p.dynamics.death_rate for p in problems])
    kappa = np.array([p.dynamics.kappa for p in problems])[:, None]
    sig = np.array([p.dynamics.sigma for p in problems])
    ke = np.array([p.kill_exit for p in problems])
    dw = np.array([p.death_weight for p in problems])
    df = np.array([p.death_from for p in problems])
    curve = np.array([p.dead_on_curve for p in problems])
    # On the curve the dead price is launch × e^U(0, curve_dead_max), whatever the level before.
    with np.errstate(invalid="ignore"):
        curve_dead = np.clip((params.curve_dead_max - df) / params.curve_dead_max, 0.0, 1.0)
    xs = np.array([p.exit_from for p in problems])
    vlo = np.array([p.lo_ref for p in problems], dtype=float)  # (m, R)
    vhi = np.array([p.hi_ref for p in problems], dtype=float)
    h = (hi - lo) / (n - 1)
    a = sig**2 / 2
    inv_h2 = (a / h**2)[:, None]
    kill = kd + ke
    # Block Thomas algorithm over the interior points 1..n-2; the unknowns at a point are the R
    # regime values. Row i: L_i f_{i-1} + D_i f_i + U_i f_{i+1} = rhs_i, with L_i and U_i diagonal
    # (the drift differs per regime) and D_i = Q - diag(2a/h² + kill) coupling the regimes.
    base = rates.copy()
    idx = np.arange(r)
    base[:, idx, idx] -= 2 * inv_h2 + kill[:, None]
    cmat = np.empty((m, n, r, r))
    dstar = np.empty((m, n, r))
    prev_c = np.zeros((m, r, r))
    prev_d = vlo.copy()
    for i in range(1, n - 1):
        x = lo + i * h
        drift = kappa * (levels - x[:, None])  # (m, R)
        low = inv_h2 - drift / (2 * h[:, None])
        upp = inv_h2 + drift / (2 * h[:, None])
        # The time-exit source is a step at x*: average it over the cell around x (keeps the
        # scheme second order where a point value would make it first order).
        above = np.clip((x + h / 2 - xs) / h, 0.0, 1.0)
        dead = np.where(curve, curve_dead, dead_sale_cdf(params, x - df))
        source = -(kd * dw * dead + ke * above)
        rhs = source[:, None] - low * prev_d
        # (D_i - L_i C*_{i-1}) [C*_i | d*_i] = [U_i | rhs]; L_i scales the rows of C*_{i-1}.
        denom = base - low[:, :, None] * prev_c
        right = np.concatenate([np.zeros((m, r, r)), rhs[:, :, None]], axis=2)
        right[:, idx, idx] = upp
        sol = _solve_small(denom, right)
        prev_c = sol[:, :, :r]
        prev_d = sol[:, :, r]
        cmat[:, i] = prev_c
        dstar[:, i] = prev_d
    f = np.empty((m, n, r))
    f[:, n - 1] = vhi
    for i in range(n - 2, 0, -1):
        f[:, i] = dstar[:, i] - np.einsum("kij,kj->ki", cmat[:, i], f[:, i + 1])
    f[:, 0] = vlo
    pos = (start - lo) / h
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
    w = (pos - i0)[:, None]
    rows = np.arange(m)
    values = np.clip((1 - w) * f[rows, i0] + w * f[rows, i0 + 1], 0.0, 1.0)
    for p, v in zip(problems, values, strict=True):
        p.value = tuple(float(e) for e in v)


def dead_sale_cdf(params: WorldParams, margin: np.ndarray) -> np.ndarray:
    """P(the sale after a death at level x on an AMM pool reaches level x - margin or higher).

    The simulator sells at ``x - J - r D`` with the drop ``J`` uniform on [drop_min, drop_max], the
    delay ``D = min(Exp(DEAD_SALE_DELAY_S), DEAD_SALE_CAP_S)`` and the dead drift ``r``. This is
    P(J + r D ≤ margin) in closed form: the average over J of the CDF of ``r D``.
    """
    a, b = params.death_drop_min, params.death_drop_max
    rate = -params.dead_drift / 3600.0  # log-price lost per second after death
    scale = max(rate * DEAD_SALE_DELAY_S, 1e-12)
    cap = rate * DEAD_SALE_CAP_S

    def integral(u: np.ndarray) -> np.ndarray:  # ∫_0^u P(rD ≤ v) dv
        u = np.maximum(u, 0.0)
        inside = u - scale * (1 - np.exp(-np.minimum(u, cap) / scale))
        at_cap = cap - scale * (1 - np.exp(-cap / scale))
        return np.where(u <= cap, inside, at_cap + (u - cap))

    with np.errstate(invalid="ignore"):
        margin = np.asarray(margin, dtype=float)
        finite = np.where(np.isfinite(margin), margin, 0.0)
        value = (integral(finite - a) - integral(finite - b)) / (b - a)
        return np.where(margin == np.inf, 1.0, np.where(margin == -np.inf, 0.0, value))


def _solve_all(problems: list[_Problem], params: WorldParams, batch: int) -> None:
    by_height: dict[int, list[_Problem]] = {}
    for p in problems:
        by_height.setdefault(p.height, []).append(p)
    for height in sorted(by_height):
        group = by_height[height]
        for p in group:
            if isinstance(p.lo_ref, int):
                p.lo_ref = problems[p.lo_ref].value
            if isinstance(p.hi_ref, int):
                p.hi_ref = problems[p.hi_ref].value
        group.sort(key=lambda p: p.dynamics.regimes)
        for i in range(0, len(group), batch):
            chunk = group[i : i + batch]
            for regimes in sorted({p.dynamics.regimes for p in chunk}):
                _solve_batch([p for p in chunk if p.dynamics.regimes == regimes], params)


PEAK_FLOOR = 12.0  # log-levels below the entry where the peak problem's lower boundary sits


def oracle_p_peak(
    states: list[EntryState], params: WorldParams, multiple: float = 3.0, batch: int = 4000
) -> np.ndarray:
    """P(the token trades at ≥ ``multiple`` × the entry price before it dies), for each entry state.

    What a follower could have taken: the price path alone decides it (no ladder). The entry price
    is the pool's after the opening transaction (``pool_lift`` over the level): the KOL's own SOL
    lifts the path while it holds, which the model leaves out, so the target is as the market
    stands once the KOL has sold (most hold minutes; on the default world 9,711 positions peaked
    at 3x where it expected 10,480; without the lift in the target, 11,466). The probability
    solves the same backward equation with the token's death as the only killing, value 1 at the
    target and 0 far below the entry (``PEAK_FLOOR`` log-levels down, where no path goes before
    dying). After a death the price only falls, so a peak after death is impossible. The horizon is
    7 days; a token dies at ≥ ``death_rate_min`` per hour, so the infinite-horizon value is the 7-day
    one to within e^-50.
    """
    problems = []
    for state in states:
        r = state.dynamics.regimes
        problems.append(
            _Problem(
                # On the curve the launch price is a floor where the token dies (after a migration
                # there is none; a path back from there to below launch and up again is neglected).
                lo=max(state.level - PEAK_FLOOR, 0.0) if not state.migrated else state.level - PEAK_FLOOR,
                hi=state.level + state.pool_lift + math.log(multiple),
                start=state.level,
                dynamics=state.dynamics,
                kill_exit=0.0,
                death_weight=0.0,
                death_from=math.inf,
                dead_on_curve=False,
                exit_from=math.inf,
                lo_ref=(0.0,) * r,
                hi_ref=(1.0,) * r,
            )
        )
    _solve_all(problems, params, batch)
    return np.array([p.value[s.regime] for p, s in zip(problems, states, strict=True)])


def oracle_p3x(states: list[EntryState], params: WorldParams, batch: int = 4000) -> np.ndarray:
    """P(3x within the horizon) for each entry state, as described in the module docstring."""
    problems: list[_Problem] = []
    roots: list[list[tuple[float, int | Values]]] = []
    for state in states:
        per_state: list[tuple[float, int | Values]] = []
        for ladder, weight in zip(state.ladders, state.weights, strict=True):
            tree = _Tree()
            root = _build(tree, state, ladder, 0, state.level, state.holding, state.migrated)
            if not isinstance(root, int):  # decided without solving anything
                per_state.append((weight, root))
                continue
            offset = len(problems)
            for p in tree.problems:
                if isinstance(p.lo_ref, int):
                    p.lo_ref += offset
                if isinstance(p.hi_ref, int):
                    p.hi_ref += offset
            problems.extend(tree.problems)
            per_state.append((weight, offset + root))
        roots.append(per_state)
    # Heights: a problem can be solved once the problems its barriers lead to are.
    for p in problems:  # children are appended before their parents
        hs = [problems[r].height + 1 for r in (p.lo_ref, p.hi_ref) if isinstance(r, int)]
        p.height = max(hs, default=0)
    _solve_all(problems, params, batch)
    out = np.empty(len(states))
    for k, (state, per_state) in enumerate(zip(states, roots, strict=True)):
        total = sum(w for w, _ in per_state)
        values = [(problems[r].value if isinstance(r, int) else r)[state.regime] for _, r in per_state]
        out[k] = sum(w * v for (w, _), v in zip(per_state, values, strict=True)) / total
    return out
