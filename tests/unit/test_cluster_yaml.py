"""cluster.yaml is a launchable Ray cluster: valid for Ray's own schema, consistent resources, no secrets."""

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# What the instance types used in cluster.yaml really have (AWS spec sheets).
INSTANCES = {
    "m6i.2xlarge": {"CPU": 8, "GPU": 0},
    "c6i.4xlarge": {"CPU": 16, "GPU": 0},
    "g5.xlarge": {"CPU": 4, "GPU": 1},
}


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_ray_accepts_the_config(cluster: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_required_keys_and_referenced_node_types_exist(cluster: dict) -> None:
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type", "max_workers"):
        assert key in cluster, key
    assert cluster["provider"]["type"] == "aws"
    assert cluster["head_node_type"] in cluster["available_node_types"]
    assert {"head", "cpu_worker", "gpu_worker"} <= set(cluster["available_node_types"])


def test_worker_counts_are_consistent(cluster: dict) -> None:
    types = cluster["available_node_types"]
    for name, spec in types.items():
        assert 0 <= spec.get("min_workers", 0) <= spec["max_workers"], name
    workers = {n: s for n, s in types.items() if n != cluster["head_node_type"]}
    assert sum(s["min_workers"] for s in workers.values()) <= cluster["max_workers"]
    assert types[cluster["head_node_type"]]["max_workers"] == 0


@pytest.mark.parametrize("node_type", ["head", "cpu_worker", "gpu_worker"])
def test_declared_resources_match_the_instance(cluster: dict, node_type: str) -> None:
    spec = cluster["available_node_types"][node_type]
    hardware = INSTANCES[spec["node_config"]["InstanceType"]]
    assert 0 < spec["resources"]["CPU"] <= hardware["CPU"]
    assert spec["resources"].get("GPU", 0) == hardware["GPU"]


def test_workers_are_spot_and_the_head_is_not(cluster: dict) -> None:
    types = cluster["available_node_types"]
    assert "InstanceMarketOptions" not in types["head"]["node_config"]
    for name in ("cpu_worker", "gpu_worker"):
        assert types[name]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert types["gpu_worker"]["min_workers"] == 0  # GPUs only while Tune needs them


def test_nodes_install_kolray_as_the_readme_does(cluster: dict) -> None:
    commands = " ".join(cluster["head_setup_commands"] + cluster["worker_setup_commands"])
    assert "make install" in commands
    assert "\ninstall:" in (ROOT / "Makefile").read_text()
    assert "make install" in (ROOT / "README.md").read_text()
    assert "whl/cu" in " ".join(cluster["worker_setup_commands"])  # GPU nodes get a CUDA torch
    starts = " ".join(cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"])
    assert "~/.kolray/env" in starts and "RAY_AUTH_MODE=token" in starts


def test_no_secrets_in_the_file() -> None:
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"postgres(ql)?(\+\w+)?://\w+:[^@\s]+@", text)
    assert not re.search(r"api[-_]?key=\w", text, re.IGNORECASE)
    assert "AWS_SECRET_ACCESS_KEY" not in text
