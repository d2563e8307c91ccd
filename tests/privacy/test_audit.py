"""Membership-inference audit: chance on unseen data, clearly above chance when overfit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medfed.errors import PrivacyError
from medfed.privacy.membership_inference import AuditResult, membership_audit, per_example_loss

torch.set_num_threads(1)
CLASSES = 10


def random_label_set(n: int, seed: int) -> TensorDataset:
    """Inputs and labels with no relation: only memorising can lower a member's loss."""
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, 32, generator=generator),
        torch.randint(0, CLASSES, (n,), generator=generator),
    )


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, CLASSES))


def overfit(model: nn.Module, data: TensorDataset, epochs: int = 300) -> nn.Module:
    x, y = data.tensors
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model


def loader(data: TensorDataset) -> DataLoader:
    return DataLoader(data, batch_size=32)


def test_model_that_never_saw_the_members_is_at_chance() -> None:
    members, nonmembers = random_label_set(200, 1), random_label_set(200, 2)
    model = overfit(mlp(0), random_label_set(60, 3))  # trained, but on other examples
    result = membership_audit(model, loader(members), loader(nonmembers), mlp(0))
    assert 0.35 <= result.auc <= 0.65
    assert 0.35 <= result.calibrated_auc <= 0.65
    assert result.tpr_at_1pct_fpr < 0.15
    uncalibrated = membership_audit(model, loader(members), loader(nonmembers))
    assert 0.35 <= uncalibrated.calibrated_auc <= 0.65


def test_model_overfit_to_the_members_is_exposed() -> None:
    members, nonmembers = random_label_set(60, 4), random_label_set(60, 5)
    initial = mlp(1)
    model = overfit(copy.deepcopy(initial), members)
    result = membership_audit(model, loader(members), loader(nonmembers), initial)
    assert result.auc > 0.8
    assert result.calibrated_auc > 0.8
    assert result.tpr_at_1pct_fpr > 0.1
    per_class = membership_audit(model, loader(members), loader(nonmembers))
    assert per_class.calibrated_auc > 0.8


def test_counts_are_balanced_by_subsampling() -> None:
    model = mlp(2)
    result = membership_audit(
        model, loader(random_label_set(50, 6)), loader(random_label_set(130, 7)), seed=3
    )
    assert isinstance(result, AuditResult)
    assert result.n_members == result.n_nonmembers == 50
    again = membership_audit(
        model, loader(random_label_set(50, 6)), loader(random_label_set(130, 7)), seed=3
    )
    assert again == result
    assert set(result.to_dict()) >= {"auc", "calibrated_auc", "n_members"}


def test_per_example_loss_restores_training_mode() -> None:
    model = nn.Sequential(nn.Linear(32, CLASSES), nn.Dropout(0.5))
    data = random_label_set(10, 8)
    first = per_example_loss(model, *data.tensors)
    assert model.training
    assert (per_example_loss(model, *data.tensors) == first).all()  # eval mode: no dropout
    assert first.shape == (10,)


def test_too_few_examples_is_a_privacy_error() -> None:
    with pytest.raises(PrivacyError, match="at least 2"):
        membership_audit(mlp(0), loader(random_label_set(1, 0)), loader(random_label_set(5, 1)))
