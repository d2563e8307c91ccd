"""The web dashboard end to end: headless Chromium against the real server and run store."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
import torch
from playwright.sync_api import Page, expect

from browser.evaluation import seed_final_evaluation
from browser.pages import (
    SCREENSHOTS,
    chart_points,
    choose,
    login,
    screenshot,
    set_number,
    wait_until,
)
from browser.support import ADMIN, STATIC_INDEX, VIEWER, Server, seed_run

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


def test_login_shows_errors_and_returns_to_the_page_asked_for(tab: Page, server: Server) -> None:
    tab.goto("/hospitals")
    tab.wait_for_url(re.compile(r"/login\?redirect=/hospitals"))
    tab.fill("input[name=username]", ADMIN[0])
    tab.fill("input[name=password]", "not-the-password")
    tab.click("[data-testid=login-submit]")
    expect(tab.get_by_test_id("login-error")).to_contain_text("Wrong user name or password")
    screenshot(tab, "login")

    tab.fill("input[name=password]", ADMIN[1])
    tab.click("[data-testid=login-submit]")
    tab.wait_for_url("**/hospitals")
    expect(tab.get_by_test_id("user-menu")).to_contain_text("admin")
    expect(tab.locator("h1")).to_have_text("Hospitals")

    tab.get_by_test_id("user-menu").click()
    tab.get_by_role("menuitem", name="Sign out").click()
    tab.wait_for_url("**/login")
    tab.goto("/runs")
    tab.wait_for_url(re.compile(r"/login\?redirect=/runs"))


def test_viewer_sees_runs_but_cannot_create_or_download(tab: Page, server: Server) -> None:
    run_id = seed_run(server, "viewer-visible-run", rounds=3)
    login(tab, VIEWER, f"/runs/{run_id}")
    expect(tab.get_by_test_id("final-metrics")).to_be_visible()
    expect(tab.get_by_test_id("model-download")).to_have_count(0)
    expect(tab.get_by_role("menuitem", name="New run")).to_have_count(0)
    tab.goto("/runs/new")
    expect(tab.get_by_text("Administrators only")).to_be_visible()


def test_new_run_form_shows_only_the_strategy_parameters_and_validates(
    tab: Page, server: Server
) -> None:
    login(tab, path="/runs/new")
    runs_before = server.store.list_runs()[1]
    form = tab.get_by_test_id("run-form")
    expect(form).to_be_visible()
    expect(tab.get_by_test_id("param-proximal_mu")).to_have_count(0)

    choose(tab, "strategy-select", "FedProx")
    expect(tab.get_by_test_id("param-proximal_mu")).to_be_visible()
    choose(tab, "strategy-select", "FedAdam")
    expect(tab.get_by_test_id("param-proximal_mu")).to_have_count(0)
    expect(tab.get_by_test_id("param-server_learning_rate")).to_be_visible()
    expect(tab.get_by_test_id("param-tau")).to_be_visible()
    choose(tab, "strategy-select", "FedAvgM")
    expect(tab.get_by_test_id("param-server_momentum")).to_be_visible()
    expect(tab.get_by_test_id("param-tau")).to_have_count(0)

    expect(form.get_by_text("Noise multiplier", exact=True)).to_have_count(0)
    tab.get_by_test_id("privacy-mode").get_by_text("Sample-level (DP-SGD)").click()
    expect(form.get_by_text("Noise multiplier", exact=True)).to_have_count(2)  # radio + field
    expect(tab.get_by_test_id("norm-select")).to_contain_text("GroupNorm")  # DP needs it
    choose(tab, "strategy-select", "FedProx")
    expect(form).to_contain_text("FedProx’s proximal term is lost")
    choose(tab, "strategy-select", "FedAvgM")
    expect(form).not_to_contain_text("FedProx’s proximal term is lost")
    tab.get_by_test_id("privacy-mode").get_by_text("Off").click()
    expect(form.get_by_text("Noise multiplier", exact=True)).to_have_count(0)

    choose(tab, "optimizer-select", "SGD")
    expect(form).to_contain_text("Momentum")  # SGD's own field
    expect(tab.get_by_test_id("lr-decay-select")).to_contain_text("Cosine")  # the default
    choose(tab, "lr-decay-select", "None")
    expect(tab.get_by_test_id("lr-decay-select")).to_contain_text("None")

    set_number(tab, "clients-input", 2)
    set_number(tab, "min-train-input", 3)
    tab.get_by_test_id("create-and-start").click()
    expect(form.locator(".el-form-item__error").first).to_contain_text(
        "At most 2: cannot exceed the number of hospitals"
    )
    screenshot(tab, "new-run-invalid")
    assert tab.url.endswith("/runs/new")
    assert server.store.list_runs()[1] == runs_before


def test_server_rejections_are_shown_on_the_field_and_templates_round_trip(
    tab: Page, server: Server
) -> None:
    server.store.save_template(
        "legacy-rmsprop",
        {"training": {"optimizer": "rmsprop"}, "federated": {"rounds": 7, "roundz": 3}},
    )
    login(tab, path="/runs/new")
    expect(tab.get_by_test_id("run-form")).to_be_visible()
    choose(tab, "template-select", "legacy-rmsprop")
    expect(tab.locator("[data-testid=rounds-input] input")).to_have_value("7")
    tab.get_by_role("button", name="Save as template").click()
    tab.locator(".el-message-box input").fill("legacy-resaved")
    tab.get_by_role("button", name="Save", exact=True).click()

    optimizer_item = tab.locator(".el-form-item", has=tab.get_by_text("Optimizer", exact=True))
    expect(optimizer_item.locator(".el-form-item__error")).to_contain_text("adam")
    expect(tab.get_by_test_id("form-errors")).to_contain_text("federated.roundz")
    assert [t.name for t in server.store.list_templates()] == ["legacy-rmsprop"]
    screenshot(tab, "new-run-server-errors")

    tab.get_by_role("button", name="Reset to defaults").click()
    choose(tab, "strategy-select", "FedTrimmedAvg")
    set_number(tab, "rounds-input", 4)
    expect(tab.get_by_test_id("topk-scope")).to_have_count(0)
    tab.get_by_test_id("topk-switch").click()
    tab.get_by_test_id("topk-scope").get_by_text("Each tensor").click()
    tab.get_by_role("button", name="Save as template").click()
    tab.locator(".el-message-box input").fill("trimmed-4")
    tab.get_by_role("button", name="Save", exact=True).click()
    expect(tab.get_by_text("Template “trimmed-4” saved")).to_be_visible()
    saved = server.store.get_template("trimmed-4").config
    assert saved["federated"]["strategy"] == "FedTrimmedAvg"
    assert saved["federated"]["rounds"] == 4
    assert saved["compression"]["topk"] == 0.1
    assert saved["compression"]["topk_scope"] == "tensor"

    tab.get_by_role("button", name="Reset to defaults").click()
    expect(tab.locator("[data-testid=rounds-input] input")).not_to_have_value("4")
    choose(tab, "template-select", "trimmed-4")
    expect(tab.locator("[data-testid=rounds-input] input")).to_have_value("4")
    expect(tab.get_by_test_id("param-trim_beta")).to_be_visible()
    screenshot(tab, "new-run")


def test_history_filters_sorts_and_compares_runs(tab: Page, server: Server) -> None:
    seed_run(server, "compare-fedavg", strategy="FedAvg", rounds=6, final_accuracy=0.92)
    seed_run(server, "compare-fedprox", strategy="FedProx", rounds=4, final_accuracy=0.84)
    seed_run(server, "compare-broken", strategy="Krum", rounds=5, rounds_done=2, status="failed")
    login(tab, path="/runs")
    table = tab.get_by_test_id("runs-table")
    expect(table).to_contain_text("compare-fedavg")

    tab.get_by_test_id("runs-search").fill("compare-")
    expect(table.locator(".el-table__body tr")).to_have_count(3)
    choose(tab, "status-filter", "failed")
    expect(table.locator(".el-table__body tr")).to_have_count(1)
    expect(table).to_contain_text("compare-broken")
    tab.get_by_test_id("status-filter").hover()
    tab.get_by_test_id("status-filter").locator(".el-select__clear").click()
    expect(table.locator(".el-table__body tr")).to_have_count(3)

    table.locator("th", has_text="Name").click()  # ascending by name
    names = table.locator(".el-table__body tr .run-name")
    expect(names.first).to_have_text("compare-broken")
    table.locator("th", has_text="Name").click()  # descending
    expect(names.first).to_have_text("compare-fedprox")

    for name in ("compare-fedavg", "compare-fedprox"):
        row = table.locator(".el-table__body tr", has_text=name)
        row.locator(".el-checkbox").click()
    tab.get_by_test_id("compare-button").click()
    comparison = tab.get_by_test_id("comparison")
    expect(comparison).to_be_visible()
    expect(comparison.locator(".el-table__body tr")).to_have_count(2)
    # One accuracy and one loss point per finished round of each run: 6 + 4.
    wait_until(lambda: chart_points(tab, "[data-testid=comparison]") == 10, 5, "the overlay")
    screenshot(tab, "history-compare")

    for index in range(12):
        seed_run(server, f"page-filler-{index}", rounds=1, hospitals=2, with_checkpoint=False)
    total = server.store.list_runs()[1]
    tab.get_by_test_id("runs-search").fill("")
    expect(tab.get_by_test_id("runs-total")).to_have_text(f"{total} runs")
    tab.get_by_test_id("pagination").locator(".el-select").click()
    tab.locator(".el-select-dropdown__item:visible", has_text="10/page").click()
    expect(table.locator(".el-table__body tr")).to_have_count(10)
    tab.get_by_test_id("pagination").locator(".btn-next").click()
    expect(table.locator(".el-table__body tr")).to_have_count(min(10, total - 10))


def test_run_detail_downloads_model_and_report(tab: Page, server: Server, tmp_path: Path) -> None:
    run_id = seed_run(server, "detail-run", strategy="FedMedian", rounds=4, final_accuracy=0.88)
    seed_final_evaluation(Path(server.cfg.home), run_id, 4, tmp_path)
    login(tab, path=f"/runs/{run_id}")
    expect(tab.locator("h1")).to_contain_text("detail-run")
    expect(tab.get_by_test_id("final-metrics")).to_contain_text("%")
    expect(tab.get_by_test_id("checkpoints-table")).to_contain_text("accuracy")
    expect(tab.get_by_test_id("config-card")).to_contain_text("FedMedian")
    points = tab.get_by_test_id("operating-points")
    expect(points).to_contain_text("Sensitivity at 95% specificity")
    expect(points).to_contain_text("Specificity at 95% sensitivity")
    expect(tab.get_by_test_id("ece")).to_contain_text(".")
    assert int(tab.get_by_test_id("reliability-chart").get_attribute("data-points") or 0) > 2
    sites = tab.get_by_test_id("sites-table")
    expect(sites.locator(".el-table__body tr")).to_have_count(3)
    expect(sites.locator("tr.worst-row")).to_contain_text("hospital-0")
    expect(tab.get_by_test_id("worst-site")).to_contain_text("hospital-0")
    expect(sites).to_contain_text("TN ")
    heatmaps = tab.get_by_test_id("heatmaps").locator("figure")
    expect(heatmaps.first).to_be_visible()
    assert heatmaps.count() >= 4
    assert tab.get_by_test_id("heatmaps").locator("img").first.evaluate("i => i.naturalWidth") > 0
    screenshot(tab, "run-detail")
    tab.get_by_test_id("screening-card").scroll_into_view_if_needed()
    screenshot_element(tab.get_by_test_id("screening-card"), "run-detail-screening")
    screenshot_element(tab.get_by_test_id("sites-card"), "run-detail-sites")
    screenshot_element(tab.get_by_test_id("heatmaps-card"), "run-detail-heatmaps")

    with tab.expect_download() as model_download:
        tab.get_by_test_id("model-download").click()
    model_path = tmp_path / model_download.value.suggested_filename
    model_download.value.save_as(model_path)
    assert model_path.suffix == ".pt"
    content = torch.load(model_path, map_location="cpu", weights_only=True)
    assert content["meta"]["run_id"] == run_id
    assert set(content["state_dict"]) == {"fc.weight", "fc.bias"}

    if importlib.util.find_spec("medfed.reports") is None:
        pytest.skip("the report download needs medfed.reports, which is not installed here")
    with tab.expect_download(timeout=60_000) as report_download:
        tab.get_by_test_id("report-html").click()
    report_path = tmp_path / report_download.value.suggested_filename
    report_download.value.save_as(report_path)
    assert report_path.suffix == ".html"
    assert "detail-run" in report_path.read_text(encoding="utf-8")
    actions = [entry.action for entry in server.store.activity_log()]
    assert "model.download" in actions and "report.download" in actions


def screenshot_element(locator, name: str) -> Path:  # type: ignore[no-untyped-def]
    """One part of a page, as a user scrolled to it sees it."""
    locator.scroll_into_view_if_needed()
    locator.page.wait_for_timeout(600)  # charts finish drawing
    path = SCREENSHOTS / f"{name}.png"
    locator.screenshot(path=path)
    return path


def test_hospitals_page_lists_sites_with_their_runs(tab: Page, server: Server) -> None:
    run_id = seed_run(server, "hospital-run", rounds=2, hospitals=2)
    login(tab, path="/hospitals")
    table = tab.get_by_test_id("hospitals-table")
    expect(table).to_contain_text("hospital-0")
    more = table.get_by_role("button", name=re.compile(r"more$"))
    for _ in range(more.count()):
        more.first.click()  # each click expands one hospital's list of runs
    expect(table).to_contain_text(run_id[:8])
    expect(table.locator(".el-table__body tr").first).to_contain_text("online")
    screenshot(tab, "hospitals")


def test_api_docs_render_without_the_internet(tab: Page, server: Server) -> None:
    requested: list[str] = []
    tab.on("request", lambda request: requested.append(request.url))
    tab.goto("/api/docs")
    expect(tab.locator(".swagger-ui .title")).to_contain_text("medfed")
    expect(tab.locator(".opblock-summary-path").first).to_be_visible()  # the routes are listed
    assert requested and all(url.startswith(server.url) for url in requested), requested
