"""The dashboard drives a real federated run: create it in the form, watch it train live."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from browser.pages import chart_points, choose, login, screenshot, set_number, wait_until
from browser.support import STATIC_INDEX, Server

pytest_plugins = ["browser.fixtures"]

RUNNER_PRESENT = importlib.util.find_spec("medfed.federation.runner") is not None

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


@pytest.mark.skipif(
    not RUNNER_PRESENT, reason="needs medfed.federation.runner (federated runs) to start a run"
)
def test_create_a_run_and_watch_it_train_live(
    tab: Page, server: Server, kaggle_dataset: Path
) -> None:
    login(tab, path="/runs/new")
    tab.get_by_test_id("run-name-input").fill("browser-live-run")
    choose(tab, "model-select", "Small CNN (fast)")
    set_number(tab, "rounds-input", 3)
    set_number(tab, "clients-input", 2)
    set_number(tab, "min-train-input", 2)
    set_number(tab, "min-eval-input", 2)
    set_number(tab, "min-avail-input", 2)
    set_number(tab, "image-size-input", 16)
    set_number(tab, "batch-input", 8)
    set_number(tab, "lr-input", 0.003)
    tab.get_by_test_id("data-path-input").fill(str(kaggle_dataset))
    choose(tab, "scheme-select", "Shards (few classes)")  # one class per hospital by default
    warnings = tab.get_by_test_id("recipe-warnings")
    one_class = warnings.locator("[data-key='partition.classes_per_client']")
    expect(one_class).to_contain_text("single class")
    one_class.get_by_test_id("recipe-preset").click()  # the recipe measured for such hospitals
    expect(one_class).to_have_count(0)
    set_number(tab, "rounds-input", 3)
    tab.get_by_test_id("create-and-start").click()

    # Creating the first run imports Flower in the server: seconds on a busy machine.
    tab.wait_for_url(re.compile(r"/runs/[0-9a-f]+/live$"), timeout=120_000)
    run_id = tab.url.rstrip("/").split("/")[-2]
    run = server.store.get_run(run_id)
    assert run.name == "browser-live-run"
    assert run.config["federated"]["rounds"] == 3
    assert run.config["model"]["name"] == "cancer_cnn"
    assert run.config["data"]["image_size"] == 16
    assert run.config["partition"]["scheme"] == "shards"
    assert run.config["federated"]["strategy"] == "FedAvgM"
    assert run.config["federated"]["local_steps"] == 1
    assert run.config["model"]["norm"] == "group"

    accuracy = "[data-testid=curve-accuracy]"
    wait_until(lambda: chart_points(tab, accuracy) > 0, 240, "the first round's points")
    expect(tab.get_by_test_id("hospital-table").locator(".el-table__body tr")).to_have_count(2)
    note = tab.get_by_test_id("run-note")  # each hospital holds one class: the platform says so
    expect(note).to_have_count(1)
    expect(note).to_contain_text(re.compile(r"round 1: hospital-0 \(.*hospital-1 \(.*single class"))
    screenshot(tab, "live-run")
    # Rounds on this tiny set take a fraction of a second: the later ones may already be drawn.
    wait_until(lambda: chart_points(tab, accuracy) == 9, 240, "every round's points")

    expect(tab.get_by_test_id("status-tag").first).to_have_text(
        re.compile("finished", re.I), timeout=240_000
    )
    expect(tab.get_by_test_id("round-progress")).to_have_text(re.compile(r"Round\s+3\s+of\s+3"))
    # Global + 2 hospitals, 3 rounds each, all drawn from the live stream.
    assert chart_points(tab, accuracy) == 9
    assert len(server.store.rounds(run_id)) == 3
    screenshot(tab, "live-run-finished")
