"""The app on real Ray Serve (one deployment for the module, declarative like `kolray serve`):
HTTP through Serve's proxy, and hot reload under load — `kolray promote` while clients keep
asking, zero failed requests, answers switch version, replicas are not restarted."""

from __future__ import annotations

import asyncio
import collections
import itertools
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kolray.cli import main
from kolray.config import get_settings
from kolray.db import upgrade
from kolray.learn import registry
from kolray.serve import deploy, reload
from kolray.serve.client import notify_serve
from kolray.serve.schemas import iso
from kolray.testing import serving_world as sample


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    url: str
    port: int
    env: dict[str, str]
    world: sample.SampleWorld
    models: sample.SampleModels


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from ray import serve

    root = tmp_path_factory.mktemp("serve-ray")
    env = {
        "KOLRAY_DATA_DIR": str(root),
        "KOLRAY_DATABASE_URL": f"sqlite:///{root / 'kolray.db'}",
        "KOLRAY_STORAGE_URI": str(root / "store"),
    }
    world = sample.populate(upgrade(env["KOLRAY_DATABASE_URL"]), n_kols=8, seed=5)
    models = sample.register_models(env["KOLRAY_STORAGE_URI"], versions=2, reports=False)
    port = free_port()
    deploy.deploy(sample.app_config(env, port, ui=False, registry_poll_s=0.5))
    url = f"http://127.0.0.1:{port}"
    deploy.wait_until_serving(url)
    yield Served(url, port, env, world, models)
    serve.shutdown()


@pytest.fixture
def cli_env(served: Served, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's settings point at the served app (kolray promote reads them)."""
    for name, value in {**served.env, "KOLRAY_SERVE_PORT": str(served.port)}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    registry.clear_cache()


def replicas() -> dict[str, set[str]]:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeInstanceDetails

    details = ServeInstanceDetails(**_get_global_client().get_serve_details())
    app = details.applications["kolray"]
    return {name: {r.replica_id for r in d.replicas} for name, d in app.deployments.items()}


def served_version(url: str) -> str | None:
    return httpx.get(f"{url}/healthz", timeout=10).json()["models"]["token"]["version"]


def test_routes_through_the_proxy(served: Served) -> None:
    health = httpx.get(f"{served.url}/healthz", timeout=10).json()
    assert health["status"] == "ok"
    assert health["models"]["token"]["version"] == registry.champion_version(
        "token", served.env["KOLRAY_STORAGE_URI"]
    )
    body = {
        "items": [{"wallet": served.world.wallets[0], "amount_sol": 2.0, "entry_time": iso(served.world.end)}]
    }
    response = httpx.post(f"{served.url}/v1/predict/token", json=body, timeout=30)
    assert response.status_code == 200 and 0 <= response.json()["predictions"][0]["p_3x"] <= 1
    bad = httpx.post(f"{served.url}/v1/predict/token", json={"items": [{"wallet": "x"}]}, timeout=30)
    assert bad.status_code == 422 and "wallet" in bad.json()["message"]
    kol = httpx.get(f"{served.url}/v1/kols/{served.world.wallets[0]}", timeout=30).json()
    assert kol["forecast"]["model_version"] == served.models.kol[0]
    assert httpx.get(f"{served.url}/docs", timeout=10).status_code == 200


async def _load(
    url: str, world: sample.SampleWorld, stop: asyncio.Event, workers: int = 8
) -> list[list[tuple[int, str | None, float]]]:
    """Clients that keep asking until ``stop``: per worker, (status, version, time) of each answer."""
    seen: list[list[tuple[int, str | None, float]]] = [[] for _ in range(workers)]

    async def worker(k: int, client: httpx.AsyncClient) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            body = {
                "items": [
                    {
                        "wallet": world.wallets[(k + i) % len(world.wallets)],
                        "amount_sol": 0.5 + (i % 50) / 10,
                        "entry_time": iso(
                            world.start + 86_400 + (k * 7919 + i * 613) % (world.end - world.start - 86_400)
                        ),
                    }
                ]
            }
            try:
                response = await client.post(f"{url}/v1/predict/token", json=body)
                version = response.json().get("model_version") if response.status_code == 200 else None
                seen[k].append((response.status_code, version, time.monotonic()))
            except httpx.HTTPError as error:  # a dropped connection is a failed request too
                seen[k].append((-1, repr(error), time.monotonic()))

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(worker(k, client) for k in range(workers)))
    return seen


async def test_promote_under_load_switches_versions_without_errors_or_restarts(
    served: Served, cli_env: None
) -> None:
    old, new = served.models.token
    store = served.env["KOLRAY_STORAGE_URI"]
    assert registry.champion_version("token", store) == old and served_version(served.url) == old
    before = replicas()
    stop = asyncio.Event()
    load = asyncio.ensure_future(_load(served.url, served.world, stop))
    await asyncio.sleep(1.5)
    started = time.monotonic()
    code = await asyncio.to_thread(main, ["promote", "token", new])
    promoted = time.monotonic()
    await asyncio.sleep(1.5)
    stop.set()
    seen = await load

    assert code == 0
    answers = [a for worker in seen for a in worker]
    failures = [a for a in answers if a[0] != 200]
    assert not failures, failures[:5]
    assert len(answers) > 50
    # Before the promotion every answer came from the old version; once `kolray promote` returned
    # (it waits for the replicas), every answer comes from the new one; each client saw one switch.
    assert {v for _, v, t in answers if t < started} == {old}
    assert {v for _, v, t in answers if t > promoted + 0.05} == {new}
    for worker in seen:
        versions = [v for _, v, _ in worker]
        switch = versions.index(new)
        assert set(versions[:switch]) <= {old} and set(versions[switch:]) == {new}
    assert replicas() == before  # reconfigured in place, not restarted
    assert reload.deployed_versions("kolray")["token"] == new

    # Rolling back is the same path; the old version is archived now, which needs saying.
    assert await asyncio.to_thread(main, ["promote", "token", old]) == 2
    assert served_version(served.url) == new
    assert await asyncio.to_thread(main, ["promote", "token", old, "--allow-archived"]) == 0
    assert served_version(served.url) == old
    assert replicas() == before


def test_a_champion_changed_behind_serves_back_is_picked_up(served: Served) -> None:
    """Another writer (the continuous trainer) promotes without telling Serve: the API's registry
    watcher applies it within registry_poll_s."""
    store = served.env["KOLRAY_STORAGE_URI"]
    current = registry.champion_version("token", store)
    other = next(v for v in served.models.token if v != current)
    before = replicas()
    registry.promote("token", other, reason="test: behind Serve's back", storage_uri=store)
    deadline = time.monotonic() + 30
    while served_version(served.url) != other:
        assert time.monotonic() < deadline, "the registry watcher did not apply the new champion"
        time.sleep(0.2)
    assert replicas() == before
    registry.promote("token", current, reason="test: restore", storage_uri=store)
    deadline = time.monotonic() + 30
    while served_version(served.url) != current:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_admin_reload_refuses_unknown_versions_and_keeps_serving(served: Served) -> None:
    current = served_version(served.url)
    response = httpx.post(
        f"{served.url}/v1/admin/reload", json={"token": "20000101T000000Z-00000000"}, timeout=60
    )
    assert response.status_code == 404 and "20000101T000000Z-00000000" in response.json()["detail"]
    assert served_version(served.url) == current
    same = httpx.post(f"{served.url}/v1/admin/reload", json={}, timeout=60).json()
    assert same["changed"] is False and same["applied"]["token"] == current
    assert "user_config" in same["how"]


def test_promote_without_a_running_app_says_so(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("KOLRAY_SERVE_PORT", str(free_port()))
    get_settings.cache_clear()
    reached, message = notify_serve()
    assert not reached and "not running" in message


# Faults: replicas killed the way a crash kills them (SIGKILL), under a bounded load


@dataclass
class Answer:
    status: int  # -1: the connection failed
    version: str | None
    sent: float
    done: float


@dataclass
class Outage:
    """What clients saw around a replica kill."""

    answers: list[Answer]
    killed: float
    replaced: float  # the replacement replica reported RUNNING

    @property
    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]

    @property
    def failures_after_replacement(self) -> list[Answer]:
        return [a for a in self.failures if a.sent > self.replaced]

    @property
    def gap_s(self) -> float:
        """The longest time after the kill without a successful answer, to the end of the load
        (requests sent meanwhile may wait in Serve's queue for the replacement rather than fail)."""
        end = max(a.done for a in self.answers)
        done = sorted(a.done for a in self.answers if a.status == 200 and a.done > self.killed)
        return max(b - a for a, b in itertools.pairwise([self.killed, *done, end]))

    def report(self, what: str) -> str:
        slowest = max(a.done - a.sent for a in self.answers)
        return (
            f"{what}: {len(self.answers)} requests, {len(self.failures)} failed "
            f"{dict(collections.Counter(a.status for a in self.failures)) or ''} "
            f"({len(self.failures_after_replacement)} after the replacement was up); replacement running "
            f"{self.replaced - self.killed:.1f} s after the kill; no successful answer for {self.gap_s:.1f} s; "
            f"slowest request {slowest:.1f} s"
        )


def replica_pids(deployment: str) -> dict[str, int]:
    """Running replicas of a deployment: id → pid."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeInstanceDetails

    details = ServeInstanceDetails(**_get_global_client().get_serve_details())
    found = details.applications["kolray"].deployments[deployment].replicas
    return {r.replica_id: r.pid for r in found if r.state == "RUNNING" and r.pid}


def kolray_answer(response: httpx.Response, path: str) -> tuple[int, str | None]:
    """(status, model version) of an answer; a KOL page without its forecast is a failure too (the
    page itself still answers 200 when the KOL model is down)."""
    if response.status_code != 200:
        return response.status_code, None
    body = response.json()
    if path.startswith("/v1/kols/"):
        forecast = body.get("forecast")
        return (200, forecast["model_version"]) if forecast else (503, None)
    return 200, body.get("model_version")


async def kill_under_load(
    served: Served, deployment: str, path: str = "/v1/predict/token", after_s: float = 2.0, workers: int = 4
) -> Outage:
    """Clients keep asking ``path`` on 127.0.0.1; one replica of ``deployment`` is SIGKILLed; the
    load goes on until the replacement runs and then ``after_s`` longer (at most 90 s in all)."""
    import os
    import signal

    # A replica being reconfigured (a reload just refused and put back) is UPDATING, not RUNNING.
    waited = time.monotonic() + 60
    while not (before := replica_pids(deployment)) and time.monotonic() < waited:
        await asyncio.sleep(0.2)
    assert before, f"no running {deployment} replica after 60 s"
    stop = asyncio.Event()
    answers: list[Answer] = []
    world = served.world

    async def client_loop(k: int, client: httpx.AsyncClient) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            wallet = world.wallets[(k + i) % len(world.wallets)]
            sent = time.monotonic()
            try:
                if path.startswith("/v1/kols/"):
                    response = await client.get(f"{served.url}/v1/kols/{wallet}", params={"limit": 5})
                else:
                    when = iso(
                        world.start + 86_400 + (k * 7919 + i * 613) % (world.end - world.start - 86_400)
                    )
                    body = {
                        "items": [{"wallet": wallet, "amount_sol": 0.5 + (i % 50) / 10, "entry_time": when}]
                    }
                    response = await client.post(f"{served.url}{path}", json=body)
                status, version = kolray_answer(response, path)
            except httpx.HTTPError:
                status, version = -1, None
            answers.append(Answer(status, version, sent, time.monotonic()))
            if status != 200:
                await asyncio.sleep(0.05)  # a failing client does not spin

    async with httpx.AsyncClient(timeout=20) as client:
        load = asyncio.gather(*(client_loop(k, client) for k in range(workers)))
        await asyncio.sleep(1.0)
        victim, pid = next(iter(before.items()))
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        deadline = killed + 90
        while True:
            running = await asyncio.to_thread(replica_pids, deployment)
            if any(r != victim for r in running):
                replaced = time.monotonic()
                break
            if time.monotonic() > deadline:
                stop.set()
                await load
                raise AssertionError(f"no replacement {deployment} replica 90 s after the kill")
            await asyncio.sleep(0.2)
        await asyncio.sleep(after_s)
        stop.set()
        await load
    return Outage(answers, killed, replaced)


@dataclass
class Damaged:
    """A registered token version, never loaded by a replica, whose weights are damaged."""

    version: str
    weights: Path
    original: bytes

    def repair(self) -> None:
        self.weights.write_bytes(self.original)


@pytest.fixture
def bad_token_version(served: Served) -> Iterator[Damaged]:
    store = served.env["KOLRAY_STORAGE_URI"]
    (version,) = sample.register_models(store, versions=1, promote=False, seed=11, reports=False).token
    weights = Path(store) / "models" / "token" / version / "model.safetensors"
    damaged = Damaged(version, weights, weights.read_bytes())
    weights.write_bytes(b"\0" * len(damaged.original))
    yield damaged
    damaged.repair()
    # Whatever a test left configured, the champions again.
    httpx.post(f"{served.url}/v1/admin/reload", json={}, timeout=60)


async def test_a_refused_reload_then_a_crashed_model_replica_keeps_serving_the_champion(
    served: Served, bad_token_version: Damaged, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = bad_token_version.version
    champion = registry.champion_version("token", served.env["KOLRAY_STORAGE_URI"])
    refused = await asyncio.to_thread(
        httpx.post, f"{served.url}/v1/admin/reload", json={"token": bad}, timeout=60
    )
    assert refused.status_code == 503 and bad in refused.json()["detail"], refused.text
    # The deployed config is as it was: a replica that starts now loads the champion.
    assert reload.deployed_versions("kolray")["token"] in (None, champion)

    outage = await kill_under_load(served, "TokenModel")
    with capsys.disabled():
        print("\n" + outage.report("TokenModel killed after a refused reload"))
    assert not outage.failures_after_replacement, outage.failures_after_replacement[:5]
    assert {a.version for a in outage.answers if a.status == 200} == {champion}
    assert served_version(served.url) == champion

    # Repaired, the same version can be asked for again (it used to answer the old error at once).
    bad_token_version.repair()
    again = await asyncio.to_thread(
        httpx.post, f"{served.url}/v1/admin/reload", json={"token": bad}, timeout=60
    )
    assert again.status_code == 200 and again.json()["applied"]["token"] == bad, again.text
    assert served_version(served.url) == bad


async def test_a_replica_that_cannot_load_its_configured_version_falls_back_and_retries_when_asked(
    served: Served, bad_token_version: Damaged, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config names a version that cannot load (deployed by hand, or a restore that failed): a
    replica that starts serves the champion and /healthz says so; once the files are repaired,
    reloading that same version makes the replicas load it."""
    bad = bad_token_version.version
    champion = registry.champion_version("token", served.env["KOLRAY_STORAGE_URI"])
    await asyncio.to_thread(reload.apply_versions, {"token": bad}, "kolray")
    await asyncio.to_thread(reload.wait_for_update, "kolray")
    assert served_version(served.url) == champion  # the running replica kept its version

    outage = await kill_under_load(served, "TokenModel", after_s=1.0)
    with capsys.disabled():
        print("\n" + outage.report("TokenModel killed while its config names an unloadable version"))
    assert not outage.failures_after_replacement, outage.failures_after_replacement[:5]
    token = httpx.get(f"{served.url}/healthz", timeout=10).json()["models"]["token"]
    assert token["version"] == champion and token["loaded"]
    assert bad in token["error"] and f"champion {champion}" in token["error"]

    bad_token_version.repair()
    retried = await asyncio.to_thread(
        httpx.post, f"{served.url}/v1/admin/reload", json={"token": bad}, timeout=60
    )
    assert retried.status_code == 200 and retried.json()["applied"]["token"] == bad, retried.text
    assert served_version(served.url) == bad


@pytest.mark.parametrize(
    ("deployment", "path"),
    [("KolrayApi", "/v1/predict/token"), ("TokenModel", "/v1/predict/token"), ("KolModel", "/v1/kols/")],
)
async def test_a_crashed_replica_of_each_kind_is_replaced_and_answers_come_back(
    served: Served, deployment: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outage = await kill_under_load(served, deployment, path)
    with capsys.disabled():
        print("\n" + outage.report(f"{deployment} killed under load ({path})"))
    assert not outage.failures_after_replacement, outage.failures_after_replacement[:5]
    assert len(outage.answers) > 20 and outage.gap_s < 60
