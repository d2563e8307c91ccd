"""ScatterNet models: a fixed scattering front end, only the head trains and travels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.simulated import simulate

from medfed.config import config_from_dict, load_config
from medfed.errors import ConfigError
from medfed.models import build_model
from medfed.models.scatter import ScatterHead
from medfed.privacy.dp import incompatible_layers
from medfed.reports.clinical import load_final_evaluation
from medfed.store import ArtifactStore


@pytest.mark.parametrize("name", ["scatter_linear", "scatter_cnn"])
def test_scatter_models_hold_only_their_head_and_take_any_size(name: str) -> None:
    model = build_model(name, 1, 2)
    keys = list(model.state_dict())
    assert keys and all(not k.startswith(("front", "norm")) for k in keys)
    for size in (32, 64):
        assert model(torch.rand(3, 1, size, size)).shape == (3, 2)
    assert incompatible_layers(model) == []  # DP-SGD trains it as it is


@pytest.mark.parametrize("name", ["scatter_linear", "scatter_cnn"])
def test_the_head_on_cached_features_predicts_what_the_whole_model_does(name: str) -> None:
    torch.manual_seed(1)
    model = build_model(name, 1, 2).eval()
    images = torch.rand(10, 1, 32, 32)
    batches = [(images[:6], torch.zeros(6)), (images[6:], torch.zeros(4))]
    features = model.features_of(batches)
    assert features.shape == (10, 81, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ScatterHead(model)(features), model(images))


@pytest.mark.slow
def test_the_head_learns_from_fixed_scattering_features() -> None:
    torch.manual_seed(0)
    x = torch.rand(32, 1, 32, 32)
    y = (torch.arange(32) % 2).long()
    x[y == 1, :, :16] += 1.0  # a bright top half means class 1
    model = build_model("scatter_linear", 1, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert (model(x).argmax(1) == y).float().mean() == 1.0


def test_scatter_models_need_a_side_divisible_by_4_and_no_group_norm_for_dp() -> None:
    with pytest.raises(ConfigError, match="divisible by 4"):
        load_config(None, {"model.name": "scatter_linear", "data.image_size": 30})
    cfg = load_config(
        None,
        {
            "model.name": "scatter_cnn",
            "privacy.mode": "sample",
            "privacy.noise_multiplier": 1.0,
            "privacy.accountant": "prv",
        },
    )
    assert cfg.privacy.accountant == "prv"


@pytest.mark.slow
def test_a_dp_run_of_a_scatter_model_caches_features_once_per_hospital(
    kaggle_dataset: Path, tmp_path: Path
) -> None:
    store, run_id = simulate(
        kaggle_dataset,
        tmp_path / "home",
        **{
            "model.name": "scatter_linear",
            "training.optimizer": "sgd",
            "training.learning_rate": 2.0,
            "privacy.mode": "sample",
            "privacy.target_epsilon": 3.0,
            "privacy.max_grad_norm": 0.1,
            "privacy.accountant": "prv",
        },
    )
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    rounds = store.rounds(run_id)
    assert 0 < rounds[0].epsilon < rounds[1].epsilon <= 3.0 + 0.05
    artifacts = ArtifactStore.for_config(config_from_dict({"home": str(tmp_path / "home")}))
    evaluation = load_final_evaluation(artifacts, run_id)  # explained on its trained part
    assert evaluation is not None and evaluation.explanations
    hospitals = tmp_path / "home" / "hospitals"
    for part in ("train", "val"):  # what they train on, what they evaluate each round on
        cached = sorted(hospitals.glob(f"*/{run_id}/scatter-features-{part}.pt"))
        assert len(cached) == 2, part
        features = torch.load(cached[0], weights_only=True)["features"]
        assert features.shape[1:] == (81, 8, 8)
