"""Shared test fixtures.

- ``tests/unit``: no Ray, no servers. ``tests/integration``: Ray, servers, databases.
  ``tests/e2e``: a browser or the whole pipeline.
- One Ray cluster per test session (``ray_session``), 2 CPUs, capped object store.
- Databases: ``db_url`` runs a test on SQLite and on PostgreSQL (``KOLRAY_TEST_POSTGRES_URL``,
  default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each test gets a fresh database.
- With ``CI=true`` a skipped integration or e2e test fails: nothing silently stops being tested.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = Path(
    os.environ.get("KOLRAY_SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures" / "mainnet")
)
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Tests never read the user's config or data directory.
os.environ.pop("KOLRAY_CONFIG", None)
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        for kind in ("unit", "integration", "e2e"):
            if f"{os.sep}{kind}{os.sep}" in str(path):
                item.add_marker(getattr(pytest.mark, kind))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    in_scope = item.get_closest_marker("integration") or item.get_closest_marker("e2e")
    if IN_CI and report.skipped and in_scope and not item.get_closest_marker("xfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true makes this a failure): {reason}"
    return report


# Settings and files


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private KOLRAY_DATA_DIR for the test, with settings re-read."""
    from kolray.config import get_settings
    from kolray.db.engine import dispose_engines

    directory = tmp_path / "kolray-data"
    for name in list(os.environ):
        if name.startswith("KOLRAY_") and not name.startswith(("KOLRAY_TEST_", "KOLRAY_SHARED")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KOLRAY_DATA_DIR", str(directory))
    get_settings.cache_clear()
    yield directory
    get_settings.cache_clear()
    dispose_engines()


@pytest.fixture(scope="session")
def mainnet_fixtures() -> Path:
    if not (SHARED_FIXTURES / "MANIFEST.json").is_file():
        pytest.skip(f"shared mainnet fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


# Databases


def postgres_admin_url() -> str:
    return os.environ.get("KOLRAY_TEST_POSTGRES_URL", DEFAULT_PG)


def _postgres_reachable(url: str) -> str | None:
    import psycopg
    from sqlalchemy.engine import make_url

    from kolray.db.engine import normalize_url

    parsed = make_url(normalize_url(url))
    try:
        with psycopg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.database,
            connect_timeout=3,
        ):
            return None
    except Exception as error:
        return f"PostgreSQL not reachable at {parsed.host}:{parsed.port or 5432} ({type(error).__name__})"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    url = postgres_admin_url()
    problem = _postgres_reachable(url)
    if problem:
        pytest.skip(f"{problem}; set KOLRAY_TEST_POSTGRES_URL to run the PostgreSQL tests")
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    from kolray.db.engine import dispose_engines, normalize_url

    admin = make_url(normalize_url(postgres_server))
    name = f"kolray_t_{uuid.uuid4().hex[:12]}"
    params = dict(host=admin.host, port=admin.port or 5432, user=admin.username, password=admin.password)
    with psycopg.connect(dbname=admin.database, autocommit=True, **params) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(database=name).render_as_string(hide_password=False)
    dispose_engines()
    with psycopg.connect(dbname=admin.database, autocommit=True, **params) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'kolray.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The test runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def db(db_url: str):
    """A migrated database engine on each backend."""
    from kolray.db.migrate import upgrade

    return upgrade(db_url)


# Ray


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster for the whole test session."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            object_store_memory=256 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"RAY_DEDUP_LOGS": "0"}},
        )
    yield ray
    ray.shutdown()


class RayHead:
    """A running head: its job-submission ``address`` and the ``env`` to run ``ray job`` with."""

    def __init__(self, address: str, env: dict[str, str]) -> None:
        self.address, self.env = address, env

    def submit(self, entrypoint: list[str], runtime_env: dict, cwd: Path = ROOT):
        """``ray job submit --working-dir .`` as a user types it, waiting for the job; retried
        while the head's job agent is still registering ("No available agent" for a few seconds
        after start)."""
        import json
        import subprocess
        import time

        command = ["ray", "job", "submit", "--address", self.address, "--working-dir", ".",
                   "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint]  # fmt: skip
        deadline = time.time() + 60
        while True:
            done = subprocess.run(command, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=900)
            if "No available agent" not in done.stdout + done.stderr or time.time() > deadline:
                return done
            time.sleep(2)


@pytest.fixture
def ray_head() -> Iterator[RayHead]:
    """A Ray head node of its own (``ray start --head --block``, token auth, as users run it).

    Every port it listens on is a free one: Ray's defaults (dashboard agent 52365, client server
    10001) are taken by any other Ray on the machine — the session's — and a head without its
    agent answers every submission with "No available agent". Stopped with SIGTERM to its process
    group: ``ray stop`` would stop every Ray on the machine."""
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    def free_ports(n: int) -> list[int]:
        """``n`` distinct free ports: each socket stays bound until all are chosen (one closed at a
        time may be handed out again: a suite run once gave the GCS and the node manager one port)."""
        with contextlib.ExitStack() as stack:
            sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            return [s.getsockname()[1] for s in sockets]

    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",  # the job's `python` is this venv's
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="krh-", dir="/tmp")  # unix socket paths must stay short
    flags = ("--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port", "--metrics-export-port", "--ray-client-server-port",
             "--node-manager-port", "--object-manager-port")  # fmt: skip
    ports = dict(zip(flags, free_ports(len(flags)), strict=True))
    dashboard = ports["--dashboard-port"]
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", *(f"{k}={v}" for k, v in ports.items()),
         "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2",
         "--object-store-memory=150000000", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", dashboard), timeout=1):
                break
        except OSError:
            assert head.poll() is None, head.stdout.read().decode()[-3000:] if head.stdout else ""
            assert time.time() < deadline, "the head node did not start"
            time.sleep(0.5)
    yield RayHead(f"http://127.0.0.1:{dashboard}", env)
    os.killpg(head.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(10)  # a graceful stop takes ~30 s; the head and its jobs are disposable
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait(30)
    shutil.rmtree(temp_dir, ignore_errors=True)


# Browser


@pytest.fixture(scope="session")
def chromium_path() -> str:
    for candidate in (os.environ.get("KOLRAY_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("no Chromium (apt-get install chromium); .ci/run installs it")


# S3


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto) on loopback; yields its endpoint URL."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_storage(s3_server: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings pointing ``storage_uri`` at a fresh bucket on the moto server; yields the URI."""
    import boto3

    from kolray.config import get_settings

    bucket = f"kolray-{uuid.uuid4().hex[:10]}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "KOLRAY_S3_ENDPOINT_URL": s3_server,
        "KOLRAY_STORAGE_URI": f"s3://{bucket}/kolray",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/kolray"
