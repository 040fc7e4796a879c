"""Async Solana JSON-RPC client: batching, retries with backoff, failover, redacted errors.

Built on httpx2 (pydantic's successor to httpx, which solana-py itself uses) + orjson rather than
solana-py's ``AsyncClient``: the tracker needs raw ``getTransaction`` results (dicts for
:func:`kolray.chain.swaps.extract_swaps`), JSON-RPC batches of up to ``batch_size`` calls per HTTP
request, per-item retries inside a batch, and several endpoints; ``AsyncClient`` sends one HTTP
request per call and parses every answer into solders objects (and refuses some real results that
lack fields, e.g. ``slot``). ``bench/rpc.py`` measures both against the same local server.

- **Batching.** :meth:`RpcClient.get_transactions` sends ``batch_size`` ``getTransaction`` calls per
  HTTP request (``maxSupportedTransactionVersion: 0``, the configured encoding and commitment),
  several batches at once up to ``max_concurrency``. A signature asked for twice is fetched once.
- **Nothing lost, nothing fetched twice without need.** Answers are matched to calls by id. In a
  batch, only the calls that failed with a retryable error (or went unanswered) are sent again; a
  call answered ``null`` (the node does not have it yet) is returned as ``None`` in its place and
  counted, never dropped.
- **Retries.** 429, 5xx, 408, timeouts, connection drops, unreadable bodies and retryable JSON-RPC
  errors (node behind, rate limited in the body, ...) are retried up to ``max_retries`` times with
  exponential backoff and jitter; a ``Retry-After`` header is honoured (the endpoint is not tried
  again before it). Other errors (bad params, unsupported transaction version) are raised at once.
- **Failover.** Endpoints are tried in the configured order. One that fails rests (Retry-After, else
  its backoff) while the others serve; when all rest, the client waits for the first to be ready.
- **Rate limits.** A caller-provided limiter's ``await acquire(endpoint_key)`` runs before every
  HTTP request (the tracker passes a cluster-wide token bucket). If ``acquire`` takes a ``calls``
  keyword, it is told how many JSON-RPC calls the request carries (providers bill a batch per
  call); if the limiter has ``pause(endpoint_key, seconds)``, that is called after a 429. Keys are
  :func:`endpoint_key` hashes, never URLs.
- **Secrets.** URLs carry API keys: they are registered with :mod:`kolray.secrets`, and every
  error message and log line names endpoints by :func:`kolray.secrets.redact_url` only.
- **Counters.** :meth:`RpcClient.stats` gives requests, calls, retries, failovers, null results and
  errors by kind, as flat numbers for metrics.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx2
import orjson

from kolray.config import get_settings
from kolray.logs import redact_http_client_logs
from kolray.secrets import redact_text, redact_url, register_secret

log = logging.getLogger(__name__)

Encoding = Literal["json", "jsonParsed", "base64"]
Commitment = Literal["confirmed", "finalized"]

MAX_SIGNATURES_PER_PAGE = 1000  # getSignaturesForAddress's ``limit`` cap

# JSON-RPC error codes worth another try: the node is behind or not ready, a slot's block or status
# is not available yet, an internal error, or a provider's rate limit reported in the body.
RETRYABLE_RPC_CODES = frozenset({-32004, -32005, -32014, -32016, -32603, -32429, 429})
_RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})


class RpcError(Exception):
    """A JSON-RPC request that did not get an answer. The message is already redacted.

    ``kind`` says why (``timeout``, ``connect``, ``http_429``, ``http_5xx``, ``http_4xx``, ``decode``,
    ``rpc``, ``throttled``); ``endpoint`` is the redacted endpoint; ``code`` the JSON-RPC error code
    when the node answered with one.
    """

    def __init__(
        self, message: str, *, kind: str, endpoint: str | None = None, code: int | None = None
    ) -> None:
        super().__init__(redact_text(message))
        self.kind = kind
        self.endpoint = endpoint
        self.code = code


class RpcResponseError(RpcError):
    """The node answered the call with an error that another try would not fix."""


class RateLimiter(Protocol):
    """What the client awaits before each HTTP request. Optional extras, used when present: a
    ``calls`` keyword on ``acquire`` (the number of calls in the request) and ``pause(endpoint,
    seconds)`` (after a 429), sync or async."""

    async def acquire(self, endpoint: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """One ``getSignaturesForAddress`` entry."""

    signature: str
    slot: int
    block_time: int | None
    err: Any
    memo: str | None = None
    confirmation_status: str | None = None

    @property
    def failed(self) -> bool:
        return self.err is not None


def endpoint_key(url: str) -> str:
    """A stable key per endpoint that reveals nothing of the URL (the tracker's limiter keys)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(eq=False)
class _Endpoint:
    url: str
    key: str
    name: str  # redacted, for messages and logs
    ready_at: float = 0.0  # monotonic time before which it rests after a failure
    failures: int = 0  # consecutive
    stats: dict[str, int] = field(default_factory=lambda: {"requests": 0, "errors": 0})


class _Retryable(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class _Rejected(Exception):
    """The endpoint refused the request (401/403/404/...): try another one, not this one again soon."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def client_options_of(settings: Any) -> dict[str, Any]:
    """The :class:`RpcClient` options a stage's actors take from the settings (timeout, retries)."""
    return {"timeout_s": settings.rpc_timeout_s, "max_retries": settings.rpc_max_retries}


class RpcClient:
    """Solana JSON-RPC over several endpoints. Use as ``async with RpcClient(urls) as rpc: ...``."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float = 20.0,
        max_retries: int = 6,
        batch_size: int = 100,
        encoding: Encoding = "json",
        commitment: Commitment = "confirmed",
        limiter: RateLimiter | None = None,
        max_concurrency: int = 8,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 300.0,
        transport: httpx2.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        if not urls:
            raise ValueError("RpcClient needs at least one RPC URL")
        if not 1 <= batch_size <= 1000:
            raise ValueError(f"batch_size must be 1..1000, got {batch_size}")
        if timeout_s <= 0 or max_retries < 0 or max_concurrency < 1:
            raise ValueError("timeout_s must be > 0, max_retries >= 0 and max_concurrency >= 1")
        if encoding not in ("json", "jsonParsed", "base64"):
            raise ValueError(f"encoding must be json, jsonParsed or base64, got {encoding!r}")
        redact_http_client_logs()
        self._endpoints = []
        for url in urls:
            register_secret(url)
            # redact_url keeps a loopback URL's path; redact_text then masks the registered key
            # pieces in it too, so even a local test endpoint never shows its token.
            self._endpoints.append(_Endpoint(url, endpoint_key(url), redact_text(redact_url(url))))
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.encoding = encoding
        self.commitment = commitment
        self.limiter = limiter
        # The limiter's acquire when it takes the ``calls`` keyword (see RateLimiter).
        self._acquire_calls: Callable[..., Awaitable[None]] | None = (
            limiter.acquire if limiter is not None and _takes_keyword(limiter.acquire, "calls") else None
        )
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._next_id = 0
        self._http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout_s),
            transport=transport,
            headers={"content-type": "application/json", "accept": "application/json"},
            limits=httpx2.Limits(
                max_connections=max_concurrency * 2, max_keepalive_connections=max_concurrency
            ),
        )
        self._stats: dict[str, int] = {
            "requests": 0,
            "calls": 0,
            "retries": 0,
            "failovers": 0,
            "null_results": 0,
            "bytes_received": 0,
        }

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> RpcClient:
        """A client for ``settings.rpc_urls`` with its timeout, retries and batch size."""
        if settings is None:
            settings = get_settings()
        options: dict[str, Any] = {
            "timeout_s": settings.rpc_timeout_s,
            "max_retries": settings.rpc_max_retries,
            "batch_size": settings.rpc_batch_size,
        }
        options.update(overrides)
        return cls(settings.rpc_url_values, **options)

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def endpoints(self) -> list[str]:
        """The endpoints, redacted, in failover order."""
        return [e.name for e in self._endpoints]

    def stats(self) -> dict[str, int]:
        """Counters since the client was made: flat numbers, ready for metrics."""
        return dict(self._stats)

    def endpoint_stats(self) -> dict[str, dict[str, int]]:
        """Requests and errors per endpoint, keyed by the redacted endpoint."""
        return {e.name: dict(e.stats) for e in self._endpoints}

    def _count(self, name: str, n: int = 1) -> None:
        self._stats[name] = self._stats.get(name, 0) + n

    # Calls

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        """One JSON-RPC call; its ``result`` (``None`` for a null result)."""
        (result,) = await self.batch([(method, params or [])])
        return result

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Results of ``calls`` in order, sent as one JSON-RPC batch (the caller keeps it at most
        ``batch_size``); only calls that failed in a retryable way are sent again."""
        if not calls:
            return []
        ids = []
        for _ in calls:
            self._next_id += 1
            ids.append(self._next_id)
        pending = dict(zip(ids, calls, strict=True))
        results: dict[int, Any] = {}
        attempt = 0
        previous: _Endpoint | None = None
        refused: set[str] = set()  # endpoints that refused this request outright
        last_problem = ""
        while True:
            endpoint = await self._ready_endpoint()
            if previous is not None and endpoint is not previous:
                self._count("failovers")
            previous = endpoint
            try:
                answers = await self._post(endpoint, pending)
            except (_Retryable, _Rejected) as problem:
                last_problem = f"{problem.kind}: {problem}"
                self._fail(endpoint, problem)
                if isinstance(problem, _Rejected):
                    refused.add(endpoint.key)
                    if len(refused) == len(self._endpoints):
                        raise RpcError(
                            f"every endpoint refused the request; last: {problem}",
                            kind=problem.kind,
                            endpoint=endpoint.name,
                        ) from None
            else:
                endpoint.failures = 0
                retry_later: list[str] = []
                answered = 0
                for call_id in list(pending):
                    answer = answers.get(call_id)
                    if answer is None:
                        retry_later.append(f"call {call_id} unanswered")
                        continue
                    answered += 1
                    error = answer.get("error")
                    if error is None:
                        result = answer.get("result")
                        if result is None:
                            self._count("null_results")
                        results[call_id] = result
                        del pending[call_id]
                        continue
                    code = error.get("code") if isinstance(error, dict) else None
                    message = error.get("message", "") if isinstance(error, dict) else str(error)
                    if code in RETRYABLE_RPC_CODES:
                        self._count(f"errors_rpc_{code}")
                        retry_later.append(f"error {code}: {message}")
                        continue
                    method, params = pending[call_id]
                    raise RpcResponseError(
                        f"{method} failed at {endpoint.name}: error {code}: {message} (params {_brief(params)})",
                        kind="rpc",
                        endpoint=endpoint.name,
                        code=code,
                    )
                self._count("calls", answered)
                if not pending:
                    return [results[i] for i in ids]
                last_problem = "; ".join(retry_later[:3])
                self._count("errors_partial")
                # The node answered: no need to rest the endpoint, but do not hammer it either.
                endpoint.ready_at = self._clock() + self._backoff(attempt + 1)
            attempt += 1
            if attempt > self.max_retries:
                raise RpcError(
                    f"{len(pending)} of {len(calls)} calls ({_methods(pending)}) still failing after "
                    f"{self.max_retries} retries; last: {last_problem}",
                    kind="exhausted",
                    endpoint=previous.name if previous else None,
                )
            self._count("retries")
            log.info(
                "rpc retry",
                extra={
                    "endpoint": previous.name,
                    "attempt": attempt,
                    "pending": len(pending),
                    "why": last_problem,
                },
            )

    async def _ready_endpoint(self) -> _Endpoint:
        """The first endpoint (in order) not resting; if all rest, wait for the first one ready."""
        now = self._clock()
        for endpoint in self._endpoints:
            if endpoint.ready_at <= now:
                return endpoint
        soonest = min(self._endpoints, key=lambda e: e.ready_at)
        wait = soonest.ready_at - now
        if wait > self.max_retry_after_s:
            raise RpcError(
                f"every endpoint is throttled for at least {wait:.0f}s (first: {soonest.name})",
                kind="throttled",
                endpoint=soonest.name,
            )
        await self._sleep(wait)
        return soonest

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: half the step fixed, half random."""
        step = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, failures - 1))
        return step / 2 + self._rng.uniform(0, step / 2)

    def _fail(self, endpoint: _Endpoint, problem: _Retryable | _Rejected) -> None:
        endpoint.failures += 1
        endpoint.stats["errors"] += 1
        self._count(f"errors_{problem.kind}")
        if isinstance(problem, _Rejected):
            rest = self.backoff_max_s  # a refusal will not change in a second: prefer the others
        else:
            rest = self._backoff(endpoint.failures)
            if problem.retry_after is not None:
                rest = max(rest, problem.retry_after)  # never earlier than the server asked
        endpoint.ready_at = self._clock() + rest
        log.warning(
            "rpc endpoint failed",
            extra={
                "endpoint": endpoint.name,
                "kind": problem.kind,
                "rest_s": round(rest, 3),
                "why": str(problem),
            },
        )

    async def _post(
        self, endpoint: _Endpoint, calls: dict[int, tuple[str, list[Any]]]
    ) -> dict[int, dict[str, Any]]:
        """One HTTP request with ``calls``; the answers by id. Raises _Retryable / _Rejected."""
        requests = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in calls.items()]
        body = orjson.dumps(requests if len(requests) > 1 else requests[0])
        async with self._semaphore:
            if self._acquire_calls is not None:
                await self._acquire_calls(endpoint.key, calls=len(requests))
            elif self.limiter is not None:
                await self.limiter.acquire(endpoint.key)
            self._count("requests")
            endpoint.stats["requests"] += 1
            try:
                # httpx's timeout bounds each phase (connect, each read...); this bounds the whole
                # request, so a server that drips its answer cannot hold a poller forever.
                async with asyncio.timeout(self.timeout_s * 2):
                    response = await self._http.post(endpoint.url, content=body)
            except (httpx2.TimeoutException, TimeoutError):
                raise _Retryable(
                    "timeout", f"no answer from {endpoint.name} within {self.timeout_s}s"
                ) from None
            except httpx2.TransportError as error:
                # Connection refused/reset/dropped mid-answer. The text can quote the URL: redact.
                raise _Retryable(
                    "connect", f"{type(error).__name__} at {endpoint.name}: {redact_text(str(error))}"
                ) from None
        self._count("bytes_received", len(response.content))
        status = response.status_code
        if status != 200:
            retry_after = _retry_after(response.headers.get("retry-after"))
            if status == 429:
                await self._pause_limiter(endpoint, retry_after)
                raise _Retryable("http_429", f"{endpoint.name} is rate limiting (429)", retry_after)
            if status in _RETRYABLE_HTTP:
                kind = "http_5xx" if status >= 500 else f"http_{status}"
                raise _Retryable(kind, f"{endpoint.name} answered HTTP {status}", retry_after)
            raise _Rejected("http_4xx", f"{endpoint.name} refused the request: HTTP {status}")
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise _Retryable("decode", f"{endpoint.name} sent a body that is not JSON") from None
        answers = payload if isinstance(payload, list) else [payload]
        by_id: dict[int, dict[str, Any]] = {}
        for answer in answers:
            if isinstance(answer, dict) and isinstance(answer.get("id"), int):
                by_id[answer["id"]] = answer
        if not by_id and isinstance(payload, dict) and "error" in payload:
            # An error for the request as a whole (batch refused, rate limited in the body).
            whole = payload["error"] if isinstance(payload["error"], dict) else {"message": payload["error"]}
            code, message = whole.get("code"), whole.get("message", "")
            if code in RETRYABLE_RPC_CODES:
                raise _Retryable(f"rpc_{code}", f"{endpoint.name}: error {code}: {message}")
            raise _Rejected("rpc_request", f"{endpoint.name} rejected the request: error {code}: {message}")
        return by_id

    async def _pause_limiter(self, endpoint: _Endpoint, retry_after: float | None) -> None:
        pause = getattr(self.limiter, "pause", None)
        if pause is None:
            return
        outcome = pause(
            endpoint.key, retry_after if retry_after is not None else self._backoff(endpoint.failures + 1)
        )
        if inspect.isawaitable(outcome):
            await outcome

    # Transactions

    def _transaction_params(self, signature: str) -> list[Any]:
        return [
            signature,
            {"encoding": self.encoding, "maxSupportedTransactionVersion": 0, "commitment": self.commitment},
        ]

    async def get_transaction(self, signature: str) -> dict[str, Any] | None:
        """The ``getTransaction`` result, or None when the node does not have it (yet)."""
        return await self.call("getTransaction", self._transaction_params(signature))

    async def get_transactions(self, signatures: Sequence[str]) -> list[dict[str, Any] | None]:
        """``getTransaction`` results in the order of ``signatures`` (None: not available yet),
        ``batch_size`` per HTTP request, several requests at once."""
        unique = list(dict.fromkeys(signatures))
        chunks = [unique[i : i + self.batch_size] for i in range(0, len(unique), self.batch_size)]
        answers = await asyncio.gather(
            *(
                self.batch([("getTransaction", self._transaction_params(s)) for s in chunk])
                for chunk in chunks
            )
        )
        found = {
            s: tx
            for chunk, results in zip(chunks, answers, strict=True)
            for s, tx in zip(chunk, results, strict=True)
        }
        return [found[s] for s in signatures]

    # Signatures

    async def get_signatures_for_address(
        self,
        address: str,
        *,
        before: str | None = None,
        until: str | None = None,
        limit: int = MAX_SIGNATURES_PER_PAGE,
    ) -> list[SignatureInfo]:
        """One page, newest first: signatures older than ``before``, newer than ``until``."""
        if not 1 <= limit <= MAX_SIGNATURES_PER_PAGE:
            raise ValueError(f"limit must be 1..{MAX_SIGNATURES_PER_PAGE}, got {limit}")
        options: dict[str, Any] = {"limit": limit, "commitment": self.commitment}
        if before is not None:
            options["before"] = before
        if until is not None:
            options["until"] = until
        raw = await self.call("getSignaturesForAddress", [address, options])
        if not isinstance(raw, list):
            raise RpcError(
                f"getSignaturesForAddress returned {type(raw).__name__}, not a list", kind="decode"
            )
        try:
            return [
                SignatureInfo(
                    signature=item["signature"],
                    slot=item["slot"],
                    block_time=item.get("blockTime"),
                    err=item.get("err"),
                    memo=item.get("memo"),
                    confirmation_status=item.get("confirmationStatus"),
                )
                for item in raw
            ]
        except (KeyError, TypeError) as error:
            raise RpcError(f"getSignaturesForAddress entry lacks {error}", kind="decode") from None

    async def signatures_since(
        self,
        address: str,
        until: str | None,
        *,
        max_count: int | None = None,
        page_size: int = MAX_SIGNATURES_PER_PAGE,
    ) -> list[SignatureInfo]:
        """Every signature of ``address`` newer than the cursor ``until`` (all of them when None),
        newest first, paging backwards with ``before``; at most ``max_count`` (the newest)."""
        return await self._pages(
            address, until=until, max_count=max_count, not_before=None, page_size=page_size
        )

    async def backfill_signatures(
        self,
        address: str,
        *,
        max_age_s: float | None = None,
        max_count: int | None = None,
        now: float | None = None,
        page_size: int = MAX_SIGNATURES_PER_PAGE,
    ) -> list[SignatureInfo]:
        """A bounded history, newest first: signatures no older than ``max_age_s`` (by block time)
        and at most ``max_count`` of them. One bound at least, or it would read the whole history."""
        if max_age_s is None and max_count is None:
            raise ValueError("backfill needs max_age_s or max_count (or both)")
        not_before = None if max_age_s is None else int((time.time() if now is None else now) - max_age_s)
        return await self._pages(
            address, until=None, max_count=max_count, not_before=not_before, page_size=page_size
        )

    async def _pages(
        self,
        address: str,
        *,
        until: str | None,
        max_count: int | None,
        not_before: int | None,
        page_size: int,
    ) -> list[SignatureInfo]:
        out: list[SignatureInfo] = []
        before: str | None = None
        while True:
            limit = page_size if max_count is None else min(page_size, max_count - len(out))
            if limit <= 0:
                return out
            page = await self.get_signatures_for_address(address, before=before, until=until, limit=limit)
            for info in page:
                # Newest first: once one is older than the bound, all that follow are too. A
                # missing block time (very old slots) cannot be judged and is kept.
                if not_before is not None and info.block_time is not None and info.block_time < not_before:
                    return out
                out.append(info)
            # A short page is the end of the history (or the cursor was reached).
            if len(page) < limit:
                return out
            before = page[-1].signature


def _takes_keyword(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins and some proxies have no signature
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _brief(params: list[Any]) -> str:
    text = orjson.dumps(params).decode()
    return text if len(text) <= 160 else text[:157] + "..."


def _methods(pending: dict[int, tuple[str, list[Any]]]) -> str:
    names = sorted({method for method, _ in pending.values()})
    return ", ".join(names)
