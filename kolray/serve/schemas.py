"""Request and response models of the HTTP API: they are the OpenAPI documentation at ``/docs``.

Inputs are strict where a lenient parse would hide a client bug: an amount must be a JSON number
(not a string or a boolean), finite and positive; a time must be an ISO-8601 string within the
life of Solana, without control characters; a wallet or mint must be a canonical base58 public key
of 32 bytes (the published pattern admits nearly only those: see ``Wallet``). A failure is a 422 whose
``detail`` names the field (``loc``), and whose ``message`` says the same in one line.

Times go out as ISO-8601 UTC strings (``2024-06-01T12:00:00Z``); inside kolray they are unix
seconds (docs/architecture.md, "Units and time").
"""

from __future__ import annotations

import time
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from kolray.kols import InvalidWallet, validate_wallet
from kolray.tracker.latency import StageLatency

# Solana mainnet-beta's first block (2020-03-16): nothing traded before it.
MIN_TIME_S = 1_584_316_800
# A what-if may look a little ahead of the clock (clients' clocks drift); beyond that it is a bug.
MAX_FUTURE_S = 7 * 86_400
MAX_ITEMS = 1000
MAX_AMOUNT_SOL = 1_000_000.0
Window = Literal["7d", "30d", "all"]
ModelName = Literal["token", "kol"]
SortKey = Literal[
    "total_pnl_sol",
    "roi",
    "win_rate",
    "rate_3x",
    "n_3x",
    "consistency",
    "dh_score",
    "trades",
    "closed",
    "mean_multiple",
    "recent_win_rate",
    "last_entry_time",
    "copy_roi",
]


def iso(ts: int | float | None) -> str | None:
    """Unix seconds → ``YYYY-MM-DDTHH:MM:SSZ`` (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> int:
    """An ISO-8601 string → unix seconds, UTC. A string without an offset is taken as UTC.

    Only strings are accepted: the contract says ISO-8601, and a bare number would be ambiguous
    (seconds? milliseconds?)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        # fromisoformat takes any character between date and time and ignores some after it
        # ("2024-06-01\x0012:00:00"), and strip() would drop a trailing newline: a control or
        # invisible character is a client bug (or an injection attempt), never part of a time.
        hidden = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
        if hidden is not None:
            raise ValueError(
                f"contains a control character (U+{ord(hidden):04X} at position {value.index(hidden)}); "
                "an ISO-8601 time has none (example: 2024-06-01T12:00:00Z)"
            )
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"not an ISO-8601 time: {value[:40]!r} (example: 2024-06-01T12:00:00Z)"
            ) from None
    else:
        raise ValueError("must be an ISO-8601 string such as 2024-06-01T12:00:00Z")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        seconds = moment.timestamp()
    except (OverflowError, OSError, ValueError):
        raise ValueError("time out of range") from None
    if seconds < MIN_TIME_S:
        raise ValueError(f"before Solana mainnet existed ({iso(MIN_TIME_S)})")
    if seconds > time.time() + MAX_FUTURE_S:
        raise ValueError(f"more than {MAX_FUTURE_S // 86_400} days in the future")
    return int(seconds)


def _wallet(value: str) -> str:
    return validate_wallet(value)


# Base58 keys in the schema. 32 bytes are 32 to 44 base58 characters, but most strings of those
# lengths decode to fewer or more bytes. A key with k leading zero bytes is k '1's, then the
# base58 digits of a number in [256**(31-k), 256**(32-k)); the pattern lists, per k, the lengths
# that number can have and, at the two boundary lengths, its leading digits. The exact bound is a
# regular language too, but its regex (slack 0) is 76 kB in 1,417 branches, repeated wherever a key
# appears in the schema: the leading digits are taken only as deep as needed for each branch to
# admit at most PATTERN_SLACK values that are not keys (5 kB, 123 branches).
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
KEY_BYTES = 32
PATTERN_SLACK = 0.01


def _b58_class(low: int, high: int) -> str:
    """A regex character class for the base58 digits worth ``low`` to ``high``."""
    chars = _B58[low : high + 1]
    if len(chars) == 1:
        return chars
    runs, start = [], 0
    for i in range(1, len(chars) + 1):
        if i == len(chars) or ord(chars[i]) != ord(chars[i - 1]) + 1:
            run = chars[start:i]
            runs.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else run)
            start = i
    return f"[{''.join(runs)}]"


def _b58_any(count: int) -> str:
    return "" if count == 0 else _b58_class(0, 57) + (f"{{{count}}}" if count > 1 else "")


def _b58_range(low: int, high: int, width: int) -> list[tuple[str, int]]:
    """Regex branches for the ``width``-digit base58 numerals worth ``low`` to ``high``, each as
    ``(leading part, count of any-digits after it)``."""
    if width == 0:
        return [("", 0)]
    if low == 0 and high == 58**width - 1:
        return [("", width)]
    unit = 58 ** (width - 1)
    first_low, rest_low = divmod(low, unit)
    first_high, rest_high = divmod(high, unit)
    if first_low == first_high:
        return [(_B58[first_low] + r, n) for r, n in _b58_range(rest_low, rest_high, width - 1)]
    head, tail = [], []
    if rest_low:
        head = [(_B58[first_low] + r, n) for r, n in _b58_range(rest_low, unit - 1, width - 1)]
        first_low += 1
    if rest_high != unit - 1:
        tail = [(_B58[first_high] + r, n) for r, n in _b58_range(0, rest_high, width - 1)]
        first_high -= 1
    middle = [(_b58_class(first_low, first_high), width - 1)] if first_low <= first_high else []
    return head + middle + tail


def _b58_digits(value: int) -> int:
    count = 0
    while value:
        value, count = value // 58, count + 1
    return count


def base58_key_pattern(n_bytes: int = KEY_BYTES, slack: float = PATTERN_SLACK) -> tuple[str, float]:
    """``(pattern, share)``: a regex that every canonical base58 encoding of ``n_bytes`` bytes
    matches, and the share of the strings it matches that decode to another length (each branch
    admits at most ``slack`` of those)."""
    branches, admitted = [], 0
    for zeros in range(n_bytes + 1):
        ones = "1" * zeros if zeros < 4 else f"1{{{zeros}}}"
        if zeros == n_bytes:
            branches.append(ones)
            admitted += 1
            continue
        low, high = 256 ** (n_bytes - 1 - zeros), 256 ** (n_bytes - zeros) - 1
        for width in range(_b58_digits(low), _b58_digits(high) + 1):
            first, last = max(low, 58 ** (width - 1)), min(high, 58**width - 1)
            for depth in range(1, width + 1):
                scale = 58 ** (width - depth)
                covered = (last // scale - first // scale + 1) * scale
                if (covered - (last - first + 1)) / covered <= slack:
                    break
            branches += [
                ones + prefix + _b58_any(n_any + width - depth)
                for prefix, n_any in _b58_range(first // scale, last // scale, depth)
            ]
            admitted += covered
    return f"^(?:{'|'.join(branches)})$", 1 - 256**n_bytes / admitted


WALLET_PATTERN, WALLET_PATTERN_GAP = base58_key_pattern()

Wallet = Annotated[
    str,
    Field(
        min_length=32,
        max_length=44,
        pattern=WALLET_PATTERN,
        description="A Solana public key: the canonical base58 encoding of exactly 32 bytes (32 to "
        "44 characters; each leading '1' stands for a zero byte). The server decodes it and answers "
        "422 when it is not 32 bytes. The pattern admits, for each count of leading '1's, only the "
        "lengths and leading digits a 32-byte key can have; the exact numeric bound is beyond a "
        f"regex of sensible size, so {100 * WALLET_PATTERN_GAP:.2f}% of the strings it admits (at "
        f"most {100 * PATTERN_SLACK:g}% in any of its branches) are not 32 bytes and get the 422.",
        examples=["7rhxnLV8C77o6d8oz26AgK8x8m5ePsdeRawjqvojbjnQ"],
    ),
    AfterValidator(_wallet),
]


def _mint(value: str) -> str:
    try:
        return validate_wallet(value)
    except InvalidWallet as error:
        # validate_wallet speaks of wallets; a token route's client sent a mint.
        raise ValueError(str(error).replace("wallet address", "mint address")) from None


Mint = Annotated[
    str,
    Field(
        min_length=32,
        max_length=44,
        pattern=WALLET_PATTERN,
        description="A token's mint: a Solana public key, the canonical base58 encoding of exactly 32 "
        "bytes (the same rule, pattern and 422 as a wallet).",
        examples=["4k3Dyjzvzp8eMZWUXbBCjEvwSkkk59S5iCNLY3QrkX6R"],
    ),
    AfterValidator(_mint),
]
IsoTime = Annotated[str, Field(description="ISO-8601 UTC", examples=["2024-06-01T12:00:00Z"])]


class ApiModel(BaseModel):
    """Request bodies: unknown fields are refused (a misspelt field is a 422, not ignored)."""

    model_config = ConfigDict(extra="forbid")


# Predictions


class TokenItem(ApiModel):
    """One buy to score: this KOL buys this much at this time (optionally of this token)."""

    wallet: Wallet
    amount_sol: Annotated[
        float,
        Field(
            strict=True,
            gt=0,
            le=MAX_AMOUNT_SOL,
            allow_inf_nan=False,
            description=f"SOL spent on the buy: a finite number > 0 and ≤ {MAX_AMOUNT_SOL:g}.",
            examples=[1.5],
        ),
    ]
    entry_time: Annotated[
        int,
        BeforeValidator(parse_time),
        Field(
            description="When the buy happens, ISO-8601 (no offset = UTC; no control characters). "
            "Features use only what was known before this time.",
            json_schema_extra={"type": "string", "format": "date-time", "examples": ["2024-06-01T12:00:00Z"]},
        ),
    ]
    mint: Annotated[Wallet | None, Field(description="The token's mint, when known.")] = None


class PredictTokenRequest(ApiModel):
    """``POST /v1/predict/token``: the buys to score."""

    items: list[TokenItem] = Field(min_length=1, max_length=MAX_ITEMS, description=f"1 to {MAX_ITEMS} buys.")


class TokenPrediction(BaseModel):
    """P(3x) for one buy, and whether it is above the model's threshold."""

    p_3x: float = Field(
        ge=0,
        le=1,
        description="Calibrated probability of the model's target (the response's `target`): by default "
        "that the token trades at >= 3x the entry price within 7 days (peak_3x).",
    )
    above_threshold: bool = Field(description="p_3x ≥ the model's decision threshold (chosen on validation).")
    cold_start: bool = Field(
        description="The KOL had no closed position before entry_time: the prediction rests on the "
        "buy itself and the population prior, not on the KOL's record."
    )


class PredictTokenResponse(BaseModel):
    """The predictions, in the order asked, and the model version that made them."""

    predictions: list[TokenPrediction]
    model_version: str = Field(description="Token model version that produced every prediction here.")
    threshold: float | None = Field(description="The model's decision threshold.")
    target: str | None = Field(
        default=None,
        description="What p_3x is the probability of: peak_3x (the token trades at >= 3x the entry price "
        "within 7 days) or label_3x (the KOL's own position realises 3x).",
    )
    target_meaning: str | None = Field(default=None, description="The target in words.")


# KOLs


class KolStatsOut(BaseModel):
    """A KOL's statistics over a window (docs/analysis.md): positions closed before as_of."""

    trades: int = Field(description="Positions entered in the window.")
    closed: int = Field(description="Positions closed in the window.")
    scored: int = Field(description="Closed positions with a SOL result.")
    wins: int
    n_3x: int
    win_rate: float | None
    rate_3x: float | None
    mean_multiple: float | None
    median_multiple: float | None
    mean_hold_s: float | None
    mean_hold_weighted_s: float | None
    total_cost_sol: float
    total_pnl_sol: float
    roi: float | None
    consistency: float | None = Field(description="Wilson 95% lower bound of the win rate.")
    dh_score: float | None = Field(description="Diamond Hand score in [-1, 1].")
    untracked_sell_positions: int
    recent_n: int
    recent_win_rate: float | None
    recent_rate_3x: float | None
    recent_mean_multiple: float | None
    last_entry_time: IsoTime | None
    last_exit_time: IsoTime | None
    # Copyability: written by analyzers that know the follower's side; older snapshots lack them.
    copy_pnl_sol: float | None = Field(
        default=None,
        description="What a follower copying each opening buy a few seconds later, and exiting with "
        "the KOL, made over the window (SOL). Null: not computed for this snapshot.",
    )
    copy_roi: float | None = Field(default=None, description="copy_pnl_sol over the follower's cost.")
    copy_scored: int | None = Field(default=None, description="Positions with a follower result.")
    copy_farmed_rate: float | None = Field(
        default=None, description="Share of the copied positions the KOL won while its follower lost."
    )
    farming: bool | None = Field(
        default=None,
        description="The KOL wins while its followers lose (null: not enough positions to tell, "
        "or not computed for this snapshot).",
    )


UNREALISED_PNL = (
    "Unrealised PnL of the open positions at the market mark: for each, the value of the tokens "
    "still held at the mark less their cost basis (cost × tokens still held ÷ tokens bought). "
    "Null: no open position with a mark."
)


class LeaderRow(BaseModel):
    """One KOL on the leaderboard: rank, wallet, name, statistics over the window, and the
    unrealised PnL of its open positions now."""

    rank: int
    wallet: str
    name: str | None
    stats: KolStatsOut
    unrealised_pnl_sol: float | None = Field(default=None, description=UNREALISED_PNL)


class Leaderboard(BaseModel):
    """``GET /v1/kols``."""

    window: Window
    sort: SortKey
    as_of: IsoTime | None = Field(description="Time of the statistics snapshot (null: none yet).")
    total: int = Field(description="KOLs matching the search, before the limit.")
    kols: list[LeaderRow]


class Forecast(BaseModel):
    """A KOL's forecast 3x rates over the next 7 and 30 days."""

    p_3x_rate_7d: float = Field(
        description="Forecast share of the KOL's positions over the next 7 days that reach 3x."
    )
    p_3x_rate_30d: float = Field(description="The same over the next 30 days.")
    model_version: str
    as_of: IsoTime
    cold_start: bool = Field(
        description="No closed position before as_of: the forecast is the population prior."
    )


class PositionOut(BaseModel):
    """One position of a KOL (open or closed)."""

    mint: str
    seq: int
    status: Literal["open", "closed"]
    entry_time: IsoTime
    exit_time: IsoTime | None
    entry_dex: str
    cost_sol: float
    proceeds_sol: float
    fees_sol: float
    realised_pnl_sol: float | None
    multiple: float | None
    hold_s: int | None
    unrealised_value_sol: float | None = Field(description="Open: the tokens still held, at the mark.")
    unrealised_pnl_sol: float | None = Field(
        default=None,
        description="Open: unrealised_value_sol less the cost basis of the tokens still held "
        "(cost × tokens still held ÷ tokens bought). Null: closed, no mark, or not SOL-valued.",
    )
    peak_multiple: float | None = Field(
        default=None,
        description="The highest price within 7 days after entry ÷ the entry price (so far, while "
        "the 7 days run). Null: no price after the entry.",
    )
    peak_time: IsoTime | None = Field(default=None, description="When that peak first traded.")
    time_to_peak_s: int | None = Field(default=None, description="peak_time − entry_time, seconds.")
    drawdown: float | None = Field(
        default=None,
        description="The largest fall from a running high (from the entry price) within the 7 days, "
        "as a fraction of that high: 0 never fell, 0.9 lost 90%.",
    )
    missed_gain_sol: float | None = Field(
        default=None,
        description="Closed: what the tokens sold would have fetched at the highest price after the "
        "exit (within the 7 days) beyond what they did fetch; 0 when nothing traded higher.",
    )
    copy_multiple: float | None = Field(
        default=None,
        description="What a follower buying and selling a few seconds after the KOL made: the price "
        "after the exit ÷ the price after the entry, gross of fees.",
    )
    flags: list[str]


class PnlPoint(BaseModel):
    """A point of a KOL's cumulative realised PnL curve."""

    time: IsoTime
    cum_pnl_sol: float


class KolDetail(BaseModel):
    """``GET /v1/kols/{wallet}``."""

    wallet: str
    name: str | None
    links: list[str]
    tracked: bool = Field(description="In the tracked KOL list (a wallet can have positions without).")
    as_of: IsoTime | None
    stats: dict[Window, KolStatsOut | None]
    forecast: Forecast | None = Field(description="Null when no KOL model is loaded (see forecast_error).")
    forecast_error: str | None = None
    open_positions: int
    unrealised_pnl_sol: float | None = Field(
        default=None, description="Sum over every open position (not only those listed). " + UNREALISED_PNL
    )
    positions: list[PositionOut] = Field(description="Most recent first (by entry), up to `limit`.")
    pnl_curve: list[PnlPoint] = Field(
        description="Cumulative realised PnL over closed positions, by exit time."
    )


class TradeOut(BaseModel):
    """One swap of the recent-trades list."""

    signature: str
    time: IsoTime
    wallet: str
    name: str | None
    mint: str
    side: Literal["buy", "sell"]
    sol_amount: float
    dex: str
    position_status: Literal["open", "closed"] | None = Field(
        description="Status of the position this swap belongs to (null: not part of a tracked position)."
    )
    multiple: float | None = Field(description="Closed position: its realised multiple.")
    p_3x: float | None = Field(
        description="Buys of positions still open: the token model's probability for this buy (of `target`)."
    )
    above_threshold: bool | None


class RecentTrades(BaseModel):
    """``GET /v1/trades/recent``."""

    trades: list[TradeOut]
    model_version: str | None = Field(description="Token model version behind p_3x (null: none loaded).")
    threshold: float | None
    target: str | None = Field(
        default=None, description="What p_3x is the probability of (see PredictTokenResponse)."
    )
    target_meaning: str | None = None
    prediction_error: str | None = Field(default=None, description="Why p_3x is missing, when it is.")


# Tokens

MAX_TAPE_POINTS = 20_000
DEFAULT_TAPE_POINTS = 2_000
# Far enough ahead for any query of a real chain, small enough for every database's BIGINT.
MAX_QUERY_TIME_S = 4_102_444_800  # 2100-01-01


class TapePointOut(BaseModel):
    """The token's market at one slot, read from its bonding curve or pool (``market_tape``)."""

    time: IsoTime
    slot: int
    price_sol: float = Field(description="SOL per whole token.")
    market_cap_sol: float | None
    liquidity_sol: float | None = Field(description="SOL on the curve or in the pool.")
    venue: str | None = Field(description="Where the price was read: pumpfun, pumpswap, raydium.")
    graduated: bool | None = Field(description="The bonding curve is complete (the token trades on a pool).")
    source: str = Field(description="live (read from accounts) or history (from the venue's trades).")


class TapeGapOut(BaseModel):
    """A stretch where the market stage could not read the token's market: consecutive reads that
    failed for the same reason. No price is invented for it."""

    start: IsoTime = Field(description="The first failed read.")
    end: IsoTime = Field(description="The last failed read before a price or another reason.")
    reads: int = Field(description="Failed reads in the stretch.")
    reason: str = Field(description="Why the market could not be read (the tape's note).")


class TokenTradeOut(BaseModel):
    """A tracked KOL's swap of the token: an entry (buy) or an exit (sell)."""

    signature: str
    time: IsoTime
    wallet: str
    name: str | None
    side: Literal["buy", "sell"]
    price_sol: float | None = Field(description="SOL per whole token at this swap (null: a non-SOL leg).")
    sol_amount: float = Field(description="SOL spent (buy) or received (sell).")
    token_amount: float = Field(description="Whole tokens bought or sold.")
    dex: str


class TokenPositionOut(PositionOut):
    """A tracked KOL's position in the token."""

    wallet: str
    name: str | None


class TokenSummary(BaseModel):
    """The token at a glance, over the window asked for."""

    latest_price_sol: float | None = Field(description="The newest tape price in the window.")
    latest_time: IsoTime | None
    market_cap_sol: float | None = Field(description="At the newest tape price.")
    liquidity_sol: float | None = Field(description="At the newest tape price.")
    venue: str | None = Field(description="At the newest tape price.")
    graduated: bool | None = Field(description="At the newest tape price.")
    first_entry_time: IsoTime | None = Field(description="The first tracked KOL buy of the token (ever).")
    first_entry_price_sol: float | None
    peak_price_sol: float | None = Field(
        description="The highest price in the window at or after the first KOL buy, over the tape and "
        "the KOLs' swaps (as the peak_3x label takes it)."
    )
    peak_time: IsoTime | None
    peak_multiple: float | None = Field(description="peak_price_sol ÷ first_entry_price_sol.")
    kols: int = Field(description="Tracked KOLs with a swap of the token in the window.")


class TokenMarket(BaseModel):
    """``GET /v1/tokens/{mint}``."""

    mint: str
    since: IsoTime | None
    until: IsoTime | None
    summary: TokenSummary
    points: list[TapePointOut] = Field(description="Tape prices in the window, oldest first.")
    points_total: int = Field(description="Tape prices in the window before any downsampling.")
    max_points: int
    downsampled: bool = Field(
        description="points_total > max_points: the window is cut into equal time buckets and each "
        "keeps its lowest and highest price (so peaks and troughs survive), plus the first and the "
        "newest point. The summary is computed on every point."
    )
    gaps: list[TapeGapOut] = Field(description="Stretches without a price, with their reason, oldest first.")
    trades: list[TokenTradeOut] = Field(
        description="The KOLs' swaps of the token in the window, oldest first."
    )
    trades_truncated: bool = Field(description="More swaps than the cap: the newest are kept.")
    positions: list[TokenPositionOut] = Field(
        description="The KOLs' positions in the token that overlap the window, newest entry first."
    )


# Models


class VersionInfo(BaseModel):
    """One registered model version: stage and primary metric."""

    version: str
    family: str = Field(
        default="net",
        description="net (PyTorch network), gbt (LightGBM) or linear (logistic/ridge regression).",
    )
    target: str | None = Field(default=None, description="Token: the label its probability is of.")
    stage: Literal["candidate", "champion", "archived"]
    created_at: IsoTime
    dataset_version: str
    metric: str | None
    metric_value: float | None
    has_report: bool


class ModelInfo(BaseModel):
    """One model's versions, its champion, and what the replicas serve."""

    champion: str | None
    serving: str | None = Field(description="Version the running replicas use (null: none loaded).")
    serving_family: str | None = Field(
        default=None, description="Its family: net (PyTorch), gbt (LightGBM) or linear (logistic/ridge)."
    )
    serving_target: str | None = Field(default=None, description="Token: the label its probability is of.")
    serving_error: str | None = None
    versions: list[VersionInfo] = Field(description="Newest first.")


class ModelsOut(BaseModel):
    """``GET /v1/models``."""

    token: ModelInfo
    kol: ModelInfo


class ModelState(BaseModel):
    """What a model's replicas hold: the version and the last load error."""

    version: str | None
    family: str | None = Field(
        default=None,
        description="net (PyTorch network), gbt (LightGBM) or linear (logistic/ridge regression).",
    )
    target: str | None = Field(default=None, description="Token: the label its probability is of.")
    loaded: bool
    error: str | None = None


class Health(BaseModel):
    """``GET /healthz``."""

    status: Literal["ok", "degraded"] = Field(description="degraded: a model or the database is unavailable.")
    models: dict[ModelName, ModelState]
    database: Literal["ok", "unavailable"]
    kolray_version: str
    latency: dict[str, StageLatency] = Field(
        default_factory=dict,
        description="Last 5 minutes: seconds from a swap's chain time (blockTime) to stored, alert "
        "raised and webhook delivered (p50, p99, n).",
    )


class ReloadRequest(ApiModel):
    """``POST /v1/admin/reload``: the versions to serve."""

    token: str | None = Field(default=None, description="Version to serve; default: the champion.")
    kol: str | None = Field(default=None, description="Version to serve; default: the champion.")
    allow_archived: bool = Field(
        default=False,
        description="Serve a version in stage `archived` (a former champion); without it such a "
        "reload is refused with 409.",
    )


class ReloadResponse(BaseModel):
    """The versions before and after a reload, whether anything changed, and how it was applied."""

    previous: dict[ModelName, str | None]
    applied: dict[ModelName, str | None]
    changed: bool
    how: str = Field(description="How the versions reached the replicas.")


class ErrorOut(BaseModel):
    """An error answer."""

    detail: str
