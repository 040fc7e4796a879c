"""Alert rules, and what an alert says.

An alert is raised on a tracked KOL's **opening buy** (a position entry, as the analyzer defines
it) when a rule fires:

- ``p3x``: the token model's P(3x) of the buy is at least the threshold (default: the model's own);
- ``dh``: the KOL's Diamond Hand score over positions closed before the buy is at least
  ``dh_min``, resting on at least ``dh_min_positions`` of them;
- ``consensus``: with this buy, at least ``consensus_kols`` distinct tracked KOLs bought the token
  within the last ``consensus_window_s``; it fires once per token and window (not again while an
  earlier consensus alert for the token is younger than the window).

Each (rule, buy) has a **dedupe key**, so re-evaluating the same swaps (a restart, a lost
watermark, two evaluators) never stores or sends an alert twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kolray.config import Settings
from kolray.learn.targets import short_name

Rule = Literal["p3x", "dh", "consensus"]
RULES: tuple[str, ...] = ("p3x", "dh", "consensus")
TITLES: dict[str, str] = {
    "p3x": "High P(3x) buy",
    "dh": "Diamond Hand buy",
    "consensus": "KOL consensus",
}


class AlertRules(BaseModel):
    """The rules in force (from settings: ``KOLRAY_ALERT_*``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[Rule, ...] = ("p3x", "dh", "consensus")
    p3x_threshold: float | None = Field(default=None, ge=0, le=1)
    dh_min: float = Field(default=0.4, ge=-1, le=1)
    dh_min_positions: int = Field(default=5, ge=1)
    consensus_kols: int = Field(default=3, ge=2)
    consensus_window_s: int = Field(default=3600, gt=0)
    max_age_s: int = Field(default=3600, ge=0, description="0: no limit.")

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertRules:
        return cls(
            rules=tuple(settings.alert_rules),  # type: ignore[arg-type]
            p3x_threshold=settings.alert_p3x_threshold,
            dh_min=settings.alert_dh_min,
            dh_min_positions=settings.alert_dh_min_positions,
            consensus_kols=settings.alert_consensus_kols,
            consensus_window_s=round(settings.alert_consensus_window_s),
            max_age_s=round(settings.alert_max_age_s),
        )


@dataclass(frozen=True, slots=True)
class Buy:
    """A tracked KOL's opening buy."""

    swap_id: int
    signature: str
    wallet: str
    mint: str
    time: int
    amount_sol: float  # SOL spent by the buy (0 for a token-to-token leg)
    kol_name: str | None = None


def dedupe_key(rule: str, buy: Buy) -> str:
    """One alert per rule and buy; a swap is unique by (signature, wallet, mint)."""
    return f"{rule}:{buy.signature}:{buy.wallet}:{buy.mint}"


class AlertPayload(BaseModel):
    """What is stored in ``alerts.payload`` and sent (as JSON) to generic webhooks."""

    model_config = ConfigDict(extra="forbid")

    rule: Rule
    title: str
    wallet: str
    kol_name: str | None = None
    mint: str
    signature: str
    time: int = Field(description="The buy's block time (unix s).")
    amount_sol: float
    p_3x: float | None = Field(default=None, description="Token model's P(3x) of the buy, when known.")
    threshold: float | None = Field(default=None, description="p3x rule: the threshold it was compared with.")
    model_version: str | None = None
    target: str | None = Field(
        default=None,
        description="What p_3x is the probability of: peak_3x (the token trades at >= 3x the entry price "
        "within 7 days) or label_3x (the KOL's own position realises 3x).",
    )
    dh_score: float | None = Field(default=None, description="KOL's Diamond Hand score before the buy.")
    dh_positions: int | None = Field(default=None, description="Closed positions behind the DH score.")
    consensus_kols: int | None = Field(
        default=None, description="Distinct KOLs that bought the token in the window."
    )
    consensus_window_s: int | None = None

    @property
    def time_iso(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def kol_label(self) -> str:
        short = f"{self.wallet[:4]}…{self.wallet[-4:]}"
        return f"{self.kol_name} ({short})" if self.kol_name else short

    def message(self) -> str:
        """One line a person reads on a phone."""
        mint = f"{self.mint[:4]}…{self.mint[-4:]}"
        parts = [
            f"{self.title}: {self.kol_label()} bought {self.amount_sol:.2f} SOL of {mint} at {self.time_iso}"
        ]
        facts = []
        if self.p_3x is not None:
            facts.append(
                f"{short_name(self.target) if self.target else 'P(3x)'} {100 * self.p_3x:.0f}%"
                + (f" (≥ {100 * self.threshold:.0f}%)" if self.threshold is not None else "")
            )
        if self.dh_score is not None:
            facts.append(f"DH {self.dh_score:.2f} over {self.dh_positions} positions")
        if self.consensus_kols is not None and self.consensus_window_s:
            facts.append(f"{self.consensus_kols} KOLs in {self.consensus_window_s // 60} min")
        return parts[0] + (" · " + " · ".join(facts) if facts else "")

    def links(self) -> dict[str, str]:
        return {
            "transaction": f"https://solscan.io/tx/{self.signature}",
            "token": f"https://solscan.io/token/{self.mint}",
            "kol": f"https://solscan.io/account/{self.wallet}",
        }


@dataclass(frozen=True, slots=True)
class Facts:
    """What is known about one buy when the rules are applied."""

    p_3x: float | None = None
    threshold: float | None = None
    model_version: str | None = None
    target: str | None = None
    dh_score: float | None = None
    dh_positions: int = 0
    consensus_kols: int = 0


def fired(buy: Buy, facts: Facts, rules: AlertRules, consensus_recent: bool) -> list[AlertPayload]:
    """The alerts one buy raises (``consensus_recent``: a consensus alert for the token fired
    within the window before this buy)."""
    out: list[AlertPayload] = []
    common: dict[str, Any] = {
        "wallet": buy.wallet,
        "kol_name": buy.kol_name,
        "mint": buy.mint,
        "signature": buy.signature,
        "time": buy.time,
        "amount_sol": buy.amount_sol,
        "p_3x": facts.p_3x,
        "model_version": facts.model_version,
        "target": facts.target,
        "dh_score": facts.dh_score,
        "dh_positions": facts.dh_positions if facts.dh_score is not None else None,
    }
    if (
        "p3x" in rules.rules
        and facts.p_3x is not None
        and facts.threshold is not None
        and facts.p_3x >= facts.threshold
    ):
        out.append(AlertPayload(rule="p3x", title=TITLES["p3x"], threshold=facts.threshold, **common))
    if (
        "dh" in rules.rules
        and facts.dh_score is not None
        and facts.dh_positions >= rules.dh_min_positions
        and facts.dh_score >= rules.dh_min
    ):
        out.append(AlertPayload(rule="dh", title=TITLES["dh"], **common))
    if "consensus" in rules.rules and facts.consensus_kols >= rules.consensus_kols and not consensus_recent:
        out.append(
            AlertPayload(
                rule="consensus",
                title=TITLES["consensus"],
                consensus_kols=facts.consensus_kols,
                consensus_window_s=rules.consensus_window_s,
                **common,
            )
        )
    return out
