"""API keys never reach logs or error messages."""

import io
import json
import logging

import pytest

from kolray.logs import configure_logging
from kolray.secrets import redact_secret_url, redact_text, redact_url, register_secret


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://mainnet.helius-rpc.com/?api-key=0b1c2d3e-1111-2222-3333-444455556666",
            "https://mainnet.helius-rpc.com/***",
        ),
        ("https://solana-mainnet.g.alchemy.com/v2/AbCdEf123456", "https://solana-mainnet.g.alchemy.com/***"),
        (
            "https://x-y.solana-mainnet.quiknode.pro/0123456789abcdef/",
            "https://x-y.solana-mainnet.quiknode.pro/***",
        ),
        ("https://api.mainnet-beta.solana.com", "https://api.mainnet-beta.solana.com/"),
        ("http://user:pw@rpc.example:8899/", "http://user:***@rpc.example:8899/"),
        ("http://127.0.0.1:8899", "http://127.0.0.1:8899"),
        ("postgresql+psycopg://kol:hunter2@db.example/k", "postgresql+psycopg://kol:***@db.example/***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:9/hook/Tok3n", "http://127.0.0.1:9/***"),  # loopback too: the path is the secret
        ("http://localhost:8080/relay?chat_id=5#telegram", "http://localhost:8080/***"),
        ("https://discord.com/api/webhooks/123/SuperSecretToken", "https://discord.com/***"),
        ("https://user:pw@hooks.example:8443/x", "https://user:***@hooks.example:8443/***"),
        ("https://hooks.example", "https://hooks.example/"),
        ("http://127.0.0.1:9/***", "http://127.0.0.1:9/***"),  # already redacted: unchanged
        ("https//hooks.example.com/hook/Tok3n", "***"),  # no host to show: nothing is shown
        ("hooks.example.com/hook/Tok3n", "***"),
        ("http://[::1", "***"),
    ],
)
def test_redact_secret_url(url: str, shown: str) -> None:
    assert redact_secret_url(url) == shown


def test_a_registered_loopback_url_is_masked_in_text_even_with_a_short_token() -> None:
    """Unregistered loopback URLs (the chain twin) keep their path for debugging; a registered one
    is a secret wherever it points, however short its token."""
    register_secret("http://127.0.0.1:9/hook/Ab12x")
    assert redact_text("POST http://127.0.0.1:9/hook/Ab12x failed") == "POST http://127.0.0.1:9/*** failed"
    assert redact_text("twin at http://127.0.0.1:8899/rpc") == "twin at http://127.0.0.1:8899/rpc"


def test_redact_text_masks_urls_and_key_value_pairs() -> None:
    text = "POST https://rpc.example/abcdefabcdefabcdef failed; retry with token=zzz and api_key=qqq"
    masked = redact_text(text)
    assert "abcdefabcdefabcdef" not in masked and "zzz" not in masked and "qqq" not in masked
    assert "rpc.example" in masked


def test_registered_secret_is_masked_even_without_its_url() -> None:
    register_secret("https://rpc.example/?api-key=7c9e6679-7425-40de-944b-e07fc1f90ae7")
    assert "7c9e6679-7425-40de-944b-e07fc1f90ae7" not in redact_text(
        "key 7c9e6679-7425-40de-944b-e07fc1f90ae7 rejected"
    )


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_lines_are_redacted(fmt: str) -> None:
    stream = io.StringIO()
    configure_logging("INFO", fmt, stream=stream)
    log = logging.getLogger("kolray.test")
    secret_url = "https://mainnet.helius-rpc.com/?api-key=deadbeef-0000-1111-2222-333344445555"
    log.info("calling %s", secret_url, extra={"endpoint": secret_url, "wallets": 3})
    try:
        raise ConnectionError(f"cannot reach {secret_url}")
    except ConnectionError:
        log.exception("request failed")
    output = stream.getvalue()
    assert "deadbeef" not in output
    assert "mainnet.helius-rpc.com" in output
    if fmt == "json":
        first = json.loads(output.splitlines()[0])
        assert first["wallets"] == 3 and first["logger"] == "kolray.test"


def test_text_quoting_a_url_with_a_trailing_colon_is_masked_not_an_error() -> None:
    # httpx error texts end URLs with ':' ("... http://host:41157: connection reset").
    assert redact_text("error at http://10.0.0.1:41157: reset") == "error at *** reset"


def test_log_lines_follow_stderr_when_a_caller_swaps_and_closes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """An in-process CLI run (a test runner, a notebook) swaps sys.stderr and later closes it: later
    records go to the current stderr instead of failing with "I/O operation on closed file"."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("INFO", "console")
    logging.getLogger("kolray.test").warning("to the first")
    first_text = first.getvalue()
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("kolray.test").warning("to the second")
    assert "to the first" in first_text
    assert "to the second" in second.getvalue()
