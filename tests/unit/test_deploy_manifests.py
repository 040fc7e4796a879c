"""deploy/kuberay holds manifests that deploy what this repository builds: the RayService runs the same
Serve application as serve_config.yaml, and each RayJob's entrypoint is a job script with options it
accepts."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kuberay").glob("*.yaml"))


def load(path: Path) -> dict:
    (document,) = list(yaml.safe_load_all(path.read_text()))
    return document


def test_there_are_manifests_for_the_service_and_the_jobs() -> None:
    kinds = sorted(load(p)["kind"] for p in MANIFESTS)
    assert kinds.count("RayService") == 1
    assert kinds.count("RayJob") >= 2


def test_the_ray_service_runs_the_app_that_serve_config_deploys() -> None:
    (service,) = [load(p) for p in MANIFESTS if load(p)["kind"] == "RayService"]
    deployed = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    local = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    (app,), (local_app,) = deployed.applications, local.applications
    assert app.import_path == local_app.import_path
    assert sorted(d.name for d in app.deployments) == sorted(d.name for d in local_app.deployments)


@pytest.mark.parametrize("path", [p for p in MANIFESTS if load(p)["kind"] == "RayJob"], ids=lambda p: p.name)
def test_each_ray_job_runs_a_job_script_that_accepts_its_options(path: Path) -> None:
    entrypoint = shlex.split(load(path)["spec"]["entrypoint"])
    assert entrypoint[0] == "python"
    script = ROOT / entrypoint[1].removeprefix("/app/")
    assert script.is_file(), f"{path.name}: no {script.relative_to(ROOT)} in the repository"
    # --help after the manifest's own options: argument parsing fails on an option the job lacks.
    done = subprocess.run(
        [sys.executable, str(script), *entrypoint[2:], "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
