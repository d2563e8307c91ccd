"""A hospital's local round: the learning rate it trains with over the rounds, its share of a
simulated run's images."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medfed.config import load_config
from medfed.data.loader import ArrayLoader
from medfed.data.transforms import eval_transform
from medfed.federation.hospital import (
    build_run_model,
    fresh_model,
    open_hospital,
    round_learning_rate,
    train_locally,
)
from medfed.federation.hospital_bn import bn_statistics
from medfed.federation.runner import absolute_paths
from simulated import tiny_overrides


def test_cosine_decay_falls_from_the_configured_rate_towards_zero() -> None:
    cfg = load_config(
        None,
        {"training.learning_rate": 0.01, "federated.rounds": 10, "federated.lr_decay": "none"},
    )
    assert [round_learning_rate(cfg, r) for r in (1, 5, 10)] == [0.01] * 3
    cfg.federated.lr_decay = "cosine"
    rates = [round_learning_rate(cfg, r) for r in range(1, 11)]
    assert rates[0] == pytest.approx(0.01)
    assert rates[5] == pytest.approx(0.005)  # halfway through the rounds
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert 0 < rates[-1] < 0.0003


def test_a_hospital_moves_less_in_the_last_round_under_cosine_decay(
    kaggle_dataset: Path, tmp_path: Path
) -> None:
    def distance(decay: str) -> float:
        cfg = absolute_paths(
            load_config(
                None,
                tiny_overrides(
                    kaggle_dataset,
                    tmp_path / decay,
                    **{"federated.rounds": 4, "federated.lr_decay": decay},
                ),
            )
        )
        hospital = open_hospital(cfg, {"partition-id": 0, "num-partitions": 2}, "run", ["0", "1"])
        model = build_run_model(cfg, 2)
        start = model.state_dict()
        update = train_locally(hospital, cfg, start, 2, server_round=4, run_id="run")
        weights = [name for name, _ in model.named_parameters()]
        return sum((update.state[k] - start[k]).norm() ** 2 for k in weights) ** 0.5

    assert distance("cosine") < 0.3 * distance("none")


def test_local_steps_bound_a_hospitals_round_and_zero_sends_the_model_back(
    kaggle_dataset: Path, tmp_path: Path
) -> None:
    def local_round(steps: int | None) -> dict:
        overrides = tiny_overrides(kaggle_dataset, tmp_path / f"s{steps}")
        cfg = absolute_paths(load_config(None, {**overrides, "federated.local_steps": steps}))
        hospital = open_hospital(cfg, {"partition-id": 0, "num-partitions": 1}, "run", ["0", "1"])
        start = build_run_model(cfg, 2).state_dict()
        update = train_locally(hospital, cfg, start, 2, server_round=1, run_id="run")
        moved = any(not (update.state[k] == start[k]).all() for k in start)
        return {"moved": moved, **update.metrics}

    assert local_round(None)["moved"] and local_round(1)["moved"]
    unchanged = local_round(0)
    assert not unchanged["moved"] and unchanged["train_loss"] == -1.0


def test_held_out_canaries_reach_no_hospital_and_planted_ones_carry_their_wrong_label(
    kaggle_dataset: Path, tmp_path: Path
) -> None:
    overrides = tiny_overrides(kaggle_dataset, tmp_path, **{"privacy.canaries": 4})
    cfg = absolute_paths(load_config(None, overrides))
    hospitals = [
        open_hospital(cfg, {"partition-id": p, "num-partitions": 2}, "run", ["0", "1"])
        for p in range(2)
    ]
    canaries = hospitals[0].canaries
    assert len(canaries.planted) == len(canaries.held_out) == 4
    seen = np.concatenate([np.r_[h.train_idx, h.val_idx] for h in hospitals])
    assert len(seen) == len(hospitals[0].data) - 4
    assert not set(seen) & set(canaries.held_out)
    assert set(canaries.planted) <= set(seen)
    plain = open_hospital(
        absolute_paths(load_config(None, tiny_overrides(kaggle_dataset, tmp_path))),
        {"partition-id": 0, "num-partitions": 2},
        "run",
        ["0", "1"],
    )
    chosen = np.r_[canaries.planted, canaries.held_out]
    assert np.all(hospitals[0].data.labels[chosen] == 1 - plain.data.labels[chosen])


def test_a_hospital_decodes_its_images_once_per_run(kaggle_dataset: Path, tmp_path: Path) -> None:
    cfg = absolute_paths(load_config(None, tiny_overrides(kaggle_dataset, tmp_path)))
    node = {"partition-id": 0, "num-partitions": 2}
    first = open_hospital(cfg, node, "run-a", ["0", "1"])
    again = open_hospital(cfg, {"partition-id": 1, "num-partitions": 2}, "run-a", ["0", "1"])
    assert again.data.images is first.data.images  # the other hospital of the same run
    noise = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    Image.fromarray(noise).save(kaggle_dataset / "train" / "added.tif")
    with (kaggle_dataset / "train_labels.csv").open("a") as labels:
        labels.write("added,1\n")
    assert len(open_hospital(cfg, node, "run-a", ["0", "1"]).data) == len(first.data)
    later = open_hospital(cfg, node, "run-b", ["0", "1"])  # the next run scans the files again
    assert later.data.images is not first.data.images
    assert len(later.data) == len(first.data) + 1


def test_batchnorm_moments_are_those_of_the_models_inputs_in_training_mode(
    kaggle_dataset: Path, tmp_path: Path
) -> None:
    cfg = absolute_paths(load_config(None, tiny_overrides(kaggle_dataset, tmp_path)))
    hospital = open_hospital(cfg, {"partition-id": 0, "num-partitions": 1}, "run", ["0", "1"])
    model = build_run_model(cfg, 2)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen: dict[str, list[torch.Tensor]] = {name: [] for name, _ in layers}
    for name, layer in layers:
        layer.register_forward_hook(lambda _m, i, _o, name=name: seen[name].append(i[0]))
    images = ArrayLoader(
        hospital.data.images,
        hospital.data.labels,
        indices=hospital.train_idx,
        batch_size=len(hospital.train_idx),
        transform=eval_transform(cfg.data),
    )
    x, _ = next(iter(images))
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        reference(x)  # float32, every training image in one batch
    expected = {name: torch.cat(inputs) for name, inputs in seen.items()}
    for inputs in seen.values():
        inputs.clear()

    moments = bn_statistics(hospital, cfg, model)  # in bfloat16 where the CPU computes it

    assert set(moments) == {f"{n}.{k}" for n, _ in layers for k in ("mean", "sqmean")}
    for name, inputs in expected.items():
        mean, sqmean = inputs.mean(dim=(0, 2, 3)), (inputs * inputs).mean(dim=(0, 2, 3))
        np.testing.assert_allclose(moments[f"{name}.mean"], mean.numpy(), rtol=0.02, atol=0.02)
        np.testing.assert_allclose(moments[f"{name}.sqmean"], sqmean.numpy(), rtol=0.02)


def test_each_message_gets_a_model_of_its_own_copied_from_one_built_once() -> None:
    cfg = load_config(None, {"model.name": "cancer_cnn", "data.channels": 1})
    first = fresh_model(cfg, 2)
    with torch.no_grad():
        for param in first.parameters():
            param.fill_(7.0)  # what one message did to its model
    second = fresh_model(cfg, 2)
    assert second is not first
    assert all(not torch.equal(p, torch.full_like(p, 7.0)) for p in second.parameters())
    assert [p.shape for p in second.parameters()] == [p.shape for p in first.parameters()]
    three = fresh_model(cfg, 3)  # another architecture: built anew
    assert list(three.state_dict().values())[-1].shape[0] == 3
