"""A real simulated run ends with its final model scored, explained and evaluated per site."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfed.config import config_from_dict
from medfed.reports.clinical import load_final_evaluation
from medfed.reports.sites import site_table
from medfed.store import ArtifactStore
from simulated import simulate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("bn", ["average", "local"])
def test_simulated_run_stores_its_final_evaluation(
    kaggle_dataset: Path, tmp_path: Path, bn: str
) -> None:
    home = tmp_path / "home"
    store, run_id = simulate(kaggle_dataset, home, **{"federated.rounds": 1, "federated.bn": bn})
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    artifacts = ArtifactStore.for_config(config_from_dict({"home": str(home)}))
    evaluation = load_final_evaluation(artifacts, run_id)
    assert evaluation is not None and evaluation.round == 1
    assert evaluation.num_samples == 12 and len(evaluation.operating_points) == 3
    assert 0.0 <= evaluation.calibration["ece"] <= 1.0
    assert evaluation.explanations and all(e.heatmap for e in evaluation.explanations)
    sites = site_table(store.client_results(run_id), ["0", "1"], bn)
    assert sites.round == 1 and [s.hospital for s in sites.sites] == ["hospital-0", "hospital-1"]
    for site in sites.sites:
        assert site.status == "ok" and site.confusion_matrix is not None
        assert sum(site.held_out_counts) == site.num_examples > 0
        assert sum(site.train_counts) > 0
