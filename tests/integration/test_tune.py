"""Ray Tune on CPU: a few small trials end to end (search → evaluate → register → promote),
on a local storage directory and on S3, through the function API and the CLI."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from kolray import storage
from kolray.cli import main
from kolray.datasets import load_dataset
from kolray.learn import registry
from kolray.learn.stage import train_and_register
from kolray.learn.tune import TuneOptions, default_max_concurrent
from kolray.testing import synthetic_datasets as synthetic

SMALL = TuneOptions(trials=3, max_epochs=4, grace_period=1, patience=3, n_boot=20, fixed={"depth": 1})


@pytest.fixture(autouse=True)
def _fresh_cache():
    registry.clear_cache()
    yield
    registry.clear_cache()


def test_token_search_registers_the_best_trial_locally(ray_session, data_dir: Path, tmp_path: Path) -> None:
    root = str(data_dir / "store")
    synthetic.write_token_dataset(root, n_rows=3000, seed=7)
    messages: list[str] = []
    handler = signal.getsignal(signal.SIGINT)
    outcome = train_and_register(
        "token",
        options=SMALL,
        storage_uri=root,
        local_report_dir=tmp_path / "reports",
        progress=messages.append,
    )
    # Tune's own Ctrl-C handler lasts only as long as the search: Ctrl-C works again afterwards.
    assert signal.getsignal(signal.SIGINT) is handler
    search = outcome.search
    # Search: three trials asked over three families, so one each (the family is a grid axis), at
    # most two at a time on the 2-CPU test cluster, all on CPU.
    assert len(search.trials) == 3 and all(t["error"] is None for t in search.trials)
    assert sorted(t["family"] for t in search.trials) == ["gbt", "linear", "net"]
    assert search.max_concurrent == 2 and not search.on_gpu
    assert {t["params"]["imbalance"] for t in search.trials} <= {"none", "pos_weight", "focal"}
    assert {t["params"]["depth"] for t in search.trials} == {1}  # pinned by TuneOptions.fixed
    # The champion family is the one whose best trial is best on validation, whichever it is.
    assert set(search.families) == {"net", "gbt", "linear"}
    assert max(t["best_val_pr_auc"] for t in search.trials) == pytest.approx(search.best_metric)
    assert search.best_metric == max(b.val_metric for b in search.families.values())
    assert sum("done: best val_pr_auc" in m for m in messages) == 3
    assert sum("boosting rounds (LightGBM)" in m for m in messages) == 1
    assert sum("chosen on validation (linear)" in m for m in messages) == 1
    # Results and checkpoints (safetensors, LightGBM text, linear JSON) live under the storage URI.
    run_dir = Path(root) / "tune" / f"token-{outcome.version}"
    assert list(run_dir.glob("*/checkpoint_*/model.safetensors"))
    assert list(run_dir.glob("*/checkpoint_*/model.txt"))
    assert list(run_dir.glob("*/checkpoint_*/linear.json"))
    assert not list(run_dir.glob("*/checkpoint_*/*.pt")) and not list(run_dir.glob("*/checkpoint_*/*.pkl"))
    # Registered, reported, promoted (the first one).
    assert registry.champion_version("token", root) == outcome.version
    champion = registry.load_champion("token", root)
    ds = load_dataset("token", storage_uri=root)
    assert champion.dataset_version == ds.version
    assert champion.family == search.family and champion.meta.tune["trials"] == 3
    if search.family == "net":
        assert len(champion.meta.train_config["widths"]) == 1
    # The synthetic dataset has only the KOL's own label: the default target falls back and says so.
    assert champion.target == "label_3x"
    report = json.loads((tmp_path / "reports" / "token" / outcome.version / "report.json").read_text())
    assert report == json.loads(
        storage.read_bytes(storage.join(root, "reports", "token", outcome.version, "report.json"))
    )
    assert {"roc_auc", "pr_auc", "brier", "precision", "recall", "threshold", "n", "n_pos"} <= set(
        report["test"]
    )
    assert report["test"]["roc_auc"] > 0.6
    assert set(report["baselines"]) == {"logistic", "gbt", "gbt_seed7"} and report["oracle"] is not None
    assert report["search"]["trials"] == 3 and report["family"] == search.family
    assert report["target"] == "label_3x" and "peak_3x" in report["target_note"]
    # Every family's best is scored on the same test rows; the served one is the report's test block.
    assert set(report["families"]) == {"net", "gbt", "linear"}
    assert report["families"][search.family]["pr_auc"] == report["test"]["pr_auc"]
    assert report["search"]["chosen_on"] == "validation val_pr_auc"
    # The report's test metrics are the registered ones: the test split was scored once.
    assert champion.meta.metrics["test"]["pr_auc"] == report["test"]["pr_auc"]
    # The stage itself logs the run, so `kolray status` sees a tune run whoever started it.
    from kolray.config import get_settings
    from kolray.db.migrate import upgrade
    from kolray.status import last_runs

    tune_run = next(r for r in last_runs(upgrade(get_settings().database_url)) if r.kind == "tune")
    assert (tune_run.status, tune_run.summary["version"]) == ("ok", outcome.version)


def test_ctrl_c_during_a_search_stops_the_stage_and_registers_nothing(
    ray_session, data_dir: Path, tmp_path: Path
) -> None:
    root = str(data_dir / "store")
    synthetic.write_token_dataset(root, n_rows=3000, seed=7)
    handler = signal.getsignal(signal.SIGINT)

    def ctrl_c_after_the_first_trial(message: str) -> None:
        if "done: best" in message:
            os.kill(os.getpid(), signal.SIGINT)

    one_at_a_time = SMALL.model_copy(update={"trials": 2, "max_concurrent": 1})
    with pytest.raises(KeyboardInterrupt):
        train_and_register(
            "token", options=one_at_a_time, storage_uri=root, progress=ctrl_c_after_the_first_trial
        )
    # Tune ended the search gracefully, then the stage stopped instead of registering what the
    # search had so far as if it were complete; Ctrl-C is the process's own again.
    assert signal.getsignal(signal.SIGINT) is handler
    assert registry.list_versions("token", root) == []


def test_cli_tune_evaluate_promote_on_s3(ray_session, s3_storage: str, tmp_path: Path) -> None:
    synthetic.write_kol_dataset(s3_storage, n_kols=30, n_days=140, seed=8)
    out = tmp_path / "reports"
    rc = main(["tune", "--model", "kol", "--trials", "2", "--max-epochs", "2", "--out", str(out)])
    assert rc == 0
    index = registry.read_index("kol", s3_storage)
    assert len(index.versions) == 1 and index.champion == index.versions[0].version
    version = index.champion
    # Tune's results and checkpoints went to the bucket.
    fs, path = storage.filesystem(storage.join(s3_storage, "tune", f"kol-{version}"))
    assert fs.glob(f"{path}/*/checkpoint_*/model.safetensors")
    assert (out / "kol" / version / "report.json").is_file()
    assert storage.exists(storage.join(s3_storage, "reports", "kol", version, "pred_vs_actual.png"))

    assert main(["evaluate", "--model", "kol", "--n-boot", "10", "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "kol" / version / "report.json").read_text())
    first = json.loads((out / "kol" / version / "report.json").read_text())
    assert again["test"]["rmse_7d"] == pytest.approx(first["test"]["rmse_7d"])  # same model, same split
    assert main(["promote", "kol", version]) == 0
    assert main(["promote", "kol", "20200101T000000Z-00000000"]) == 1
    assert main(["tune", "--model", "all", "--dataset-version", "x"]) == 2


def test_gpu_request_beyond_the_cluster_is_refused(ray_session) -> None:
    with pytest.raises(ValueError, match="gpus-per-trial"):
        default_max_concurrent(1, 0.25)
    assert default_max_concurrent(1, 0) == 2
    assert default_max_concurrent(0.5, 0) == 4
