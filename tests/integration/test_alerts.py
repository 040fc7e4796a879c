"""Alerts end to end: rules on stored swaps (SQLite and PostgreSQL), the champion's P(3x), delivery
to real HTTP receivers on 127.0.0.1 (retries, backoff, Retry-After, permanent failures, never
twice), dead and slow webhooks that block neither delivery to the others nor tracking (the real
``run_forever`` loop), the runner lock, ``kolray alerts``, and the HTTP routes including the
server-sent event stream over a real socket.

The world: KOL A has five closed positions held two days at 3x (Diamond Hand score 1.0), KOL B
five one-minute 2x flips (score ≈ 0), KOLs C, D, E nothing. After the watermark: A opens X (and
adds to it), B, C and D open X within minutes, E opens X two hours later, and B opens Y three days
earlier (a late, old swap).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

import kolray.learn.registry  # noqa: F401 - the model stack's import cost is paid before timing anything
from kolray.alerts import (
    AlertRules,
    AlertRunner,
    AlertsBusy,
    Deliverer,
    ModelSource,
    Webhook,
    evaluate,
    start_watermark,
    tracking_hook,
)
from kolray.cli import main
from kolray.config import load_settings
from kolray.db import upgrade
from kolray.db.tables import AlertRow, Kol, SwapRow
from kolray.testing import backtest_world as hand

DAY = 86_400
T1 = 1_717_000_000
SOL = 1_000_000_000
RULES = AlertRules(
    rules=("dh", "consensus"),
    dh_min=0.4,
    dh_min_positions=5,
    consensus_kols=3,
    consensus_window_s=3600,
    max_age_s=DAY,
)
KOLS = {name: hand.key("alerts-kol", name) for name in "ABCDE"}
X, Y = hand.key("alerts-mint", "X"), hand.key("alerts-mint", "Y")


def swap(name: str, kol: str, mint: str, side: str, t: int, sol: float) -> dict[str, Any]:
    return {
        "signature": name.ljust(64, "0"),
        "slot": t * 2,
        "block_time": t,
        "wallet": KOLS[kol],
        "mint": mint,
        "side": side,
        "token_amount": 1_000_000 * 10**6,
        "token_decimals": 6,
        "sol_amount": round(sol * SOL),
        "dex": "pumpfun",
        "fee": 5_000,
        "tips": 0,
        "rent": 0,
    }


def history() -> list[dict[str, Any]]:
    rows = []
    for i in range(5):
        mint_a, mint_b = hand.key("a-hist", i), hand.key("b-hist", i)
        start = T1 - 20 * DAY + i * DAY
        rows += [
            swap(f"ha{i}b", "A", mint_a, "buy", start, 1.0),
            swap(f"ha{i}s", "A", mint_a, "sell", start + 2 * DAY, 3.0),
        ]
        rows += [
            swap(f"hb{i}b", "B", mint_b, "buy", start, 1.0),
            swap(f"hb{i}s", "B", mint_b, "sell", start + 60, 2.0),
        ]
    return rows


NEW = [
    ("a1", "A", X, "buy", T1, 2.0),  # opening: DH 1.0 → dh
    ("a2", "A", X, "buy", T1 + 60, 1.0),  # an add: no alert
    ("b1", "B", X, "buy", T1 + 120, 0.5),  # opening; 2 KOLs in the hour
    ("c1", "C", X, "buy", T1 + 300, 0.7),  # opening; 3 KOLs → consensus
    ("d1", "D", X, "buy", T1 + 400, 0.4),  # 4 KOLs, but consensus fired within the hour
    ("e1", "E", X, "buy", T1 + 2 * 3600, 0.3),  # alone in its hour
    ("b2", "B", Y, "buy", T1 - 3 * DAY, 1.0),  # opening but older than max_age behind the newest swap
]


def insert_swaps(engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(SwapRow), rows)


def make_world(engine) -> None:
    from kolray.analyzer import analyze

    with engine.begin() as conn:
        conn.execute(insert(Kol), [{"wallet": w, "name": f"kol-{k}", "links": []} for k, w in KOLS.items()])
    insert_swaps(engine, history())
    analyze(engine, full=True)


def new_swaps() -> list[dict[str, Any]]:
    return [swap(*row) for row in NEW]


def stored(engine) -> list[tuple[str, str]]:
    """(rule, signature prefix) of every stored alert, in id order."""
    with engine.connect() as conn:
        rows = conn.execute(select(AlertRow.rule, AlertRow.signature).order_by(AlertRow.id)).all()
    return [(rule, signature[:2]) for rule, signature in rows]


def url_of(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def world(db):
    make_world(db)
    start_watermark(db)  # history is behind the watermark: it raises nothing
    return db


def test_rules_fire_once_on_opening_buys(world) -> None:
    insert_swaps(world, new_swaps())
    result = evaluate(world, RULES)
    assert stored(world) == [("dh", "a1"), ("consensus", "c1")]
    assert (result.swaps, result.buys, result.opening_buys, result.too_old) == (7, 7, 5, 1)
    assert result.by_rule == {"dh": 1, "consensus": 1} and result.duplicates == 0
    with world.connect() as conn:
        payloads = dict(conn.execute(select(AlertRow.rule, AlertRow.payload)).all())
    assert payloads["dh"]["dh_score"] == pytest.approx(1.0) and payloads["dh"]["dh_positions"] == 5
    assert payloads["dh"]["kol_name"] == "kol-A" and payloads["dh"]["amount_sol"] == 2.0
    assert payloads["consensus"]["consensus_kols"] == 3 and payloads["consensus"]["wallet"] == KOLS["C"]

    # Nothing new: nothing stored. Everything again from the start: every alert is a duplicate.
    assert evaluate(world, RULES).alerts == 0
    again = evaluate(world, RULES, from_start=True)
    assert (again.alerts, again.duplicates) == (0, 2) and stored(world) == [("dh", "a1"), ("consensus", "c1")]


def test_a_lost_race_swap_arriving_late_is_still_evaluated(world) -> None:
    # Swaps committed in two cycles: the second brings C's buy, which completes the consensus.
    rows = new_swaps()
    insert_swaps(world, rows[:3])
    evaluate(world, RULES)
    assert stored(world) == [("dh", "a1")]
    insert_swaps(world, rows[3:])
    evaluate(world, RULES)
    assert stored(world) == [("dh", "a1"), ("consensus", "c1")]


# The model's P(3x)


@pytest.fixture(scope="module")
def models_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    from kolray.testing import serving_world as sample

    store = str(tmp_path_factory.mktemp("alert-models") / "store")
    sample.register_models(store, versions=1, reports=False)
    return store


def test_p3x_rule_uses_the_champion_like_the_api(tmp_path: Path, models_store: str) -> None:
    from kolray.learn import registry
    from kolray.serve.holder import ModelHolder
    from kolray.serve.schemas import TokenItem, iso
    from kolray.serve.service import KolrayService, LocalScorer

    engine = upgrade(f"sqlite:///{tmp_path / 'p3x.db'}")
    make_world(engine)
    start_watermark(engine)
    insert_swaps(engine, new_swaps())
    url = url_of(engine)
    # What Serve answers for the five opening buys.
    holders = {m: ModelHolder(m, storage_uri=models_store) for m in ("token", "kol")}
    for holder in holders.values():
        holder.configure(None)
    service = KolrayService(
        token=LocalScorer(holders["token"]),
        kol=LocalScorer(holders["kol"]),
        database_url=url,
        storage_uri=models_store,
    )
    opening = [row for row in NEW if row[0] in ("a1", "b1", "c1", "d1", "e1")]
    items = [
        TokenItem(wallet=KOLS[k], amount_sol=sol, entry_time=iso(t), mint=mint)
        for _, k, mint, _, t, sol in opening
    ]
    served = asyncio.run(service.predict_tokens(items))
    p = {row[0]: pred.p_3x for row, pred in zip(opening, served.predictions, strict=True)}
    ordered = sorted(p.values())
    threshold = (ordered[1] + ordered[2]) / 2  # three of the five at or above it
    rules = AlertRules(rules=("p3x",), p3x_threshold=threshold, max_age_s=DAY)
    evaluate(engine, rules, model=ModelSource(url, models_store))
    expected = sorted(name for name, value in p.items() if value >= threshold)
    assert sorted(sig for _, sig in stored(engine)) == expected and len(expected) == 3
    with engine.connect() as conn:
        for payload in conn.scalars(select(AlertRow.payload)):
            name = payload["signature"][:2]
            assert payload["p_3x"] == pytest.approx(p[name], abs=1e-6)
            assert payload["threshold"] == threshold and payload["model_version"] == served.model_version
    # Without a threshold setting the model's own is used (a fresh database: same buys).
    champion = registry.load_champion("token", models_store)
    other = upgrade(f"sqlite:///{tmp_path / 'p3x-own.db'}")
    make_world(other)
    start_watermark(other)
    insert_swaps(other, new_swaps())
    evaluate(other, AlertRules(rules=("p3x",), max_age_s=DAY), model=ModelSource(url_of(other), models_store))
    assert sorted(sig for _, sig in stored(other)) == sorted(
        n for n, v in p.items() if v >= champion.threshold
    )
    with other.connect() as conn:
        assert {pl["threshold"] for pl in conn.scalars(select(AlertRow.payload))} <= {champion.threshold}


def test_without_a_model_the_other_rules_still_fire(tmp_path: Path) -> None:
    engine = upgrade(f"sqlite:///{tmp_path / 'nomodel.db'}")
    make_world(engine)
    start_watermark(engine)
    insert_swaps(engine, new_swaps())
    result = evaluate(
        engine, AlertRules(max_age_s=DAY), model=ModelSource(url_of(engine), str(tmp_path / "empty"))
    )
    assert "no champion token model" in (result.p3x_unavailable or "")
    assert not result.held_back and stored(engine) == [("dh", "a1"), ("consensus", "c1")]


class FlakyModel:
    """A P(3x) source that fails with ``error`` the first ``failures`` times, then scores 0.9."""

    def __init__(self, error: Exception, failures: int = 1) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def score(self, buys: list[Any]) -> tuple[Any, float, str]:
        import numpy as np

        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return np.full(len(buys), 0.9), 0.5, "stub"


def test_a_passing_model_failure_holds_the_watermark_a_lasting_one_does_not(tmp_path: Path) -> None:
    from kolray.alerts import read_watermark

    rules = AlertRules(rules=("p3x", "dh"), max_age_s=DAY)
    for error, held in ((OSError("storage unreachable"), True), (KeyError("feature x"), False)):
        engine = upgrade(f"sqlite:///{tmp_path / f'{type(error).__name__}.db'}")
        make_world(engine)
        before = start_watermark(engine)
        insert_swaps(engine, new_swaps())
        model = FlakyModel(error)
        first = evaluate(engine, rules, model=model)
        assert first.held_back is held and "dh" in first.by_rule and "p3x" not in first.by_rule
        assert (read_watermark(engine) == before) is held
        second = evaluate(engine, rules, model=model)
        # Held: the range comes again and the p3x alerts catch up (the dh alert is not repeated).
        assert second.by_rule == ({"p3x": 5} if held else {})
        assert second.duplicates == (1 if held else 0)


# Webhook receivers


@dataclass
class Hit:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records POSTs. ``script[path]`` lists answers
    ``(status, headers, delay_s)`` for the next requests to that path; then 200 (204 for /discord)."""

    hits: list[Hit] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str], float]]] = field(default_factory=dict)
    echo: set[str] = field(default_factory=set)  # paths whose answer quotes the URL called

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path = self.path.split("?")[0]
                receiver.hits.append(Hit(path, body, dict(self.headers), time.monotonic()))
                answers = receiver.script.get(path) or []
                status, headers, delay = (
                    answers.pop(0) if answers else (204 if "discord" in path else 200, {}, 0.0)
                )
                time.sleep(delay)
                answer = b"{}"
                if path in receiver.echo:
                    answer = json.dumps({"error": f"no hook at {receiver.url(self.path)}"}).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.close()


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/dead"  # nothing listens there any more


def deliveries(engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {sig[:2]: d for sig, d in conn.execute(select(AlertRow.signature, AlertRow.deliveries))}


def alerts_with(engine, hooks: list[Webhook]) -> None:
    insert_swaps(engine, new_swaps())
    assert evaluate(engine, RULES, webhooks=hooks).alerts == 2


def test_delivered_in_each_shape_exactly_once(world, receiver: Receiver) -> None:
    hooks = [
        Webhook.parse(receiver.url("/generic")),
        Webhook.parse(receiver.url("/discord#discord")),
        Webhook.parse(receiver.url("/telegram?chat_id=-100#telegram")),
    ]
    alerts_with(world, hooks)
    deliverer = Deliverer(world, hooks, timeout_s=2, backoff_s=0.05, jitter=0)
    asyncio.run(deliverer.drain(10))
    assert deliverer.sent == 6 and deliverer.failed == 0
    generic = receiver.on("/generic")
    assert sorted(h.body["rule"] for h in generic) == ["consensus", "dh"]
    assert all(
        h.body["type"] == "kolray.alert" and h.headers["Idempotency-Key"] == h.body["dedupe_key"]
        for h in generic
    )
    assert {h.body["embeds"][0]["title"] for h in receiver.on("/discord")} == {
        "Diamond Hand buy",
        "KOL consensus",
    }
    assert all(
        h.body["chat_id"] == "-100" and h.body["parse_mode"] == "HTML" for h in receiver.on("/telegram")
    )
    states = deliveries(world)
    assert {t["state"] for d in states.values() for t in d.values()} == {"delivered"}
    assert all(t["attempts"] == 1 for d in states.values() for t in d.values())

    # Never twice: more rounds, a new delivery loop that recovers state, a re-evaluation.
    asyncio.run(deliverer.drain(1))
    fresh = Deliverer(world, hooks, timeout_s=2)
    assert fresh.recover() == 0
    asyncio.run(fresh.drain(1))
    assert evaluate(world, RULES, webhooks=hooks, from_start=True).alerts == 0
    asyncio.run(Deliverer(world, hooks).drain(1))
    assert len(receiver.hits) == 6


def test_retried_with_backoff_until_delivered(world, receiver: Receiver) -> None:
    receiver.script["/flaky"] = [(500, {}, 0.0), (503, {}, 0.0)] * 2  # each alert fails twice
    receiver.script["/limited"] = [(429, {"Retry-After": "1"}, 0.0)]
    receiver.script["/wrong"] = [(400, {}, 0.0)] * 2
    hooks = [Webhook.parse(receiver.url(p)) for p in ("/flaky", "/limited", "/wrong")]
    alerts_with(world, hooks)
    started = time.monotonic()
    deliverer = Deliverer(world, hooks, timeout_s=2, max_attempts=5, backoff_s=0.2, jitter=0)
    asyncio.run(deliverer.drain(20))
    states = deliveries(world)
    flaky = {name: d[hooks[0].id] for name, d in states.items()}
    assert all(s["state"] == "delivered" and s["attempts"] == 3 for s in flaky.values())
    # Per alert: attempts at t, t + 0.2 s, t + 0.2 + 0.4 s.
    for name in ("a1", "c1"):
        times = [h.at for h in receiver.on("/flaky") if h.body["signature"].startswith(name)]
        assert len(times) == 3
        assert times[1] - times[0] >= 0.19 and times[2] - times[1] >= 0.39
    # Retry-After: 1 s wins over the 0.2 s backoff; then delivered.
    limited = [h.at for h in receiver.on("/limited")]
    assert len(limited) == 3 and max(limited) - min(limited) >= 0.99
    assert {d[hooks[1].id]["state"] for d in states.values()} == {"delivered"}
    # A 400 will not get better: failed after one attempt, with the answer recorded.
    wrong = [d[hooks[2].id] for d in states.values()]
    assert all(
        s["state"] == "failed" and s["attempts"] == 1 and s["last_error"].startswith("HTTP 400")
        for s in wrong
    )
    assert len(receiver.on("/wrong")) == 2 and time.monotonic() - started < 15


def test_an_outcome_that_cannot_be_stored_is_not_resent(world, receiver: Receiver) -> None:
    from sqlalchemy.exc import OperationalError

    hooks = [Webhook.parse(receiver.url("/once"))]
    alerts_with(world, hooks)
    deliverer = Deliverer(world, hooks, timeout_s=2, backoff_s=0.05, jitter=0)
    real_record = deliverer.record
    failures = {"left": 2}

    def flaky_record(*args: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("UPDATE alerts", {}, Exception("database is locked"))
        return real_record(*args)

    deliverer.record = flaky_record  # type: ignore[method-assign]
    asyncio.run(deliverer.drain(5))
    # Both POSTs went out once; their outcomes were stored at the next round, not re-sent.
    assert len(receiver.on("/once")) == 2 and not deliverer.unrecorded and deliverer.sent == 2
    assert all(d[hooks[0].id]["state"] == "delivered" for d in deliveries(world).values())


def test_dead_and_slow_webhooks_block_neither_the_others_nor_tracking(
    world, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real tracker loop (``run_forever``) with the alert hook, around a fake pool of pollers
    that commits the new swaps in its second cycle."""
    from kolray.tracker import supervisor
    from kolray.tracker.supervisor import SyncSummary, TrackerOptions

    receiver.script["/slow"] = [(200, {}, 5.0)] * 10  # slower than the 1 s timeout
    dead = dead_url()
    dead_id = Webhook.parse(dead).id
    url = url_of(world)
    batches = [[], new_swaps(), [], [], []]
    cycle_times: list[float] = []

    class FakeTracker:
        def __init__(self, options: TrackerOptions) -> None:
            pass

        def __enter__(self) -> FakeTracker:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def start_market(self) -> None:  # the market stage is off in these options
            pass

        def stop_market(self) -> dict[str, Any]:
            return {}

        def sync(self, wallets: list[str], stop: threading.Event | None = None, **_: Any) -> SyncSummary:
            rows = batches.pop(0) if batches else []
            if rows:
                insert_swaps(world, rows)
            cycle_times.append(time.monotonic())
            return SyncSummary(wallets=len(wallets), swaps=len(rows))

    monkeypatch.setattr(supervisor, "Tracker", FakeTracker)
    monkeypatch.setattr(supervisor, "active_wallets", lambda _url: list(KOLS.values()))
    settings = load_settings(
        database_url=url,
        storage_uri=str(tmp_path / "store"),
        webhook_urls=[receiver.url("/good"), dead, receiver.url("/slow")],
        alert_rules="dh,consensus",
        alert_max_age_s=DAY,
        webhook_timeout_s=1.0,
        webhook_max_attempts=3,
        webhook_backoff_s=0.1,
        alert_interval_s=30,  # only the tracker's cycles wake it
    )
    hook_calls: list[float] = []
    with tracking_hook(settings) as on_cycle:
        assert on_cycle is not None

        def timed(cycle: int, summary: SyncSummary) -> None:
            begun = time.perf_counter()
            on_cycle(cycle, summary)
            hook_calls.append(time.perf_counter() - begun)

        started = time.monotonic()
        cycles = supervisor.run_forever(
            TrackerOptions(rpc_urls=["http://127.0.0.1:9"], database_url=url),
            interval_s=0.25,
            on_cycle=timed,
            max_cycles=5,
        )
        elapsed = time.monotonic() - started
        good = [h.at for h in receiver.on("/good")]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(receiver.on("/good")) < 2:
            time.sleep(0.05)
        good = [h.at for h in receiver.on("/good")]
        # Wait for the dead target to be given up (3 attempts) before the runner stops.
        while time.monotonic() < deadline and any(
            d.get("state") == "pending" for d in _states(world, dead_id)
        ):
            time.sleep(0.05)
    assert cycles == 5
    # The tracking loop kept its pace (5 cycles at 0.25 s) although deliveries hang or fail: had
    # it waited for them, the slow target alone (3 attempts × 1 s timeout) would add 3 s ...
    assert elapsed < 5 * 0.25 + 1.5, elapsed
    assert max(hook_calls) < 0.05, hook_calls
    # ... and the good webhook got both alerts soon after the cycle that brought the swaps.
    assert len(good) == 2 and max(good) - cycle_times[1] < 2.0, (good, cycle_times)
    dead = _states(world, dead_id)
    assert [d["state"] for d in dead] == ["failed", "failed"] and all(d["attempts"] == 3 for d in dead)
    assert all("Connect" in (d["last_error"] or "") for d in dead)


def _states(engine, target: str) -> list[dict[str, Any]]:
    """One target's delivery states (stored URLs are redacted: targets are found by id)."""
    return [delivery[target] for delivery in deliveries(engine).values() if target in delivery]


def test_one_runner_per_database(world, tmp_path: Path) -> None:
    settings = load_settings(database_url=url_of(world), storage_uri=str(tmp_path / "store"))
    first = AlertRunner(settings, use_model=False).start()
    try:
        with pytest.raises(AlertsBusy):
            AlertRunner(settings, use_model=False).start()
        with tracking_hook(settings) as hook:
            assert hook is None  # the tracker leaves alerts to the runner that holds the lock
    finally:
        first.stop()
    second = AlertRunner(settings, use_model=False).start()  # released
    second.stop()


def test_runner_evaluates_when_notified(world, receiver: Receiver, tmp_path: Path) -> None:
    settings = load_settings(
        database_url=url_of(world),
        storage_uri=str(tmp_path / "store"),
        webhook_urls=[receiver.url("/hook")],
        alert_rules="dh,consensus",
        alert_max_age_s=DAY,
        alert_interval_s=60,
    )
    with AlertRunner(settings, use_model=False) as runner:
        # The start-up pass first, on a database without the swaps: the alerts can then only come
        # from the pass that notify() asks for (the next timed one is 60 s away).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and runner.evaluations < 1:
            time.sleep(0.01)
        assert runner.evaluations == 1 and not receiver.hits
        insert_swaps(world, new_swaps())
        begun = time.perf_counter()
        runner.notify()
        assert time.perf_counter() - begun < 0.01
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(receiver.hits) < 2:
            time.sleep(0.05)
    assert sorted(h.body["rule"] for h in receiver.hits) == ["consensus", "dh"]
    assert runner.evaluations >= 2 and runner.errors == 0


# The command


@pytest.fixture
def cli_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver):
    from kolray.config import get_settings

    url = f"sqlite:///{data_dir / 'kolray.db'}"
    for name, value in {
        "KOLRAY_DATABASE_URL": url,
        "KOLRAY_STORAGE_URI": str(data_dir / "store"),
        "KOLRAY_WEBHOOK_URLS": receiver.url("/cli"),
        "KOLRAY_ALERT_RULES": "dh,consensus",
        "KOLRAY_ALERT_MAX_AGE_S": str(DAY),
        "KOLRAY_WEBHOOK_BACKOFF_S": "0.05",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    engine = upgrade(url)
    make_world(engine)
    insert_swaps(engine, new_swaps())
    return engine


def test_cli_run_once_list_and_test_webhooks(
    cli_env, receiver: Receiver, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kolray.config import get_settings

    # First sight of the database: the watermark starts at its end, so history raises nothing.
    assert main(["alerts", "run", "--once", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["alerts"] == 0
    # --from-start evaluates everything: the two alerts, delivered.
    assert main(["alerts", "run", "--once", "--from-start", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["alerts"], body["delivered"], body["failed"], body["by_rule"]) == (
        2,
        2,
        0,
        {"consensus": 1, "dh": 1},
    )
    assert len(receiver.on("/cli")) == 2
    assert main(["alerts", "run", "--once", "--from-start", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["alerts"] == 0 and len(receiver.on("/cli")) == 2

    assert main(["alerts", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [a["rule"] for a in listed] == ["consensus", "dh"]
    (delivery,) = listed[0]["deliveries"].values()
    # The webhook URL is a secret on loopback too: stored and listed as scheme, host and port.
    assert delivery["state"] == "delivered" and delivery["url"] == receiver.url("/***")
    # The table, as piped: every alert's wallet and mint whole (grep finds them).
    assert main(["alerts", "list"]) == 0
    table = capsys.readouterr().out
    for alert in listed:
        assert alert["wallet"] in table and alert["mint"] in table
    assert main(["alerts", "list", "--rule", "moon"]) == 2

    assert main(["alerts", "test-webhooks"]) == 0
    assert "ok" in capsys.readouterr().out and receiver.on("/cli")[-1].body["title"] == "kolray test alert"
    monkeypatch.setenv("KOLRAY_WEBHOOK_URLS", dead_url())
    get_settings.cache_clear()
    assert main(["alerts", "test-webhooks"]) == 1
    assert "/***: ConnectError" in capsys.readouterr().out


def test_webhook_tokens_never_reach_output_logs_or_stored_state(
    cli_env, receiver: Receiver, capsys, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """Two loopback webhooks whose tokens are their paths (one answers 500 with the URL it was
    called at, one is dead): every line printed, logged or stored names them redacted, and their
    ids tell them apart."""
    from kolray.config import get_settings

    token, short = "hook-token-0123456789abcdef", "Tk9"
    receiver.script[f"/{token}"] = [(500, {}, 0.0)] * 20
    receiver.echo.add(f"/{token}")
    urls = [receiver.url(f"/{token}"), dead_url() + f"/{short}"]
    monkeypatch.setenv("KOLRAY_WEBHOOK_URLS", ",".join(urls))
    monkeypatch.setenv("KOLRAY_WEBHOOK_MAX_ATTEMPTS", "2")
    get_settings.cache_clear()
    hooks = [Webhook.parse(url) for url in urls]

    with caplog.at_level("INFO"):
        assert main(["alerts", "test-webhooks"]) == 1
        tested = capsys.readouterr()
        assert main(["alerts", "run", "--once", "--from-start"]) == 0
        ran = capsys.readouterr()
        assert main(["alerts", "list", "--json"]) == 0
        listed = capsys.readouterr()
    with cli_env.connect() as conn:
        stored = json.dumps([d for (d,) in conn.execute(select(AlertRow.deliveries))])

    everything = "\n".join(
        [tested.out, tested.err, ran.out, ran.err, listed.out, listed.err, caplog.text, stored]
    )
    assert token not in everything and f"/{short}" not in everything
    lines = tested.out.splitlines()
    assert lines == [
        f'{hooks[0].id} {receiver.url("/***")}: HTTP 500: {{"error": "no hook at {receiver.url("/***")}"}}',
        f"{hooks[1].id} {hooks[1].redacted}: ConnectError: All connection attempts failed",
    ]
    assert hooks[0].id != hooks[1].id and hooks[1].redacted.endswith("/***")
    failed = [d for alert in json.loads(listed.out) for d in alert["deliveries"].values()]
    assert len(failed) == 4 and {d["state"] for d in failed} == {"failed"}
    assert {d["url"] for d in failed} == {hooks[0].redacted, hooks[1].redacted}


# HTTP: the routes and the event stream over a real socket


@pytest.fixture
def served(world, tmp_path: Path) -> Iterator[tuple[str, Any, str]]:
    import uvicorn

    from kolray.serve.api import build_app
    from kolray.serve.holder import ModelHolder
    from kolray.serve.service import KolrayService, LocalScorer

    store = str(tmp_path / "store")
    service = KolrayService(
        token=LocalScorer(ModelHolder("token", storage_uri=store)),
        kol=LocalScorer(ModelHolder("kol", storage_uri=store)),
        database_url=url_of(world),
        storage_uri=store,
    )
    server = uvicorn.Server(
        uvicorn.Config(build_app(service, ui=False), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", world, store
    server.should_exit = True
    thread.join(10)


class EventReader:
    """Reads server-sent events on its own event loop (a thread) into a queue of (id, event,
    data); the first item is ("status", code, content type). ``close()`` drops the connection, as
    closing a browser tab does."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: queue.Queue = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.task = self.loop.create_task(self._read(url, headers or {}))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.task)
        self.loop.close()

    async def _read(self, url: str, headers: dict[str, str]) -> None:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            self.events.put(("status", response.status_code, response.headers.get("content-type")))
            event: dict[str, str] = {}
            async for line in response.aiter_lines():
                if not line:
                    if "data" in event:
                        self.events.put((int(event["id"]), event.get("event"), json.loads(event["data"])))
                    event = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    event[name] = value.lstrip(" ")

    def next(self, timeout: float = 10) -> Any:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(5)


def test_event_stream_sends_new_alerts_and_resumes(served) -> None:
    base, engine, _ = served
    rows = new_swaps()
    insert_swaps(engine, rows[:3])
    evaluate(engine, RULES)  # the dh alert exists before anyone listens
    reader = EventReader(f"{base}/v1/alerts/stream?backlog=1")
    status = reader.next()
    assert status[0] == "status" and status[1] == 200 and status[2].startswith("text/event-stream")
    first_id, kind, data = reader.next()
    assert kind == "alert" and data["rule"] == "dh" and data["id"] == first_id
    # A new alert reaches the open stream within the poll period.
    insert_swaps(engine, rows[3:])
    raised = time.monotonic()
    evaluate(engine, RULES)
    second_id, kind, data = reader.next()
    assert data["rule"] == "consensus" and second_id > first_id and time.monotonic() - raised < 5
    reader.close()
    # A reconnecting client resumes after the last id it saw; a new one without a backlog waits.
    resumed = EventReader(f"{base}/v1/alerts/stream", {"Last-Event-ID": str(first_id)})
    fresh = EventReader(f"{base}/v1/alerts/stream")
    assert resumed.next()[0] == "status" and resumed.next()[0] == second_id
    assert fresh.next()[0] == "status"
    with pytest.raises(queue.Empty):
        fresh.next(timeout=2.5)
    resumed.close()
    fresh.close()

    listed = httpx.get(f"{base}/v1/alerts?limit=1").json()
    assert listed["last_id"] == second_id and listed["alerts"][0]["rule"] == "consensus"
    assert httpx.get(f"{base}/v1/alerts?rule=moon").status_code == 422
    assert httpx.get(f"{base}/v1/alerts/stream?backlog=-1").status_code == 422


def test_backtest_routes(served, tmp_path: Path) -> None:
    from kolray.backtest import BacktestOptions, StrategySpec, run_backtest, save_report

    base, _, store = served
    assert httpx.get(f"{base}/v1/backtests").json() == {"backtests": []}
    assert httpx.get(f"{base}/v1/backtests/latest").status_code == 404
    engine = upgrade(f"sqlite:///{tmp_path / 'hand.db'}")
    world = hand.populate(engine)
    version = hand.write_token_dataset(engine, world, store)
    result = run_backtest(
        BacktestOptions(
            dataset_version=version,
            strategies=[StrategySpec.parse("copy_all"), StrategySpec.parse("oracle:0.5")],
        ),
        database_url=url_of(engine),
        storage_uri=store,
    )
    save_report(result.report, result.png, result.trades, store)
    listed = httpx.get(f"{base}/v1/backtests").json()["backtests"]
    assert [b["id"] for b in listed] == [result.report.id]
    # The hand world has no market tape: the figures are on the KOLs' trades, and say so.
    assert (listed[0]["tape"], listed[0]["other_tapes"]) == ("trades", {})
    assert listed[0]["strategies"]["copy_all"] == pytest.approx(
        result.report.strategy("copy_all").metrics.total_pnl_sol
    )
    latest = httpx.get(f"{base}/v1/backtests/latest").json()
    assert latest["id"] == result.report.id and [s["name"] for s in latest["strategies"]] == [
        "copy_all",
        "oracle:0.5",
    ]
    png = httpx.get(f"{base}/v1/backtests/{result.report.id}/equity.png")
    assert (
        png.status_code == 200
        and png.headers["content-type"] == "image/png"
        and png.content[:4] == b"\x89PNG"
    )
    assert httpx.get(f"{base}/v1/backtests/20990101T000000Z-00000000").status_code == 404
    assert httpx.get(f"{base}/v1/backtests/..%2F..%2Fetc").status_code == 404
