"""Driver for tests/integration/test_multinode.py, run in its own process (one Ray cluster per
process): a head and two worker nodes from ``ray.cluster_utils.Cluster``.

1. The tracker syncs a twin world with pollers spread over the nodes; a worker node is removed
   mid-sync; a second sync finishes the job; the database must hold exactly the ground truth.
2. A Tune search runs its trials on more than one node.

Prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from sqlalchemy import text

from kolray.db.migrate import upgrade
from kolray.kols import KolIn, upsert_kols
from kolray.sim.server import start_server
from kolray.sim.world import load_world
from kolray.tracker.poller import PollPolicy
from kolray.tracker.supervisor import Tracker, TrackerOptions

NODE = {"num_cpus": 1, "object_store_memory": 90 * 2**20}


def nodes_of(class_name: str) -> set[str]:
    from ray.util.state import list_actors

    return {
        a.node_id for a in list_actors(filters=[("class_name", "=", class_name)], limit=1000, detail=True)
    }


def main(world_dir: str, work: str) -> None:
    # Token auth: ray.init() makes ~/.ray/auth_token for a new local cluster, cluster_utils does not,
    # so on a fresh machine this script would start a GCS that dies for want of a token.
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled

    ensure_token_if_auth_enabled()
    # Dashboard (the state API needs it) on a free port: other clusters may be running here.
    cluster = Cluster(
        initialize_head=True, head_node_args={**NODE, "include_dashboard": True, "dashboard_port": 0}
    )
    workers = [cluster.add_node(**NODE) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="kolray", log_to_driver=False)
    out: dict = {"nodes": len(ray.nodes())}

    world = load_world(world_dir)
    url = f"sqlite:///{Path(work) / 'multinode.db'}"
    engine = upgrade(url)
    wallets = list(world.kols().wallet)
    upsert_kols(engine, [KolIn(wallet=w) for w in wallets])
    with start_server(world, rps=None, latency_ms=20) as twin:
        options = TrackerOptions(
            rpc_urls=[twin.url],
            database_url=url,
            actors=3,
            rps=1e6,
            burst=1e6,
            policy=PollPolicy(batch_size=5, backfill_seconds=10**10, backfill_max_signatures=10**7),
            client_options={
                "timeout_s": 2.0,
                "max_retries": 10,
                "backoff_base_s": 0.05,
                "backoff_max_s": 0.5,
            },
            wallet_concurrency=2,
        )
        with Tracker(options) as tracker:
            tracker.wait_ready()
            out["poller_nodes"] = len(nodes_of("PollerActor"))
            results: dict = {}
            sync = threading.Thread(target=lambda: results.update(first=tracker.sync(wallets)))
            sync.start()
            # Remove a worker node once ingestion is under way.
            deadline = time.time() + 60
            while time.time() < deadline:
                with engine.connect() as conn:
                    if conn.execute(text("SELECT count(*) FROM swaps")).scalar_one() > 0:
                        break
                time.sleep(0.05)
            cluster.remove_node(workers[0])
            out["removed_mid_sync"] = sync.is_alive()
            sync.join()
            second = tracker.sync(wallets)
        out["first_restarts"] = results["first"].actor_restarts
        out["first_wallet_errors"] = results["first"].wallet_errors
        out["second_wallet_errors"] = second.wallet_errors
    with engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(text("SELECT signature, wallet, mint FROM swaps"))]
    trades = world.trades()
    truth = set(zip(trades.signature, trades.wallet, trades.mint, strict=True))
    out["swaps"] = len(stored)
    out["duplicates"] = len(stored) - len(set(stored))
    out["missing"] = len(truth - set(stored))
    out["extra"] = len(set(stored) - truth)

    # Tune across the two nodes left (head + one worker): four trials asked, so two per family over
    # the three families, six 1-CPU trials in all.
    from kolray.learn.stage import train_and_register
    from kolray.learn.tune import TuneOptions
    from kolray.testing import synthetic_datasets as synthetic

    store = str(Path(work) / "store")
    synthetic.write_token_dataset(store, n_rows=1500, seed=3)
    outcome = train_and_register(
        "token",
        options=TuneOptions(trials=4, max_epochs=3, grace_period=1, n_boot=10, fixed={"depth": 1}),
        storage_uri=store,
    )
    out["tune_trials"] = len(outcome.search.trials)
    out["tune_errors"] = sum(t["error"] is not None for t in outcome.search.trials)
    out["tune_families"] = sorted({t["family"] for t in outcome.search.trials})
    out["trial_nodes"] = len(nodes_of("ImplicitFunc"))
    print(json.dumps(out))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
