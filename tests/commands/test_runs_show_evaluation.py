"""``medfed runs show``: the final model's scores and each hospital's evaluation of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medfed.cli import main
from medfed.config import config_from_dict
from medfed.reports.clinical import FinalEvaluation, save_final_evaluation
from medfed.store import ArtifactStore, RunStore


def test_runs_show_prints_operating_points_and_the_worst_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps wide tables to the terminal
    home = tmp_path / "home"
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"home": str(home)}), encoding="utf-8")
    cfg = config_from_dict({"home": str(home), "data": {"class_names": ["normal", "tumour"]}})
    with RunStore(cfg.database_url) as store:
        run_id = store.create_run("r", cfg.to_dict(), mode="simulation", strategy="FedAvg",
                                  num_rounds=1)  # fmt: skip
        for name, accuracy, matrix in (
            ("a", 0.95, [[9, 1], [0, 10]]),
            ("b", 0.55, [[5, 5], [4, 6]]),
        ):
            counts = {"class-counts": [60, 20]}
            store.record_client_result(
                run_id, 1, hospital=name, phase="train", status="ok", num_examples=80,
                metrics=counts,
            )  # fmt: skip
            store.record_client_result(
                run_id, 1, hospital=name, phase="evaluate", status="ok", num_examples=20,
                metrics={"accuracy": accuracy, "auc": accuracy, "confusion_matrix": matrix},
            )  # fmt: skip
        store.record_round(run_id, 1, metrics={"accuracy": 0.8}, duration_s=1.0)
        store.set_status(run_id, "running")
        store.set_status(run_id, "finished")
    point = {"name": "specificity at 95% sensitivity", "target": "sensitivity", "level": 0.95,
             "sensitivity": 0.96, "specificity": 0.7, "threshold": 0.27}  # fmt: skip
    evaluation = FinalEvaluation(1, 40, ["normal", "tumour"], "tumour",
                                 {"ece": 0.0412, "bins": []}, [point])  # fmt: skip
    save_final_evaluation(ArtifactStore.for_config(cfg), run_id, evaluation)

    assert main(["runs", "show", run_id[:8], "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "ECE 0.041" in out and "specificity at 95% sensitivity" in out and "0.270" in out
    assert "b (worst)" in out and "TN 5 · FP 5 · FN 4 · TP 6" in out
    assert "60 / 20 (25% tumour)" in out and "10 / 10 (50% tumour)" in out
