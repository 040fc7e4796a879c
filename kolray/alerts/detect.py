"""Alert evaluation: new swaps since a watermark → opening buys → rules → stored alerts.

One evaluation:

1. **Watermark.** ``meta['alerts']`` holds ``W``, the last swap id evaluated. The new range ends
   at the committed watermark (the analyzer's definition: on PostgreSQL ids may commit out of
   order, so it briefly waits out in-flight inserts). The first evaluation on a database starts at
   the current end (history raises no alert) unless asked to start from the beginning.
2. **Opening buys.** Buys with ``W < id <= W'`` whose (wallet, mint) had no open position then,
   decided by :func:`kolray.analyzer.build_ledger` over that pair's swaps (the shared definition,
   not the ``positions`` table, which only moves when ``kolray analyze`` runs). Buys older than
   ``max_age_s`` behind the newest swap (a new wallet's backfill) are skipped.
3. **Facts.** P(3x) from the champion token model on the online features
   (:func:`kolray.features.token_features_online`: the same as Serve and the datasets); the
   KOL's Diamond Hand score from its positions closed before the buy
   (:class:`kolray.analyzer.KolStatsIndex`); distinct KOLs that bought the token in the window
   (from swaps, so recent buys count before they are analysed).
4. **Store.** Alerts are inserted with ``ON CONFLICT (dedupe_key) DO NOTHING`` together with the
   new watermark, in one transaction: a crash re-evaluates the range and stores nothing twice.

If the model cannot be used for a transient reason (storage or database hiccup), the other rules'
alerts are stored but the watermark stays, so the p3x rule catches up next time (dedupe keys keep
the rest from repeating). Without any champion model the p3x rule is simply inactive.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row

from kolray.alerts.rules import AlertPayload, AlertRules, Buy, Facts, dedupe_key, fired
from kolray.alerts.webhooks import Webhook, initial_deliveries
from kolray.analyzer import KolStatsIndex, build_ledger, iter_wallet_positions
from kolray.analyzer.positions import SWAP_FIELDS
from kolray.analyzer.stage import committed_watermark as analyzer_watermark
from kolray.chain.types import LAMPORTS_PER_SOL, WSOL_MINT
from kolray.db.tables import AlertRow, Kol, Meta, SwapRow, now_s
from kolray.features import token_features_online
from kolray.learn import registry
from kolray.learn.registry import NoChampion
from kolray.secrets import redact_text

log = logging.getLogger(__name__)

META_KEY = "alerts"
BATCH = 2_000  # new swaps per evaluation step (each commits its alerts and the watermark)
CHUNK = 400  # values per IN (...)


@dataclass
class Evaluation:
    """What one :func:`evaluate` call did."""

    watermark: int = 0
    swaps: int = 0
    buys: int = 0
    opening_buys: int = 0
    too_old: int = 0
    alerts: int = 0  # stored now
    duplicates: int = 0  # already stored (a re-evaluation)
    new_ids: list[int] = field(default_factory=list)
    by_rule: dict[str, int] = field(default_factory=dict)
    p3x_unavailable: str | None = None  # why the p3x rule could not run
    held_back: bool = False  # the watermark stayed for the p3x rule to catch up
    seconds: float = 0.0

    def line(self) -> str:
        rules = ", ".join(f"{k} {v}" for k, v in sorted(self.by_rule.items())) or "none"
        text = (
            f"alerts: {self.swaps} new swaps, {self.opening_buys} opening buys "
            f"({self.too_old} too old), {self.alerts} alerts ({rules}), {self.duplicates} duplicates; "
            f"watermark {self.watermark}; {self.seconds:.2f} s"
        )
        if self.p3x_unavailable:
            text += f"; p3x rule inactive: {self.p3x_unavailable}"
        return text


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for index in range(0, len(items), size):
        yield list(items[index : index + size])


def read_watermark(engine: Engine) -> int | None:
    with engine.connect() as conn:
        value = conn.scalar(select(Meta.value).where(Meta.key == META_KEY))
    return int(value["swap_id"]) if isinstance(value, dict) and "swap_id" in value else None


def _write_watermark(conn: Connection, swap_id: int) -> None:
    value = {"swap_id": int(swap_id), "updated_at": now_s()}
    if conn.scalar(select(func.count()).select_from(Meta).where(Meta.key == META_KEY)):
        conn.execute(update(Meta).where(Meta.key == META_KEY).values(value=value, updated_at=now_s()))
    else:
        conn.execute(insert(Meta).values(key=META_KEY, value=value, updated_at=now_s()))


def committed_watermark(engine: Engine) -> int:
    """The largest swap id below which no swap can still appear (shared with the analyzer)."""
    with engine.begin() as conn:
        return analyzer_watermark(conn)


def start_watermark(engine: Engine, from_start: bool = False) -> int:
    """Make sure a watermark exists: the current end of ``swaps`` (or 0 with ``from_start``)."""
    current = read_watermark(engine)
    if current is not None and not from_start:
        return current
    value = 0 if from_start else committed_watermark(engine)
    with engine.begin() as conn:
        _write_watermark(conn, value)
    return value


class ModelSource:
    """P(3x) for buys: the champion token model (re-read each time, cheap when unchanged) on the
    online features."""

    def __init__(self, database_url: str, storage_uri: str | None) -> None:
        self.database_url = database_url
        self.storage_uri = storage_uri
        self.target: str | None = None  # what the last scores were the probability of

    def warm(self) -> None:
        """Import the model stack and load the champion now (if any), so that the first buys
        after start-up are not scored seconds late."""

        try:
            registry.load_champion("token", self.storage_uri)
        except Exception as error:  # no champion yet, storage away: scoring reports it later
            log.debug("alerts: no token model to warm up: %s", error)

    def score(self, buys: Sequence[Buy]) -> tuple[np.ndarray, float | None, str]:
        model = registry.load_champion("token", self.storage_uri)
        items = [
            {"wallet": b.wallet, "amount_sol": b.amount_sol, "entry_time": b.time, "mint": b.mint}
            for b in buys
        ]
        features = token_features_online(self.database_url, items, columns=model.feature_columns)
        p = np.asarray(model.predict_proba(features), dtype=np.float64).reshape(-1)
        self.target = model.target
        return p, model.threshold, model.version


def evaluate(
    engine: Engine,
    rules: AlertRules,
    *,
    reader: Engine | None = None,
    model: ModelSource | None = None,
    webhooks: Sequence[Webhook] = (),
    from_start: bool = False,
) -> Evaluation:
    """Evaluate every swap committed since the watermark (in batches); returns what it stored.

    ``from_start``: reset the watermark to 0 first (re-evaluate all history; stored alerts are not
    repeated). ``reader``: an engine for the reads (default ``engine``; kolray passes the read-only one so
    that reads never lock the tracker out); ``model``: the P(3x) source (``None``: no p3x rule).
    """
    started = time.perf_counter()
    reader = reader or engine
    result = Evaluation()
    low = start_watermark(engine, from_start)
    high = committed_watermark(engine)
    result.watermark = low
    with reader.connect() as conn:
        clock = conn.scalar(select(func.max(SwapRow.block_time)).where(SwapRow.id <= high))
        names = dict(conn.execute(select(Kol.wallet, Kol.name)).all())
    while low < high:
        step_high = min(high, low + BATCH)
        held = _evaluate_range(engine, reader, rules, model, webhooks, low, step_high, clock, names, result)
        if held:
            result.held_back = True
            break
        low = step_high
        result.watermark = low
    result.seconds = time.perf_counter() - started
    return result


def _evaluate_range(
    engine: Engine,
    reader: Engine,
    rules: AlertRules,
    model: ModelSource | None,
    webhooks: Sequence[Webhook],
    low: int,
    high: int,
    clock: int | None,
    names: dict[str, str | None],
    result: Evaluation,
) -> bool:
    """Swaps with ``low < id <= high``; returns True when the watermark must stay at ``low``."""
    columns = [SwapRow.id, *(getattr(SwapRow, name) for name in SWAP_FIELDS)]
    with reader.connect() as conn:
        new = conn.execute(select(*columns).where(SwapRow.id > low, SwapRow.id <= high)).all()
    result.swaps += len(new)
    buys = [s for s in new if s.side == "buy" and s.block_time is not None]
    result.buys += len(buys)
    oldest = None if not rules.max_age_s or clock is None else clock - rules.max_age_s
    recent = [s for s in buys if oldest is None or s.block_time >= oldest]
    result.too_old += len(buys) - len(recent)

    opening = _opening_buys(reader, recent, high)
    result.opening_buys += len(opening)
    buys_out = [
        Buy(
            swap_id=int(s.id),
            signature=s.signature,
            wallet=s.wallet,
            mint=s.mint,
            time=int(s.block_time),
            amount_sol=int(s.sol_amount) / LAMPORTS_PER_SOL
            if s.quote_mint in (None, WSOL_MINT) and int(s.sol_amount) > 0
            else 0.0,
            kol_name=names.get(s.wallet),
        )
        for s in opening
    ]
    facts, hold = _facts(reader, rules, model, buys_out, high, result)
    previous = _consensus_alert_times(reader, sorted({b.mint for b in buys_out}))
    candidates: list[tuple[str, AlertPayload, Buy]] = []
    for buy in sorted(buys_out, key=lambda b: (b.time, b.swap_id)):
        fact = facts.get(buy.swap_id, Facts())
        window_start = buy.time - rules.consensus_window_s
        recent_consensus = any(
            window_start < t <= buy.time and signature != buy.signature
            for t, signature in previous.get(buy.mint, [])
        )
        for payload in fired(buy, fact, rules, recent_consensus):
            candidates.append((dedupe_key(payload.rule, buy), payload, buy))
            if payload.rule == "consensus":
                previous.setdefault(buy.mint, []).append((buy.time, buy.signature))

    with engine.begin() as conn:
        for key, payload, buy in candidates:
            inserted = _insert_alert(conn, key, payload, buy, webhooks)
            if inserted is None:
                result.duplicates += 1
                continue
            result.alerts += 1
            result.new_ids.append(inserted)
            result.by_rule[payload.rule] = result.by_rule.get(payload.rule, 0) + 1
        if not hold:
            _write_watermark(conn, high)
    return hold


def _opening_buys(reader: Engine, buys: Sequence[Any], high: int) -> list[Any]:
    """The buys that open a position: built from all of their pairs' swaps up to ``high``."""
    if not buys:
        return []
    pairs = {(b.wallet, b.mint) for b in buys}
    wallets = sorted({w for w, _ in pairs})
    mints = sorted({m for _, m in pairs})
    rows: list[Row[Any]] = []
    with reader.connect() as conn:
        for wallet_chunk in _chunks(wallets):
            for mint_chunk in _chunks(mints):
                rows.extend(
                    conn.execute(
                        select(*(getattr(SwapRow, name) for name in SWAP_FIELDS)).where(
                            SwapRow.id <= high,
                            SwapRow.wallet.in_(bindparam("w", expanding=True)),
                            SwapRow.mint.in_(bindparam("m", expanding=True)),
                        ),
                        {"w": wallet_chunk, "m": mint_chunk},
                    ).all()
                )
    ledger = build_ledger(r for r in rows if (r.wallet, r.mint) in pairs)
    entries = {(p.entry_signature, p.wallet, p.mint) for p in ledger.positions}
    return [b for b in buys if (b.signature, b.wallet, b.mint) in entries]


def _facts(
    reader: Engine,
    rules: AlertRules,
    model: ModelSource | None,
    buys: Sequence[Buy],
    high: int,
    result: Evaluation,
) -> tuple[dict[int, Facts], bool]:
    """Per buy (by swap id): P(3x), DH score, KOLs in the window; and whether to hold the
    watermark (P(3x) failed for a reason that may pass)."""
    if not buys:
        return {}, False
    values: dict[int, dict[str, Any]] = {b.swap_id: {} for b in buys}
    hold = False

    # P(3x): always computed when a model exists (the other rules' messages show it too).
    scorable = [b for b in buys if b.amount_sol > 0]
    if model is not None and scorable:
        try:
            p, threshold, version = model.score(scorable)
        except Exception as error:
            from sqlalchemy.exc import OperationalError

            result.p3x_unavailable = (
                str(error)
                if isinstance(error, NoChampion)
                else redact_text(f"{type(error).__name__}: {error}")[:300]
            )
            # Storage or database trouble passes: hold the watermark so the p3x rule catches up.
            # Anything else (no champion, a model whose features cannot be computed) would fail
            # the same way forever, and must not stall the other rules: the rule sits this out.
            if isinstance(error, OSError | TimeoutError | OperationalError) and "p3x" in rules.rules:
                hold = True
                log.warning(
                    "alerts: P(3x) unavailable, p3x rule retried next time: %s", result.p3x_unavailable
                )
        else:
            use = rules.p3x_threshold if rules.p3x_threshold is not None else threshold
            # A source that does not say what its probability is of leaves the message's "P(3x)".
            target = getattr(model, "target", None)
            for buy, value in zip(scorable, p, strict=True):
                values[buy.swap_id].update(
                    p_3x=float(value), threshold=use, model_version=version, target=target
                )

    # Diamond Hand: the analyzer's statistics over positions closed before each buy (computed
    # whatever the rules: every alert's message shows it).
    by_wallet: dict[str, list[Buy]] = defaultdict(list)
    for buy in buys:
        by_wallet[buy.wallet].append(buy)
    for wallet, positions in iter_wallet_positions(reader, sorted(by_wallet)):
        mine = by_wallet[wallet]
        table = KolStatsIndex(positions, wallet=wallet).table(np.array([b.time for b in mine]), "all")
        for i, buy in enumerate(mine):
            score = float(table["dh_score"][i])
            values[buy.swap_id].update(
                dh_score=None if np.isnan(score) else score, dh_positions=int(table["scored"][i])
            )

    # Consensus: distinct wallets with a buy of the token in (t − window, t], from swaps.
    if "consensus" in rules.rules:
        window = rules.consensus_window_s
        mints = sorted({b.mint for b in buys})
        first = min(b.time for b in buys) - window
        seen: dict[str, list[tuple[int, str]]] = defaultdict(list)
        with reader.connect() as conn:
            for chunk in _chunks(mints):
                for mint, t, wallet in conn.execute(
                    select(SwapRow.mint, SwapRow.block_time, SwapRow.wallet).where(
                        SwapRow.id <= high,
                        SwapRow.side == "buy",
                        SwapRow.block_time > first,
                        SwapRow.mint.in_(bindparam("m", expanding=True)),
                    ),
                    {"m": chunk},
                ):
                    if t is not None:  # the query asks for block_time > first
                        seen[mint].append((int(t), wallet))
        for buy in buys:
            wallets = {w for t, w in seen.get(buy.mint, []) if buy.time - window < t <= buy.time}
            wallets.add(buy.wallet)
            values[buy.swap_id]["consensus_kols"] = len(wallets)
    return {k: Facts(**v) for k, v in values.items()}, hold


def _consensus_alert_times(reader: Engine, mints: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    """Earlier consensus alerts per token: (buy time, signature)."""
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    if not mints:
        return out
    with reader.connect() as conn:
        for chunk in _chunks(mints):
            for mint, payload, signature in conn.execute(
                select(AlertRow.mint, AlertRow.payload, AlertRow.signature).where(
                    AlertRow.rule == "consensus", AlertRow.mint.in_(bindparam("m", expanding=True))
                ),
                {"m": chunk},
            ):
                if isinstance(payload, dict) and isinstance(payload.get("time"), int):
                    out[mint].append((payload["time"], signature))
    return out


def _insert_alert(
    conn: Connection, key: str, payload: AlertPayload, buy: Buy, webhooks: Sequence[Webhook]
) -> int | None:
    """Insert unless the dedupe key exists; the new id, or None for a duplicate."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (
        dialect_insert(AlertRow)
        .values(
            dedupe_key=key,
            rule=payload.rule,
            wallet=buy.wallet,
            mint=buy.mint,
            signature=buy.signature,
            created_at=now_s(),
            payload=payload.model_dump(mode="json"),
            deliveries=initial_deliveries(webhooks),
            message=payload.message(),
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(AlertRow.id)
    )
    return conn.execute(statement).scalar()
