"""DP-SGD at a hospital: model compatibility, clipping, accounting across rounds, budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn

from medfed.config import PrivacyConfig, TrainingConfig
from medfed.errors import PrivacyError
from medfed.learning.trainer import make_optimizer, set_seed, train
from medfed.models import build_model
from medfed.privacy.accounting import AccountantStore
from medfed.privacy.dp import (
    budget_exhausted,
    image_dataset,
    incompatible_layers,
    make_dp_compatible,
    prepare_dp_training,
    spent_epsilon,
)

torch.set_num_threads(1)


def images(n: int = 48, seed: int = 0, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    pixels = rng.integers(0, 100, (n, 1, size, size)) + labels[:, None, None, None] * 120
    return pixels.astype(np.uint8), labels


def tiny_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 2),
    )


def to_unit(batch: torch.Tensor) -> torch.Tensor:
    return batch.float() / 255


def sgd(model: nn.Module, lr: float = 0.1) -> torch.optim.Optimizer:
    return make_optimizer(model, TrainingConfig(optimizer="sgd", momentum=0.0, learning_rate=lr))


def sample_cfg(**values) -> PrivacyConfig:
    return PrivacyConfig(mode="sample", **({"noise_multiplier": 1.0} | values))


def test_batchnorm_model_is_fixed_into_the_group_norm_architecture() -> None:
    batch = build_model("cancer_cnn", 1, 2, norm="batch")
    assert any("BatchNorm2d" in problem for problem in incompatible_layers(batch))
    fixed = make_dp_compatible(batch)
    group = build_model("cancer_cnn", 1, 2, norm="group")
    assert incompatible_layers(fixed) == []
    assert {k: v.shape for k, v in fixed.state_dict().items()} == {
        k: v.shape for k, v in group.state_dict().items()
    }
    assert make_dp_compatible(group) is group


def test_unfixable_layer_is_named_in_the_error() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, affine=False), nn.Flatten())
    with pytest.raises(PrivacyError, match=r"1 \(BatchNorm2d\)"):
        make_dp_compatible(model)


def test_batchnorm_model_is_refused_with_advice() -> None:
    model = build_model("cancer_cnn", 1, 2, norm="batch")
    x, y = images()
    with pytest.raises(PrivacyError, match="model.norm: group"):
        prepare_dp_training(model, sgd(model), image_dataset(x, y), batch_size=8, cfg=sample_cfg())


@pytest.mark.parametrize(
    "cfg,match",
    [
        (PrivacyConfig(mode="client", noise_multiplier=1.0), "mode 'sample'"),
        (PrivacyConfig(mode="sample"), "noise_multiplier"),
        (PrivacyConfig(mode="sample", noise_multiplier=1.0, target_epsilon=3.0), "only one"),
        (PrivacyConfig(mode="sample", target_epsilon=3.0), "total epochs"),
    ],
)
def test_misconfigurations_are_privacy_errors(cfg: PrivacyConfig, match: str) -> None:
    model = tiny_model()
    x, y = images()
    with pytest.raises(PrivacyError, match=match):
        prepare_dp_training(model, sgd(model), image_dataset(x, y), batch_size=8, cfg=cfg)


def test_per_example_clipping_bounds_each_step() -> None:
    """Noise 0, full batches: one SGD step moves the weights by at most lr * max_grad_norm."""
    set_seed(0)
    x, y = images(16)
    clip, lr = 0.01, 0.1
    model = tiny_model()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    cfg = sample_cfg(noise_multiplier=0.0, max_grad_norm=clip)
    with prepare_dp_training(
        model,
        sgd(model, lr),
        image_dataset(x, y),
        batch_size=16,
        cfg=cfg,
        batch_transform=to_unit,
        seed=0,
    ) as dp:
        batch = next(iter(dp.loader))
        dp.optimizer.zero_grad()
        nn.functional.cross_entropy(dp.model(batch[0]), batch[1]).backward()
        dp.optimizer.step()
    moved = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
    assert len(batch[1]) == 16
    assert 0 < moved.norm() <= lr * clip * (1 + 1e-4)

    reference = tiny_model()
    torch.nn.utils.vector_to_parameters(before.clone(), reference.parameters())
    optimizer = sgd(reference, lr)
    nn.functional.cross_entropy(
        reference(to_unit(torch.from_numpy(x))), torch.from_numpy(y)
    ).backward()
    optimizer.step()
    unclipped = torch.nn.utils.parameters_to_vector(reference.parameters()) - before
    assert unclipped.norm() > 10 * lr * clip


@pytest.mark.slow
def test_training_spends_what_the_rdp_accountant_says_and_resumes_across_rounds(tmp_path) -> None:
    set_seed(0)
    x, y = images(48, size=16)
    cfg = sample_cfg(noise_multiplier=1.1)
    store = AccountantStore(tmp_path / "accountant.json", run_id="run-7")
    model = build_model("cancer_cnn", 1, 2, norm="group")
    keys = list(model.state_dict())
    epsilons = []
    for _round in range(2):
        with prepare_dp_training(
            model,
            sgd(model),
            image_dataset(x, y),
            batch_size=8,
            cfg=cfg,
            history=store.load(),
            batch_transform=to_unit,
            seed=_round,
        ) as dp:
            projected = dp.projected_epsilon(1)
            train(dp.model, dp.loader, 1, dp.optimizer)
            store.save(dp.history)
            epsilons.append(dp.epsilon())
            assert dp.epsilon() == pytest.approx(projected)
            assert spent_epsilon(dp.engine, cfg.delta) == dp.epsilon()
    assert list(model.state_dict()) == keys
    assert not any(
        hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters()
    )

    steps = 2 * 6  # two rounds of one epoch, 48 examples / batch 8
    assert store.load() == [(1.1, 1 / 6, steps)]
    direct = RDPAccountant()
    direct.history = [(1.1, 1 / 6, steps)]
    assert epsilons[1] == pytest.approx(direct.get_epsilon(cfg.delta))
    assert epsilons[0] < epsilons[1]


@pytest.mark.slow
def test_target_epsilon_is_reached_at_the_end_of_the_run_not_before(tmp_path) -> None:
    set_seed(1)
    x, y = images(32)
    cfg = PrivacyConfig(mode="sample", target_epsilon=5.0, epsilon_budget=5.0)
    store = AccountantStore(tmp_path / "accountant.json", "run")
    model = tiny_model()
    spent = []
    for _round in range(3):
        with prepare_dp_training(
            model,
            sgd(model),
            image_dataset(x, y),
            batch_size=8,
            cfg=cfg,
            total_epochs=2,
            history=store.load(),
            batch_transform=to_unit,
        ) as dp:
            if budget_exhausted(dp.projected_epsilon(1), cfg):
                spent.append(None)
                continue
            train(dp.model, dp.loader, 1, dp.optimizer)
            store.save(dp.history)
            spent.append(dp.epsilon())
    assert spent[0] < spent[1] <= 5.0
    assert spent[1] > 4.9
    assert spent[2] is None  # a third round would overspend the budget


def test_budget_exhausted() -> None:
    assert not budget_exhausted(1e9, PrivacyConfig(mode="sample"))
    assert budget_exhausted(3.01, PrivacyConfig(mode="sample", epsilon_budget=3.0))
    assert not budget_exhausted(3.0, PrivacyConfig(mode="sample", epsilon_budget=3.0))


def test_loader_applies_the_batch_transform_and_poisson_sampling() -> None:
    set_seed(2)
    x, y = images(40)
    model = tiny_model()
    seen = []

    def transform(batch: torch.Tensor) -> torch.Tensor:
        assert batch.dtype == torch.uint8
        seen.append(len(batch))
        return to_unit(batch)

    with prepare_dp_training(
        model,
        sgd(model),
        image_dataset(x, y),
        batch_size=10,
        cfg=sample_cfg(),
        batch_transform=transform,
        seed=0,
    ) as dp:
        batches = [batch for _epoch in range(3) for batch in dp.loader]
    assert len(dp.loader) == 4 and len(batches) == 12
    assert all(
        b[0].dtype == torch.float32 and float(b[0].max()) <= 1.0 for b in batches if len(b[1])
    )
    assert all(b[1].dtype == torch.int64 for b in batches)
    sizes = [len(b[1]) for b in batches]
    assert len(set(sizes)) > 1  # Poisson sampling: batch sizes vary around 10
    assert seen == [s for s in sizes if s]
