"""Membership-inference audit of a simulated run: stored with the run, and `medfed audit`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medfed import cli
from medfed.config import load_config
from medfed.data.synthetic import write_synthetic_dataset
from medfed.errors import FederationError
from medfed.federation.run_audit import audit_run
from medfed.store import RunStore
from simulated import simulate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str]:
    """One finished run shared by this module's tests (a simulation takes most of their time)."""
    root = tmp_path_factory.mktemp("audit")
    data = write_synthetic_dataset(
        root / "kaggle", layout="kaggle", n_per_class=16, size=32, test_per_class=6
    )
    store, run_id = simulate(data, root / "home", **{"privacy.canaries": 4})
    assert store.get_run(run_id).status == "finished", store.get_run(run_id).error
    return store, run_id


def test_audit_scores_members_against_the_test_set_and_is_stored(audited_run) -> None:
    store, run_id = audited_run
    before = dict(store.get_run(run_id).final_metrics)

    result = audit_run(store, run_id, max_examples=10, seed=3)

    # 28 images go to the hospitals (4 canaries held out), 24 train, 12 test: 10 of each
    assert result.n_members == result.n_nonmembers == 10
    for value in (result.auc, result.calibrated_auc):
        assert 0.0 <= value <= 1.0
    for value in (result.tpr_at_1pct_fpr, result.calibrated_tpr_at_1pct_fpr):
        assert 0.0 <= value <= 1.0
    final = store.get_run(run_id).final_metrics
    assert final["audit"]["auc"] == result.auc
    assert final["audit"]["model_round"] == 2
    has_initial = any(c.round == 0 for c in store.checkpoints(run_id))
    assert final["audit"]["reference"] == ("round-0 model" if has_initial else "per-class losses")
    assert {k: v for k, v in final.items() if k != "audit"} == before
    assert audit_run(store, run_id, max_examples=10, seed=3) == result


def test_planted_canaries_are_attacked_against_the_held_out_ones(audited_run) -> None:
    store, run_id = audited_run
    audit_run(store, run_id, max_examples=10, seed=3)
    canaries = store.get_run(run_id).final_metrics["audit"]["canaries"]
    # 4 planted, minus those that fell into a hospital's local validation split
    assert 2 <= canaries["n_members"] == canaries["n_nonmembers"] <= 4
    for key in ("auc", "calibrated_auc", "tpr_at_1pct_fpr", "calibrated_tpr_at_1pct_fpr"):
        assert 0.0 <= canaries[key] <= 1.0


def test_audit_command_prints_the_table(audited_run) -> None:
    store, run_id = audited_run
    cli._register()
    result = CliRunner().invoke(
        cli.app, ["audit", run_id[:8], "--db", store.url, "--max-examples", "12"]
    )
    assert result.exit_code == 0, result.output
    for text in ("loss threshold", "ROC AUC", "TPR at 1% FPR", "12 / 12", "Best attack AUC"):
        assert text in result.output
    assert "canaries: loss threshold" in result.output
    assert "Planted canaries: Best attack" in result.output
    assert store.get_run(run_id).final_metrics["audit"]["n_members"] == 12


def test_unknown_run_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path}/medfed.db"
    assert cli.main(["audit", "0123abcd", "--db", db]) == 2
    err = capsys.readouterr().err.strip()
    assert "no run 0123abcd" in err and len(err.splitlines()) == 1


def test_deployment_untrained_and_untested_runs_are_refused(tmp_path: Path) -> None:
    with RunStore(f"sqlite:///{tmp_path}/medfed.db") as store:
        deployed = store.create_run("site", {}, mode="deployment", strategy="FedAvg", num_rounds=1)
        with pytest.raises(FederationError, match="deployment mode"):
            audit_run(store, deployed)
        pending = store.create_run("sim", {}, mode="simulation", strategy="FedAvg", num_rounds=1)
        with pytest.raises(FederationError, match="no checkpoint"):
            audit_run(store, pending)
        config = load_config(None, {"home": str(tmp_path), "data.path": str(tmp_path)}).to_dict()
        untested = store.create_run(
            "sim", config, mode="simulation", strategy="FedAvg", num_rounds=1
        )
        store.record_checkpoint(
            untested,
            1,
            str(tmp_path / "r1"),
            metric_name="accuracy",
            metric_value=None,
            size_bytes=0,
        )
        with pytest.raises(FederationError, match="no held-out test set"):
            audit_run(store, untested)
