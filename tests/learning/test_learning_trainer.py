"""The plain PyTorch trainer: reproducible, FedProx's term really pulls towards the global model,
and it learns the tiny TIFF set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from medfed.config import TrainingConfig
from medfed.errors import DataError
from medfed.learning.trainer import (
    evaluate,
    make_optimizer,
    predict_proba,
    set_seed,
    train,
)
from medfed.models import build_model

torch.set_num_threads(1)


def blob_loader(seed: int = 0, n: int = 64, shuffle: bool = True) -> DataLoader:
    """Two classes of 16x16 grey images told apart by a bright centre square."""
    g = torch.Generator().manual_seed(1234)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 16, 16, generator=g) * 0.3
    x[y == 1, :, 5:11, 5:11] += 1.5
    return DataLoader(
        TensorDataset(x, y),
        batch_size=16,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed),
    )


def fresh_model(seed: int = 0) -> torch.nn.Module:
    set_seed(seed)
    return build_model("cancer_cnn", 1, 2)


def flat(params) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in params])


def test_same_seed_gives_identical_weights_after_one_epoch():
    states = []
    for _ in range(2):
        model = fresh_model(7)
        optimizer = make_optimizer(model, TrainingConfig(learning_rate=1e-2))
        train(model, blob_loader(seed=7), 1, optimizer)
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_different_seed_gives_different_weights():
    weights = []
    for seed in (1, 2):
        model = fresh_model(seed)
        train(model, blob_loader(seed=seed), 1, make_optimizer(model, TrainingConfig()))
        weights.append(flat(model.parameters()))
    assert not torch.equal(weights[0], weights[1])


def distance_travelled(mu: float) -> float:
    model = fresh_model(3)
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model, TrainingConfig(optimizer="sgd", learning_rate=0.05))
    result = train(model, blob_loader(seed=3), 2, optimizer, proximal_mu=mu, global_params=start)
    if mu > 0:
        assert all(epoch["proximal"] >= 0 for epoch in result.epochs)
    return torch.linalg.vector_norm(flat(model.parameters()) - flat(start)).item()


def test_larger_proximal_mu_keeps_update_closer_to_global_model():
    free, held = distance_travelled(0.0), distance_travelled(10.0)
    assert held < 0.8 * free


def test_proximal_anchor_defaults_to_the_starting_weights():
    def travelled(global_params):
        model = fresh_model(3)
        start = flat(model.parameters())
        optimizer = make_optimizer(model, TrainingConfig(optimizer="sgd", learning_rate=0.05))
        train(
            model, blob_loader(seed=3), 1, optimizer, proximal_mu=5.0, global_params=global_params
        )
        return flat(model.parameters()) - start

    set_seed(3)
    explicit = [p.detach().clone() for p in build_model("cancer_cnn", 1, 2).parameters()]
    assert torch.allclose(travelled(None), travelled(explicit))


def test_global_params_must_match_the_model():
    model = fresh_model()
    with pytest.raises(ValueError, match="global_params"):
        train(
            model,
            blob_loader(),
            1,
            make_optimizer(model, TrainingConfig()),
            proximal_mu=1.0,
            global_params=[torch.zeros(3)],
        )


def test_training_learns_and_reports_every_epoch():
    model = fresh_model(0)
    seen = []
    result = train(
        model,
        blob_loader(),
        3,
        make_optimizer(model, TrainingConfig(learning_rate=1e-2)),
        progress=True,
        on_epoch=lambda epoch, figures: seen.append((epoch, figures["num_examples"])),
    )
    assert seen == [(1, 64), (2, 64), (3, 64)]
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3]
    assert result.num_examples == 64 and result.seconds > 0
    assert result.epochs[-1]["loss"] < result.epochs[0]["loss"]
    metrics = evaluate(model, blob_loader(shuffle=False))
    assert metrics["accuracy"] >= 0.9
    assert metrics["num_examples"] == 64
    assert sum(map(sum, metrics["confusion_matrix"])) == 64
    assert model.training, "evaluate restores the training mode it found"


def test_scheduler_steps_once_per_batch():
    model = fresh_model()
    optimizer = make_optimizer(model, TrainingConfig(learning_rate=0.1))
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    train(model, blob_loader(), 2, optimizer, scheduler=schedule)  # 2 x 4 batches
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**8)


def test_max_steps_ends_training_within_an_epoch():
    model = fresh_model()
    optimizer = make_optimizer(model, TrainingConfig(learning_rate=0.1))
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    result = train(model, blob_loader(), 3, optimizer, scheduler=schedule, max_steps=6)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**6)  # 4 + 2 steps
    assert [e["num_examples"] for e in result.epochs] == [64, 32]
    with pytest.raises(ValueError, match="max_steps"):
        train(model, blob_loader(), 1, optimizer, max_steps=0)


def test_sgd_and_adam_follow_the_config():
    model = fresh_model()
    sgd = make_optimizer(model, TrainingConfig(optimizer="sgd", momentum=0.5, weight_decay=0.1))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.5 and sgd.param_groups[0]["weight_decay"] == 0.1
    adam = make_optimizer(model, TrainingConfig(learning_rate=0.01), lr=0.5)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.5


def test_predict_proba_returns_labels_and_probabilities_in_loader_order():
    model = fresh_model().eval()
    y_true, probs = predict_proba(model, blob_loader(shuffle=False))
    assert y_true.tolist() == (np.arange(64) % 2).tolist()
    assert probs.shape == (64, 2)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_empty_batch_as_poisson_sampling_draws_keeps_loss_and_weights_finite():
    x, y = next(iter(blob_loader()))
    model = fresh_model()
    batches = [(x[:0], y[:0]), (x, y), (x[:0], y[:0])]
    result = train(model, batches, 1, make_optimizer(model, TrainingConfig()), proximal_mu=0.1)
    assert result.num_examples == len(y)
    assert np.isfinite(result.loss) and np.isfinite(result.epochs[0]["proximal"])
    assert torch.isfinite(flat(model.parameters())).all()


def test_empty_loader_is_a_data_error():
    model = fresh_model()
    with pytest.raises(DataError, match="no training examples"):
        train(model, [], 1, make_optimizer(model, TrainingConfig()))
    with pytest.raises(DataError, match="no evaluation examples"):
        evaluate(model, [])


def test_one_epoch_on_tiny_tiff_set_beats_chance(kaggle_dataset, tmp_path):
    from medfed.config import DataConfig
    from medfed.data.datasets import load_image_set
    from medfed.data.loader import ArrayLoader
    from medfed.data.transforms import eval_transform, train_transform

    cfg = DataConfig(path=kaggle_dataset, image_size=32)
    train_set = load_image_set(kaggle_dataset, cfg, tmp_path / "cache")
    test_set = load_image_set(
        kaggle_dataset / "test", cfg, tmp_path / "cache", class_names=train_set.class_names
    )
    model = fresh_model(0)
    loader = ArrayLoader(
        train_set.images,
        train_set.labels,
        batch_size=8,
        shuffle=True,
        transform=train_transform(cfg, seed=0),
    )
    result = train(model, loader, 1, make_optimizer(model, TrainingConfig(learning_rate=3e-3)))
    assert result.num_examples == len(train_set) == 32
    test_loader = ArrayLoader(test_set.images, test_set.labels, transform=eval_transform(cfg))
    metrics = evaluate(model, test_loader)
    assert metrics["num_examples"] == 12
    assert metrics["accuracy"] > 0.5
