"""`kolray serve` as a user runs it: deploys serve_config.yaml, prints the URLs, serves, and stops
cleanly on Ctrl-C (here on the test session's Ray cluster, through RAY_ADDRESS)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kolray.db import upgrade
from kolray.testing import serving_world as sample

ROOT = Path(__file__).resolve().parents[2]


def test_kolray_serve_deploys_the_config_and_stops_on_ctrl_c(ray_session, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    db_url = f"sqlite:///{tmp_path / 'kolray.db'}"
    world = sample.populate(upgrade(db_url), n_kols=4, seed=21)
    models = sample.register_models(store, versions=1, reports=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KOLRAY_")},
        "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
        "KOLRAY_DATA_DIR": str(tmp_path),
        "KOLRAY_DATABASE_URL": db_url,
        "KOLRAY_STORAGE_URI": store,
        "KOLRAY_SERVE_PORT": str(port),
    }
    # The replicas read their settings from the cluster's environment, not this process's: on a
    # shared test cluster they come through a copy of serve_config.yaml with a runtime_env.
    import yaml

    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["applications"][0]["runtime_env"] = {
        "env_vars": {k: env[k] for k in ("KOLRAY_DATA_DIR", "KOLRAY_DATABASE_URL", "KOLRAY_STORAGE_URI")}
    }
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(config))

    process = subprocess.Popen(
        [sys.executable, "-m", "kolray", "serve", "--config", str(tmp_path / "serve_config.yaml")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C to stop" in line or time.monotonic() > deadline:
                break
        output = "".join(lines)
        assert "Ctrl-C to stop" in output, output
        # Which Serve mode runs and why; the admin routes are open without KOLRAY_API_KEY: said so.
        assert "Serve mode: existing Ray cluster" in output, output
        assert "KOLRAY_API_KEY is not set" in output and "/v1/admin/reload" in output, output
        base = f"http://127.0.0.1:{port}"
        for path in ("/ui/", "/docs", "/healthz"):
            assert f"{base}{path}" in output
        health = httpx.get(f"{base}/healthz", timeout=30).json()
        assert health["models"]["token"]["version"] == models.token[0]
        body = {
            "items": [{"wallet": world.wallets[0], "amount_sol": 1.0, "entry_time": "2024-05-30T00:00:00Z"}]
        }
        assert httpx.post(f"{base}/v1/predict/token", json=body, timeout=30).status_code == 200
        assert httpx.get(f"{base}/ui/", timeout=30).status_code == 200

        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(lines) + rest
    assert "stopped" in rest
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_kolray_serve_refuses_a_missing_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kolray", "serve", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--config" in result.stderr


def test_kolray_serve_refuses_open_admin_routes_on_a_reachable_host(tmp_path: Path) -> None:
    """No KOLRAY_API_KEY and --host 0.0.0.0: refused before Ray starts, saying what to do."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KOLRAY_")},
        "KOLRAY_DATA_DIR": str(tmp_path),
        # Had the refusal not come first, this start would fail on it with another message.
        "RAY_ADDRESS": "127.0.0.1:notaport",
    }
    command = [sys.executable, "-m", "kolray", "serve", "--host", "0.0.0.0", "--port", "1"]
    refused = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert "refusing to serve on 0.0.0.0" in message and "KOLRAY_API_KEY" in message
    assert "--allow-open-admin" in message
    # Told to, it goes on (and here stops at the malformed Ray address instead).
    allowed = subprocess.run(
        [*command, "--allow-open-admin"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert allowed.returncode not in (0, 2) and "refusing" not in allowed.stderr
    assert "KOLRAY_API_KEY is not set" in " ".join(allowed.stderr.split())


@pytest.mark.parametrize("to", ["process", "group"])
def test_kolray_serve_on_its_own_ray_says_its_mode_and_stops_within_seconds_on_sigterm(
    tmp_path: Path, to: str
) -> None:
    """`kolray serve` starting its own Ray instance in high-throughput mode (HAProxy): it says so
    at start-up, and SIGTERM stops it in seconds (Serve's 30 s ingress drain made it ~35 s), sent
    to the process alone or to its whole process group, Ray's processes included, as systemd and a
    terminal do (Serve then waited 30 s for a controller already gone: ~40 s, and bounding that wait
    let ray.shutdown() race it into a SIGSEGV; now kolray sees Ray's processes gone and skips the
    Serve shutdown: what remains is ray.shutdown() finding its processes gone, ~8 s)."""
    import yaml

    store = str(tmp_path / "store")
    db_url = f"sqlite:///{tmp_path / 'kolray.db'}"
    sample.populate(upgrade(db_url), n_kols=3, seed=22)
    sample.register_models(store, versions=1, reports=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KOLRAY_", "RAY_SERVE_", "RAY_ADDRESS"))},
        "KOLRAY_DATA_DIR": str(tmp_path),
        "KOLRAY_DATABASE_URL": db_url,
        "KOLRAY_STORAGE_URI": store,
        "KOLRAY_SERVE_PORT": str(port),
        "KOLRAY_API_KEY": "a-test-key",
    }
    # Without the UI: a quicker start, the same shutdown path.
    config = {"applications": [{"name": "kolray", "route_prefix": "/", "import_path": "kolray.serve.app:build",
                                "args": {"ui": False}}]}  # fmt: skip
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kolray",
            "serve",
            "--high-throughput",
            "--config",
            str(tmp_path / "serve_config.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its Ray processes go with it if the test has to kill it
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 240
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C to stop" in line or time.monotonic() > deadline:
                break
        output = "".join(lines)
        assert "Ctrl-C to stop" in output, output
        assert "Serve mode: high-throughput mode" in " ".join(output.split()), output
        assert "KOLRAY_API_KEY is not set" not in output
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200

        started = time.monotonic()
        if to == "group":
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=90)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    print(f"\nkolray serve (high-throughput mode) stopped {took:.1f} s after SIGTERM to the {to}")
    assert process.returncode == 0 and "stopped" in rest, output + rest
    if to == "group":  # Ray's processes stopped too: nothing to wait for (waiting then crashed it)
        assert "no Serve shutdown to wait for" in rest, rest
    assert took < (10 if to == "process" else 25), f"stopping took {took:.1f} s"
