"""Alert rules, dedupe keys, messages, webhook detection and payload shapes (no database, no network)."""

from __future__ import annotations

import pytest

from kolray.alerts import (
    AlertConfigError,
    AlertPayload,
    AlertRules,
    Buy,
    Facts,
    Webhook,
    dedupe_key,
    fired,
    render,
)
from kolray.alerts.webhooks import initial_deliveries
from kolray.config import load_settings
from kolray.secrets import redact_text

BUY = Buy(
    swap_id=7,
    signature="5" * 88,
    wallet="7rhxnLV8C77o6d8oz26AgK8x8m5ePsdeRawjqvojbjnQ",
    mint="M" * 44,
    time=1_717_000_000,
    amount_sol=1.5,
    kol_name="alpha",
)
RULES = AlertRules(
    p3x_threshold=None, dh_min=0.4, dh_min_positions=5, consensus_kols=3, consensus_window_s=3600
)


def names(payloads: list[AlertPayload]) -> list[str]:
    return [p.rule for p in payloads]


def test_each_rule_fires_on_its_own_fact() -> None:
    assert fired(BUY, Facts(), RULES, False) == []
    assert names(fired(BUY, Facts(p_3x=0.31, threshold=0.3), RULES, False)) == ["p3x"]
    assert names(fired(BUY, Facts(p_3x=0.29, threshold=0.3), RULES, False)) == []
    assert names(fired(BUY, Facts(p_3x=0.9), RULES, False)) == []  # no threshold, no p3x alert
    assert names(fired(BUY, Facts(dh_score=0.4, dh_positions=5), RULES, False)) == ["dh"]
    assert names(fired(BUY, Facts(dh_score=0.9, dh_positions=4), RULES, False)) == []  # too few positions
    assert names(fired(BUY, Facts(dh_score=0.39, dh_positions=50), RULES, False)) == []
    assert names(fired(BUY, Facts(consensus_kols=3), RULES, False)) == ["consensus"]
    assert names(fired(BUY, Facts(consensus_kols=3), RULES, True)) == []  # fired within the window already
    assert names(fired(BUY, Facts(consensus_kols=2), RULES, False)) == []
    every = fired(
        BUY, Facts(p_3x=0.5, threshold=0.3, dh_score=0.8, dh_positions=9, consensus_kols=4), RULES, False
    )
    assert names(every) == ["p3x", "dh", "consensus"]
    only_dh = RULES.model_copy(update={"rules": ("dh",)})
    assert names(
        fired(
            BUY,
            Facts(p_3x=0.5, threshold=0.3, dh_score=0.8, dh_positions=9, consensus_kols=4),
            only_dh,
            False,
        )
    ) == ["dh"]


def test_payload_carries_every_known_fact_and_reads_well() -> None:
    (payload,) = fired(
        BUY,
        Facts(p_3x=0.42, threshold=0.3, model_version="v1", dh_score=0.61, dh_positions=12),
        RULES.model_copy(update={"rules": ("p3x",)}),
        False,
    )
    assert (payload.p_3x, payload.threshold, payload.dh_score, payload.dh_positions) == (0.42, 0.3, 0.61, 12)
    message = payload.message()
    assert message.startswith(
        "High P(3x) buy: alpha (7rhx…bjnQ) bought 1.50 SOL of MMMM…MMMM at 2024-05-29T16:26:40Z"
    )
    assert "P(3x) 42% (≥ 30%)" in message and "DH 0.61 over 12 positions" in message
    (consensus,) = fired(BUY, Facts(consensus_kols=3), RULES, False)
    assert consensus.message().endswith("3 KOLs in 60 min") and consensus.p_3x is None


def test_dedupe_keys_are_per_rule_and_swap_and_fit_the_column() -> None:
    keys = {dedupe_key(rule, BUY) for rule in ("p3x", "dh", "consensus")}
    assert len(keys) == 3 and all(len(k) <= 200 for k in keys)  # alerts.dedupe_key is String(200)
    # The swap decides (signature, wallet, mint), not when or by which row it was seen.
    from dataclasses import replace

    assert dedupe_key("p3x", replace(BUY, swap_id=99, time=0, amount_sol=9.0)) == dedupe_key("p3x", BUY)
    assert dedupe_key("p3x", replace(BUY, signature="6" * 88)) != dedupe_key("p3x", BUY)


def test_rules_from_settings() -> None:
    rules = AlertRules.from_settings(
        load_settings(alert_rules="consensus,dh", alert_dh_min=0.7, alert_consensus_window_s=600)
    )
    assert rules.rules == ("consensus", "dh") and rules.dh_min == 0.7 and rules.consensus_window_s == 600
    with pytest.raises(Exception, match="KOLRAY_ALERT_RULES"):
        load_settings(alert_rules="p3x,moon")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://discord.com/api/webhooks/123/abcToken", "discord"),
        ("https://discordapp.com/api/webhooks/123/abcToken", "discord"),
        ("https://api.telegram.org/bot123:ABC/sendMessage?chat_id=-1001", "telegram"),
        ("https://hooks.example.com/kolray", "generic"),
        ("https://discord.com/channels/1/2", "generic"),  # not a webhook path
        ("http://127.0.0.1:9999/relay#discord", "discord"),
        ("http://127.0.0.1:9999/relay?chat_id=5#telegram", "telegram"),
        ("https://discord.com/api/webhooks/1/x#generic", "generic"),
    ],
)
def test_webhook_kind_comes_from_the_url(url: str, kind: str) -> None:
    hook = Webhook.parse(url)
    assert hook.kind == kind and "#" not in hook.url
    assert hook.id.startswith(kind + "-") and Webhook.parse(url).id == hook.id


def test_webhook_urls_stay_secret() -> None:
    hook = Webhook.parse("https://discord.com/api/webhooks/123/SuperSecretToken")
    assert "SuperSecretToken" not in hook.redacted and "SuperSecretToken" not in hook.id
    assert "SuperSecretToken" not in redact_text(f"POST {hook.url} failed")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook/Ab12x",  # loopback, a token too short to be registered on its own
        "http://127.0.0.1:9/hook/a-long-token-0123456789",
        "http://localhost:9999/relay?chat_id=5&key=Ab12x#telegram",
    ],
)
def test_loopback_webhook_urls_stay_secret(url: str) -> None:
    """A local relay's URL carries its token like any other: never shown, stored or logged whole."""
    secret = "Ab12x" if "Ab12x" in url else "a-long-token-0123456789"
    hook = Webhook.parse(url)
    assert hook.redacted == f"{url.split('/')[0]}//{url.split('/')[2]}/***"
    assert secret not in str(initial_deliveries([hook])) and secret not in hook.id
    assert secret not in redact_text(f"POST {hook.url} failed: {hook.url}")
    for bad in (url.split("#")[0] + "#slack", url.replace("http", "ftp", 1)):
        with pytest.raises(AlertConfigError) as error:
            Webhook.parse(bad)
        assert secret not in str(error.value)


def test_bad_webhook_urls_are_refused() -> None:
    with pytest.raises(AlertConfigError, match="chat_id"):
        Webhook.parse("https://api.telegram.org/bot123:ABC/sendMessage")
    with pytest.raises(AlertConfigError, match="#slack"):
        Webhook.parse("https://example.com/x#slack")
    with pytest.raises(AlertConfigError, match="not an http"):
        Webhook.parse("ftp://example.com/x")


def test_payload_shapes() -> None:
    (payload,) = fired(
        BUY,
        Facts(p_3x=0.5, threshold=0.3, dh_score=0.2, dh_positions=6),
        RULES.model_copy(update={"rules": ("p3x",)}),
        False,
    )
    key = dedupe_key("p3x", BUY)
    generic = render(Webhook.parse("https://example.com/hook"), 11, payload, key)
    assert generic["type"] == "kolray.alert" and generic["id"] == 11 and generic["dedupe_key"] == key
    assert generic["rule"] == "p3x" and generic["p_3x"] == 0.5 and generic["message"] == payload.message()
    assert generic["links"]["transaction"] == f"https://solscan.io/tx/{BUY.signature}"
    discord = render(Webhook.parse("https://discord.com/api/webhooks/1/t"), 11, payload, key)
    assert discord["content"] == payload.message() and discord["allowed_mentions"] == {"parse": []}
    (embed,) = discord["embeds"]
    assert embed["title"] == "High P(3x) buy" and embed["timestamp"] == "2024-05-29T16:26:40Z"
    assert {"name": "P(3x)", "value": "50.0%", "inline": True} in embed["fields"]
    telegram = render(
        Webhook.parse("https://api.telegram.org/bot1:A/sendMessage?chat_id=-42"), 11, payload, key
    )
    assert telegram["chat_id"] == "-42" and telegram["parse_mode"] == "HTML"
    assert telegram["text"].startswith("<b>High P(3x) buy</b>\n") and "&lt;" not in telegram["text"]
    # A KOL name with markup is escaped for Telegram's HTML.
    tricky = payload.model_copy(update={"kol_name": "<b>x</b>"})
    assert (
        "&lt;b&gt;x&lt;/b&gt;"
        in render(Webhook.parse("https://api.telegram.org/bot1:A/sendMessage?chat_id=1"), 1, tricky, key)[
            "text"
        ]
    )
