"""One backtest: load the period, decide per strategy, replay, measure, check for lookahead."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kolray.analyzer import iter_wallet_positions
from kolray.backtest.data import (
    BacktestError,
    SignalSet,
    TapeName,
    coverage,
    load_market_tape,
    load_signals,
)
from kolray.backtest.engine import Execution, PriceTape, metrics, replay
from kolray.backtest.report import (
    BacktestReport,
    DelayResult,
    ModelCheck,
    StrategyResult,
    TapeCoverageOut,
    equity_png,
    save_report,
)
from kolray.backtest.strategies import (
    DEFAULT_MIN_SCORED,
    DEFAULT_STRATEGIES,
    DEFAULT_TOP_K,
    StrategySpec,
    at_least,
    copy_all,
    kol_pnl_table,
    top_kols,
)
from kolray.config import get_settings
from kolray.datasets import DatasetError, load_dataset, new_version, read_manifest
from kolray.db.runs import record_run
from kolray.features.source import read_engine
from kolray.learn import registry

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
# The oracle's threshold when neither it nor a model strategy gives one: this quantile of its values
# on the dataset's earlier splits (train, validation), so that it is fixed before the test period.
FALLBACK_QUANTILE = 0.95
TapeChoice = Literal["market", "trades", "both"]
TAPE_NOTES: dict[str, str] = {
    "market": "Market tape: prices the market stage read from each token's bonding curve or pool "
    "(market_tape), at its cadence (2 s while the price moves, up to 60 s while it stands still); fills, "
    "take-profit and stop-loss read it; a gap (the market could not be read) is never a price.",
    "trades": "Trades tape: prices observed in tracked wallets' swaps: take-profit and stop-loss can only "
    "trigger, and fills only happen, at prices some tracked KOL traded at.",
}


class LookaheadError(BacktestError):
    """The model may have been trained on what the backtest replays."""


class BacktestOptions(BaseModel):
    """What ``kolray backtest`` can ask for."""

    model_config = ConfigDict(extra="forbid")

    strategies: list[StrategySpec] = Field(
        default_factory=lambda: [StrategySpec.parse(s) for s in DEFAULT_STRATEGIES], min_length=1
    )
    dataset_version: str | None = Field(default=None, description="Token dataset; default: the latest.")
    model_version: str | None = Field(default=None, description="Token model; default: the champion.")
    execution: Execution = Field(default_factory=Execution)
    top_kols_window: Literal["7d", "30d", "all"] = "all"
    top_kols_min_scored: int = Field(default=DEFAULT_MIN_SCORED, ge=1)
    allow_lookahead: bool = Field(
        default=False,
        description="Run the model strategy even if the model may have seen the period (flagged).",
    )
    end: int | None = Field(
        default=None, description="End of the data (unix s); default: the dataset's cutoff."
    )
    tape: TapeChoice | None = Field(
        default=None,
        description="The price tape copies fill on: market (each token's own curve or pool, recorded by the "
        "market stage), trades (prices revealed by tracked wallets' swaps) or both, side by side. Default: "
        "both when the database has a market tape for the signals' tokens, else trades (and a note says why).",
    )
    delays_s: list[int] = Field(
        default_factory=list,
        description="Also replay every strategy's same decisions at each of these delays (seconds from "
        "the KOL's trade to the copy's fills): what latency is worth (BacktestReport.by_delay).",
    )

    @field_validator("delays_s")
    @classmethod
    def _delays(cls, delays: list[int]) -> list[int]:
        if any(d < 0 for d in delays):
            raise ValueError("delays must be >= 0 seconds")
        return sorted(set(delays))

    @field_validator("strategies")
    @classmethod
    def _unique(cls, specs: list[StrategySpec]) -> list[StrategySpec]:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"strategies repeat: {names}")
        return specs

    @property
    def explicit(self) -> bool:
        """Whether the strategies differ from the defaults (then each must run, or the run fails)."""
        return self.strategies != [StrategySpec.parse(s) for s in DEFAULT_STRATEGIES]


@dataclass
class BacktestRun:
    report: BacktestReport
    png: bytes
    trades: dict[str, list[dict[str, Any]]]


@dataclass
class BacktestStage:
    """What :func:`backtest_stage` did: the run, where its report went, whether the run was logged."""

    run: BacktestRun
    location: str | None
    recorded: bool


def trained_through(model_dataset: str, storage_uri: str | None) -> tuple[int | None, str]:
    """When everything a model trained on dataset ``model_dataset`` used was known: the start of
    that dataset's test split (purging keeps every train/validation label resolved before it), or,
    for a dataset without a split plan, its last validation entry plus the label horizon."""

    try:
        manifest = read_manifest("token", model_dataset, storage_uri)
    except DatasetError as error:
        return None, f"the model's dataset cannot be read ({error})"
    plan = manifest.source.get("split_plan")
    if isinstance(plan, dict) and isinstance(plan.get("test_start"), int | float):
        return int(
            plan["test_start"]
        ), f"dataset {model_dataset}: its test split starts there (purged split plan)"
    last = manifest.splits["val"] if manifest.splits["val"].rows else manifest.splits["train"]
    if last.time_max is None:
        return None, f"dataset {model_dataset} has no training rows"
    return (
        last.time_max + manifest.horizon_s + 1,
        f"dataset {model_dataset}: last validation entry + the {manifest.horizon_s // 3600} h label horizon",
    )


def check_model(
    version: str, model_dataset: str, dataset_version: str, signal_times: np.ndarray, storage_uri: str | None
) -> ModelCheck:
    """The no-lookahead check for a model used on signals at ``signal_times``."""
    through, basis = trained_through(model_dataset, storage_uri)
    first = int(signal_times.min())
    before = int(np.sum(signal_times < through)) if through is not None else len(signal_times)
    ok = through is not None and before == 0
    if ok and through is not None:
        verdict = (
            f"walk-forward: model {version} used only data before {_iso(through)}; "
            f"every signal is at or after it (first {_iso(first)})"
        )
    elif through is None:
        verdict = f"NOT VERIFIED: {basis}; the model may have been trained on this period"
    else:
        verdict = (
            f"LOOKAHEAD: model {version} used data up to {_iso(through)}, after {before} of "
            f"{len(signal_times)} signals (first {_iso(first)}): its results on those are not out of sample"
        )
    return ModelCheck(
        version=version,
        dataset_version=model_dataset,
        trained_through=through,
        basis=basis,
        first_signal=first,
        signals_before=before,
        walk_forward=ok,
        same_dataset=model_dataset == dataset_version,
        verdict=verdict,
    )


def _iso(t: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_backtest(
    options: BacktestOptions | None = None,
    *,
    database_url: str | None = None,
    storage_uri: str | None = None,
    progress: Progress | None = None,
) -> BacktestRun:
    """Replay the test period of a token dataset under every strategy of ``options``.

    Raises :class:`BacktestError` for unusable inputs (no dataset, no matching positions, an
    explicitly requested strategy that cannot run) and :class:`LookaheadError` when the model may
    have been trained on the replayed period (unless ``allow_lookahead``: then it is flagged).
    """

    options = options or BacktestOptions()
    say = progress or (lambda _message: None)
    if database_url is None or storage_uri is None:
        settings = get_settings()
        database_url = database_url or settings.database_url
        storage_uri = storage_uri or settings.storage_uri
    started = time.perf_counter()

    try:
        dataset = load_dataset("token", options.dataset_version, storage_uri)
    except DatasetError as error:
        raise BacktestError(str(error)) from None
    engine = read_engine(database_url)
    say(f"dataset token/{dataset.version}: {len(dataset.test)} test rows")
    data = load_signals(engine, dataset, "test", options.end)
    say(
        f"{len(data.signals)} signals from {_iso(data.start)} to {_iso(data.end)}; "
        f"{len(data.tape)} observed prices of {len({s.mint for s in data.signals})} tokens"
    )
    tapes, why = choose_tapes(options.tape, data, engine)
    covered = {tape_name: coverage(tape_name, tape, data.signals) for tape_name, tape in tapes.items()}
    for tape_name, c in covered.items():
        say(
            f"{tape_name} tape: {c.points} prices, {c.gaps} gaps, {c.tokens_priced} of {c.tokens} tokens priced"
        )

    notes: list[str] = [TAPE_NOTES[tape_name] for tape_name in tapes]
    if why:
        notes.append(why)
    notes.extend(
        f"{tape_name} tape: {c.tokens - c.tokens_priced} of the signals' {c.tokens} tokens have no price on "
        f"it before the end of the data; their {c.signals_unpriced} signals are never copied on it."
        for tape_name, c in covered.items()
        if c.signals_unpriced
    )
    notes.append(
        "Equity is realised: a copy's PnL is booked when it is flat; the stake is committed until then."
    )
    primary, *others = tapes
    skipped: dict[str, str] = {}
    results: list[StrategyResult] = []
    other_results: dict[str, list[StrategyResult]] = {name: [] for name in others}
    trades: dict[str, list[dict[str, Any]]] = {}
    by_delay: dict[str, list[DelayResult]] = {}
    model_check: ModelCheck | None = None
    model_threshold: float | None = None

    # The model first: its threshold is the oracle's default.
    specs = sorted(options.strategies, key=lambda s: 0 if s.kind == "model" else 1)
    ordered: dict[str, tuple[StrategySpec, np.ndarray, np.ndarray | None, float | None, str, str | None]] = {}
    for spec in specs:
        try:
            decided = _decide(spec, data, options, model_threshold, storage_uri, engine, say)
        except BacktestError as error:
            if options.explicit or isinstance(error, LookaheadError):
                raise
            skipped[spec.name] = str(error)
            say(f"{spec.name}: skipped ({error})")
            continue
        decisions, scores, threshold, description, note, check = decided
        if spec.kind == "model":
            model_threshold, model_check = threshold, check
        ordered[spec.name] = (spec, decisions, scores, threshold, description, note)
    for spec in options.strategies:  # back in the order asked for
        if spec.name not in ordered:
            continue
        spec, decisions, scores, threshold, description, note = ordered[spec.name]
        name = _display_name(spec, threshold)
        trades[name] = []
        # The same decisions on every tape: only the prices the copies fill and exit at differ.
        for tape_name, tape in tapes.items():
            outcome = replay(data.signals, decisions, tape, options.execution, data.end, scores)
            measured, curve = metrics(outcome, len(data.signals), options.execution, data.start, data.end)
            result = StrategyResult(
                name=name,
                spec=spec,
                description=description,
                threshold=threshold,
                metrics=measured,
                equity=list(zip(curve.times, curve.equity, strict=True)),
                note=note,
            )
            (results if tape_name == primary else other_results[tape_name]).append(result)
            trades[name].extend({**t.to_dict(), "tape": tape_name} for t in outcome.trades)
            say(f"{name} ({tape_name} tape): {measured.trades} trades, {measured.total_pnl_sol:+.2f} SOL")
        for delay in options.delays_s:
            execution = options.execution.model_copy(update={"delay_s": delay})
            at_delay = replay(data.signals, decisions, tapes[primary], execution, data.end, scores)
            delayed, _ = metrics(at_delay, len(data.signals), execution, data.start, data.end)
            by_delay.setdefault(name, []).append(DelayResult(delay_s=delay, metrics=delayed))
    if not results:
        raise BacktestError("no strategy could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if model_check is not None:
        notes.insert(0, model_check.verdict)
        if model_check.same_dataset:
            notes.append(
                f"The model was evaluated on this same test split (dataset {dataset.version}); when "
                "`kolray tune` auto-promotes, candidates are also compared there, a mild selection effect."
            )

    report = BacktestReport(
        id=new_version(),
        created_at=int(time.time()),
        code_version=registry.code_version(),
        dataset_version=dataset.version,
        split="test",
        period_start=data.start,
        period_end=data.end,
        signals=len(data.signals),
        dropped=data.dropped,
        execution=options.execution,
        model=model_check,
        strategies=results,
        skipped=skipped,
        notes=notes,
        by_delay=by_delay,
        tape=primary,
        other_tapes=other_results,
        coverage={
            tape_name: TapeCoverageOut(
                tokens=c.tokens,
                tokens_priced=c.tokens_priced,
                signals_unpriced=c.signals_unpriced,
                points=c.points,
                gaps=c.gaps,
            )
            for tape_name, c in covered.items()
        },
    )
    png = equity_png(report)
    say(f"backtest done in {time.perf_counter() - started:.1f}s")
    return BacktestRun(report=report, png=png, trades=trades)


def choose_tapes(
    choice: TapeChoice | None, data: SignalSet, engine: Any
) -> tuple[dict[TapeName, PriceTape], str | None]:
    """The tapes to fill on, the report's own first (market before trades), and, when the default
    could not give both, the line that says why."""
    if choice == "trades":
        return {"trades": data.tape}, None
    mints = sorted({s.mint for s in data.signals})
    market = load_market_tape(engine, mints, data.end)
    priced = len(set(mints) & market.mints)
    if not priced:
        why = (
            f"No market tape: the market_tape table has no price of the signals' {len(mints)} tokens before "
            f"the end of the data ({_iso(data.end)}); the market stage (`kolray market`, or `kolray track`) "
            "records it."
        )
        if choice is not None:
            raise BacktestError(f"--tape {choice}: {why[0].lower()}{why[1:]} Or use --tape trades.")
        return {"trades": data.tape}, why + " Fills read the trades tape only."
    if choice == "market":
        return {"market": market}, None
    return {"market": market, "trades": data.tape}, None


def _display_name(spec: StrategySpec, threshold: float | None) -> str:
    if spec.kind in ("model", "oracle") and threshold is not None:
        return f"{spec.kind}:{threshold:.3g}"
    return spec.name


def _decide(
    spec: StrategySpec,
    data: SignalSet,
    options: BacktestOptions,
    model_threshold: float | None,
    storage_uri: str | None,
    engine: Any,
    say: Progress,
) -> tuple[np.ndarray, np.ndarray | None, float | None, str, str | None, ModelCheck | None]:
    """``(decisions, scores, threshold, description, note, model check)`` for one strategy."""
    n = len(data.signals)
    times = np.array([s.time for s in data.signals], dtype=np.int64)
    if spec.kind == "copy_all":
        return copy_all(n), None, None, "copy every KOL opening buy", None, None

    if spec.kind == "top_kols":
        k = spec.top_k or DEFAULT_TOP_K
        wallets, pnl, scored = kol_pnl_table(iter_wallet_positions(engine), times, options.top_kols_window)
        if not wallets:
            raise BacktestError("top_kols: no stored positions to rank KOLs by")
        decisions, ranks = top_kols(
            [s.wallet for s in data.signals], wallets, pnl, scored, k, options.top_kols_min_scored
        )
        description = (
            f"copy KOLs ranked in the top {k} by realised PnL ({options.top_kols_window}, positions closed "
            f"before the buy, at least {options.top_kols_min_scored} of them)"
        )
        return decisions, -ranks, None, description, None, None

    if spec.kind == "model":
        try:
            model = (
                registry.load_version("token", options.model_version, storage_uri)
                if options.model_version
                else registry.load_champion("token", storage_uri)
            )
        except registry.RegistryError as error:
            raise BacktestError(f"model: {error}") from None
        missing = [c for c in model.feature_columns if c not in data.rows.columns]
        if missing:
            raise BacktestError(
                f"model: token/{model.version} needs features {missing[:5]} that dataset rows lack "
                "(a model from another feature set?)"
            )
        check = check_model(model.version, model.dataset_version, data.dataset_version, times, storage_uri)
        if not check.walk_forward and not options.allow_lookahead:
            raise LookaheadError(
                f"{check.verdict}. Backtest a later dataset (`kolray features` then `kolray backtest "
                "--dataset-version ...`), train a model on an earlier one, or pass --allow-lookahead to run "
                "it anyway, flagged."
            )
        threshold = spec.threshold if spec.threshold is not None else model.threshold
        if threshold is None:
            raise BacktestError(f"model: token/{model.version} has no threshold; give one (model:0.3)")
        p = np.asarray(model.predict_proba(data.rows[model.feature_columns]), dtype=np.float64).reshape(-1)
        say(f"model token/{model.version}: P(3x) for {n} signals; {check.verdict}")
        description = f"copy when token model {model.version}'s P(3x) ≥ {threshold:.3g}"
        note = None if check.walk_forward else check.verdict
        return at_least(p, threshold), p, float(threshold), description, note, check

    # oracle
    if "oracle_p3x" not in data.rows.columns or data.rows["oracle_p3x"].isna().all():
        raise BacktestError(
            "oracle: the dataset has no oracle_p3x (built without a twin world's ground truth)"
        )
    oracle = data.rows["oracle_p3x"].to_numpy(dtype=np.float64)
    note = None
    if spec.threshold is not None:
        threshold = spec.threshold
    elif model_threshold is not None:
        threshold = model_threshold
    else:
        past = data.past_oracle[~np.isnan(data.past_oracle)]
        if not len(past):
            raise BacktestError(
                "oracle: no model threshold to match and no oracle_p3x before the test period; give one (oracle:0.3)"
            )
        threshold = float(np.quantile(past, FALLBACK_QUANTILE))
        note = (
            f"no model threshold to match: the top {100 * (1 - FALLBACK_QUANTILE):.0f}% of the oracle's values "
            "on the train and validation splits"
        )
    description = f"copy when the twin's oracle P(3x) (latent traits at entry) ≥ {threshold:.3g}: the ceiling"
    return at_least(oracle, threshold), oracle, float(threshold), description, note, None


def backtest_stage(
    options: BacktestOptions | None = None,
    *,
    database_url: str | None = None,
    storage_uri: str | None = None,
    progress: Progress | None = None,
    save: bool = True,
) -> BacktestStage:
    """The whole ``kolray backtest`` stage (the command and the demo pipeline call it): the run, its
    report kept under ``<storage>/reports/backtest/`` (``save``) where the API and the UI's Backtest
    tab find it, and the run logged for ``kolray status``. Raises what :func:`run_backtest` raises."""

    if storage_uri is None:
        storage_uri = get_settings().storage_uri
    run = run_backtest(options, database_url=database_url, storage_uri=storage_uri, progress=progress)
    location = save_report(run.report, run.png, run.trades, storage_uri) if save else None
    recorded = record_run("backtest", "ok", run_summary(run.report), database_url)
    return BacktestStage(run=run, location=location, recorded=recorded)


def run_summary(report: BacktestReport) -> dict[str, Any]:
    """The backtest's line in the run log."""
    return {
        "id": report.id,
        "dataset_version": report.dataset_version,
        "signals": report.signals,
        "walk_forward": None if report.model is None else report.model.walk_forward,
        "tape": report.tape,
        "strategies": {
            r.name: {"trades": r.metrics.trades, "total_pnl_sol": round(r.metrics.total_pnl_sol, 6)}
            for r in report.strategies
        },
        "other_tapes": {
            tape: {
                r.name: {"trades": r.metrics.trades, "total_pnl_sol": round(r.metrics.total_pnl_sol, 6)}
                for r in results
            }
            for tape, results in report.other_tapes.items()
        },
    }
