"""The dashboard in Debian's Chromium, driven by Playwright, against a gateway whose
street is simulated: log in, write a schedule and watch its rollout reach the lamps, set
an override and see it expire, reserve a bay. Screenshots of the main pages go to
artifacts/screenshots/ for a person to look at."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from citisense_gateway.api.devserver import FLEET, SILENT, DevGateway, Threaded, running

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "a browser's password"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
CENTRUM_LAMPS = [p.node_id for p in FLEET if p.zone == "centrum" and p.role == "lighting"]
STATION_LAMPS = [p.node_id for p in FLEET if p.zone == "station" and p.role == "lighting"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Threaded]:
    db = tmp_path_factory.mktemp("browser") / "gw.db"
    with running(DevGateway(db, period=5, hasher=FAST)) as t:
        for role in ("viewer", "operator", "admin"):
            t.call(t.gateway.accounts.add_user(role, PASSWORD, role, by="test"))
        yield t


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's Chromium is missing: apt-get install -y chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data dir
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 900})
        yield context
        context.close()


@pytest.fixture
def page(browser: BrowserContext, gateway: Threaded) -> Iterator[Page]:
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    # Console errors but the browser's note on each 4xx answer, which tests provoke.
    page.on("console", lambda m: problems.append(m.text) if m.type == "error"
            and not m.text.startswith("Failed to load resource") else None)
    page.goto(gateway.gateway.url + "/")
    page.evaluate("sessionStorage.clear()")
    yield page
    page.close()
    assert problems == [], problems  # no script error, nothing refused by the CSP


def login(page: Page, user: str) -> None:
    page.goto(page.url.split("#")[0] + "#/map")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    expect(page.locator("#who-name")).to_have_text(f"{user} ({user})")


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_login_is_required_and_wrong_password_refused(page: Page) -> None:
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    page.fill("#username", "operator")
    page.fill("#password", "not the password")
    page.click("#login-button")
    expect(page.locator("#login-form [role=alert]")).to_have_text("wrong user name or password")
    shot(page, "login")


def test_map_and_nodes(page: Page) -> None:
    login(page, "operator")
    nodes = page.locator("#fleet-map circle.node")
    expect(nodes).to_have_count(len(FLEET))
    # The faulty lamp is ringed; the silent one is faded.
    expect(page.locator("#fleet-map circle.alarm[data-node='105']")).to_have_count(1)
    silent = page.locator(f"#fleet-map circle.never-seen[data-node='{min(SILENT)}']")
    expect(silent).to_have_count(1)
    expect(page.locator("#alarm-count")).to_have_text("2")
    shot(page, "map")
    page.click("nav a[href='#/nodes']")
    expect(page.locator("#node-table tbody tr")).to_have_count(len(FLEET))
    page.select_option("#role", "parking")
    expect(page.locator("#node-table tbody tr")).to_have_count(
        sum(p.role == "parking" for p in FLEET))
    shot(page, "nodes")
    page.goto(page.url.split("#")[0] + "#/nodes/105")
    expect(page.locator("#last-telemetry")).to_contain_text("lamp out")
    page.click("nav a[href='#/alarms']")
    expect(page.locator("#alarm-table tbody tr")).to_have_count(2)
    shot(page, "alarms")
    page.click("nav a[href='#/air']")
    expect(page.locator("#air-index tbody tr")).to_have_count(3)
    expect(page.locator("#air-chart path[data-series='pm25']")).to_have_count(1)
    shot(page, "air")


def test_schedule_written_assigned_and_rolled_out(page: Page) -> None:
    login(page, "operator")
    page.click("nav a[href='#/schedules']")
    page.fill("#schedule-name", "evening")
    page.fill("#schedule-timezone", "Europe/Amsterdam")
    # Tonight's chart follows the editor: dusk and dawn marked.
    expect(page.locator("#level-chart [data-mark='dusk']")).to_have_count(1)
    expect(page.locator("#level-chart [data-mark='dawn']")).to_have_count(1)
    page.click("#add-step")
    last = page.locator("#steps tr.step").last
    last.locator("[name=clock]").fill("01:00")
    last.locator("[name=level]").fill("20")
    # A wrong level is refused with the field named, not saved.
    page.locator("#steps tr.step").first.locator("[name=level]").fill("150")
    page.click("#save-schedule")
    expect(page.locator("#schedule-error")).to_contain_text("steps[0].level")
    page.locator("#steps tr.step").first.locator("[name=level]").fill("100")
    page.click("#save-schedule")
    expect(page).to_have_url(re.compile(r"#/schedules/evening$"))
    expect(page.locator("#schedule-list")).to_contain_text("evening")
    expect(page.locator("#level-chart path[data-series='level']")).to_have_count(1)
    page.select_option("#assign-zone", "centrum")
    page.click("#assign-button")
    running = len([n for n in CENTRUM_LAMPS if n not in SILENT])
    expect(page.locator("#rollout-summary")).to_contain_text(f"running: {running}",
                                                              timeout=20_000)
    expect(page.locator("#rollout-table tbody tr")).to_have_count(len(CENTRUM_LAMPS))
    shot(page, "schedules")


def test_override_set_and_expires(page: Page) -> None:
    login(page, "operator")
    page.click("nav a[href='#/overrides']")
    page.select_option("#target-kind", "zone")
    page.select_option("#target-zone", "station")
    page.fill("#override-level", "25")
    page.fill("#override-duration", "6")
    page.select_option("#override-unit", "s")
    page.click("#override-submit")
    rows = page.locator("#override-table tbody tr")
    expect(rows).to_have_count(len(STATION_LAMPS))
    expect(rows.first).to_contain_text("25 %")
    shot(page, "overrides")
    expect(page.locator("#override-table")).to_contain_text("no override in force",
                                                            timeout=20_000)


def test_reserve_a_bay(page: Page, gateway: Threaded) -> None:
    login(page, "operator")
    page.click("nav a[href='#/parking']")
    expect(page.locator("#parking-zones [data-zone]")).to_have_count(2)
    page.select_option("#reserve-node", "303")
    page.fill("#reserve-hours", "1.5")
    page.click("#reserve-button")
    row = page.locator("#bay-table tr[data-key='303']")
    expect(row.locator(".status.reserved")).to_have_count(1)
    expect(row.locator("[data-release='303']")).to_be_visible()
    shot(page, "parking")
    row.locator("[data-release='303']").click()
    expect(row.locator(".status.reserved")).to_have_count(0)


def test_a_viewer_sees_no_controls(page: Page) -> None:
    login(page, "viewer")
    page.click("nav a[href='#/schedules']")
    expect(page.locator("#schedule-list")).to_be_visible()
    expect(page.locator("#new-schedule")).to_have_count(0)
    page.click("nav a[href='#/overrides']")
    expect(page.locator("#override-table")).to_be_visible()
    expect(page.locator("#override-form")).to_have_count(0)
    expect(page.locator("nav a[href='#/users']")).to_be_hidden()


def test_admin_manages_users(page: Page) -> None:
    login(page, "admin")
    page.click("nav a[href='#/users']")
    page.fill("#new-username", "erin")
    page.fill("#new-password", "erin's long password")
    page.select_option("#new-role", "technician")
    page.click("#user-form button[type=submit]")
    expect(page.locator("#user-table tr[data-key='erin']")).to_be_visible()
    page.click("nav a[href='#/audit']")
    expect(page.locator("#audit-table")).to_contain_text("user.add")
    shot(page, "audit")
