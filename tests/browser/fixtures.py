"""Fixtures of the browser tests, loaded with ``pytest_plugins``: server, Chromium, a tab."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from browser.support import CHROMIUM_ARGS, Server, running_server

CHROMIUM = os.environ.get("MEDFED_TEST_CHROMIUM")

# The first run created imports Flower in the server: allow for it.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("medfed-home")) as running:
        yield running


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def tab(chromium: Browser, server: Server) -> Iterator[Page]:
    """A fresh browser context on the server; fails the test on any uncaught JS error."""
    context = chromium.new_context(
        base_url=server.url, viewport={"width": 1440, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
