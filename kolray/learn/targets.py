"""What the token model answers: its target label, said in words wherever a probability is shown.

- ``peak_3x`` (the default): P(the token trades at ≥ 3x the entry price within 7 days), the
  follower's question (kolray.features.peaks makes the label from stored swap prices).
- ``label_3x``: P(the KOL's own position realises ≥ 3x within 7 days), what the KOL did.

The KOL model's rates stay the KOL's own realised 3x share (``label_3x`` per position).
"""

from __future__ import annotations

from typing import Literal

TokenTarget = Literal["peak_3x", "label_3x"]
TOKEN_TARGETS: tuple[TokenTarget, TokenTarget] = ("peak_3x", "label_3x")
DEFAULT_TOKEN_TARGET: TokenTarget = "peak_3x"
# The twin's probability of each target (evaluation only).
ORACLE_COLUMNS: dict[str, str] = {"peak_3x": "oracle_p_peak3x", "label_3x": "oracle_p3x"}
MEANINGS: dict[str, str] = {
    "peak_3x": "P(the token trades at >= 3x the entry price within 7 days)",
    "label_3x": "P(the KOL's own position realises >= 3x within 7 days)",
}
SHORT_NAMES: dict[str, str] = {"peak_3x": "P(token 3x in 7d)", "label_3x": "P(KOL's 3x in 7d)"}


def meaning(target: str | None) -> str:
    """The target in words (an unknown or missing one is the KOL's own 3x, the format before targets)."""
    return MEANINGS.get(target or "label_3x", f"P({target})")


def short_name(target: str | None) -> str:
    """A column header for the probability."""
    return SHORT_NAMES.get(target or "label_3x", f"P({target})")
