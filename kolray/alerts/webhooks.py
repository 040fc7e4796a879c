"""Webhook targets, their payload shapes, and delivery with retries and backoff.

A target's shape comes from its URL: ``discord.com/api/webhooks/...`` gets a Discord message
(``content`` + an embed), ``api.telegram.org/bot<token>/sendMessage?chat_id=...`` a Telegram
``sendMessage`` body (HTML text), anything else the generic JSON (:class:`AlertPayload` plus id,
message and links). A URL fragment ``#discord`` / ``#telegram`` / ``#generic`` overrides the
detection (a relay, or a local test receiver); fragments are never sent.

Delivery state lives in ``alerts.deliveries`` (one entry per target, keyed by a hash of its URL:
URLs carry tokens and are only ever stored redacted). Each (alert, target) is attempted until a
2xx, up to ``max_attempts`` times with exponential backoff (``Retry-After`` wins when longer); a
4xx other than 408/425/429 is permanent (the request itself is wrong). Attempts run concurrently
with a per-target cap, every request has a timeout, so a dead or slow webhook delays only its own
deliveries. One delivery loop per database (the runner's lock), and an (alert, target) is never
in flight twice, so a delivered alert is not sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from kolray.alerts.rules import AlertPayload
from kolray.db.tables import AlertRow
from kolray.secrets import redact_secret_url, redact_text, register_secret

log = logging.getLogger(__name__)

Kind = Literal["generic", "discord", "telegram"]
KINDS: tuple[str, ...] = ("generic", "discord", "telegram")
DISCORD_HOSTS = frozenset({"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"})
RETRYABLE_4XX = frozenset({408, 425, 429})
MAX_RETRY_AFTER_S = 300.0
PER_TARGET = 4  # requests in flight per target
RECOVER_LAST = 2_000  # alerts scanned for unfinished deliveries when a loop starts


class AlertConfigError(ValueError):
    """A webhook URL that cannot be used; the message names it (redacted)."""


@dataclass(frozen=True)
class Webhook:
    """One configured target. ``url`` is secret, on loopback too (a relay's token is its path):
    show ``redacted`` (scheme, host, port) and ``id`` (a hash) to tell targets apart."""

    url: str
    kind: Kind
    id: str
    redacted: str
    chat_id: str | None = None

    @classmethod
    def parse(cls, url: str) -> Webhook:
        register_secret(url)
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AlertConfigError(f"webhook {redact_secret_url(url)}: not an http(s) URL")
        forced = parts.fragment.lower()
        if forced and forced not in KINDS:
            raise AlertConfigError(
                f"webhook {redact_secret_url(url)}: #{forced} is not one of #{', #'.join(KINDS)}"
            )
        bare = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
        register_secret(bare)  # what is posted to, and so what an error text quotes: no fragment
        host = parts.hostname.lower()
        kind: Kind
        if forced:
            kind = forced  # type: ignore[assignment]
        elif host in DISCORD_HOSTS and parts.path.startswith("/api/webhooks/"):
            kind = "discord"
        elif (
            host == "api.telegram.org"
            and parts.path.startswith("/bot")
            and parts.path.endswith("/sendMessage")
        ):
            kind = "telegram"
        else:
            kind = "generic"
        chat_id = None
        if kind == "telegram":
            chat_ids = parse_qs(parts.query).get("chat_id", [])
            chat_id = chat_ids[0] if chat_ids else None
            if not chat_id:
                raise AlertConfigError(
                    f"webhook {redact_secret_url(url)}: a Telegram URL needs the chat: .../sendMessage?chat_id=<id>"
                )
        digest = hashlib.sha256(bare.encode()).hexdigest()[:12]
        return cls(
            url=bare, kind=kind, id=f"{kind}-{digest}", redacted=redact_secret_url(bare), chat_id=chat_id
        )


def webhooks_from_urls(urls: Iterable[str]) -> list[Webhook]:
    hooks: dict[str, Webhook] = {}
    for url in urls:
        hook = Webhook.parse(url)
        hooks.setdefault(hook.id, hook)  # the same URL twice is one target
    return list(hooks.values())


# Payload shapes


def render(webhook: Webhook, alert_id: int, payload: AlertPayload, dedupe_key: str) -> dict[str, Any]:
    """The JSON body for ``webhook``."""
    message = payload.message()
    links = payload.links()
    if webhook.kind == "discord":
        fields = [
            {"name": "KOL", "value": payload.kol_label(), "inline": True},
            {"name": "Amount", "value": f"{payload.amount_sol:.2f} SOL", "inline": True},
            {"name": "Token", "value": f"[{payload.mint}]({links['token']})", "inline": False},
        ]
        if payload.p_3x is not None:
            fields.append({"name": "P(3x)", "value": f"{100 * payload.p_3x:.1f}%", "inline": True})
        if payload.dh_score is not None:
            fields.append({"name": "Diamond Hand", "value": f"{payload.dh_score:.2f}", "inline": True})
        if payload.consensus_kols is not None:
            fields.append({"name": "KOLs in window", "value": str(payload.consensus_kols), "inline": True})
        return {
            "username": "kolray",
            "content": message[:2000],
            "allowed_mentions": {"parse": []},
            "embeds": [
                {
                    "title": payload.title,
                    "description": message[:4096],
                    "url": links["transaction"],
                    "color": {"p3x": 0x12B76A, "dh": 0x2E90FA, "consensus": 0xF79009}[payload.rule],
                    "fields": fields,
                    "timestamp": payload.time_iso,
                    "footer": {"text": f"kolray alert {alert_id}"},
                }
            ],
        }
    if webhook.kind == "telegram":
        text = (
            f"<b>{html.escape(payload.title)}</b>\n{html.escape(message)}\n"
            f'<a href="{links["transaction"]}">transaction</a> · <a href="{links["token"]}">token</a>'
        )
        return {
            "chat_id": webhook.chat_id,
            "text": text,
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }
    return {
        "type": "kolray.alert",
        "id": alert_id,
        "dedupe_key": dedupe_key,
        "message": message,
        "time_iso": payload.time_iso,
        "links": links,
        **payload.model_dump(mode="json"),
    }


# Delivery state


class DeliveryState(BaseModel):
    """One target's delivery of one alert (``alerts.deliveries[target id]``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    url: str  # redacted
    state: Literal["pending", "delivered", "failed"] = "pending"
    attempts: int = 0
    next_at: float = 0.0
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None


def initial_deliveries(webhooks: Iterable[Webhook]) -> dict[str, Any]:
    return {w.id: DeliveryState(kind=w.kind, url=w.redacted).model_dump() for w in webhooks}


@dataclass
class Attempt:
    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False


async def post(client: Any, webhook: Webhook, body: dict[str, Any], dedupe: str) -> Attempt:
    """One POST; never raises (failures are returned)."""
    import httpx

    headers = {"Content-Type": "application/json", "User-Agent": "kolray-alerts", "Idempotency-Key": dedupe}
    try:
        response = await client.post(webhook.url, json=body, headers=headers)
    except httpx.TimeoutException:
        return Attempt(ok=False, error="timed out")
    except httpx.HTTPError as error:
        return Attempt(ok=False, error=redact_text(f"{type(error).__name__}: {error}")[:300])
    if 200 <= response.status_code < 300:
        return Attempt(ok=True, status=response.status_code)
    retry_after = _retry_after(response)
    permanent = 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_4XX
    text = redact_text(response.text[:200]) if response.text else ""
    return Attempt(
        ok=False,
        status=response.status_code,
        error=f"HTTP {response.status_code}" + (f": {text}" if text else ""),
        retry_after=retry_after,
        permanent=permanent,
    )


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None and response.status_code == 429:
        try:  # Discord puts it in the body too
            value = response.json().get("retry_after")
        except Exception:
            value = None
    try:
        return None if value is None else max(0.0, float(value))
    except (TypeError, ValueError):
        return None


@dataclass
class Deliverer:
    """Delivers pending (alert, target) pairs from the ``alerts`` table."""

    engine: Engine
    webhooks: list[Webhook]
    reader: Engine | None = None  # for the frequent reads (default: ``engine``)
    timeout_s: float = 5.0
    max_attempts: int = 5
    backoff_s: float = 2.0
    jitter: float = 0.2  # ± share of each backoff, so targets that failed together retry apart
    clock: Callable[[], float] = time.time
    pending: set[int] = field(default_factory=set)  # alert ids with something to deliver
    in_flight: set[tuple[int, str]] = field(default_factory=set)
    # Attempts whose outcome could not be stored yet (the database was away): kept, stored first
    # at the next round, and never attempted again meanwhile, so a delivered alert is not re-sent.
    unrecorded: dict[tuple[int, str], tuple[Webhook, Attempt]] = field(default_factory=dict)
    sent: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._client: Any = None
        self._lock = threading.Lock()  # ``pending`` is added to by the evaluator's thread

    def add(self, alert_ids: Iterable[int]) -> None:
        """New alerts to deliver (from the evaluator)."""
        if self.webhooks:
            with self._lock:
                self.pending.update(alert_ids)

    # Bookkeeping (blocking; called in a thread)

    def recover(self) -> int:
        """Find unfinished deliveries of recent alerts (after a restart)."""
        if not self.webhooks:
            return 0
        with (self.reader or self.engine).connect() as conn:
            rows = conn.execute(
                select(AlertRow.id, AlertRow.deliveries).order_by(AlertRow.id.desc()).limit(RECOVER_LAST)
            ).all()
        found = [
            int(alert_id)
            for alert_id, deliveries in rows
            if any((deliveries or {}).get(w.id, {}).get("state") == "pending" for w in self.webhooks)
        ]
        self.add(found)
        return len(found)

    def due(
        self, in_flight: frozenset[tuple[int, str]] = frozenset()
    ) -> tuple[list[tuple[int, Webhook, dict[str, Any]]], float | None]:
        """``(what is due now, when the next pending one is due)``, leaving out ``in_flight``;
        alerts whose every target is done leave ``pending``."""
        with self._lock:
            wanted = sorted(self.pending)
        if not wanted:
            return [], None
        now = self.clock()
        due: list[tuple[int, Webhook, dict[str, Any]]] = []
        next_at: float | None = None
        with (self.reader or self.engine).connect() as conn:
            rows = conn.execute(
                select(AlertRow.id, AlertRow.deliveries, AlertRow.payload, AlertRow.dedupe_key).where(
                    AlertRow.id.in_(wanted)
                )
            ).all()
        done = {alert_id for alert_id in wanted if alert_id not in {row[0] for row in rows}}  # deleted
        for alert_id, deliveries, payload, dedupe in rows:
            open_targets = 0
            for webhook in self.webhooks:
                entry = (deliveries or {}).get(webhook.id)
                if entry is None:  # a target configured after the alert was stored
                    continue
                if entry.get("state") != "pending":
                    continue
                open_targets += 1
                if (alert_id, webhook.id) in in_flight:
                    continue
                if entry.get("next_at", 0) <= now:
                    due.append((alert_id, webhook, {"payload": payload, "dedupe_key": dedupe}))
                else:
                    next_at = entry["next_at"] if next_at is None else min(next_at, entry["next_at"])
            if not open_targets:
                done.add(alert_id)
        with self._lock:
            self.pending -= done
        return due, next_at

    def record(self, alert_id: int, webhook: Webhook, attempt: Attempt) -> DeliveryState:
        """Store the outcome of an attempt (read-modify-write of the row's ``deliveries``, under a
        row lock)."""
        now = self.clock()
        with self.engine.begin() as conn:
            # The row is locked (PostgreSQL; SQLite's writer lock does the same) while its targets'
            # outcomes land from concurrent attempts: no attempt's update overwrites another's.
            current = (
                conn.scalar(select(AlertRow.deliveries).where(AlertRow.id == alert_id).with_for_update())
                or {}
            )
            state = DeliveryState.model_validate(
                current.get(webhook.id) or {"kind": webhook.kind, "url": webhook.redacted}
            )
            state.url = webhook.redacted  # entries stored by older versions held loopback paths
            state.attempts += 1
            state.last_status = attempt.status
            if attempt.ok:
                state.state, state.delivered_at, state.last_error = "delivered", now, None
            else:
                state.last_error = attempt.error
                if attempt.permanent or state.attempts >= self.max_attempts:
                    state.state = "failed"
                else:
                    delay = self.backoff_s * 2 ** (state.attempts - 1)
                    delay *= 1 + random.uniform(-self.jitter, self.jitter)
                    if attempt.retry_after is not None:
                        delay = max(delay, min(attempt.retry_after, MAX_RETRY_AFTER_S))
                    state.next_at = now + delay
            updated = {**current, webhook.id: state.model_dump()}
            conn.execute(update(AlertRow).where(AlertRow.id == alert_id).values(deliveries=updated))
        return state

    # The loop

    async def _attempt(self, alert_id: int, webhook: Webhook, row: dict[str, Any]) -> None:
        try:
            async with self._limits.setdefault(webhook.id, asyncio.Semaphore(PER_TARGET)):
                payload = AlertPayload.model_validate(row["payload"])
                body = render(webhook, alert_id, payload, row["dedupe_key"])
                attempt = await post(self._client, webhook, body, row["dedupe_key"])
            await self._store(alert_id, webhook, attempt)
        except Exception as error:  # a bug: logged, and the attempt is made again next round
            log.warning(
                "alert %s: delivery to %s %s failed: %s",
                alert_id,
                webhook.id,
                webhook.redacted,
                redact_text(str(error)),
            )
        finally:
            self.in_flight.discard((alert_id, webhook.id))

    async def _store(self, alert_id: int, webhook: Webhook, attempt: Attempt) -> None:
        try:
            state = await asyncio.to_thread(self.record, alert_id, webhook, attempt)
        except Exception as error:
            self.unrecorded[(alert_id, webhook.id)] = (webhook, attempt)
            log.warning("alert %s: outcome not stored yet: %s", alert_id, redact_text(str(error)))
            return
        self.unrecorded.pop((alert_id, webhook.id), None)
        if state.state == "delivered":
            self.sent += 1
        elif state.state == "failed":
            self.failed += 1
            log.warning(
                "alert %s: giving up on %s %s after %d attempts (%s)",
                alert_id,
                webhook.id,
                webhook.redacted,
                state.attempts,
                state.last_error,
            )

    async def round(self) -> tuple[list[asyncio.Task[None]], float | None]:
        """Start every delivery that is due; returns the tasks and when the next is due."""
        for (alert_id, _), (webhook, attempt) in list(self.unrecorded.items()):
            await self._store(alert_id, webhook, attempt)
        due, next_at = await asyncio.to_thread(
            self.due, frozenset(self.in_flight) | frozenset(self.unrecorded)
        )
        tasks = []
        for alert_id, webhook, row in due:
            self.in_flight.add((alert_id, webhook.id))
            tasks.append(asyncio.create_task(self._attempt(alert_id, webhook, row)))
        return tasks, next_at

    async def run(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        """Deliver until ``stop``: a round whenever woken (new alerts), a retry is due, or a
        second passes."""
        import httpx

        recovered = False
        running: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            self._client = client
            while not stop.is_set():
                wake.clear()
                try:
                    if not recovered:  # unfinished deliveries of a previous run
                        await asyncio.to_thread(self.recover)
                        recovered = True
                    tasks, next_at = await self.round()
                except Exception as error:  # the database is away: try again shortly
                    log.warning("alert delivery: %s", redact_text(str(error)))
                    tasks, next_at = [], None
                running.update(tasks)
                for task in tasks:
                    task.add_done_callback(running.discard)
                wait = 1.0 if next_at is None else min(1.0, max(0.05, next_at - self.clock()))
                stopped = asyncio.ensure_future(stop.wait())
                woken = asyncio.ensure_future(wake.wait())
                await asyncio.wait({stopped, woken}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for future in (stopped, woken):
                    if not future.done():
                        future.cancel()
            # Attempts in flight finish within the request timeout; their outcome is recorded.
            if running:
                await asyncio.wait(running, timeout=self.timeout_s + 5)
        self._client = None

    async def drain(self, deadline_s: float = 30.0) -> None:
        """Deliver everything unfinished until nothing is due or in flight (retries included,
        while they fall before the deadline): ``kolray alerts run --once``."""
        import httpx

        await asyncio.to_thread(self.recover)
        end = time.monotonic() + deadline_s
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            self._client = client
            while time.monotonic() < end:
                tasks, next_at = await self.round()
                if tasks:
                    await asyncio.wait(tasks)
                    continue
                if next_at is None:
                    break
                pause = next_at - self.clock()
                if time.monotonic() + pause > end:
                    break
                await asyncio.sleep(max(0.01, pause))
        self._client = None
