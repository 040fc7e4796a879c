"""Benchmark: prediction quality on a chain-twin world, every model side by side.

    .venv/bin/python bench/quality.py [--kols 60] [--days 120] [--seed 7] [--trials 4] [--max-epochs 25]

Runs the pipeline the demo runs (twin world → tracked over JSON-RPC → positions → point-in-time
features → Tune search → one evaluation on the frozen test split) in a scratch database and storage,
then prints what the evaluation reports said, for the same test rows:

- token (P(3x) of a buy): the TokenNet, logistic regression and boosted trees on all
  features, boosted trees on the seed's seven features alone, and the oracle (the twin's own
  probability from its latent variables: the best any model could do). ROC-AUC, PR-AUC, Brier and
  the precision/recall at each model's threshold (highest recall with precision ≥ the target on
  validation), each with its bootstrap 95% interval; the base-rate predictor's Brier for reference.
- KOL (3x rate over the next 7/30 days): the KolNet, persistence (the past rate carries on),
  ridge and the oracle rate: RMSE and R² per horizon.

Also checks the issue's goals and says which hold. Nothing is tuned towards them: the figures are
the reports' figures. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOKEN_ROWS = {
    "model": "TokenNet",
    "logistic": "logistic",
    "gbt": "boosted trees",
    "gbt_seed7": "boosted trees, seed's 7",
    "oracle": "oracle",
}
KOL_ROWS = {"model": "KolNet", "persistence": "persistence", "ridge": "ridge", "oracle": "oracle"}
TOKEN_METRICS = ("roc_auc", "pr_auc", "brier", "precision", "recall")
KOL_METRICS = ("rmse_7d", "r2_7d", "rmse_30d", "r2_30d")


def _with_ci(block: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    ci = block.get("ci95") or {}
    return {k: {"value": block.get(k), "ci95": ci.get(k)} for k in keys}


def _blocks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    blocks = {"model": report["test"], **report.get("baselines", {})}
    if report.get("oracle"):
        blocks["oracle"] = report["oracle"]
    return blocks


def token_table(report: dict[str, Any]) -> dict[str, Any]:
    blocks = _blocks(report)
    rows = {name: _with_ci(block, TOKEN_METRICS) for name, block in blocks.items()}
    test = report["test"]
    return {
        "n_test": test.get("n"),
        "positives_test": test.get("n_pos"),
        "base_rate_train": report["reference"]["base_rate_train"],
        "brier_base_rate": report["reference"]["brier_base_rate"],
        "rows": rows,
    }


def kol_table(report: dict[str, Any]) -> dict[str, Any]:
    blocks = _blocks(report)
    return {
        "n_test": report["test"].get("n"),
        "rows": {name: _with_ci(block, KOL_METRICS) for name, block in blocks.items()},
    }


def goals(token: dict[str, Any] | None, kol: dict[str, Any] | None) -> dict[str, bool | None]:
    """The issue's goals, checked on point estimates (the intervals are printed beside them)."""
    out: dict[str, bool | None] = {}
    if token:
        rows = token["rows"]
        ours = rows["model"]["roc_auc"]["value"]
        baselines = [rows[b]["roc_auc"]["value"] for b in ("logistic", "gbt", "gbt_seed7") if b in rows]
        baselines = [b for b in baselines if b is not None]
        out["token_at_or_above_best_baseline_roc_auc"] = (
            None if ours is None or not baselines else ours >= max(baselines)
        )
        oracle = rows.get("oracle", {}).get("roc_auc", {}).get("value")
        out["token_within_0.03_of_oracle_roc_auc"] = (
            None if ours is None or oracle is None else oracle - ours <= 0.03
        )
        brier = rows["model"]["brier"]["value"]
        out["token_brier_below_base_rate"] = (
            None if brier is None or token["brier_base_rate"] is None else brier < token["brier_base_rate"]
        )
    if kol:
        rows = kol["rows"]
        if "persistence" in rows:
            out["kol_beats_persistence_rmse"] = all(
                rows["model"][k]["value"] is not None
                and rows["persistence"][k]["value"] is not None
                and rows["model"][k]["value"] < rows["persistence"][k]["value"]
                for k in ("rmse_7d", "rmse_30d")
            )
    return out


def _fmt(cell: dict[str, Any], digits: int = 3) -> str:
    value, ci = cell["value"], cell["ci95"]
    if value is None:
        return "—"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else f"{value:.{digits}f}"


def _table(
    title: str, header: list[str], labels: dict[str, str], rows: dict[str, Any], metrics: tuple[str, ...]
) -> list[str]:
    lines = [title, "", "| model | " + " | ".join(header) + " |", "| --- " * (len(header) + 1) + "|"]
    for name, label in labels.items():
        if name in rows:
            cells = [_fmt(rows[name][k], 5 if k == "brier" else 3) for k in metrics]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def markdown(token: dict[str, Any] | None, kol: dict[str, Any] | None) -> str:
    lines: list[str] = []
    if token:
        title = (
            f"Token model, test split: {token['n_test']} buys, {token['positives_test']} reached 3x "
            f"(train base rate {token['base_rate_train']:.4f}; base-rate Brier {token['brier_base_rate']:.5f})."
        )
        header = ["ROC-AUC", "PR-AUC", "Brier", "precision", "recall"]
        lines += _table(title, header, TOKEN_ROWS, token["rows"], TOKEN_METRICS)
    if kol:
        title = f"KOL model, test split: {kol['n_test']} KOL-days."
        header = ["RMSE 7d", "R² 7d", "RMSE 30d", "R² 30d"]
        lines += ["", *_table(title, header, KOL_ROWS, kol["rows"], KOL_METRICS)]
    return "\n".join(lines)


def main() -> int:
    from kolray.pipeline import PipelineOptions

    defaults = PipelineOptions(world_dir=Path("."))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kols", type=int, default=defaults.kols)
    parser.add_argument("--days", type=float, default=defaults.days)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--trials", type=int, default=defaults.trials)
    parser.add_argument("--max-epochs", type=int, default=defaults.max_epochs)
    parser.add_argument(
        "--world-dir",
        type=Path,
        default=None,
        help="Reuse or keep the twin world here (default: a temporary directory).",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kolray-quality-") as scratch:
        state = Path(scratch)
        # Before Ray starts: Tune trials inherit the scratch database and storage.
        os.environ["KOLRAY_DATABASE_URL"] = f"sqlite:///{state / 'kolray.db'}"
        os.environ["KOLRAY_STORAGE_URI"] = str(state / "store")
        os.environ["KOLRAY_SERVE_PORT"] = "1"  # nothing serves: the reload notice finds no one
        import ray

        from kolray.config import get_settings
        from kolray.learn.evaluate import read_report
        from kolray.pipeline import run_pipeline

        get_settings.cache_clear()
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter()
        options = PipelineOptions(
            world_dir=args.world_dir or state / "world",
            kols=args.kols,
            days=args.days,
            seed=args.seed,
            trials=args.trials,
            max_epochs=args.max_epochs,
        )
        result = run_pipeline(options, say=lambda message: print(f"  {message}", file=sys.stderr, flush=True))
        elapsed = time.perf_counter() - started
        reports = {m: read_report(m, s["version"], str(state / "store")) for m, s in result.models.items()}
        ray.shutdown()

    token = token_table(reports["token"]) if "token" in reports else None
    kol = kol_table(reports["kol"]) if "kol" in reports else None
    print(markdown(token, kol))
    world = result.stage("world").detail
    line = {
        "bench": "quality",
        "world": {
            "kols": args.kols,
            "days": args.days,
            "seed": args.seed,
            **{k: world.get(k) for k in ("trades", "positions", "closed_3x_rate")},
        },
        "dataset_version": result.dataset_version,
        "skipped": result.skipped,
        "pipeline_s": round(elapsed, 1),
        "token": token,
        "kol": kol,
        "verdicts": {m: r["comparison"].get("verdict") for m, r in reports.items()},
        "goals": goals(token, kol),
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
