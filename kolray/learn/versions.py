"""Version ids and the code version: what datasets and registered models are stamped with.

A version id is ``YYYYMMDDTHHMMSSZ-<8 hex>``: it sorts by creation time, and the random tail keeps
two builds in the same second apart. Datasets and model versions share the format.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from kolray import __version__

_VERSION_FORMAT = "%Y%m%dT%H%M%SZ"


def new_version(now: float | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-<8 hex>``: sorts by creation time; the random tail keeps two builds in the
    same second apart."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime(_VERSION_FORMAT)
    return f"{stamp}-{secrets.token_hex(4)}"


def parse_version_time(version: str) -> int:
    """Creation time (unix s) encoded in a version id; ``ValueError`` if it is not one."""
    stamp, _, tail = version.partition("-")
    try:
        moment = datetime.strptime(stamp, _VERSION_FORMAT).replace(tzinfo=UTC)
        int(tail, 16)
    except ValueError:
        raise ValueError(f"not a version id (YYYYMMDDTHHMMSSZ-<8 hex>): {version!r}") from None
    if len(tail) != 8:
        raise ValueError(f"not a version id (YYYYMMDDTHHMMSSZ-<8 hex>): {version!r}")
    return int(moment.timestamp())


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the checkout kolray runs from, else the package version."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"git:{sha}" if sha else f"kolray-{__version__}"
