"""The Ray Serve application: ``kolray.serve.app:app``.

Three deployments:

- ``TokenModel`` and ``KolModel`` (one class, :class:`ModelServer`): hold a registered model
  version and answer batched scoring calls (``@serve.batch``: requests that queue while a
  forward pass runs share the next one, counted in rows). Their ``user_config`` is
  ``{"version": V}`` (``null``: the champion at start-up); a new ``user_config`` reaches the running
  replicas through ``reconfigure`` (a Serve "lightweight update": no restart), which loads V beside
  the current version and swaps one reference — see :mod:`kolray.serve.holder`.
- ``KolrayApi`` (:class:`Api`): the FastAPI ingress with the HTTP routes and the Gradio UI at
  ``/ui``, both built inside the replica (``__serve_build_asgi_app__``; Gradio objects cannot be
  pickled). It computes point-in-time features from the database (no older than ``feature_ttl_s``) and
  sends them to the model deployments. Its ``user_config`` sets the cache TTL and how often it
  checks the registry for a new champion (``registry_poll_s``).

Deploy: ``serve run serve_config.yaml`` / ``serve deploy serve_config.yaml`` / ``kolray serve``
(all declarative, which is what makes hot reload possible: :mod:`kolray.serve.control`).
``python -m kolray.serve.app`` does the same as ``kolray serve``.

Replica settings (replicas, autoscaling, CPUs) are the defaults below; ``serve_config.yaml``
overrides them per deployment.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from kolray.serve.control import ADMIN_OPEN_WARNING
from kolray.serve.holder import ModelHolder, Scores
from kolray.serve.lookup import DEFAULT_SOURCE, FeatureBlock

log = logging.getLogger("kolray.serve")

APP_NAME = "kolray"
API_DEPLOYMENT = "KolrayApi"
MODEL_DEPLOYMENTS = {"token": "TokenModel", "kol": "KolModel"}
# Rows per forward pass: one request may carry up to 1000 items, so a batch always fits one.
MAX_BATCH_ROWS = 4096
# How long a batch waits for more requests after its first. 0: take what has queued. Under load
# batches fill from the requests that arrived during the previous forward pass anyway (and the
# ingress already coalesces its concurrent requests into one call), so any wait only adds
# latency. Tunable per deployment in user_config ("batch_wait_s"), e.g. for many ingress replicas.
BATCH_WAIT_S = 0.0
# How often a stopping replica checks that its requests are done (Serve's default, 2 s, is slept
# once even when none are: every stop of `kolray serve` paid it).
GRACEFUL_WAIT_LOOP_S = 0.25


def _rows(blocks: list[FeatureBlock]) -> int:
    return sum(len(block) for block in blocks)


@serve.deployment(
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 0.25},
    user_config={"version": None, "batch_wait_s": BATCH_WAIT_S},
    health_check_period_s=10,
    graceful_shutdown_wait_loop_s=GRACEFUL_WAIT_LOOP_S,
)
class ModelServer:
    """One model kind (``token`` or ``kol``), batched; bound twice under two deployment names."""

    def __init__(self, model: str, storage_uri: str | None = None) -> None:
        import torch

        # Small networks: one intra-op thread each, so replicas don't fight over the two cores.
        torch.set_num_threads(1)
        self.holder = ModelHolder(model, storage_uri=storage_uri)
        self._reconfigure_lock = asyncio.Lock()

    async def reconfigure(self, config: dict[str, Any] | None) -> None:
        config = config or {}
        wait = config.get("batch_wait_s", BATCH_WAIT_S)
        if isinstance(wait, int | float) and 0 <= wait <= 1:
            self.score.set_batch_wait_timeout_s(float(wait))
        # Load in a thread: requests keep being answered by the current version meanwhile.
        async with self._reconfigure_lock:
            await asyncio.to_thread(self.holder.configure, config)

    @serve.batch(max_batch_size=MAX_BATCH_ROWS, batch_wait_timeout_s=BATCH_WAIT_S, batch_size_fn=_rows)
    async def score(self, blocks: list[FeatureBlock]) -> list[Scores]:
        if _rows(blocks) <= 64:
            return self.holder.score_many(blocks)  # a thread hop costs more than this forward pass
        return await asyncio.to_thread(self.holder.score_many, blocks)

    def state(self) -> dict[str, Any]:
        return self.holder.state()


# A scoring call whose replica dies under it (crash, lost node) is sent again: scoring has no side
# effects, and Serve routes the retry to a live replica, or holds it until the replacement runs.
REPLICA_LOST_RETRIES = (0.1, 0.5)  # seconds before each retry


class HandleScorer:
    """The service's view of a model deployment."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def score(self, block: FeatureBlock) -> Scores:
        for delay in (*REPLICA_LOST_RETRIES, None):
            try:
                return await self.handle.score.remote(block)
            except RayActorError as error:
                if delay is None:
                    raise
                log.warning(
                    "model replica lost during a request (%s); sending it again", type(error).__name__
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def state(self) -> dict[str, Any]:
        return await self.handle.state.remote()


@serve.deployment(
    name=API_DEPLOYMENT,
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 0.5},
    user_config={"registry_poll_s": 10.0, "feature_ttl_s": 10.0},
    graceful_shutdown_wait_loop_s=GRACEFUL_WAIT_LOOP_S,
)
@serve.ingress()
class Api:
    def __init__(
        self,
        token_model: DeploymentHandle,
        kol_model: DeploymentHandle,
        feature_source: str = DEFAULT_SOURCE,
        ui: bool = True,
        storage_uri: str | None = None,
    ) -> None:
        from kolray.logs import configure_logging
        from kolray.serve.control import ServeReloader
        from kolray.serve.service import KolrayService

        configure_logging()
        self.ui = ui
        self.reloader = ServeReloader()
        self.service = KolrayService(
            token=HandleScorer(token_model),
            kol=HandleScorer(kol_model),
            feature_source=feature_source,
            reloader=self.reloader,
            storage_uri=storage_uri,
        )
        self.registry_poll_s = 10.0
        self._watcher: asyncio.Task[None] | None = None
        if self.service.api_key is None:
            log.warning(ADMIN_OPEN_WARNING)
        # Before traffic, inside __init__: Serve freezes the start-up heap out of the garbage
        # collector after it (RAY_SERVE_FREEZE_GC_ON_STARTUP), the feature stack included.
        self.service.warm_up()

    def __serve_build_asgi_app__(self) -> Any:
        from kolray.serve.api import build_app

        return build_app(self.service, ui=self.ui)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self.registry_poll_s = float(config.get("registry_poll_s", 10.0))
        self.service.feature_ttl_s = float(config.get("feature_ttl_s", 10.0))
        if self._watcher is None and self.registry_poll_s > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_registry())

    async def _watch_registry(self) -> None:
        """Follow champion changes made without telling Serve (e.g. the continuous trainer's
        ``promote_if_better``): when a model's champion differs from the last one seen, apply it.
        ``kolray promote`` also calls ``/v1/admin/reload`` so that its change is immediate. The
        change goes through the same path as that route: a champion the replicas cannot load
        leaves the deployed config as it was, and is tried again next period."""
        from kolray.learn import registry
        from kolray.serve.schemas import ReloadRequest

        seen: dict[str, str | None] = {}
        while True:
            try:
                current = {
                    m: await asyncio.to_thread(registry.champion_version, m, self.service.storage_uri)
                    for m in MODEL_DEPLOYMENTS
                }
                changed = {m: v for m, v in current.items() if m in seen and v != seen[m] and v is not None}
                if changed:
                    log.info("registry: new champion(s) %s; applying to the model replicas", changed)
                    # Only the changed models move: the others keep what their config names (an
                    # operator's pinned or archived version included), not "the champion".
                    assert self.service.reloader is not None
                    kept = await self.service.reloader.deployed()
                    request = {m: kept.get(m) for m in MODEL_DEPLOYMENTS} | changed
                    await self.service.reload(ReloadRequest(**request, allow_archived=True))
                seen = current
            except Exception as error:  # storage hiccup, controller busy: try again next period
                log.warning("registry watch: %s", error)
            await asyncio.sleep(max(self.registry_poll_s, 0.5))


def build(args: dict[str, Any] | None = None) -> Any:
    """Application builder (``import_path: kolray.serve.app:build`` with ``args:``): ``feature_source``
    (``module:factory``), ``ui`` (bool), ``storage_uri``."""
    args = dict(args or {})
    storage_uri = args.pop("storage_uri", None)
    feature_source = args.pop("feature_source", DEFAULT_SOURCE)
    ui = bool(args.pop("ui", True))
    if args:
        raise ValueError(f"unknown application arguments: {sorted(args)}")
    token = ModelServer.options(name=MODEL_DEPLOYMENTS["token"]).bind("token", storage_uri)
    kol = ModelServer.options(name=MODEL_DEPLOYMENTS["kol"]).bind("kol", storage_uri)
    return Api.bind(token, kol, feature_source, ui, storage_uri)


app = build()


if __name__ == "__main__":
    from kolray.serve.control import run_blocking

    run_blocking()
