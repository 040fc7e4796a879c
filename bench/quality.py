"""Benchmark: prediction quality on a chain-twin world, every model family and baseline side by side.

    .venv/bin/python bench/quality.py [--kols 60] [--days 120] [--seed 7] [--trials 4] [--max-epochs 25]

Runs the pipeline the demo runs (twin world → tracked over JSON-RPC → positions → point-in-time
features → Tune search over model families → one evaluation on the frozen test split) in a scratch
database and storage, then prints what the evaluation reports said, for the same test rows:

- token (the served target, ``peak_3x`` by default: P(the token trades at ≥ 3x the entry price
  within 7 days)): the model Serve loads (the family that won on validation), the best trial of
  each family (PyTorch network, LightGBM, linear), logistic regression and boosted trees with fixed
  parameters on all features, boosted trees on the seed's seven features alone, and the oracle (the
  twin's own probability from its latent variables). ROC-AUC, PR-AUC, Brier and precision/recall
  at each model's validation threshold, each with its bootstrap 95% interval; the base-rate Brier,
  the number of test positives, and how the chain-data label agrees with the twin's truth.
- KOL (3x rate over the next 7/30 days): the served model, each family, the training mean rate
  (what a forecast that knows nothing of the KOL says), persistence (the past rate carries on),
  ridge and the oracle rate: RMSE and R² per horizon.

Also checks the goals and says which hold: a goal met only within the bootstrap interval is
reported as ``"tied"``. Nothing is tuned towards them: the figures are the reports' figures. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
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

FAMILY_NAMES = {"net": "network", "gbt": "LightGBM", "linear": "linear"}
TOKEN_BASELINES = {
    "logistic": "logistic",
    "gbt": "boosted trees (fixed)",
    "gbt_seed7": "boosted trees, seed's 7",
}
KOL_BASELINES = {"mean": "mean rate (train)", "persistence": "persistence", "ridge": "ridge"}
TOKEN_METRICS = ("roc_auc", "pr_auc", "brier", "precision", "recall")
KOL_METRICS = ("rmse_7d", "r2_7d", "rmse_30d", "r2_30d")


def _with_ci(block: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    ci = block.get("ci95") or {}
    return {k: {"value": block.get(k), "ci95": ci.get(k)} for k in keys}


def _rows(report: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """served, family:<name>, baseline:<name>, oracle → metric cells."""
    rows = {"served": _with_ci(report["test"], keys)}
    for family, block in (report.get("families") or {}).items():
        rows[f"family:{family}"] = _with_ci(block, keys)
    for name, block in (report.get("baselines") or {}).items():
        rows[f"baseline:{name}"] = _with_ci(block, keys)
    if report.get("oracle"):
        rows["oracle"] = _with_ci(report["oracle"], keys)
    return rows


def token_table(report: dict[str, Any]) -> dict[str, Any]:
    test = report["test"]
    return {
        "target": report.get("target", "label_3x"),
        "served_family": report.get("family", "net"),
        "n_test": test.get("n"),
        "positives_test": test.get("n_pos"),
        "base_rate_train": report["reference"]["base_rate_train"],
        "brier_base_rate": report["reference"]["brier_base_rate"],
        "label_agreement": report.get("label_agreement"),
        "validation": {f: b.get("val_metric") for f, b in (report.get("families") or {}).items()},
        "rows": _rows(report, TOKEN_METRICS),
    }


def kol_table(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "served_family": report.get("family", "net"),
        "n_test": report["test"].get("n"),
        "validation": {f: b.get("val_metric") for f, b in (report.get("families") or {}).items()},
        "rows": _rows(report, KOL_METRICS),
    }


def _compare(ours: dict[str, Any], theirs: float | None, higher_is_better: bool) -> bool | str | None:
    """True when at or better than ``theirs``; "tied" when worse but ``theirs`` lies inside our
    bootstrap interval; False otherwise; None when a figure is missing."""
    value, ci = ours["value"], ours["ci95"]
    if value is None or theirs is None:
        return None
    if (value >= theirs) if higher_is_better else (value <= theirs):
        return True
    if ci and ci[0] <= theirs <= ci[1]:
        return "tied"
    return False


def goals(token: dict[str, Any] | None, kol: dict[str, Any] | None) -> dict[str, bool | str | None]:
    """The goals, checked on point estimates with the intervals for ties."""
    out: dict[str, bool | str | None] = {}
    if token:
        rows = token["rows"]
        served = rows["served"]
        baselines = [k for k in rows if k.startswith("baseline:")]
        for metric in ("pr_auc", "roc_auc"):
            best = max(
                (rows[b][metric]["value"] for b in baselines if rows[b][metric]["value"] is not None),
                default=None,
            )
            out[f"token_at_or_above_best_baseline_{metric}"] = _compare(served[metric], best, True)
        oracle = rows.get("oracle", {}).get("roc_auc", {}).get("value")
        ours = served["roc_auc"]["value"]
        out["token_within_0.03_of_oracle_roc_auc"] = (
            None if ours is None or oracle is None else oracle - ours <= 0.03
        )
        brier = served["brier"]["value"]
        out["token_brier_below_base_rate"] = (
            None if brier is None or token["brier_base_rate"] is None else brier < token["brier_base_rate"]
        )
    if kol:
        rows = kol["rows"]
        for horizon in ("7d", "30d"):
            ridge = rows.get("baseline:ridge", {}).get(f"rmse_{horizon}", {}).get("value")
            out[f"kol_rmse_{horizon}_at_or_below_ridge"] = _compare(
                rows["served"][f"rmse_{horizon}"], ridge, False
            )
            for name in ("persistence", "mean"):
                theirs = rows.get(f"baseline:{name}", {}).get(f"rmse_{horizon}", {}).get("value")
                label = "mean_rate" if name == "mean" else name
                out[f"kol_rmse_{horizon}_below_{label}"] = _compare(
                    rows["served"][f"rmse_{horizon}"], theirs, False
                )
    return out


def _fmt(cell: dict[str, Any], digits: int = 3) -> str:
    value, ci = cell["value"], cell["ci95"]
    if value is None:
        return "—"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else f"{value:.{digits}f}"


def _labels(served_family: str, baselines: dict[str, str], rows: dict[str, Any]) -> dict[str, str]:
    labels = {"served": f"**served: {FAMILY_NAMES.get(served_family, served_family)}**"}
    for key in rows:
        if key.startswith("family:"):
            family = key.split(":", 1)[1]
            labels[key] = f"{FAMILY_NAMES.get(family, family)} (best trial)"
    labels.update({f"baseline:{k}": v for k, v in baselines.items()})
    labels["oracle"] = "oracle"
    return labels


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
            f"Token model ({token['target']}), test split: {token['n_test']} buys, {token['positives_test']} "
            f"positive (train base rate {token['base_rate_train']:.4f}; base-rate Brier {token['brier_base_rate']:.5f})."
        )
        header = ["ROC-AUC", "PR-AUC", "Brier", "precision", "recall"]
        labels = _labels(token["served_family"], TOKEN_BASELINES, token["rows"])
        lines += _table(title, header, labels, token["rows"], TOKEN_METRICS)
        agreement = token.get("label_agreement")
        if agreement:
            lines += [
                "",
                f"peak_3x from stored swaps agrees with the twin's truth on {100 * agreement['agreement']:.1f}% "
                f"of {agreement['rows']} test rows ({agreement['positives_chain']} positives against the twin's "
                f"{agreement['positives_twin']}: {agreement['missed']} peaks no tracked wallet traded at, "
                f"{agreement['extra']} extra).",
            ]
    if kol:
        title = f"KOL model, test split: {kol['n_test']} KOL-days."
        header = ["RMSE 7d", "R² 7d", "RMSE 30d", "R² 30d"]
        labels = _labels(kol["served_family"], KOL_BASELINES, kol["rows"])
        lines += ["", *_table(title, header, labels, kol["rows"], KOL_METRICS)]
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
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="Keep the run in this directory, in a `kolray demo --dir` layout (state/ and world-default/), "
        "for bench/peak_ceiling.py --demo-dir and bench/backtest.py --data-dir (default: a temporary directory).",
    )
    parser.add_argument(
        "--no-second-target",
        action="store_true",
        help="Skip the token model's other target (by default the KOL's own label_3x is also searched "
        "on the same dataset and reported, as a candidate that is never promoted).",
    )
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            state = args.keep / "state"
            state.mkdir(parents=True, exist_ok=True)
            args.world_dir = args.world_dir or args.keep / "world-default"
        else:
            state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kolray-quality-")))
        # Before Ray starts: Tune trials inherit the run's database and storage.
        os.environ["KOLRAY_DATA_DIR"] = str(state)
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
        served_target = reports.get("token", {}).get("target")
        if "token" in reports and served_target and not args.no_second_target:
            from kolray.learn.stage import train_and_register
            from kolray.learn.targets import TokenTarget
            from kolray.learn.tune import TuneOptions

            other: TokenTarget = "label_3x" if served_target == "peak_3x" else "peak_3x"
            second = train_and_register(
                "token",
                dataset_version=result.dataset_version,
                options=TuneOptions(
                    trials=args.trials,
                    max_epochs=args.max_epochs,
                    n_boot=200,
                    target=other,
                    auto_promote=False,
                ),
                progress=lambda message: print(f"  second target: {message}", file=sys.stderr, flush=True),
            )
            reports["token_second"] = second.report
        ray.shutdown()

    token = token_table(reports["token"]) if "token" in reports else None
    kol = kol_table(reports["kol"]) if "kol" in reports else None
    second_token = token_table(reports["token_second"]) if "token_second" in reports else None
    print(markdown(token, kol))
    if second_token:
        print("\n" + markdown(second_token, None) + "\n(a candidate on the other target, never promoted)")
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
        "token_other_target": second_token,
        "verdicts": {m: r["comparison"].get("verdict") for m, r in reports.items()},
        "goals": goals(token, kol),
        "goals_other_target": goals(second_token, None) if second_token else None,
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
