"""The Gradio UI in a real headless Chromium, served by real Ray Serve (through its proxy).

Every tab loads with real data; the leaderboard shows the KOLs; a what-if prediction returns a
number; clicking a leaderboard row opens that KOL, clicking a KOL's position opens its token; the
Token tab draws the market tape (written here for one token, with a gap) with the KOLs' buys and
sells and lists them; a table with nothing to show yet (no backtest has run here) says so over its
own column names, never Gradio's "1 2 3". A screenshot of each tab is saved under
``test-artifacts/ui/``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from kolray.analyzer import analyze
from kolray.db import upgrade
from kolray.db.tables import SwapRow
from kolray.learn.targets import meaning
from kolray.market.read import Gap, TapePoint
from kolray.market.store import store_tape
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
GAP_REASON = "no pump.fun bonding curve for this mint"


@dataclass
class Site:
    url: str
    world: sample.SampleWorld
    models: sample.SampleModels
    token: str  # the mint with a market tape


def add_tape(engine: Engine) -> str:
    """A market tape for the token the most KOLs bought and sold: a point every 10 minutes from
    half an hour before its first swap to half an hour after its last, through the swaps' own
    prices (log-interpolated), with three failed reads in the middle. Returns the mint."""
    with engine.connect() as conn:
        mint = conn.execute(
            select(SwapRow.mint)
            .group_by(SwapRow.mint)
            .having(func.count(func.distinct(SwapRow.side)) == 2)
            .order_by(func.count(func.distinct(SwapRow.wallet)).desc(), func.count().desc(), SwapRow.mint)
            .limit(1)
        ).scalar_one()
        swaps = conn.execute(
            select(SwapRow.block_time, SwapRow.price_sol)
            .where(SwapRow.mint == mint)
            .order_by(SwapRow.block_time)
        ).all()
    times = np.array([s.block_time for s in swaps], dtype=float)
    log_prices = np.log([s.price_sol for s in swaps])
    grid = np.arange(times[0] - 1800, times[-1] + 1800, 600, dtype=np.int64)
    middle = len(grid) // 2
    points = [
        TapePoint(mint, int(t) * 2, int(t), float(p), float(p) * 1e9, 40.0, "pumpfun", False)
        for i, (t, p) in enumerate(zip(grid, np.exp(np.interp(grid, times, log_prices)), strict=True))
        if not middle <= i < middle + 3
    ]
    gaps = [Gap(mint, int(t) * 2, int(t), GAP_REASON) for t in grid[middle : middle + 3]]
    store_tape(engine, points, gaps)
    analyze(engine)  # the marks and outcomes of its positions follow the tape
    return mint


@pytest.fixture(scope="module")
def site(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from ray import serve

    root = tmp_path_factory.mktemp("serve-ui")
    env = {
        "KOLRAY_DATA_DIR": str(root),
        "KOLRAY_DATABASE_URL": f"sqlite:///{root / 'kolray.db'}",
        "KOLRAY_STORAGE_URI": str(root / "store"),
    }
    engine = upgrade(env["KOLRAY_DATABASE_URL"])
    world = sample.populate(engine, n_kols=10, seed=11)
    token = add_tape(engine)
    models = sample.register_models(env["KOLRAY_STORAGE_URI"], versions=1, reports=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    deploy.deploy(sample.app_config(env, port, ui=True))
    url = f"http://127.0.0.1:{port}"
    deploy.wait_until_serving(url)
    yield Site(url, world, models, token)
    serve.shutdown()


@pytest.fixture(scope="module")
def page(site: Site, chromium_path: str) -> Iterator[object]:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=TIMEOUT_MS)  # data arrives after the page: give it Serve's time
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{site.url}/ui/", wait_until="domcontentloaded")
        yield page
        browser.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def shot(page, name: str) -> None:
    page.wait_for_timeout(500)  # let Gradio's "pending" fade settle
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000


def test_leaderboard_shows_the_kols(page, site: Site) -> None:
    from playwright.sync_api import expect

    table = page.locator("#leaderboard-table")
    for wallet, name in zip(site.world.wallets, site.world.names, strict=True):
        # Named KOLs by name, the unnamed one by its shortened wallet.
        label = name or f"{wallet[:4]}…{wallet[-4:]}"
        expect(table.get_by_role("gridcell", name=label, exact=True)).to_be_visible()
    expect(page.locator("#status-line")).to_contain_text(site.models.token[0])
    assert table.get_by_role("row").count() == len(site.world.wallets) + 1  # and the header
    headers = [h.strip() for h in table.get_by_role("columnheader").all_inner_texts()]
    assert {"Unrealised (SOL)", "Copy ROI", "Farming"} <= set(headers), headers
    # Some KOL's closed positions were copied on the swaps' prices: a copy ROI in percent.
    copy_roi = table.locator(f'[data-testid^="cell-"][data-testid$="-{headers.index("Copy ROI")}"]')
    assert any(re.fullmatch(r"-?\d+\.\d%", text.strip()) for text in copy_roi.all_inner_texts())
    shot(page, "1-leaderboard")


def test_recent_trades_show_p3x(page, site: Site) -> None:
    from playwright.sync_api import expect

    open_tab(page, "Recent trades")
    table = page.locator("#trades-table")
    expect(table.get_by_role("gridcell", name=re.compile(r"^\d+\.\d%$")).first).to_be_visible()
    expect(table.get_by_role("gridcell", name="open", exact=True).first).to_be_visible()
    # The legend says which probability it is: the sample world's model is trained on label_3x.
    expect(
        page.get_by_text(f"P(3x) = {meaning('label_3x')}, by token model {site.models.token[0]}")
    ).to_be_visible()
    shot(page, "2-recent-trades")


def test_kol_page_shows_forecast_stats_chart_and_positions(page, site: Site) -> None:
    from playwright.sync_api import expect

    open_tab(page, "KOL")
    forecast = page.locator("#kol-forecast")
    expect(forecast).to_contain_text("Forecast 3x rate")
    expect(forecast).to_contain_text(site.models.kol[0])
    expect(forecast).to_contain_text(re.compile(r"next 7 days: \d+\.\d%"))
    expect(page.get_by_text("Cumulative realised PnL (SOL)")).to_be_visible()
    stats = page.locator("#kol-stats")
    expect(stats.get_by_role("gridcell", name="Win rate", exact=True)).to_be_visible()
    expect(stats.get_by_role("gridcell", name="Copy ROI", exact=True)).to_be_visible()
    expect(stats.get_by_role("gridcell", name=re.compile(r"^\d+\.\d%$")).first).to_be_visible()
    expect(
        page.locator("#kol-positions").get_by_role("gridcell", name="closed", exact=True).first
    ).to_be_visible()
    shot(page, "3-kol")


def test_what_if_returns_a_number(page, site: Site) -> None:
    from playwright.sync_api import expect

    open_tab(page, "What-if")
    amount = page.locator("#whatif-amount input")
    amount.fill("2.5")
    page.locator("#whatif-go").click()
    expect(page.locator("#whatif-text")).to_contain_text("P(3x) =")
    value = page.locator("#whatif-p3x input").input_value()
    assert 0.0 <= float(value) <= 100.0
    expect(page.locator("#whatif-text")).to_contain_text(site.models.token[0])
    shot(page, "4-what-if")
    # A bad amount is explained, not a crash.
    amount.fill("-1")
    page.locator("#whatif-go").click()
    expect(page.locator("#whatif-text")).to_contain_text("amount_sol")


def test_models_tab_shows_metrics_and_report_plots(page, site: Site) -> None:
    from playwright.sync_api import expect

    open_tab(page, "Models")
    expect(page.locator("#model-summary")).to_contain_text(
        f"champion **{site.models.token[0]}**".replace("**", "")
    )
    metrics = page.locator("#model-metrics")
    # The served row names its family (the sample world trains the network only).
    for row in ("model (serves: PyTorch network)", "logistic", "oracle (ceiling)"):
        expect(metrics.get_by_role("gridcell", name=row, exact=True)).to_be_visible()
    gallery = page.locator("#model-plots img")
    expect(gallery.first).to_be_visible()
    assert gallery.count() >= 3
    shot(page, "5-models")


def test_clicking_a_leaderboard_row_opens_that_kol(page, site: Site) -> None:
    from playwright.sync_api import expect

    open_tab(page, "Leaderboard")
    cell = page.locator('#leaderboard-table [data-testid="cell-2-1"]')  # third KOL's name
    name = cell.inner_text().strip()
    cell.click()
    expect(page.get_by_role("tab", name="KOL", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#kol-forecast")).to_contain_text(name)


def test_an_empty_table_has_its_own_headers_not_placeholders(page, site: Site) -> None:
    from playwright.sync_api import expect

    from kolray.backtest.report import TAPES_HEADER

    open_tab(page, "Backtest")  # no backtest has run on this site
    expect(page.locator("#backtest-summary")).to_contain_text("No backtest yet: run kolray backtest")
    table = page.locator("#backtest-table")
    expect(table.get_by_role("columnheader").first).to_be_visible()
    headers = [h.strip() for h in table.get_by_role("columnheader").all_inner_texts()]
    assert headers == list(TAPES_HEADER), headers  # each strategy on each price tape
    assert table.get_by_role("gridcell").count() == 0
    shot(page, "6-backtest-empty")


def test_token_view_draws_the_tape_with_the_kols_buys_and_sells(page, site: Site) -> None:
    from playwright.sync_api import expect

    open_tab(page, "Token")
    pick = page.locator("#token-pick input")
    pick.fill(site.token)
    pick.press("Enter")
    summary = page.locator("#token-summary")
    expect(summary).to_contain_text(site.token)
    expect(summary).to_contain_text("Newest price")
    expect(summary).to_contain_text(re.compile(r"peak since: \d"))
    expect(summary).to_contain_text(f"(3 reads): {GAP_REASON}")  # the gap, with its reason
    chart = page.locator("#token-chart img")
    expect(chart).to_be_visible()
    assert chart.evaluate("img => img.naturalWidth") >= 800  # the figure, drawn
    trades = page.locator("#token-trades")
    expect(trades.get_by_role("gridcell", name="buy", exact=True).first).to_be_visible()
    expect(trades.get_by_role("gridcell", name="sell", exact=True).first).to_be_visible()
    expect(
        page.locator("#token-positions").get_by_role("gridcell", name="closed", exact=True).first
    ).to_be_visible()
    shot(page, "7-token")


def test_clicking_a_kol_position_opens_its_token(page, site: Site) -> None:
    from playwright.sync_api import expect

    open_tab(page, "KOL")
    cell = page.locator('#kol-positions [data-testid="cell-0-1"]')  # the newest position's token
    expect(cell).to_be_visible()
    short = cell.inner_text().strip()
    head, tail = short.split("…")
    cell.click()
    expect(page.get_by_role("tab", name="Token", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#token-summary")).to_contain_text(re.compile(rf"Token {head}\w+{tail}"))
