"""End to end on loopback: the dashboard registers two hospitals, their SuperNodes join the
platform's SuperLink over TLS with the keys downloaded from the dashboard, and a run started
in the new-run form on the connected hospitals trains to the end."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from browser.pages import choose, login, screenshot, set_number
from browser.support import STATIC_INDEX, Server, running_server
from medfed.config import config_from_dict
from medfed.data.synthetic import write_synthetic_dataset
from medfed.federation.certs import init_certs
from medfed.federation.hospital_node import HospitalLink, start_hospital
from medfed.federation.superlink import (
    start_platform_link,
    stop_process_group,
)
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

SITES = ("site-a", "site-b")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for seed, site in enumerate(SITES):
        write_synthetic_dataset(root / site, n_per_class=10, size=16, seed=seed)
    write_synthetic_dataset(root / "platform", n_per_class=4, size=16, seed=7, test_per_class=5)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Iterator[Server]:
    """The dashboard, and the SuperLink with its TLS gateway for the hospitals."""
    values = {
        "data": {"path": str(data / "platform"), "image_size": 16},
        "federated": {"server_address": f"127.0.0.1:{free_port()}", "round_timeout": 180},
        "deployment": {"superlink_port": free_port()},
    }
    with running_server(tmp_path_factory.mktemp("medfed-home"), **values) as running:
        init_certs(running.cfg.certs_dir, ["127.0.0.1"])
        link = start_platform_link(running.cfg, running.store.url)
        try:
            yield running
        finally:
            for process in link.processes:
                stop_process_group(process)


def add_in_dashboard(tab: Page, name: str, folder: Path) -> Path:
    """Add hospital ``name`` on the Hospitals page; its key and ca.pem saved in ``folder``."""
    tab.get_by_test_id("add-hospital").click()
    tab.get_by_test_id("hospital-name-input").fill(name)
    tab.get_by_test_id("add-hospital-submit").click()
    with tab.expect_download() as key:
        tab.get_by_test_id("download-key").click()
    key.value.save_as(folder / f"{name}.key")
    (folder / f"{name}.key").chmod(0o600)  # as `medfed client` asks of a downloaded key
    with tab.expect_download() as ca:
        tab.get_by_test_id("download-ca").click()
    ca.value.save_as(folder / "ca.pem")
    tab.get_by_test_id("add-hospital-done").click()
    expect(tab.get_by_test_id("add-hospital-dialog")).to_be_hidden()
    return folder / f"{name}.key"


def test_a_run_on_hospitals_registered_in_the_dashboard(
    tab: Page, server: Server, data: Path, tmp_path: Path
) -> None:
    login(tab, path="/hospitals")
    hospital_cfg = config_from_dict({"home": str(tmp_path / "hospital-home")})
    supernodes = []
    try:
        for site in SITES:
            folder = tmp_path / site
            folder.mkdir()
            key = add_in_dashboard(tab, site, folder)
            link = HospitalLink(server.cfg.federated.server_address, folder / "ca.pem", key)
            supernodes.append(
                start_hospital(
                    hospital_cfg,
                    link,
                    data_path=data / site,
                    port=free_port(),
                    name=site,
                    log_file=tmp_path / f"{site}.log",
                )
            )
        # The SuperLink reports both online once their SuperNodes have connected.
        table = tab.get_by_test_id("hospitals-table")
        for _ in range(60):
            tab.get_by_role("button", name="Refresh").click()
            if table.locator(".el-table__body tr", has_text="online").count() == 2:
                break
            tab.wait_for_timeout(1000)
        expect(table.locator(".el-table__body tr", has_text="online")).to_have_count(2)
        screenshot(tab, "hospitals-online")

        tab.goto("/runs/new")
        tab.get_by_test_id("hospitals-mode").get_by_text("Connected").click()
        expect(tab.get_by_test_id("hospitals-summary")).to_contain_text("2 registered, 2 online")
        expect(tab.locator("[data-testid=clients-input] input")).to_have_value("2")
        tab.get_by_test_id("run-name-input").fill("dashboard-deployment")
        choose(tab, "model-select", "Small CNN (fast)")
        set_number(tab, "rounds-input", 1)
        set_number(tab, "image-size-input", 16)
        set_number(tab, "batch-input", 8)
        tab.get_by_test_id("create-and-start").click()
        tab.wait_for_url(re.compile(r"/runs/[0-9a-f]+/live$"), timeout=120_000)
        expect(tab.get_by_test_id("status-tag").first).to_have_text(
            re.compile("finished", re.I), timeout=300_000
        )
        screenshot(tab, "live-run-deployment")
    finally:
        for process in supernodes:
            stop_process_group(process)

    runs, _ = server.store.list_runs(search="dashboard-deployment")
    run = runs[0]
    assert (run.mode, run.status) == ("deployment", "finished"), run.error
    results = server.store.client_results(run.id)
    assert {(c.hospital, c.phase, c.status) for c in results} == {
        (site, phase, "ok") for site in SITES for phase in ("train", "evaluate")
    }
    assert {h.name for h in server.store.list_hospitals() if h.last_seen} >= set(SITES)
