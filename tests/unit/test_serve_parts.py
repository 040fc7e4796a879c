"""Serving parts without a server: the coalescer, the swappable model holder, the feature cache,
time parsing, the Serve config file."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kolray.serve.coalesce import Coalescer
from kolray.serve.holder import FeatureColumnsMissing, ModelHolder, NoModel
from kolray.serve.lookup import CachedFeatures, FeatureBlock, FeaturesUnavailable, TokenQuery
from kolray.serve.schemas import MIN_TIME_S, iso, parse_time

ROOT = Path(__file__).resolve().parents[2]


# Coalescer


async def test_concurrent_calls_share_work_and_get_their_own_results() -> None:
    calls: list[list[int]] = []

    async def process(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.02)
        return [x * 10 for x in items]

    coalescer: Coalescer[int, int] = Coalescer(process, max_concurrent=1)
    first = asyncio.ensure_future(coalescer([0, 100]))
    await asyncio.sleep(0.005)  # the first call is running
    results = await asyncio.gather(first, *(coalescer([i, i + 100]) for i in range(1, 6)))
    assert results == [[i * 10, (i + 100) * 10] for i in range(6)]
    # The first call ran alone at once; the five that arrived meanwhile share the second.
    assert (
        calls[0] == [0, 100]
        and len(calls) == 2
        and sorted(calls[1]) == sorted(x for i in range(1, 6) for x in (i, i + 100))
    )


async def test_a_failed_shared_call_fails_each_caller_and_the_next_call_works() -> None:
    fail = True

    async def process(items: list[int]) -> list[int]:
        await asyncio.sleep(0.01)
        if fail:
            raise ValueError("feature source down")
        return items

    coalescer: Coalescer[int, int] = Coalescer(process, max_concurrent=1)
    first = asyncio.ensure_future(coalescer([1]))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(coalescer([i])) for i in (2, 3)]
    outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
    assert all(isinstance(o, ValueError) for o in outcomes)
    fail = False
    assert await coalescer([4]) == [4]


async def test_batches_respect_max_items_and_never_split_a_request() -> None:
    sizes: list[int] = []

    async def process(items: list[int]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0.01)
        return items

    coalescer: Coalescer[int, int] = Coalescer(process, max_items=5, max_concurrent=1)
    results = await asyncio.gather(*(coalescer(list(range(3))) for _ in range(5)))
    assert all(r == [0, 1, 2] for r in results)
    assert all(s % 3 == 0 and s <= 5 for s in sizes)


def test_a_worker_stranded_on_a_closed_loop_does_not_block_the_next_loop() -> None:
    gate: dict[str, asyncio.Event] = {}

    async def process(items: list[int]) -> list[int]:
        if items == [1]:
            gate["never"] = asyncio.Event()
            await gate["never"].wait()
        return items

    coalescer: Coalescer[int, int] = Coalescer(process, max_concurrent=1)
    old = asyncio.new_event_loop()
    with pytest.raises(TimeoutError):
        old.run_until_complete(asyncio.wait_for(coalescer([1]), 0.05))
    old.close()  # its worker is still "running": a test client's loop can end like this

    async def next_loop() -> list[int]:
        return await asyncio.wait_for(coalescer([2]), 2)

    assert asyncio.run(next_loop()) == [2]


# Model holder


@dataclass
class FakeLoaded:
    version: str
    feature_columns: list[str]
    threshold: float = 0.5
    calls: list[np.ndarray] = field(default_factory=list)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(x)
        return x[:, 0] * 0 + float(self.version[-1]) / 10  # a constant that names the version


def make_loader(available: dict[str | None, FakeLoaded]):
    def loader(model: str, version: str | None, storage_uri: str | None) -> FakeLoaded:
        if version not in available:
            raise ValueError(f"no {model} version {version!r}")
        return available[version]

    return loader


def test_holder_switches_versions_and_keeps_serving_on_a_bad_one() -> None:
    v1, v2 = FakeLoaded("v1", ["a", "b"]), FakeLoaded("v2", ["b", "a"])
    holder = ModelHolder("token", loader=make_loader({None: v1, "v1": v1, "v2": v2}))
    with pytest.raises(NoModel):
        holder.score(FeatureBlock(("a", "b"), np.zeros((1, 2), np.float32)))
    holder.configure({"version": None})
    block = FeatureBlock(("a", "b", "c"), np.array([[1, 2, 3]], np.float32))
    assert holder.score(block).version == "v1"
    np.testing.assert_array_equal(v1.calls[-1], [[1, 2]])
    holder.configure({"version": "v2", "batch_wait_s": 0.001})
    scores = holder.score(block)
    assert scores.version == "v2" and scores.values[0] == pytest.approx(0.2)
    np.testing.assert_array_equal(v2.calls[-1], [[2, 1]])  # columns picked by name, in the model's order
    holder.configure({"version": "v9"})
    state = holder.state()
    assert state["version"] == "v2" and "v9" in state["error"] and state["requested"] == "v9"
    assert holder.score(block).version == "v2"
    holder.configure({"version": 7})
    assert "string" in holder.state()["error"]


def test_a_new_holder_that_cannot_load_its_configured_version_serves_the_champion() -> None:
    """A replica that starts (crash, lost node, scale-up) with a version it cannot load serves the
    champion rather than nothing, and its state says which version it was asked for and why not."""
    champion = FakeLoaded("v1", ["a"])
    holder = ModelHolder("token", loader=make_loader({None: champion, "v1": champion}))
    holder.configure({"version": "v7"})
    block = FeatureBlock(("a",), np.ones((1, 1), np.float32))
    assert holder.score(block).version == "v1"
    state = holder.state()
    assert state["version"] == "v1" and state["loaded"] and state["requested"] == "v7"
    assert "v7" in state["error"] and "champion v1" in state["error"]
    # Once the version loads, the next reconfigure switches to it and the error is gone.
    v7 = FakeLoaded("v7", ["a"])
    holder.loader = make_loader({None: champion, "v7": v7})
    holder.configure({"version": "v7"})
    assert holder.score(block).version == "v7" and holder.state()["error"] is None


def test_a_new_holder_with_neither_its_version_nor_a_champion_says_both() -> None:
    holder = ModelHolder("kol", loader=make_loader({}))
    holder.configure({"version": "v7"})
    state = holder.state()
    assert not state["loaded"] and "v7" in state["error"] and "champion" in state["error"]
    with pytest.raises(NoModel, match="v7"):
        holder.score(FeatureBlock(("a",), np.ones((1, 1), np.float32)))


def test_holder_names_missing_feature_columns() -> None:
    holder = ModelHolder("kol", loader=make_loader({None: FakeLoaded("v1", ["a", "z"])}))
    holder.configure(None)
    with pytest.raises(FeatureColumnsMissing, match=r"\['z'\]"):
        holder.score(FeatureBlock(("a", "b"), np.zeros((2, 2), np.float32)))


def test_score_many_splits_one_forward_pass_back() -> None:
    loaded = FakeLoaded("v3", ["a"])
    holder = ModelHolder("token", loader=make_loader({None: loaded}))
    holder.configure({})
    blocks = [FeatureBlock(("a",), np.ones((n, 1), np.float32)) for n in (1, 4, 2)]
    out = holder.score_many(blocks)
    assert [len(s.values) for s in out] == [1, 4, 2] and len(loaded.calls) == 1


# Feature cache


class CountingSource:
    def __init__(self) -> None:
        self.token_calls: list[int] = []

    def token_features(self, items: Any) -> pd.DataFrame:
        self.token_calls.append(len(items))
        return pd.DataFrame({"amount": [q.amount_sol for q in items], "t": [q.entry_time for q in items]})

    def kol_features(self, wallets: Any, as_of: int) -> pd.DataFrame:
        return pd.DataFrame({"n": [len(w) for w in wallets]})


def test_cache_fetches_only_misses_in_one_call_and_expires() -> None:
    source = CountingSource()
    cache = CachedFeatures(source, ttl_s=0.2)
    a, b, c = (TokenQuery("w", float(i), 1_700_000_000 + i) for i in (1, 2, 3))
    block = cache.token_block([a, b])
    assert block.columns == ("amount", "t") and block.matrix[:, 0].tolist() == [1, 2]
    block = cache.token_block([b, c, a])
    assert source.token_calls == [2, 1] and block.matrix[:, 0].tolist() == [2, 3, 1]
    block = cache.token_block([c, a])  # every row cached: no call
    assert source.token_calls == [2, 1] and block.matrix[:, 0].tolist() == [3, 1]
    assert block.matrix.dtype == np.float32
    time.sleep(0.25)
    cache.token_block([a])
    assert source.token_calls == [2, 1, 1]


def test_a_source_with_its_own_cache_gets_half_the_staleness_budget() -> None:
    class Refreshing(CountingSource):
        refresh_s = 99.0

    source = Refreshing()
    cache = CachedFeatures(source, ttl_s=0.4)
    assert source.refresh_s == pytest.approx(0.2) and cache.ttl_s == pytest.approx(0.4)
    query = TokenQuery("w", 1.0, 1_700_000_000)
    cache.token_block([query])
    time.sleep(0.25)  # older than the rows' half: computed again
    cache.token_block([query])
    assert source.token_calls == [1, 1]
    cache.ttl_s = 10.0
    assert source.refresh_s == 5.0


def test_cache_refuses_a_source_that_loses_rows() -> None:
    class Lossy(CountingSource):
        def token_features(self, items: Any) -> pd.DataFrame:
            return super().token_features(items).iloc[:-1]

    with pytest.raises(FeaturesUnavailable, match="1 rows for 2"):
        CachedFeatures(Lossy()).token_block([TokenQuery("w", 1.0, 1), TokenQuery("w", 2.0, 1)])


# Times


def test_parse_time() -> None:
    assert parse_time("2024-06-01T12:00:00Z") == 1_717_243_200
    assert parse_time("2024-06-01T14:00:00+02:00") == 1_717_243_200
    assert parse_time("2024-06-01T12:00:00") == 1_717_243_200  # no offset: UTC
    assert iso(1_717_243_200) == "2024-06-01T12:00:00Z"
    for bad in ("soon", "", 1_717_243_200, None, iso(MIN_TIME_S - 1), "9999-12-31T23:59:59Z"):
        with pytest.raises(ValueError):
            parse_time(bad)


# Serve config


def test_serve_config_names_the_app_and_its_deployments() -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from kolray.serve.app import API_DEPLOYMENT, APP_NAME, MODEL_DEPLOYMENTS

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    (app,) = config.applications
    assert app.name == APP_NAME and app.import_path == "kolray.serve.app:app" and app.route_prefix == "/"
    names = {d.name: d for d in app.deployments}
    assert set(names) == {API_DEPLOYMENT, *MODEL_DEPLOYMENTS.values()}
    for name in MODEL_DEPLOYMENTS.values():
        assert names[name].user_config["version"] is None
    assert config.http_options.host == "127.0.0.1"


# Serve mode and admin access, decided before anything starts


@pytest.fixture
def clean_serve_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No Serve mode settings in the environment; whatever prepare_environment sets is undone."""
    from kolray.serve import deploy

    for name in (*deploy.HIGH_THROUGHPUT_ENV, deploy.DRAINING_ENV, *deploy.HAPROXY_PORTS, "RAY_ADDRESS"):
        monkeypatch.setenv(name, "")  # recorded, so that the test's changes are undone
        monkeypatch.delenv(name)
    return monkeypatch


def test_without_haproxy_the_mode_says_why_what_it_costs_and_how_to_get_it(
    clean_serve_env: pytest.MonkeyPatch,
) -> None:
    import os

    from kolray.serve import deploy

    clean_serve_env.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/nonexistent/haproxy")
    mode = deploy.prepare_environment(None, None)
    assert mode.startswith("standard Serve proxy") and "/nonexistent/haproxy" in mode
    assert "222.7 ms" in mode and "46.8 ms" in mode and "apt-get install haproxy" in mode
    assert not any(os.environ.get(k) for k in deploy.HIGH_THROUGHPUT_ENV)
    with pytest.raises(deploy.ServeControlError, match="apt-get install haproxy"):
        deploy.prepare_environment(True, None)


def test_with_haproxy_the_mode_names_the_binary_and_stops_quickly(
    clean_serve_env: pytest.MonkeyPatch,
) -> None:
    import os
    import shutil

    from kolray.serve import deploy

    binary = shutil.which("true")
    assert binary
    clean_serve_env.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", binary)
    mode = deploy.prepare_environment(None, None)
    assert mode.startswith("high-throughput mode") and binary in mode
    assert all(os.environ[k] == "1" for k in deploy.HIGH_THROUGHPUT_ENV)
    # The ingress's drain on shutdown is cut from Serve's 30 s (what made stopping take ~35 s).
    assert float(os.environ[deploy.DRAINING_ENV]) <= 2


def test_haproxy_listeners_move_off_default_ports_another_serve_holds(
    clean_serve_env: pytest.MonkeyPatch,
) -> None:
    import contextlib
    import os
    import shutil
    import socket

    from kolray.serve import deploy

    clean_serve_env.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", shutil.which("true") or "")
    holder = socket.socket()
    with contextlib.suppress(OSError):  # taken already, as by another Serve: the same case
        holder.bind(("0.0.0.0", deploy.HAPROXY_PORTS["RAY_SERVE_HAPROXY_STATS_PORT"]))
    try:
        mode = deploy.prepare_environment(True, None)
    finally:
        holder.close()
    port = int(os.environ["RAY_SERVE_HAPROXY_STATS_PORT"])
    assert port != 8404 and f"RAY_SERVE_HAPROXY_STATS_PORT={port}, 8404 is taken" in mode


def test_the_mode_of_an_existing_cluster_or_the_environment_is_not_chosen_here(
    clean_serve_env: pytest.MonkeyPatch,
) -> None:
    from kolray.serve import deploy

    assert "existing Ray cluster" in deploy.prepare_environment(None, "ray://10.0.0.1:10001")
    clean_serve_env.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    assert "RAY_SERVE_ENABLE_HA_PROXY=1" in deploy.prepare_environment(None, None)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_open_admin_on_loopback_is_a_warning(host: str) -> None:
    from kolray.serve import deploy

    warning = deploy.check_admin_access(host, api_key_set=False)
    assert warning is not None and "KOLRAY_API_KEY" in warning and "/v1/admin/reload" in warning
    assert deploy.check_admin_access(host, api_key_set=True) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_open_admin_on_a_reachable_host_is_refused_unless_allowed(host: str) -> None:
    from kolray.serve import deploy

    with pytest.raises(deploy.OpenAdminRefused, match="--allow-open-admin"):
        deploy.check_admin_access(host, api_key_set=False)
    assert "KOLRAY_API_KEY" in (
        deploy.check_admin_access(host, api_key_set=False, allow_open_admin=True) or ""
    )
    assert deploy.check_admin_access(host, api_key_set=True) is None
