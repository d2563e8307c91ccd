"""Page helpers of the browser tests: sign in, pick options, read charts, screenshots."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from browser.support import ADMIN, SCREENSHOTS


def login(page: Page, user: tuple[str, str] = ADMIN, path: str = "/runs") -> None:
    """Open ``path``, get sent to the login page, sign in and land back on ``path``."""
    page.goto(path)
    page.wait_for_url(re.compile(r"/login\?redirect="))
    page.fill("input[name=username]", user[0])
    page.fill("input[name=password]", user[1])
    page.click("[data-testid=login-submit]")
    expect(page.get_by_test_id("user-menu")).to_contain_text(user[0])
    page.wait_for_url(f"**{path}")


def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot in test-artifacts/screenshots/ (after charts have drawn)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(800)  # charts animate, smooth scrolling ends
    viewport = page.viewport_size or {"width": 1440, "height": 900}
    # A window as tall as the page, so the charts are laid out as a user sees them (a
    # full-page capture can draw them before they have resized).
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": viewport["width"], "height": max(height, viewport["height"])})
    page.wait_for_timeout(500)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path)
    page.set_viewport_size(viewport)
    return path


def choose(page: Page, test_id: str, option: str) -> None:
    """Pick ``option`` in the Element Plus select marked ``test_id``."""
    page.get_by_test_id(test_id).click()
    page.locator(".el-select-dropdown__item:visible", has_text=option).filter(
        has_text=re.compile(f"^{re.escape(option)}$")
    ).click()


def set_number(page: Page, test_id: str, value: object) -> None:
    field = page.locator(f"[data-testid={test_id}] input")
    field.fill(str(value))
    field.press("Tab")


def chart_points(page: Page, selector: str) -> int:
    return int(page.locator(f"{selector} .chart-panel").first.get_attribute("data-points") or 0)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.25)
