"""The Hospitals page and runs on connected hospitals, in headless Chromium against the real
server: add a hospital and take its key, remove it, choose connected hospitals for a run."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from browser.pages import login, screenshot, set_number
from browser.support import STATIC_INDEX, VIEWER, Server, running_server, seed_run
from medfed.federation.hospitals import add_hospital
from serving import free_port

pytest_plugins = ["browser.fixtures"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("MEDFED_TEST_CHROMIUM"),
        reason="browser tests: set MEDFED_TEST_CHROMIUM=/usr/bin/chromium",
    ),
    pytest.mark.skipif(
        not STATIC_INDEX.is_file(),
        reason="browser tests: the web UI is not built (make setup, or cd web && npm ci && "
        "npm run build)",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server with no SuperLink on its loopback port, hospitals told to dial port 9092."""
    values = {
        "deployment": {"superlink_port": free_port()},
        "federated": {"server_address": "0.0.0.0:9092"},
    }
    with running_server(tmp_path_factory.mktemp("medfed-home"), **values) as running:
        yield running


def register(server: Server, name: str, *, online: bool = False) -> None:
    add_hospital(server.cfg, server.store, name, registered_by="admin")
    if online:
        server.store.touch_hospital(name)


def test_add_a_hospital_take_its_key_and_remove_it(
    tab: Page, server: Server, tmp_path: Path
) -> None:
    seed_run(server, "simulated-run", rounds=1, hospitals=2, with_checkpoint=False)
    login(tab, path="/hospitals")
    table = tab.get_by_test_id("hospitals-table")
    expect(table).to_contain_text("hospital-0")
    expect(tab.get_by_test_id("registered-count")).to_have_text("0")

    tab.get_by_test_id("add-hospital").click()
    dialog = tab.get_by_test_id("add-hospital-dialog")
    tab.get_by_test_id("hospital-name-input").fill("bad name")
    tab.get_by_test_id("add-hospital-submit").click()
    expect(dialog).to_contain_text("1-64 letters")
    tab.get_by_test_id("hospital-name-input").fill("st-marys")
    tab.get_by_test_id("add-hospital-submit").click()

    key = tab.get_by_test_id("private-key")
    expect(key).to_have_value(re.compile(r"^-----BEGIN [A-Z ]*PRIVATE KEY-----"))
    record = server.store.get_hospital("st-marys")
    assert record.registered and record.registered_by == "admin"
    expect(tab.get_by_test_id("added-fingerprint")).to_have_text(record.fingerprint)
    command = "medfed client --key st-marys.key --ca ca.pem --server 127.0.0.1:9092 --data PATH"
    expect(tab.get_by_test_id("client-command")).to_have_text(command)
    screenshot(tab, "hospital-added")

    with tab.expect_download() as key_download:
        tab.get_by_test_id("download-key").click()
    assert key_download.value.suggested_filename == "st-marys.key"
    saved = tmp_path / "st-marys.key"
    key_download.value.save_as(saved)
    assert saved.read_text() == key.input_value()

    # No CA yet: the download says how to make one; with one, it is served.
    tab.get_by_test_id("download-ca").click()
    expect(tab.locator(".el-message--error")).to_contain_text("medfed certs init")
    server.cfg.certs_dir.mkdir(parents=True, exist_ok=True)
    (server.cfg.certs_dir / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nx\n")
    with tab.expect_download() as ca_download:
        tab.get_by_test_id("download-ca").click()
    assert ca_download.value.suggested_filename == "ca.pem"

    tab.get_by_test_id("add-hospital-done").click()
    expect(dialog).to_be_hidden()
    row = table.locator(".el-table__body tr", has_text="st-marys")
    expect(row).to_contain_text(record.fingerprint)
    expect(row).to_contain_text(re.compile("never", re.I))
    expect(tab.get_by_test_id("registration-st-marys")).to_contain_text("registered")
    expect(tab.get_by_test_id("registered-count")).to_have_text("1")
    screenshot(tab, "hospitals-registered")

    tab.get_by_test_id("remove-st-marys").click()
    tab.locator(".el-message-box").get_by_role("button", name="Remove").click()
    expect(tab.get_by_test_id("registration-st-marys")).to_contain_text("removed")
    expect(tab.get_by_test_id("remove-st-marys")).to_have_count(0)
    expect(tab.get_by_test_id("registered-count")).to_have_text("0")
    assert not server.store.get_hospital("st-marys").registered
    actions = [(e.action, e.target) for e in server.store.activity_log()]
    assert ("hospital.add", "st-marys") in actions
    assert ("hospital.remove", "st-marys") in actions
    screenshot(tab, "hospitals-removed")


def test_closing_before_the_key_is_kept_asks_first(tab: Page, server: Server) -> None:
    login(tab, path="/hospitals")
    tab.get_by_test_id("add-hospital").click()
    tab.get_by_test_id("hospital-name-input").fill("north-clinic")
    tab.get_by_test_id("add-hospital-submit").click()
    expect(tab.get_by_test_id("private-key")).to_have_value(re.compile("PRIVATE KEY"))
    tab.get_by_test_id("add-hospital-done").click()
    box = tab.locator(".el-message-box")
    expect(box).to_contain_text("shown only now")
    box.get_by_role("button", name="Back to the key").click()
    expect(tab.get_by_test_id("add-hospital-dialog")).to_be_visible()
    tab.get_by_test_id("add-hospital-done").click()
    tab.locator(".el-message-box").get_by_role("button", name="Close anyway").click()
    expect(tab.get_by_test_id("add-hospital-dialog")).to_be_hidden()
    expect(tab.get_by_test_id("hospitals-table")).to_contain_text("north-clinic")


def test_viewers_see_hospitals_but_cannot_change_them(tab: Page, server: Server) -> None:
    register(server, "viewer-visible")
    login(tab, VIEWER, "/hospitals")
    expect(tab.get_by_test_id("hospitals-table")).to_contain_text("viewer-visible")
    expect(tab.get_by_test_id("add-hospital")).to_have_count(0)
    expect(tab.get_by_test_id("remove-viewer-visible")).to_have_count(0)


def test_new_run_on_connected_hospitals(tab: Page, server: Server) -> None:
    registered = {h.name for h in server.store.list_hospitals() if h.registered}
    register(server, "site-a", online=True)
    register(server, "site-b")
    expected = len(registered) + 2
    login(tab, path="/runs/new")
    expect(tab.get_by_test_id("hospitals-summary")).to_contain_text("Simulated on this server")
    tab.get_by_test_id("hospitals-mode").get_by_text("Connected").click()
    summary = tab.get_by_test_id("hospitals-summary")
    expect(summary).to_contain_text(f"{expected} registered, 1 online")
    expect(tab.locator("[data-testid=clients-input] input")).to_have_value(str(expected))
    expect(tab.locator("[data-testid=min-train-input] input")).to_have_value("1")
    expect(tab.get_by_test_id("hospitals-warning")).to_have_count(0)
    expect(tab.get_by_test_id("form-summary")).to_contain_text(f"{expected} connected hospitals")

    set_number(tab, "min-train-input", 2)
    expect(tab.get_by_test_id("hospitals-warning")).to_contain_text(
        "Only 1 is online of the 2 hospitals a round needs"
    )
    screenshot(tab, "new-run-connected")

    tab.get_by_test_id("run-name-input").fill("on-the-sites")
    tab.get_by_test_id("create-only").click()
    tab.wait_for_url(re.compile(r"/runs/[0-9a-f]+$"))
    runs, _ = server.store.list_runs(search="on-the-sites")
    assert [(r.mode, r.status) for r in runs] == [("deployment", "pending")]
    assert runs[0].config["federated"]["min_train_clients"] == 2

    # Started at once, it goes to the SuperLink, which is not running here: said in the form.
    tab.goto("/runs/new")
    tab.get_by_test_id("hospitals-mode").get_by_text("Connected").click()
    expect(tab.get_by_test_id("hospitals-summary")).to_contain_text("registered")
    tab.get_by_test_id("run-name-input").fill("no-superlink")
    tab.get_by_test_id("create-and-start").click()
    expect(tab.get_by_test_id("form-errors")).to_contain_text("SuperLink", timeout=60_000)
    runs, _ = server.store.list_runs(search="no-superlink")
    assert [(r.mode, r.status) for r in runs] == [("deployment", "failed")]
