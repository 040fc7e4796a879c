"""The RPC client against a real HTTP server on 127.0.0.1 that misbehaves on cue.

The server speaks enough Solana JSON-RPC (``getTransaction``, ``getSignaturesForAddress``, batches)
and follows a script, one step per HTTP request: answer, answer 429 with ``Retry-After``, answer
5xx, stall past the client's timeout, drop the connection, or fail some calls of a batch. It
records every request, so the tests can say exactly what was sent and how often.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kolray.chain.rpc import RpcClient, RpcError, RpcResponseError, SignatureInfo, _retry_after, endpoint_key

SECRET = "sk_live_0123456789abcdefSECRET"


def sig(n: int) -> str:
    """A signature-looking string per number (the fake server does not check them)."""
    return f"sig{n:06d}".ljust(88, "x")


@dataclass
class Step:
    """What the server does with one HTTP request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # stall before answering
    drop: bool = False  # close the connection without an answer
    errors: dict[str, int] = field(default_factory=dict)  # signature → JSON-RPC error code for its call
    omit: set[str] = field(default_factory=set)  # signatures whose calls get no answer at all
    body: bytes | None = None  # a raw body instead of the answers


class FakeRpc:
    def __init__(self) -> None:
        self.transactions: dict[str, dict[str, Any] | None] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}  # address → signature entries, newest first
        self.script: list[Step] = []
        self.requests: list[list[dict[str, Any]]] = []  # every HTTP request's calls
        self.lock = threading.Lock()

    def next_step(self) -> Step:
        with self.lock:
            return self.script.pop(0) if self.script else Step()

    def answer(self, call: dict[str, Any], step: Step) -> dict[str, Any] | None:
        method, params = call["method"], call["params"]
        if method == "getTransaction":
            signature = params[0]
            if signature in step.omit:
                return None
            if signature in step.errors:
                code = step.errors[signature]
                return {
                    "jsonrpc": "2.0",
                    "id": call["id"],
                    "error": {"code": code, "message": f"error {code}"},
                }
            return {"jsonrpc": "2.0", "id": call["id"], "result": self.transactions.get(signature)}
        if method == "getSignaturesForAddress":
            address, options = params
            entries = self.history.get(address, [])
            names = [e["signature"] for e in entries]
            start = names.index(options["before"]) + 1 if "before" in options else 0
            stop = (
                names.index(options["until"])
                if "until" in options and options["until"] in names
                else len(names)
            )
            page = entries[start:stop][: options.get("limit", 1000)]
            return {"jsonrpc": "2.0", "id": call["id"], "result": page}
        return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32601, "message": "Method not found"}}


@pytest.fixture
def servers() -> Iterator[Any]:
    """Start fake RPC servers on loopback: ``url, fake = servers()``; all stopped afterwards."""
    running: list[ThreadingHTTPServer] = []

    def start(path: str = f"/v2/{SECRET}") -> tuple[str, FakeRpc]:
        fake = FakeRpc()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                payload = json.loads(self.rfile.read(length))
                calls = payload if isinstance(payload, list) else [payload]
                with fake.lock:
                    fake.requests.append(calls)
                step = fake.next_step()
                if step.delay_s:
                    time.sleep(step.delay_s)
                if step.drop:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if step.status != 200:
                    body = b'{"error": "nope"}'
                else:
                    answers = [a for a in (fake.answer(c, step) for c in calls) if a is not None]
                    body = (
                        step.body or json.dumps(answers if isinstance(payload, list) else answers[0]).encode()
                    )
                self.send_response(step.status)
                for name, value in step.headers.items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        running.append(server)
        return f"http://127.0.0.1:{server.server_port}{path}?api-key={SECRET}", fake

    yield start
    for server in running:
        server.shutdown()
        server.server_close()


def fast_client(urls: list[str], **options: Any) -> RpcClient:
    """A client with short backoff so retry tests take milliseconds, not seconds."""
    defaults: dict[str, Any] = {
        "timeout_s": 2.0,
        "max_retries": 4,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
    }
    defaults.update(options)
    return RpcClient(urls, **defaults)


def tx(n: int) -> dict[str, Any]:
    return {"slot": n, "blockTime": 1_700_000_000 + n, "meta": {"err": None}, "transaction": {"n": n}}


async def test_transactions_are_fetched_in_batches_in_order(servers: Any) -> None:
    url, fake = servers()
    fake.transactions = {sig(i): tx(i) for i in range(250)}
    wanted = [sig(i) for i in range(250)]
    async with fast_client([url], batch_size=100) as rpc:
        got = await rpc.get_transactions(wanted)
    assert got == [tx(i) for i in range(250)]
    assert sorted(len(r) for r in fake.requests) == [50, 100, 100]
    call = fake.requests[0][0]
    assert call["method"] == "getTransaction"
    assert call["params"][1] == {
        "encoding": "json",
        "maxSupportedTransactionVersion": 0,
        "commitment": "confirmed",
    }
    assert rpc.stats()["requests"] == 3 and rpc.stats()["calls"] == 250


async def test_a_signature_asked_for_twice_is_fetched_once(servers: Any) -> None:
    url, fake = servers()
    fake.transactions = {sig(1): tx(1), sig(2): tx(2)}
    async with fast_client([url]) as rpc:
        got = await rpc.get_transactions([sig(1), sig(2), sig(1)])
    assert got == [tx(1), tx(2), tx(1)]
    assert [c["params"][0] for c in fake.requests[0]] == [sig(1), sig(2)]


async def test_a_null_result_comes_back_as_none_in_its_place(servers: Any) -> None:
    url, fake = servers()
    fake.transactions = {sig(1): tx(1), sig(3): tx(3)}  # sig(2) not available yet
    async with fast_client([url]) as rpc:
        got = await rpc.get_transactions([sig(1), sig(2), sig(3)])
        assert got == [tx(1), None, tx(3)]
        assert await rpc.get_transaction(sig(2)) is None
        assert rpc.stats()["null_results"] == 2
        assert rpc.stats()["retries"] == 0  # "not yet" is an answer, not an error to retry


async def test_429_waits_for_retry_after_and_tells_the_limiter(servers: Any) -> None:
    url, fake = servers()
    fake.transactions = {sig(1): tx(1)}
    fake.script = [Step(status=429, headers={"Retry-After": "1"})]

    class Limiter:
        def __init__(self) -> None:
            self.acquired: list[str] = []
            self.paused: list[tuple[str, float]] = []

        async def acquire(self, endpoint: str) -> None:
            self.acquired.append(endpoint)

        async def pause(self, endpoint: str, seconds: float) -> None:
            self.paused.append((endpoint, seconds))

    limiter = Limiter()
    async with fast_client([url], limiter=limiter) as rpc:
        started = time.monotonic()
        assert await rpc.get_transaction(sig(1)) == tx(1)
        waited = time.monotonic() - started
    assert waited >= 1.0  # not before the server said
    assert len(fake.requests) == 2
    # The limiter was asked before every HTTP request, by key, never by URL.
    assert limiter.acquired == [endpoint_key(url)] * 2
    assert limiter.paused == [(endpoint_key(url), 1.0)]
    assert rpc.stats()["errors_http_429"] == 1 and rpc.stats()["retries"] == 1


async def test_a_limiter_that_counts_calls_is_told_the_batch_size(servers: Any) -> None:
    url, fake = servers()
    fake.transactions = {sig(i): tx(i) for i in range(7)}

    class CountingLimiter:
        def __init__(self) -> None:
            self.calls: list[int] = []

        async def acquire(self, endpoint: str, calls: int = 1) -> None:
            self.calls.append(calls)

    limiter = CountingLimiter()
    async with fast_client([url], batch_size=5, max_concurrency=1, limiter=limiter) as rpc:
        await rpc.get_transactions([sig(i) for i in range(7)])
        await rpc.get_transaction(sig(0))
    assert limiter.calls == [5, 2, 1]


async def test_server_errors_are_retried_with_backoff(servers: Any) -> None:
    url, fake = servers()
    fake.transactions = {sig(1): tx(1)}
    fake.script = [Step(status=503), Step(status=502), Step(status=500)]
    async with fast_client([url]) as rpc:
        assert await rpc.get_transaction(sig(1)) == tx(1)
    assert len(fake.requests) == 4
    assert rpc.stats()["errors_http_5xx"] == 3 and rpc.stats()["retries"] == 3


async def test_a_stalled_answer_times_out_and_is_retried(servers: Any) -> None:
    url, fake = servers()
    fake.transactions = {sig(1): tx(1)}
    fake.script = [Step(delay_s=1.5)]
    async with fast_client([url], timeout_s=0.3) as rpc:
        assert await rpc.get_transaction(sig(1)) == tx(1)
        assert rpc.stats()["errors_timeout"] == 1


async def test_a_dropped_connection_is_retried(servers: Any) -> None:
    url, fake = servers()
    fake.transactions = {sig(1): tx(1)}
    fake.script = [Step(drop=True), Step(body=b"<html>bad gateway</html>")]
    async with fast_client([url]) as rpc:
        assert await rpc.get_transaction(sig(1)) == tx(1)
        stats = rpc.stats()
    assert stats["errors_connect"] == 1 and stats["errors_decode"] == 1 and len(fake.requests) == 3


async def test_failover_to_the_next_endpoint_and_stay_there_while_the_first_rests(servers: Any) -> None:
    first, broken = servers()
    second, healthy = servers()
    broken.script = [Step(status=503)] * 10
    healthy.transactions = {sig(1): tx(1), sig(2): tx(2)}
    async with fast_client([first, second], backoff_base_s=5.0, backoff_max_s=10.0) as rpc:
        assert await rpc.get_transaction(sig(1)) == tx(1)
        assert await rpc.get_transaction(sig(2)) == tx(2)
        assert rpc.stats()["failovers"] == 1
        per_endpoint = list(rpc.endpoint_stats().values())
    # The failing endpoint was tried once; while it rests, the next call went straight to the other.
    assert len(broken.requests) == 1 and len(healthy.requests) == 2
    assert per_endpoint == [{"requests": 1, "errors": 1}, {"requests": 2, "errors": 0}]


async def test_failover_when_an_endpoint_is_not_there_at_all(servers: Any) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    url, fake = servers()
    fake.transactions = {sig(1): tx(1)}
    async with fast_client([dead, url]) as rpc:
        assert await rpc.get_transaction(sig(1)) == tx(1)
        assert rpc.stats()["errors_connect"] == 1 and rpc.stats()["failovers"] == 1


async def test_only_the_failed_calls_of_a_batch_are_sent_again(servers: Any) -> None:
    url, fake = servers()
    fake.transactions = {sig(i): tx(i) for i in range(5)}
    # The node is behind for two calls and forgets to answer a third; the others succeed.
    fake.script = [Step(errors={sig(1): -32005, sig(3): -32014}, omit={sig(4)})]
    async with fast_client([url]) as rpc:
        got = await rpc.get_transactions([sig(i) for i in range(5)])
    assert got == [tx(i) for i in range(5)]
    first, second = ([c["params"][0] for c in request] for request in fake.requests)
    assert first == [sig(i) for i in range(5)]
    assert second == [sig(1), sig(3), sig(4)]  # nothing that was answered is fetched again


async def test_an_error_that_retrying_cannot_fix_is_raised_at_once(servers: Any) -> None:
    url, fake = servers()
    fake.script = [Step(errors={sig(1): -32602})]
    async with fast_client([url]) as rpc:
        with pytest.raises(RpcResponseError, match="-32602") as raised:
            await rpc.get_transactions([sig(1), sig(2)])
    assert raised.value.code == -32602 and len(fake.requests) == 1


async def test_giving_up_names_the_problem_and_never_the_key(
    servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url, fake = servers()
    fake.script = [Step(status=503)] * 10
    caplog.set_level(logging.DEBUG, logger="kolray.chain.rpc")
    caplog.set_level(logging.INFO, logger="httpx2")  # it logs every request's URL, key included
    async with fast_client([url], max_retries=2) as rpc:
        with pytest.raises(RpcError) as raised:
            await rpc.get_transaction(sig(1))
        assert SECRET not in "".join(rpc.endpoints)
    error = raised.value
    assert error.kind == "exhausted" and "HTTP 503" in str(error) and "after 2 retries" in str(error)
    assert len(fake.requests) == 3
    assert SECRET not in str(error) and SECRET not in repr(error.endpoint)
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "rpc endpoint failed" in logged and "HTTP Request" in logged and SECRET not in logged


async def test_refusals_fail_over_then_fail_fast(servers: Any) -> None:
    first, refusing = servers()
    second, also_refusing = servers()
    refusing.script = [Step(status=401)]
    also_refusing.script = [Step(status=403)]
    async with fast_client([first, second], max_retries=6) as rpc:
        with pytest.raises(RpcError, match="refused") as raised:
            await rpc.get_transaction(sig(1))
    assert raised.value.kind == "http_4xx"
    assert len(refusing.requests) == len(also_refusing.requests) == 1  # no retry storm on a 401
    assert SECRET not in str(raised.value)


def history(n: int, newest_time: int = 1_700_100_000, step_s: int = 60) -> list[dict[str, Any]]:
    return [
        {
            "signature": sig(i),
            "slot": 10_000 - i,
            "blockTime": newest_time - i * step_s,
            "err": None,
            "memo": None,
        }
        for i in range(n)
    ]


async def test_signatures_since_the_cursor_page_back_1000_at_a_time(servers: Any) -> None:
    url, fake = servers()
    fake.history["W"] = history(2_600)
    cursor = sig(2_300)
    async with fast_client([url]) as rpc:
        got = await rpc.signatures_since("W", cursor)
    assert [s.signature for s in got] == [sig(i) for i in range(2_300)]  # newest first, cursor excluded
    assert isinstance(got[0], SignatureInfo) and got[0].block_time == 1_700_100_000 and not got[0].failed
    pages = [r[0]["params"][1] for r in fake.requests]
    assert [p.get("before") for p in pages] == [None, sig(999), sig(1_999)]
    assert all(p["until"] == cursor and p["limit"] == 1000 for p in pages)


async def test_signatures_since_nothing_new_is_one_cheap_request(servers: Any) -> None:
    url, fake = servers()
    fake.history["W"] = history(10)
    async with fast_client([url]) as rpc:
        assert await rpc.signatures_since("W", sig(0)) == []
    assert len(fake.requests) == 1


async def test_backfill_stops_at_the_count_or_the_age(servers: Any) -> None:
    url, fake = servers()
    fake.history["W"] = history(3_000, newest_time=1_700_100_000, step_s=60)
    async with fast_client([url]) as rpc:
        by_count = await rpc.backfill_signatures("W", max_count=1_500)
        assert [s.signature for s in by_count] == [sig(i) for i in range(1_500)]
        assert [r[0]["params"][1]["limit"] for r in fake.requests] == [1000, 500]
        # One hour back from the newest: 61 signatures (0..60 minutes old).
        by_age = await rpc.backfill_signatures("W", max_age_s=3_600, now=1_700_100_000)
        assert [s.signature for s in by_age] == [sig(i) for i in range(61)]
        with pytest.raises(ValueError, match="max_age_s or max_count"):
            await rpc.backfill_signatures("W")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert _retry_after("soon") is None and _retry_after(None) is None


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one RPC URL"):
        RpcClient([])
    with pytest.raises(ValueError, match="batch_size"):
        RpcClient(["http://127.0.0.1:1"], batch_size=0)
