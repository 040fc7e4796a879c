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

from kolray.kols import validate_wallet
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


class LeaderRow(BaseModel):
    """One KOL on the leaderboard: rank, wallet, name, statistics over the window."""

    rank: int
    wallet: str
    name: str | None
    stats: KolStatsOut


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
    unrealised_value_sol: float | None
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


# Models


class VersionInfo(BaseModel):
    """One registered model version: stage and primary metric."""

    version: str
    family: str = Field(default="net", description="net (PyTorch network) or gbt (LightGBM).")
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
        default=None, description="Its family: net (PyTorch) or gbt (LightGBM)."
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
    family: str | None = Field(default=None, description="net (PyTorch network) or gbt (LightGBM).")
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
