"""The app on real Ray Serve (one deployment for the module, declarative like `kolray serve`):
HTTP through Serve's proxy, and hot reload under load — `kolray promote` while clients keep
asking, zero failed requests, answers switch version, replicas are not restarted."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kolray import registry
from kolray.cli import main
from kolray.config import get_settings
from kolray.db import upgrade
from kolray.serve import control, sample
from kolray.serve.schemas import iso


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
    control.deploy(sample.app_config(env, port, ui=False, registry_poll_s=0.5))
    url = f"http://127.0.0.1:{port}"
    control.wait_until_serving(url)
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
    assert control.deployed_versions("kolray")["token"] == new

    # Rolling back is the same path.
    assert await asyncio.to_thread(main, ["promote", "token", old]) == 0
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
    reached, message = control.notify_serve()
    assert not reached and "not running" in message
