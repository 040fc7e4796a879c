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
(all declarative, which is what makes hot reload possible: :mod:`kolray.serve.reload`).
``python -m kolray.serve.app`` does the same as ``kolray serve``.

The application is built by :func:`build`, a typed application builder: Serve validates the
config's ``args:`` into :class:`AppArgs` before calling it. ``app`` is the application with the
default arguments (``import_path: kolray.serve.app:app``).

Replica settings (replicas, autoscaling, CPUs) are the defaults below; ``serve_config.yaml``
overrides them per deployment.
"""

# No ``from __future__ import annotations`` here: Serve reads the builder's parameter annotation
# at run time to validate ``args`` into AppArgs, and a string annotation would reach it as a str.

import asyncio
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

from kolray.learn import registry
from kolray.logs import configure_logging
from kolray.serve.api import build_app
from kolray.serve.deploy import run_blocking
from kolray.serve.holder import ModelHolder, Scores
from kolray.serve.lookup import DEFAULT_SOURCE, FeatureBlock
from kolray.serve.names import ADMIN_OPEN_WARNING, API_DEPLOYMENT, APP_NAME, MODEL_DEPLOYMENTS
from kolray.serve.reload import ServeReloader
from kolray.serve.schemas import ReloadRequest
from kolray.serve.service import KolrayService

log = logging.getLogger("kolray.serve")

__all__ = ["API_DEPLOYMENT", "APP_NAME", "MODEL_DEPLOYMENTS", "AppArgs", "app", "build"]
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
        # Lazy: torch loads in the model replicas only, not in every process that imports the app.
        import torch

        # Small networks: one intra-op thread each, so replicas don't fight over the two cores.
        torch.set_num_threads(1)
        self.holder = ModelHolder(model, storage_uri=storage_uri)
        self._reconfigure_lock = asyncio.Lock()

    async def reconfigure(self, config: dict[str, Any] | None) -> None:
        """A new ``user_config``: the batch wait, and the version to serve (loaded beside the
        current one, then swapped)."""
        config = config or {}
        wait = config.get("batch_wait_s", BATCH_WAIT_S)
        if isinstance(wait, int | float) and 0 <= wait <= 1:
            # serve.batch adds this method to the wrapped one; Ray's annotations keep the function type.
            self.score.set_batch_wait_timeout_s(float(wait))  # type: ignore[attr-defined]
        # Load in a thread: requests keep being answered by the current version meanwhile.
        async with self._reconfigure_lock:
            await asyncio.to_thread(self.holder.configure, config)

    @serve.batch(max_batch_size=MAX_BATCH_ROWS, batch_wait_timeout_s=BATCH_WAIT_S, batch_size_fn=_rows)
    async def score(self, blocks: list[FeatureBlock]) -> list[Scores]:
        """Scores for each block of feature rows (one batch: the requests queued meanwhile)."""
        if _rows(blocks) <= 64:
            return self.holder.score_many(blocks)  # a thread hop costs more than this forward pass
        return await asyncio.to_thread(self.holder.score_many, blocks)

    def state(self) -> dict[str, Any]:
        """The version held, and the last load error (see :meth:`ModelHolder.state`)."""
        return self.holder.state()


# A scoring call whose replica dies under it (crash, lost node) is sent again: scoring has no side
# effects, and Serve routes the retry to a live replica, or holds it until the replacement runs.
REPLICA_LOST_RETRIES = (0.1, 0.5)  # seconds before each retry


class HandleScorer:
    """The service's view of a model deployment."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def score(self, block: FeatureBlock) -> Scores:
        """The deployment's scores for ``block``, sent again to a live replica if its replica
        dies under it."""
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
        """The model replica's state (version held, load error)."""
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
    """The ingress: HTTP routes and the UI over one :class:`KolrayService`, and the registry
    watcher that brings champion changes to the model replicas."""

    def __init__(
        self,
        token_model: DeploymentHandle,
        kol_model: DeploymentHandle,
        feature_source: str = DEFAULT_SOURCE,
        ui: bool = True,
        storage_uri: str | None = None,
    ) -> None:
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
        """The FastAPI app (with the UI), built in the replica: Gradio objects cannot be pickled."""
        return build_app(self.service, ui=self.ui)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """``registry_poll_s`` and ``feature_ttl_s``; starts the registry watcher on first call."""
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


class AppArgs(BaseModel):
    """The application's arguments (the config's ``args:``, or ``serve run ... key=value``)."""

    model_config = ConfigDict(extra="forbid")

    feature_source: str = Field(
        default=DEFAULT_SOURCE, description="Where features come from: ``module:factory``."
    )
    ui: bool = Field(default=True, description="Serve the Gradio UI at ``/ui``.")
    storage_uri: str | None = Field(
        default=None, description="Model registry storage (default: the KOLRAY_* settings')."
    )


def _deployment(decorated: object) -> Deployment:
    """A ``@serve.deployment`` class as what it is at run time: a Deployment (a type checker keeps
    a decorated class's own type)."""
    assert isinstance(decorated, Deployment)
    return decorated


def build(args: AppArgs) -> Application:
    """Typed application builder (``import_path: kolray.serve.app:build`` with ``args:``): the two
    model deployments and the ingress bound to them."""
    models = _deployment(ModelServer)
    token = models.options(name=MODEL_DEPLOYMENTS["token"]).bind("token", args.storage_uri)
    kol = models.options(name=MODEL_DEPLOYMENTS["kol"]).bind("kol", args.storage_uri)
    return _deployment(Api).bind(token, kol, args.feature_source, args.ui, args.storage_uri)


app = build(AppArgs())


if __name__ == "__main__":
    run_blocking()
