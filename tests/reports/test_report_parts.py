"""The report's building blocks: number formats, ROC from predictions, per-class figures."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import pytest

from medfed.errors import ConfigError, DataError
from medfed.reports import build_report, roc_from_predictions, write_report
from medfed.reports import formatting as fmt
from medfed.reports.content import gather_content
from medfed.store.records import ClientResultRecord, RoundRecord, RunRecord

NOW = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.875, "87.5%"), (1, "100.0%"), (None, "—"), (float("nan"), "—"), (True, "—")],
)
def test_percent(value, expected):
    assert fmt.percent(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(512, "512 B"), (1536, "1.5 KiB"), (5 * 1024**2, "5.0 MiB"), (3 * 1024**4, "3072.0 GiB")],
)
def test_byte_size(value, expected):
    assert fmt.byte_size(value) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.25, "250 ms"), (12.34, "12.3 s"), (245, "4 min 05 s"), (3720, "1 h 02 min")],
)
def test_duration(seconds, expected):
    assert fmt.duration(seconds) == expected


def test_timestamp_and_settings():
    assert fmt.timestamp(NOW) == "2026-11-24 08:30 UTC"
    assert fmt.timestamp("2026-11-24T08:30:00") == "2026-11-24 08:30"
    assert fmt.setting(False) == "no"
    assert fmt.setting(1e-05) == "1e-05"
    assert fmt.setting(["no", "yes"]) == "no, yes"


def test_binary_roc_scores_the_last_class():
    roc = roc_from_predictions(
        [0, 0, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]], ["benign", "tumour"]
    )
    assert roc.auc == pytest.approx(0.75)
    assert roc.positive_class == "tumour" and not roc.averaged
    assert roc.fpr[0] == 0 and roc.fpr[-1] == 1 and roc.tpr[-1] == 1


def test_multiclass_roc_is_a_micro_average():
    probs = np.eye(3)[[0, 1, 2, 2]] * 0.7 + 0.1
    roc = roc_from_predictions([0, 1, 2, 2], probs)
    assert roc.averaged and roc.positive_class is None
    assert roc.auc == pytest.approx(1.0)
    assert roc.num_samples == 4


def test_roc_needs_two_classes_and_matching_shapes():
    with pytest.raises(DataError, match="single class"):
        roc_from_predictions([1, 1], [[0.2, 0.8], [0.4, 0.6]])
    with pytest.raises(DataError, match="N x C"):
        roc_from_predictions([0, 1, 1], [[0.2, 0.8], [0.4, 0.6]])


def _run(**changes) -> RunRecord:
    values = dict(
        id="r1", name="demo", mode="simulation", status="finished", strategy="FedAvg",
        num_rounds=2, config={"data": {"class_names": ["no", "yes"]}}, created_at=NOW,
        started_at=NOW, finished_at=NOW, error=None, flower_run_id=None, created_by=None,
        final_metrics=None,
    )  # fmt: skip
    return RunRecord(**{**values, **changes})


def _round(number: int, metrics: dict) -> RoundRecord:
    return RoundRecord("r1", number, metrics, None, None, 2.0, 10, 20, None, 1, 0, NOW)


def _client(hospital: str, counts: object) -> ClientResultRecord:
    metrics = {"accuracy": 0.5, "class_counts": counts}
    return ClientResultRecord(
        1, "r1", 1, hospital, "train", "ok", 9, metrics, 1.0, 5, 5, None, None, NOW
    )


def test_per_class_figures_come_from_the_confusion_matrix():
    rounds = [_round(1, {"accuracy": 0.5}), _round(2, {"confusion_matrix": [[5, 1], [2, 4]]})]
    content = gather_content(_run(), rounds, [], None, None, "no checkpoint")

    overall, no, yes = content.metrics_table.rows
    assert overall[0] == "Overall" and overall[-1] == "12"
    assert no == ["Class no", "71.4%", "83.3%", "76.9%", "—", "6"]
    assert yes == ["Class yes", "80.0%", "66.7%", "72.7%", "—", "6"]


@pytest.mark.parametrize("matrix", [[[1, 2], [3]], [[1, 2, 3]], "n/a", [[1, None], [0, 1]]])
def test_a_malformed_confusion_matrix_is_left_out(matrix):
    content = gather_content(_run(), [_round(1, {"confusion_matrix": matrix})], [], None, None, "")

    assert content.confusion is None
    assert [row[0] for row in content.metrics_table.rows] == ["Overall"]


def test_final_metrics_of_the_run_win_over_the_last_round():
    rounds = [_round(1, {"accuracy": 0.5, "auc": 0.6})]
    content = gather_content(_run(final_metrics={"accuracy": 0.75}), rounds, [], None, None, "")

    kpis = {kpi.label: kpi.value for kpi in content.kpis}
    assert kpis["Accuracy"] == "75.0%" and kpis["AUC"] == "0.600"


def test_class_counts_are_read_as_a_dict_or_a_list():
    clients = [_client("A", {"no": 7, "yes": 2}), _client("B", [3, 6])]
    content = gather_content(_run(), [_round(1, {})], clients, None, None, "")

    assert content.class_counts == {"A": {"no": 7, "yes": 2}, "B": {"no": 3, "yes": 6}}
    # no hospital evaluated, so the evaluation column is left out
    assert content.data_table.columns[:4] == [
        "Hospital",
        "Training examples",
        "Class no",
        "Class yes",
    ]
    assert content.data_table.rows[-1][:4] == ["Total", "18", "10", "8"]


def test_empty_run_still_has_content():
    content = gather_content(_run(), [], [], None, None, "No model checkpoint.")

    assert content.rounds == [] and content.data_table.empty and content.last_round is None
    assert {kpi.label: kpi.value for kpi in content.kpis}["Rounds"] == "0 / 2"


def test_a_run_that_failed_before_any_round_renders_in_both_formats(tmp_path):
    silent = ClientResultRecord(
        1, "r1", 1, "A", "train", "failed", 0, None, None, 0, 0, None, "no reply within 25s", NOW
    )
    run = _run(status="failed", error="round 1: 0 hospital(s) replied to training")
    content = gather_content(run, [], [silent], None, None, "No model checkpoint.")

    html = write_report(content, tmp_path, "html").read_text(encoding="utf-8")
    pdf = write_report(content, tmp_path, "pdf").read_bytes()

    assert {kpi.label: kpi.detail for kpi in content.kpis}["Hospitals"] == "of 1 contacted"
    assert "The run ended with an error" in html and "0 hospital(s) replied" in html
    assert "No round has finished yet" in html and "<img" not in html
    assert "no reply within 25s" in html
    assert "ROC curve not available" in html and "No model checkpoint." in html
    assert pdf.startswith(b"%PDF")


@pytest.mark.slow
def test_long_tables_continue_on_more_pdf_pages(tmp_path):
    clients = [
        ClientResultRecord(i, "r1", 1, f"site-{i}", "evaluate", "ok", 10, {"accuracy": 0.9},
                           1.0, 0, 0, None, None, NOW)
        for i in range(45)
    ]  # fmt: skip
    content = gather_content(_run(), [_round(1, {"accuracy": 0.9})], clients, None, None, "")

    pdf = write_report(content, tmp_path, "pdf").read_bytes()

    assert [row[0] for row in content.last_round_table.rows[:3]] == ["site-0", "site-1", "site-2"]
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) > 4


@pytest.mark.slow
def test_text_from_the_store_is_shown_as_written(tmp_path):
    hostile = "<script>alert(1)</script>"
    dollars = r"Site $\nosuchcommand$ B"  # no mathtext: "$...$" must not break the charts
    clients = [
        ClientResultRecord(1, "r1", 1, hostile, "train", "failed", 0, None, None, 0, 0, None,
                           "<img src=x>", NOW),
        ClientResultRecord(2, "r1", 1, dollars, "train", "ok", 9, {"accuracy": 0.5}, 1.0, 0, 0,
                           None, None, NOW),
    ]  # fmt: skip
    content = gather_content(_run(name=hostile), [_round(1, {})], clients, None, None, "")

    html = write_report(content, tmp_path, "html").read_text(encoding="utf-8")
    pdf = write_report(content, tmp_path, "pdf").read_bytes()

    assert hostile not in html and "<img src=x>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and dollars in html
    assert pdf.startswith(b"%PDF")


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="use html or pdf"):
        build_report(None, "r1", tmp_path, "docx")
