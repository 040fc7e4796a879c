"""Running alerts beside the tracker, or on their own.

:class:`AlertRunner` owns a background thread with its own event loop: an evaluation loop (after
each tracker cycle — :meth:`AlertRunner.on_cycle` only sets an event — and every
``alert_interval_s``) and a delivery loop (:class:`~kolray.alerts.webhooks.Deliverer`). The tracker
hands over nothing but that wake-up, so a slow model, a slow database read or a dead webhook never
holds a tracking cycle back. One runner per database: it holds a lock (a PostgreSQL advisory lock
or a lock file beside the SQLite database) so that two processes never deliver the same alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.engine import Engine

from kolray.alerts.detect import Evaluation, ModelSource, evaluate, start_watermark
from kolray.alerts.rules import AlertRules
from kolray.alerts.webhooks import Deliverer, Webhook, webhooks_from_urls
from kolray.config import Settings, get_settings
from kolray.db import upgrade
from kolray.db.locks import database_lock
from kolray.features.source import read_engine
from kolray.secrets import redact_text
from kolray.tracker.latency import AlertLatency, LatencyRecorder

log = logging.getLogger(__name__)

PG_LOCK_KEY = 0x6B6F6C_616C72  # "kol" "alr": any 64-bit constant other than the analyzer's


class AlertsBusy(RuntimeError):
    """Another process evaluates and delivers this database's alerts."""


def alerts_lock(engine: Engine) -> contextlib.AbstractContextManager[None]:
    """One alert runner per database; raises :class:`AlertsBusy` when another holds it. Released by
    the OS or the server if the process dies."""
    return database_lock(
        engine,
        pg_key=PG_LOCK_KEY,
        file_suffix="-alerts.lock",
        busy=AlertsBusy("another process is running this database's alerts"),
    )


class AlertRunner:
    """Evaluates and delivers alerts in a background thread. ``start()``, then ``notify()`` (or
    ``on_cycle``, the tracker's callback) whenever new swaps may have landed; ``stop()``."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        rules: AlertRules | None = None,
        webhooks: list[Webhook] | None = None,
        database_url: str | None = None,
        storage_uri: str | None = None,
        interval_s: float | None = None,
        from_start: bool = False,
        use_model: bool = True,
    ) -> None:
        settings = settings or get_settings()
        self.database_url = database_url or settings.database_url
        self.storage_uri = storage_uri or settings.storage_uri
        self.rules = rules or AlertRules.from_settings(settings)
        self.webhooks = (
            webhooks
            if webhooks is not None
            else webhooks_from_urls(u.get_secret_value() for u in settings.webhook_urls)
        )
        self.interval_s = interval_s if interval_s is not None else settings.alert_interval_s
        self.from_start = from_start
        self.engine = upgrade(self.database_url)
        self.reader = read_engine(self.database_url)
        self.model = ModelSource(self.database_url, self.storage_uri) if use_model else None
        self.deliverer = Deliverer(
            self.engine,
            self.webhooks,
            reader=self.reader,
            timeout_s=settings.webhook_timeout_s,
            max_attempts=settings.webhook_max_attempts,
            backoff_s=settings.webhook_backoff_s,
        )
        self.evaluations = 0
        self.errors = 0
        self.last: Evaluation | None = None
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stack = contextlib.ExitStack()
        self._p3x_warned: str | None = None
        # Not bound to a loop until first awaited: safe to create here and set from other threads
        # through the loop's call_soon_threadsafe.
        self._stop = asyncio.Event()
        self.latency = AlertLatency(LatencyRecorder("alerts"))
        self._wake = asyncio.Event()

    # Life cycle

    def start(self) -> AlertRunner:
        """Take the database's alerts lock (:class:`AlertsBusy` if held), fix the watermark (so
        the next tracker cycle's swaps are evaluated, not history), start the thread."""
        self._stack.enter_context(alerts_lock(self.engine))
        try:
            start_watermark(self.engine, self.from_start)
        except Exception:
            self._stack.close()
            raise
        self._thread = threading.Thread(target=self._main, name="kolray-alerts", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        log.info(
            "alerts: rules %s, %d webhook(s): %s",
            ", ".join(self.rules.rules),
            len(self.webhooks),
            ", ".join(f"{w.id} {w.redacted}" for w in self.webhooks) or "none",
        )
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop evaluating; deliveries in flight finish (within their timeout); release the lock."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("alerts: the runner did not stop within %.0f s", timeout_s)
        self._stack.close()

    def __enter__(self) -> AlertRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def notify(self) -> None:
        """New swaps may have landed: evaluate soon. Returns at once (any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    def on_cycle(self, cycle: int, summary: Any) -> None:
        """``kolray.tracker.supervisor.run_forever``'s ``on_cycle``."""
        self.notify()

    # The thread

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        deliver_wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        delivery = asyncio.create_task(self.deliverer.run(self._stop, deliver_wake))
        if self.model is not None:
            await asyncio.to_thread(self.model.warm)
        while not self._stop.is_set():
            self._wake.clear()
            try:
                result = await asyncio.to_thread(self.evaluate_once)
            except Exception as error:
                self.errors += 1
                self.last_error = redact_text(f"{type(error).__name__}: {error}")
                log.warning("alerts: evaluation failed (retried): %s", self.last_error)
            else:
                if result.new_ids:
                    self.deliverer.add(result.new_ids)
                    deliver_wake.set()
                await asyncio.to_thread(self._record_latency, result.new_ids)
            stopped = asyncio.ensure_future(self._stop.wait())
            woken = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({stopped, woken}, timeout=self.interval_s, return_when=asyncio.FIRST_COMPLETED)
            for future in (stopped, woken):
                if not future.done():
                    future.cancel()
        await delivery

    def _record_latency(self, new_ids: list[int]) -> None:
        """Seconds from each buy's block time to its alert (now) and to its first delivered webhook
        (read back after the deliveries land: the next pass), for ``kolray status`` and ``/healthz``."""
        try:
            self.latency.raised(self.engine, new_ids)
            self.latency.deliveries(self.engine)
            self.latency.recorder.flush(self.engine)
        except Exception as error:  # informative: never stops alerting
            log.debug("alerts: latency not recorded: %s", redact_text(str(error)))

    def evaluate_once(self) -> Evaluation:
        result = evaluate(
            self.engine, self.rules, reader=self.reader, model=self.model, webhooks=self.webhooks
        )
        self.evaluations += 1
        self.last = result
        if result.p3x_unavailable and result.p3x_unavailable != self._p3x_warned:
            log.warning("alerts: p3x rule inactive: %s", result.p3x_unavailable)
            self._p3x_warned = result.p3x_unavailable
        if result.alerts or result.held_back:
            log.info(result.line())
        return result


@contextlib.contextmanager
def tracking_hook(
    settings: Settings | None = None, enabled: bool = True
) -> Iterator[Callable[[int, Any], None] | None]:
    """For ``kolray track``: an ``on_cycle`` callback that wakes an :class:`AlertRunner` (``None``
    when disabled or when another process runs this database's alerts)."""
    if not enabled:
        yield None
        return
    try:
        runner = AlertRunner(settings).start()
    except AlertsBusy as error:
        log.warning("alerts: not evaluated by this tracker: %s (`kolray alerts run` does it)", error)
        yield None
        return
    try:
        yield runner.on_cycle
    finally:
        runner.stop()


def run_once(runner: AlertRunner, deliver_s: float = 30.0) -> Evaluation:
    """Evaluate once and deliver what is due, retries included, for up to ``deliver_s`` seconds
    (``kolray alerts run --once``); holds the runner's lock meanwhile."""
    with runner._stack:
        runner._stack.enter_context(alerts_lock(runner.engine))
        start_watermark(runner.engine, runner.from_start)
        result = runner.evaluate_once()
        runner.deliverer.add(result.new_ids)
        asyncio.run(runner.deliverer.drain(deliver_s))
    return result


def run_forever(runner: AlertRunner, stop: threading.Event) -> None:
    """Run until ``stop`` is set (``kolray alerts run``)."""
    runner.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        runner.stop()
