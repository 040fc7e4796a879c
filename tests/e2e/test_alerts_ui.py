"""The Alerts and Backtest tabs in a real headless Chromium, served by real Ray Serve (through its
proxy): alerts raised while the page is open arrive over the server-sent event stream
(``EventSource`` on ``/v1/alerts/stream``) and show in the live feed; the Backtest tab shows a
stored backtest's strategy table and equity curves. Screenshots go to ``test-artifacts/ui/``.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import insert

from kolray.alerts import AlertRules, ModelSource, evaluate, start_watermark
from kolray.db import upgrade
from kolray.db.tables import SwapRow
from kolray.serve import deploy
from kolray.testing import serving_world as sample

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000
RULES = AlertRules(rules=("p3x",), p3x_threshold=0.0, max_age_s=0)  # every SOL opening buy


@dataclass
class Site:
    url: str
    env: dict[str, str]
    world: sample.SampleWorld
    backtest_id: str


@pytest.fixture(scope="module")
def site(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from ray import serve

    from kolray.backtest import BacktestOptions, run_backtest, save_report
    from kolray.testing import backtest_world as hand

    root = tmp_path_factory.mktemp("alerts-ui")
    env = {
        "KOLRAY_DATA_DIR": str(root),
        "KOLRAY_DATABASE_URL": f"sqlite:///{root / 'kolray.db'}",
        "KOLRAY_STORAGE_URI": str(root / "store"),
    }
    engine = upgrade(env["KOLRAY_DATABASE_URL"])
    world = sample.populate(engine, n_kols=6, seed=21)
    sample.register_models(env["KOLRAY_STORAGE_URI"], versions=1, reports=False)
    start_watermark(engine)
    # A stored backtest (the hand-computable world, in its own database) for the Backtest tab.
    hand_engine = upgrade(f"sqlite:///{root / 'hand.db'}")
    version = hand.write_token_dataset(hand_engine, hand.populate(hand_engine), env["KOLRAY_STORAGE_URI"])
    result = run_backtest(
        BacktestOptions(dataset_version=version),
        database_url=f"sqlite:///{root / 'hand.db'}",
        storage_uri=env["KOLRAY_STORAGE_URI"],
    )
    save_report(result.report, result.png, result.trades, env["KOLRAY_STORAGE_URI"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    deploy.deploy(sample.app_config(env, port, ui=True))
    url = f"http://127.0.0.1:{port}"
    deploy.wait_until_serving(url)
    yield Site(url, env, world, result.report.id)
    serve.shutdown()


@pytest.fixture(scope="module")
def page(site: Site, chromium_path: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{site.url}/ui/", wait_until="domcontentloaded")
        yield page
        browser.close()


def raise_alert(site: Site, k: int, minute: int) -> int:
    """A new opening buy by KOL ``k`` of a new token, evaluated into a p3x alert; returns its id."""
    url = site.env["KOLRAY_DATABASE_URL"]
    engine = upgrade(url)
    t = site.world.end + 60 * minute
    with engine.begin() as conn:
        conn.execute(
            insert(SwapRow),
            [
                {
                    "signature": f"alert-ui-{k}-{minute}".ljust(64, "x"),
                    "slot": t * 2,
                    "block_time": t,
                    "wallet": site.world.wallets[k],
                    "mint": sample.pubkey(21, "alert-mint", k, minute),
                    "side": "buy",
                    "token_amount": 10**12,
                    "token_decimals": 6,
                    "sol_amount": 1_500_000_000,
                    "dex": "pumpfun",
                    "fee": 5_000,
                    "tips": 0,
                    "rent": 0,
                    "price_sol": 1.5e-6,
                }
            ],
        )
    result = evaluate(engine, RULES, model=ModelSource(url, site.env["KOLRAY_STORAGE_URI"]))
    assert result.alerts == 1, result.line()
    return result.new_ids[0]


def test_alerts_stream_into_the_open_page(page, site: Site) -> None:
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Alerts", exact=True).click()
    status = page.locator("#alerts-status")
    expect(status).to_have_text("live")  # the EventSource is connected through Serve's proxy
    feed = page.locator("#alerts-feed")
    name = site.world.names[1]
    first = raise_alert(site, 1, 1)
    raised = time.monotonic()
    row = feed.locator(f'[data-alert-id="{first}"]')
    expect(row).to_be_visible(timeout=15_000)
    assert time.monotonic() - raised < 15
    expect(row).to_contain_text(f"High P(3x) buy: {name}")
    expect(row).to_contain_text("bought 1.50 SOL")
    # A second one lands on top, while the page stays open.
    second = raise_alert(site, 2, 2)
    expect(feed.locator(f'[data-alert-id="{second}"]')).to_be_visible(timeout=15_000)
    ids = feed.locator(".alert-row").evaluate_all("rows => rows.map(r => Number(r.dataset.alertId))")
    assert ids[:2] == [second, first]
    page.screenshot(path=str(ARTIFACTS / "7-alerts.png"), full_page=True)


def test_backtest_tab_shows_the_strategies_and_equity_curves(page, site: Site) -> None:
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Backtest", exact=True).click()
    table = page.locator("#backtest-table")
    for strategy in ("copy_all", "top_kols:10", re.compile(r"model:0\.\d+"), re.compile(r"oracle:0\.\d+")):
        expect(table).to_contain_text(strategy)  # model and oracle at the sample champion's threshold
    expect(table).to_contain_text("total PnL (SOL)")
    summary = page.locator("#backtest-summary")
    expect(summary).to_contain_text("4 KOL buys replayed")
    expect(summary).to_contain_text("walk-forward: model")
    image = page.locator("#backtest-equity img")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.naturalWidth") > 500
    page.screenshot(path=str(ARTIFACTS / "6-backtest.png"), full_page=True)
