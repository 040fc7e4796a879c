"""Keeping API keys out of logs, errors and output.

RPC providers put the key in the query (``?api-key=…``, Helius), in the path (``/v2/<key>``,
Alchemy; ``/<token>/``, QuickNode, Triton) or in the user-info part of the URL. A redacted URL keeps
scheme, host and port, which is what a person needs to tell endpoints apart, and hides the rest.

Webhook URLs are secret as a whole (Discord, Telegram and relays put the token in the path), also
on loopback: :func:`redact_secret_url` shows them, and a URL given to :func:`register_secret` is
shown that way wherever :func:`redact_text` finds it.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit

_MASK = "***"
_known: set[str] = set()
_known_lock = threading.Lock()

# Generic patterns for secrets that were never registered: key=value pairs and bearer tokens.
_PATTERNS = [
    re.compile(r"(?i)((?:api[-_]?key|apikey|token|access[-_]?key|secret|password|auth)=)[^&\s\"'#]+"),
    re.compile(r"(?i)(authorization:\s*(?:bearer|basic)\s+)\S+"),
    re.compile(r"(?i)(x-api-key:\s*)\S+"),
]
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE)


def redact_url(url: str, *, whole_path_secret: bool = False) -> str:
    """``https://mainnet.helius-rpc.com/?api-key=abc`` → ``https://mainnet.helius-rpc.com/***``.

    Loopback URLs (the chain twin, local databases) keep their path: there is nothing secret in them
    and the port/path help debugging. Passwords in user-info are always masked.

    ``whole_path_secret``: the path and query are the secret wherever the URL points (a webhook, a
    registered RPC URL), so loopback keeps nothing either: ``http://127.0.0.1:9/hook/<token>`` →
    ``http://127.0.0.1:9/***``; text that does not parse as ``scheme://host`` shows nothing, since
    any part of it could be the token.
    """
    try:
        parts = urlsplit(url.strip() if whole_path_secret else url)
        port_number = parts.port  # parsed lazily: "host:123:" in an error text raises only here
    except ValueError:
        return _MASK
    if whole_path_secret and (not parts.scheme or not parts.hostname):
        return _MASK
    if not parts.scheme or not parts.netloc:
        # No host (``sqlite:///path``, a bare string): only key=value secrets can be in it. Not
        # redact_text: its URL pattern would match this again and recurse without end.
        for pattern in _PATTERNS:
            url = pattern.sub(lambda m: m.group(1) + _MASK, url)
        return url
    host = parts.hostname or ""
    if whole_path_secret and ":" in host:
        host = f"[{host}]"
    port = f":{port_number}" if port_number else ""
    user = ""
    if parts.username:
        user = f"{parts.username}:{_MASK}@" if parts.password else f"{_MASK}@"
    if not whole_path_secret and (
        host in ("127.0.0.1", "localhost", "::1") or parts.scheme.startswith("sqlite")
    ):
        rest = parts.path + (f"?{redact_text(parts.query)}" if parts.query else "")
        return f"{parts.scheme}://{user}{host}{port}{rest}"
    has_secret_part = bool(parts.path.strip("/") or parts.query or parts.fragment)
    return f"{parts.scheme}://{user}{host}{port}/{_MASK if has_secret_part else ''}"


def redact_secret_url(url: str) -> str:
    """:func:`redact_url` of a URL whose path and query are the secret (``whole_path_secret``)."""
    return redact_url(url, whole_path_secret=True)


def register_secret(value: str | None) -> None:
    """Remember a secret (a full URL or a key) so :func:`redact_text` masks it wherever it appears."""
    if not value or len(value) < 6:
        return
    with _known_lock:
        _known.add(value)
        parts = urlsplit(value) if "://" in value else None
        if parts is not None:
            # The secret-bearing pieces on their own, as they can appear in error texts.
            for piece in (parts.path.strip("/"), parts.query, parts.password or ""):
                for token in re.split(r"[/&=]", piece):
                    if len(token) >= 12:
                        _known.add(token)


def redact_text(text: str) -> str:
    """Mask registered secrets, key=value secrets and remote URLs' paths inside free text."""
    if not text:
        return text
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, redact_secret_url(secret) if "://" in secret else _MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + _MASK, text)
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
