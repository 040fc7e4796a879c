"""What the routes and the UI call: one object per process, with its models injected.

:class:`KolrayService` holds the database engine, the cached feature source, and two
:class:`Scorer` objects — in Serve, handles to the batched model deployments; in a plain process
(tests, the benchmark's FastAPI baseline), models held in-process. The HTTP routes
(:mod:`kolray.serve.api`) and the Gradio UI (:mod:`kolray.serve.ui`) both call these methods, so
there is one implementation of every answer.

Failures a client can do nothing about but wait or fix the deployment (no model promoted yet, no
feature pipeline, database down) are :class:`Unavailable` (HTTP 503) with a message saying what to
do; a request for something that does not exist is :class:`NotFound` (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from kolray import __version__, storage
from kolray.cache import TtlCache
from kolray.config import get_settings
from kolray.db import upgrade
from kolray.kols import validate_wallet
from kolray.learn import registry
from kolray.learn.targets import meaning
from kolray.secrets import redact_text
from kolray.serve import queries
from kolray.serve.coalesce import Coalescer
from kolray.serve.holder import FeatureColumnsMissing, ModelHolder, NoModel, Scores
from kolray.serve.lookup import (
    DEFAULT_SOURCE,
    CachedFeatures,
    FeatureBlock,
    FeaturesUnavailable,
    TokenQuery,
    load_source,
)
from kolray.serve.schemas import (
    Forecast,
    Health,
    KolDetail,
    KolStatsOut,
    Leaderboard,
    LeaderRow,
    ModelInfo,
    ModelsOut,
    ModelState,
    PnlPoint,
    PositionOut,
    PredictTokenResponse,
    RecentTrades,
    ReloadRequest,
    ReloadResponse,
    TapeGapOut,
    TapePointOut,
    TokenItem,
    TokenMarket,
    TokenPositionOut,
    TokenSummary,
    TokenTradeOut,
    TradeOut,
    VersionInfo,
    iso,
)
from kolray.tracker.latency import StageLatency, latency_summary

log = logging.getLogger(__name__)

SYSTEM_PROGRAM = "11111111111111111111111111111111"  # a valid wallet address no KOL has

MODELS = ("token", "kol")
MAX_TOKEN_TRADES = 5000  # a token's KOL swaps in one answer (the newest kept beyond it)
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,63}$")
PLOT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\.png$")


class ServiceError(Exception):
    """An answer other than success; ``status`` is its HTTP status."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    """Unknown thing (404)."""

    status = 404


class Unavailable(ServiceError):
    """No model, feature pipeline or database (503); the message says what to do."""

    status = 503


class BadRequest(ServiceError):
    """Input the request models accept but the service cannot use (422)."""

    status = 422


class Conflict(ServiceError):
    """A request that needs an explicit confirmation (409), e.g. an archived version."""

    status = 409


class Scorer(Protocol):
    """A model as the service sees it: in-process or behind a Serve handle."""

    async def score(self, block: FeatureBlock) -> Scores:
        """Scores for one block of feature rows."""
        ...

    async def state(self) -> dict[str, Any]:
        """The model's state (version held, load error)."""
        ...


class LocalScorer:
    """A model held in this process (tests, the plain-FastAPI benchmark baseline)."""

    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    async def score(self, block: FeatureBlock) -> Scores:
        """Scores for one block of feature rows, from the holder in this process."""
        return self.holder.score(block)

    async def state(self) -> dict[str, Any]:
        """The holder's state (version held, load error)."""
        return self.holder.state()


class Reloader(Protocol):
    """Makes the model replicas serve ``{"token": V|None, "kol": V|None}`` (None: the champion)."""

    how: str

    async def __call__(self, versions: dict[str, str | None], force: bool = False) -> None:
        """Apply the versions; ``force``: make the replicas load them again even where the
        configuration already names them (a replica that could not load one retries)."""
        ...

    async def deployed(self) -> dict[str, str | None]:
        """The versions the configuration names now: what a replica that starts will load."""
        ...


class LocalReloader:
    """Reload for models held in this process (tests, the plain-FastAPI baseline)."""

    how = "in-process model holders reconfigured"

    def __init__(self, holders: dict[str, ModelHolder]) -> None:
        self.holders = holders

    async def __call__(self, versions: dict[str, str | None], force: bool = False) -> None:
        for model, version in versions.items():
            await asyncio.to_thread(self.holders[model].configure, {"version": version})

    async def deployed(self) -> dict[str, str | None]:
        """The versions the holders were last asked for."""
        return {model: holder.requested for model, holder in self.holders.items()}


RELOAD_WAIT_S = 60.0


class _WalletTimes(TtlCache[str, int | None]):
    """First-close time per wallet (``None``: none yet), cached like features (cold-start flags)."""

    def __init__(self, ttl_s: float) -> None:
        super().__init__(ttl_s, 100_000)

    def get(self, engine: Engine, wallets: Sequence[str]) -> dict[str, int | None]:
        def read(missing: list[str]) -> dict[str, int | None]:
            found = queries.first_close_times(engine, missing)
            return {wallet: found.get(wallet) for wallet in missing}

        return self.get_or_compute(wallets, read)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unwrap(error: BaseException) -> BaseException:
    """A replica's exception comes back wrapped by Ray; find the kolray error inside."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 5:
        if isinstance(current, NoModel | FeatureColumnsMissing | FeaturesUnavailable):
            return current
        cause = getattr(current, "cause", None) or current.__cause__
        current = cause if isinstance(cause, BaseException) else None
        seen += 1
    return error


def _replica_lost(error: BaseException) -> bool:
    """A Ray actor (a model replica) died or is unreachable: Serve restarts it, so it is a 503."""
    # Lazy: the service also runs without Ray (tests, the plain-FastAPI benchmark baseline), and
    # importing Ray costs seconds.
    from ray.exceptions import RayActorError

    return isinstance(error, RayActorError)


def token_out(
    mint: str, since: int | None, until: int | None, max_points: int, record: queries.TokenRecord
) -> TokenMarket:
    """A token's record as the API answers it (times in ISO-8601)."""
    latest = record.latest or {}
    first_time, first_price = record.first_entry or (None, None)
    peak_price, peak_time = record.peak or (None, None)
    summary = TokenSummary(
        latest_price_sol=latest.get("price_sol"),
        latest_time=iso(latest.get("time")),
        market_cap_sol=latest.get("market_cap_sol"),
        liquidity_sol=latest.get("liquidity_sol"),
        venue=latest.get("venue"),
        graduated=latest.get("graduated"),
        first_entry_time=iso(first_time),
        first_entry_price_sol=first_price,
        peak_price_sol=peak_price,
        peak_time=iso(peak_time),
        peak_multiple=peak_price / first_price if peak_price is not None and first_price else None,
        kols=len({t["wallet"] for t in record.trades}),
    )
    return TokenMarket(
        mint=mint,
        since=iso(since),
        until=iso(until),
        summary=summary,
        points=[TapePointOut(**{**p, "time": iso(p["time"])}) for p in record.points],
        points_total=record.points_total,
        max_points=max_points,
        downsampled=record.points_total > len(record.points),
        gaps=[
            TapeGapOut(start=iso(g.start) or "", end=iso(g.end) or "", reads=g.reads, reason=g.reason)
            for g in record.gaps
        ],
        trades=[TokenTradeOut(**{**t, "time": iso(t["time"])}) for t in record.trades],
        trades_truncated=record.trades_truncated,
        positions=[TokenPositionOut(**p) for p in record.positions],
    )


class KolrayService:
    # Requests with at most this many items are coalesced (see kolray.serve.coalesce); bigger
    # ones are a batch already and go alone.
    """Everything the routes and the UI answer from: features, model scoring, database reads, the registry,
    reloads."""

    coalesce_items = 64

    def __init__(
        self,
        *,
        token: Scorer,
        kol: Scorer,
        database_url: str | None = None,
        storage_uri: str | None = None,
        feature_source: str = DEFAULT_SOURCE,
        feature_ttl_s: float = 10.0,
        reloader: Reloader | None = None,
        api_key: str | None = None,
        engine: Engine | None = None,
    ) -> None:
        settings = get_settings()
        self.database_url = database_url or settings.database_url
        self.storage_uri = storage_uri or settings.storage_uri
        self.token = token
        self.kol = kol
        self.feature_source_path = feature_source
        self._feature_ttl_s = float(feature_ttl_s)
        self.reloader = reloader
        if api_key is None and settings.api_key is not None:
            api_key = settings.api_key.get_secret_value()
        self.api_key = api_key or None
        self._engine = engine
        self._features: CachedFeatures | None = None
        self._first_close = _WalletTimes(feature_ttl_s)
        self._token_coalescer: Coalescer[TokenQuery, tuple[float, bool, str, float | None, str | None]] = (
            Coalescer(self._coalesced_token_scores, max_items=1024)
        )
        self._init_lock = threading.RLock()  # features() builds the engine under it

    @property
    def feature_ttl_s(self) -> float:
        """How stale the data behind a prediction may be (features and cold-start flags)."""
        return self._feature_ttl_s

    @feature_ttl_s.setter
    def feature_ttl_s(self, value: float) -> None:
        # reconfigure() may change it on a running replica: the caches built already follow.
        """How stale a prediction's features may be, in seconds."""
        self._feature_ttl_s = float(value)
        self._first_close.ttl_s = self._feature_ttl_s
        if self._features is not None:
            self._features.ttl_s = self._feature_ttl_s

    # Resources (created on first use, so a replica starts even with the database down)

    @property
    def engine(self) -> Engine:
        """The database engine (migrated on first use)."""
        if self._engine is None:
            with self._init_lock:
                if self._engine is None:
                    try:
                        self._engine = upgrade(self.database_url)
                    except Exception as error:
                        raise Unavailable(
                            f"database unavailable: {redact_text(_first_line(error))}"
                        ) from None
        return self._engine

    @property
    def features(self) -> CachedFeatures:
        """The cached feature source (built on first use)."""
        if self._features is None:
            with self._init_lock:
                if self._features is None:
                    try:
                        source = load_source(self.feature_source_path, self.engine)
                    except FeaturesUnavailable as error:
                        raise Unavailable(str(error)) from None
                    self._features = CachedFeatures(source, ttl_s=self.feature_ttl_s)
        return self._features

    async def _db(self, fn: Callable[..., Any], *args: Any, inline: bool = False) -> Any:
        """Run a blocking database function in a thread (``inline``: in the event loop, for
        lookups known to take well under a millisecond); database failures become 503."""

        def call() -> Any:
            try:
                return fn(*args)
            except SQLAlchemyError as error:
                raise Unavailable(f"database unavailable: {redact_text(_first_line(error))}") from None

        if inline:
            return call()
        return await asyncio.to_thread(call)

    async def _score(self, scorer: Scorer, block: FeatureBlock, model: str) -> Scores:
        try:
            return await scorer.score(block)
        except Exception as error:
            inner = _unwrap(error)
            if isinstance(inner, NoModel):
                message = f"no {model} model is loaded: {_first_line(inner)}"
                if "kolray " not in message:
                    message += f" (run `kolray tune`, or `kolray promote {model} VERSION`)"
                raise Unavailable(message) from None
            if isinstance(inner, FeatureColumnsMissing | FeaturesUnavailable):
                raise Unavailable(_first_line(inner)) from None
            if _replica_lost(error):
                raise Unavailable(
                    f"the {model} model replica was lost during this request ({type(error).__name__}); "
                    "Serve is replacing it: retry"
                ) from None
            raise

    # Health

    async def health(self) -> Health:
        """``GET /healthz``."""
        states: dict[str, ModelState] = {}
        for name, scorer in (("token", self.token), ("kol", self.kol)):
            try:
                states[name] = ModelState(**await scorer.state())
            except Exception as error:
                states[name] = ModelState(version=None, loaded=False, error=_first_line(error))
        latency: dict[str, StageLatency] = {}
        try:
            await self._db(lambda: self.engine.connect().close())
            database = "ok"
        except Exception:
            database = "unavailable"
        if database == "ok":
            with contextlib.suppress(Exception):  # informative: never degrades the health answer
                latency = await self._db(lambda: latency_summary(self.engine, 300.0))
        ok = database == "ok" and all(s.loaded for s in states.values())
        return Health(
            status="ok" if ok else "degraded",
            models=states,  # type: ignore[arg-type]
            database=database,  # type: ignore[arg-type]
            kolray_version=__version__,
            latency=latency,
        )

    def warm_up(self) -> bool:
        """Do once, before traffic, what the first prediction would otherwise do lazily: connect to
        the database, import and build the feature source, compute one feature row. A Serve
        replica calls it at start-up, so that the first request does not pay for it and the
        objects it creates are frozen out of the garbage collector's scans with the rest of the
        start-up heap (unfrozen, they made the ingress stall ~50 ms in a full collection about
        once a second under load). Returns whether it got through; a database that is down is
        only logged (the replica still starts and answers 503 until the database is back)."""
        probe = TokenQuery(validate_wallet(SYSTEM_PROGRAM), amount_sol=1.0, entry_time=int(time.time()))
        try:
            self.features.token_block([probe])
            self._first_close.get(self.engine, [probe.wallet])
        except Exception as error:
            log.warning("warm-up skipped: %s", redact_text(_first_line(error)))
            return False
        self.features.clear()
        self._first_close.clear()
        return True

    # Predictions

    async def predict_tokens(self, items: Sequence[TokenItem]) -> PredictTokenResponse:
        """P(3x) for each buy, with point-in-time features."""
        queries_ = [TokenQuery(i.wallet, float(i.amount_sol), int(i.entry_time), i.mint) for i in items]
        scores, cold = await self._token_scores(queries_)
        threshold = scores.threshold
        # One validation call for the whole answer: pydantic-core loops over the items, ~1 µs
        # each (model_construct per item is pure Python and measured twice as slow).
        return PredictTokenResponse.model_validate(
            {
                "predictions": [
                    {"p_3x": p, "above_threshold": threshold is not None and p >= threshold, "cold_start": c}
                    for p, c in zip(scores.values.tolist(), cold, strict=True)
                ],
                "model_version": scores.version,
                "threshold": threshold,
                "target": scores.target,
                "target_meaning": meaning(scores.target),
            }
        )

    async def _token_scores(self, items: Sequence[TokenQuery]) -> tuple[Scores, list[bool]]:
        if len(items) > self.coalesce_items:
            return await self._token_scores_now(items)
        # Small requests in flight together share one feature lookup and one model call.
        results = await self._token_coalescer(list(items))
        _, _, version, threshold, target = results[0]
        values = np.array([r[0] for r in results], dtype=np.float64)
        return Scores(values, version, threshold, target), [r[1] for r in results]

    async def _coalesced_token_scores(
        self, items: list[TokenQuery]
    ) -> list[tuple[float, bool, str, float | None, str | None]]:
        scores, cold = await self._token_scores_now(items)
        return [
            (float(v), c, scores.version, scores.threshold, scores.target)
            for v, c in zip(scores.values, cold, strict=True)
        ]

    async def _token_scores_now(self, items: Sequence[TokenQuery]) -> tuple[Scores, list[bool]]:
        def lookup() -> tuple[FeatureBlock, list[bool]]:
            block = self.features.token_block(items)
            firsts = self._first_close.get(self.engine, [q.wallet for q in items])
            cold = [(first := firsts.get(q.wallet)) is None or first >= q.entry_time for q in items]
            return block, cold

        block, cold = await self._db(lookup)
        scores = await self._score(self.token, block, "token")
        values = np.clip(np.nan_to_num(scores.values, nan=0.0), 0.0, 1.0)
        return Scores(values, scores.version, scores.threshold, scores.target), cold

    async def forecast(self, wallet: str, as_of: int) -> Forecast:
        """A KOL's forecast 3x rates as of ``as_of``."""

        def lookup() -> tuple[FeatureBlock, bool]:
            block = self.features.kol_block([wallet], as_of)
            first = self._first_close.get(self.engine, [wallet]).get(wallet)
            return block, first is None or first >= as_of

        block, cold = await self._db(lookup)
        scores = await self._score(self.kol, block, "kol")
        rates = np.clip(np.nan_to_num(np.asarray(scores.values, dtype=np.float64).reshape(-1, 2)), 0.0, 1.0)
        return Forecast(
            p_3x_rate_7d=float(rates[0, 0]),
            p_3x_rate_30d=float(rates[0, 1]),
            model_version=scores.version,
            as_of=iso(as_of) or "",
            cold_start=cold,
        )

    # KOLs

    async def leaderboard(self, window: str, sort: str, limit: int, search: str | None = None) -> Leaderboard:
        """The leaderboard over ``window``, sorted by ``sort``, optionally searched, with each
        KOL's unrealised PnL now."""

        def read() -> tuple[queries.LeaderboardRows, dict[str, float]]:
            result = queries.leaderboard(self.engine, window, sort, limit, search)
            with self.engine.connect() as conn:
                return result, queries.unrealised_by_wallet(conn, [w for w, _, _ in result.rows])

        result, unrealised = await self._db(read)
        return Leaderboard(
            window=window,  # type: ignore[arg-type]
            sort=sort,  # type: ignore[arg-type]
            as_of=iso(result.as_of),
            total=result.total,
            kols=[
                LeaderRow(
                    rank=i + 1,
                    wallet=w,
                    name=n,
                    stats=KolStatsOut(**queries.stats_out(s)),  # type: ignore[arg-type]
                    unrealised_pnl_sol=unrealised.get(w),
                )
                for i, (w, n, s) in enumerate(result.rows)
            ],
        )

    async def kol_detail(self, wallet: str, limit: int = 100) -> KolDetail:
        """One KOL: statistics, forecast, positions, PnL curve (404 when unknown)."""
        record = await self._db(lambda: queries.kol_record(self.engine, wallet, limit))
        if record is None:
            raise NotFound(
                f"unknown KOL {wallet}: not tracked and no positions (add it with `kolray kols add {wallet}`)"
            )
        as_of = record.as_of
        if as_of is None:
            as_of = await self._db(lambda: queries.data_clock(self.engine)) or int(time.time())
        forecast: Forecast | None = None
        forecast_error: str | None = None
        try:
            forecast = await self.forecast(wallet, as_of)
        except Unavailable as error:
            forecast_error = error.message
        return KolDetail(
            wallet=record.wallet,
            name=record.name,
            links=record.links,
            tracked=record.tracked,
            as_of=iso(record.as_of),
            stats={w: KolStatsOut(**s) if s else None for w, s in record.stats.items()},
            forecast=forecast,
            forecast_error=forecast_error,
            open_positions=record.open_positions,
            unrealised_pnl_sol=record.unrealised_pnl_sol,
            positions=[PositionOut(**p) for p in record.positions],
            pnl_curve=[PnlPoint(time=iso(t) or "", cum_pnl_sol=v) for t, v in record.pnl_curve],
        )

    async def recent_trades(self, limit: int = 50, wallet: str | None = None) -> RecentTrades:
        """The latest swaps, with P(3x) for open buys."""
        swaps = await self._db(lambda: queries.recent_swaps(self.engine, limit, wallet))
        open_buys = [
            i
            for i, s in enumerate(swaps)
            if s.side == "buy" and s.position_status == "open" and s.sol_amount > 0
        ]
        p: dict[int, float] = {}
        version: str | None = None
        threshold: float | None = None
        target: str | None = None
        error: str | None = None
        if open_buys:
            items = [
                TokenQuery(swaps[i].wallet, swaps[i].sol_amount, swaps[i].time, swaps[i].mint)
                for i in open_buys
            ]
            try:
                scores, _ = await self._token_scores(items)
                version, threshold, target = scores.version, scores.threshold, scores.target
                p = {i: float(v) for i, v in zip(open_buys, scores.values, strict=True)}
            except Unavailable as failure:
                error = failure.message
        trades = []
        for i, s in enumerate(swaps):
            value = p.get(i)
            trades.append(
                TradeOut(
                    signature=s.signature,
                    time=iso(s.time) or "",
                    wallet=s.wallet,
                    name=s.name,
                    mint=s.mint,
                    side=s.side,
                    sol_amount=s.sol_amount,
                    dex=s.dex,
                    position_status=s.position_status,
                    multiple=s.multiple if s.multiple is None or math.isfinite(s.multiple) else None,
                    p_3x=value,
                    above_threshold=None if value is None or threshold is None else value >= threshold,
                )
            )
        return RecentTrades(
            trades=trades,
            model_version=version,
            threshold=threshold,
            target=target,
            target_meaning=meaning(target) if target else None,
            prediction_error=error,
        )

    async def token_market(
        self, mint: str, since: int | None = None, until: int | None = None, max_points: int = 2000
    ) -> TokenMarket:
        """One token: its market tape (downsampled to ``max_points``) with its gaps, the KOLs'
        swaps and positions in it, over ``[since, until]`` (unix seconds; 404 when kolray has
        neither a tape row nor a swap of it)."""
        record = await self._db(
            lambda: queries.token_market(self.engine, mint, since, until, max_points, MAX_TOKEN_TRADES)
        )
        if record is None:
            raise NotFound(f"unknown token {mint}: no market tape and no tracked KOL swap of it")
        return token_out(mint, since, until, max_points, record)

    async def token_choices(self, limit: int = 200) -> list[tuple[str, int]]:
        """(mint, KOLs that traded it) of the most recently traded tokens, for the UI's picker."""
        return await self._db(lambda: queries.token_choices(self.engine, limit))

    async def kol_choices(self) -> list[tuple[str, str | None]]:
        """(wallet, name) of every KOL, for the UI's pickers."""
        return await self._db(lambda: queries.kol_choices(self.engine))

    async def data_clock(self) -> int | None:
        """One second after the newest swap: "now" for the data (None: no swaps yet)."""
        return await self._db(lambda: queries.data_clock(self.engine))

    # Models

    async def serving_versions(self) -> dict[str, str | None]:
        """The version each model's replicas serve now."""
        out: dict[str, str | None] = {}
        for name, scorer in (("token", self.token), ("kol", self.kol)):
            try:
                out[name] = (await scorer.state()).get("version")
            except Exception:
                out[name] = None
        return out

    async def models(self) -> ModelsOut:
        """``GET /v1/models``."""
        states = {}
        for name, scorer in (("token", self.token), ("kol", self.kol)):
            try:
                states[name] = await scorer.state()
            except Exception as error:
                states[name] = {"version": None, "error": _first_line(error)}

        def read() -> dict[str, ModelInfo]:
            out = {}
            for name in MODELS:
                try:
                    index = registry.read_index(name, self.storage_uri)
                except registry.RegistryError as error:
                    raise Unavailable(_first_line(error)) from None
                versions = []
                for entry in sorted(index.versions, key=lambda v: v.created_at, reverse=True):
                    report = storage.join(self.storage_uri, "reports", name, entry.version, "report.json")
                    value = entry.primary_metric.get("value")
                    versions.append(
                        VersionInfo(
                            version=entry.version,
                            family=entry.family,
                            target=entry.targets[0] if name == "token" and entry.targets else None,
                            stage=entry.stage,
                            created_at=iso(entry.created_at) or "",
                            dataset_version=entry.dataset_version,
                            metric=entry.primary_metric.get("name"),
                            metric_value=value if isinstance(value, float) and math.isfinite(value) else None,
                            has_report=storage.exists(report),
                        )
                    )
                state = states[name]
                out[name] = ModelInfo(
                    champion=index.champion,
                    serving=state.get("version"),
                    serving_family=state.get("family"),
                    serving_target=state.get("target"),
                    serving_error=state.get("error"),
                    versions=versions,
                )
            return out

        infos = await asyncio.to_thread(read)
        return ModelsOut(**infos)

    def _check_version(self, model: str, version: str) -> None:
        if model not in MODELS:
            raise NotFound(f"unknown model {model!r}: token or kol")
        if not VERSION_RE.match(version):
            raise NotFound(f"no {model} model version {version!r}")

    async def report(self, model: str, version: str) -> dict[str, Any]:
        """A version's evaluation report."""
        self._check_version(model, version)
        uri = storage.join(self.storage_uri, "reports", model, version, "report.json")

        def read() -> dict[str, Any] | None:
            return storage.read_json(uri) if storage.exists(uri) else None

        report = await asyncio.to_thread(read)
        if report is None:
            raise NotFound(
                f"no report for {model} {version}: run `kolray evaluate --model {model} --version {version}`"
            )
        return report

    async def plot_names(self, model: str, version: str) -> list[str]:
        """The names of a version's report plots."""
        self._check_version(model, version)
        root = storage.join(self.storage_uri, "reports", model, version)

        def names() -> list[str]:
            if not storage.exists(root):
                return []
            return sorted(n.rsplit("/", 1)[-1] for n in storage.listdir(root) if n.endswith(".png"))

        return await asyncio.to_thread(names)

    async def plot(self, model: str, version: str, name: str) -> bytes:
        """One report plot, as PNG bytes."""
        self._check_version(model, version)
        if not PLOT_RE.match(name):
            raise NotFound(f"no plot {name!r}")
        uri = storage.join(self.storage_uri, "reports", model, version, name)

        def read() -> bytes | None:
            return storage.read_bytes(uri) if storage.exists(uri) else None

        data = await asyncio.to_thread(read)
        if data is None:
            raise NotFound(f"no plot {name} for {model} {version}")
        return data

    # Admin

    async def reload(self, request: ReloadRequest) -> ReloadResponse:
        """Point the model replicas at the requested versions (default: each model's champion).

        All or nothing: when a replica cannot load a requested version, the deployment's config is
        put back as it was before answering 503, so that a replica started later (crash, lost
        node, scale-up) loads what served before, not the refused version. Asking again for a
        version the config already names, but which the replicas do not serve, makes them try
        to load it again (e.g. once its files are repaired)."""
        reloader = self.reloader
        if reloader is None:
            raise Unavailable("this process cannot reload models (no reloader configured)")

        def resolve() -> dict[str, str | None]:
            wanted: dict[str, str | None] = {}
            for name in MODELS:
                asked = getattr(request, name)
                try:
                    index = registry.read_index(name, self.storage_uri)
                except registry.RegistryError as error:
                    raise Unavailable(_first_line(error)) from None
                if asked is not None:
                    try:
                        entry = index.entry(asked)
                    except registry.VersionNotFound as error:
                        raise NotFound(_first_line(error)) from None
                    # A former champion was retired for a reason: serving it again is a decision,
                    # not something an open or mistaken call should do.
                    if entry.stage == "archived" and not request.allow_archived:
                        raise Conflict(
                            f"{name} {asked} is archived (a former champion): send allow_archived=true "
                            f"to serve it anyway, or make it the champion with `kolray promote {name} "
                            f"{asked} --allow-archived`"
                        )
                wanted[name] = asked or index.champion
            return wanted

        wanted = await asyncio.to_thread(resolve)
        previous = await self.serving_versions()
        try:
            deployed = await reloader.deployed()
        except Exception as error:
            raise Unavailable(f"cannot read the deployed model versions: {_first_line(error)}") from None
        # Already configured but not served (a replica failed to load it, or fell back to the
        # champion): without force nothing would change and the old error would come back.
        force = any(deployed.get(m) == wanted[m] != previous.get(m) for m in MODELS)
        started = time.time()
        try:
            await reloader(wanted, force=force)
            await self._wait_for(wanted, since=started)
        except Exception as error:
            reason = error.message if isinstance(error, ServiceError) else _first_line(error)
            raise Unavailable(f"{reason}; {await self._restore(deployed, wanted, previous)}") from None
        return ReloadResponse(
            previous=previous,  # type: ignore[arg-type]
            applied=wanted,  # type: ignore[arg-type]
            changed=any(previous.get(m) != wanted[m] for m in MODELS),
            how=getattr(self.reloader, "how", "in-process reload"),
        )

    async def _restore(
        self, deployed: dict[str, str | None], wanted: dict[str, str | None], serving: dict[str, str | None]
    ) -> str:
        """After a failed reload: the config back to ``deployed``. Says what now holds."""
        assert self.reloader is not None
        kept = ", ".join(f"{m}: {deployed.get(m) or 'the champion'}" for m in MODELS)
        served = ", ".join(f"{m} {serving.get(m) or 'nothing'}" for m in MODELS)
        if all(deployed.get(m) == wanted[m] for m in MODELS):
            return f"the replicas keep serving {served}; the deployment's config still names {kept}"
        try:
            await self.reloader({m: deployed.get(m) for m in MODELS})
        except Exception as error:
            log.error("reload failed and the previous model versions could not be restored: %s", error)
            return (
                f"restoring the previous config ({kept}) failed too: {_first_line(error)}; "
                "POST /v1/admin/reload again"
            )
        log.warning("reload to %s failed: the deployment's config is back to %s", wanted, kept)
        return f"nothing changed: the replicas keep serving {served}, and the deployment's config is back to {kept}"

    async def _wait_for(
        self, wanted: dict[str, str | None], since: float = 0.0, timeout_s: float = RELOAD_WAIT_S
    ) -> None:
        """Until the replicas answer with the wanted versions: several answers in a row, since
        each call reaches one replica of possibly several. A replica that reports a load error
        for a version it does not serve, from an attempt made after ``since`` (wall clock: an
        error left by an earlier attempt at the same version is not this reload's answer), ends
        the wait at once."""
        deadline = time.monotonic() + timeout_s
        streak = 0
        scorers = {"token": self.token, "kol": self.kol}
        while True:
            done = True
            for model, version in wanted.items():
                if version is None:
                    continue
                state = await scorers[model].state()
                if state.get("version") != version:
                    done = False
                    tried_at = state.get("tried_at") or 0.0
                    if state.get("error") and state.get("requested") == version and tried_at >= since:
                        raise Unavailable(f"{model} replicas could not load {version}: {state['error']}")
            streak = streak + 1 if done else 0
            if streak >= 5:
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"replicas do not serve {wanted} {timeout_s:.0f} s after the reload")
            await asyncio.sleep(0.05 if streak else 0.2)
