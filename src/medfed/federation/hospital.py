"""One hospital's side of a round: its local data, state kept between rounds, train and evaluate.

Plain Python on top of the data and learning layers; ``client_app.py`` wraps it for Flower.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from medfed.config import MedfedConfig, Strategy
from medfed.data.canaries import Canaries
from medfed.data.datasets import ImageSet
from medfed.data.loader import ArrayLoader
from medfed.data.partition import partition_indices
from medfed.data.transforms import eval_transform, train_transform
from medfed.errors import DataError
from medfed.federation.hospital_bn import bn_statistics, keep_local_bn, restore_local_bn
from medfed.federation.hospital_data import run_image_set, simulated_training_set
from medfed.learning.device import measuring_pass, to_cpu, training_device, uses_amp
from medfed.learning.trainer import (
    DriftCorrection,
    evaluate,
    label_correction,
    make_optimizer,
    set_seed,
    train,
)
from medfed.models import build_model
from medfed.models.scatter import ScatterHead, ScatterNet
from medfed.privacy.accounting import AccountantStore
from medfed.privacy.dp import budget_exhausted, image_dataset, prepare_dp_training

LOCAL_VALIDATION_FRACTION = 0.15


@dataclass
class Hospital:
    """A hospital's local data for one run, and where it keeps state between rounds."""

    name: str
    data: ImageSet
    train_idx: np.ndarray
    val_idx: np.ndarray
    state_dir: Path
    canaries: Canaries  # a simulated run's planted and held-out canaries (none in deployment)

    @property
    def num_train(self) -> int:
        return int(len(self.train_idx))

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.data.labels[self.train_idx], minlength=num_classes).tolist()


def open_hospital(
    cfg: MedfedConfig, node_config: dict[str, Any], run_id: str, class_names: list[str]
) -> Hospital:
    """The hospital this ClientApp serves.

    Deployment: ``node_config["data-path"]`` is the hospital's own dataset.
    Simulation: ``partition-id`` of ``num-partitions`` selects its share of ``cfg.data.path``.
    """
    home = Path(str(node_config.get("home", cfg.home)))
    cache_dir = cfg.data.cache_dir or home / "cache"
    if "data-path" in node_config:
        # A real hospital keeps its cache where its own configuration says, not the platform.
        cache_dir = home / "cache"
        name = str(node_config.get("hospital", f"hospital-{node_config.get('client-id', 0)}"))
        # A site may hold a single class (e.g. only tumour cases): still a useful hospital.
        data_path = Path(str(node_config["data-path"]))
        data = run_image_set(run_id, data_path, cfg.data, cache_dir, class_names, min_classes=1)
        indices = np.arange(len(data.labels))
        canaries = Canaries.none(data.labels)
    else:
        pid = int(node_config.get("partition-id", 0))
        num = int(node_config.get("num-partitions", 1))
        name = f"hospital-{pid}"
        data, canaries = simulated_training_set(cfg, cache_dir, class_names, run_id)
        shared = np.setdiff1d(np.arange(len(data)), canaries.held_out)
        p = cfg.partition
        parts = partition_indices(
            data.labels[shared],
            num,
            p.scheme,
            alpha=p.alpha,
            classes_per_client=p.classes_per_client,
            seed=p.seed,
        )
        indices = shared[parts[pid]]
    train_idx, val_idx = split_local(indices, cfg.training.seed)
    state_dir = home / "hospitals" / name / run_id
    state_dir.mkdir(parents=True, exist_ok=True)
    return Hospital(name, data, train_idx, val_idx, state_dir, canaries)


def split_local(indices: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of a hospital's samples into local training and local validation."""
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(indices)
    n_val = int(round(len(shuffled) * LOCAL_VALIDATION_FRACTION))
    if len(shuffled) - n_val < 1:
        raise DataError(f"a hospital has {len(shuffled)} images: too few to train on")
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def build_run_model(cfg: MedfedConfig, num_classes: int) -> torch.nn.Module:
    m = cfg.model
    return build_model(m.name, cfg.data.channels, num_classes, norm=m.norm)


_BUILT: dict[str, torch.nn.Module] = {}  # the last architecture built in this process


def fresh_model(cfg: MedfedConfig, num_classes: int) -> torch.nn.Module:
    """A new model of the run's architecture for one message: a copy of one built once per
    process (building initialises every weight, about 0.1 s for ResNet-18; a copy takes a
    third of that). Its weights are the global model's once loaded."""
    key = json.dumps([cfg.model.model_dump(mode="json"), cfg.data.channels, num_classes])
    if key not in _BUILT:
        _BUILT.clear()
        _BUILT[key] = build_run_model(cfg, num_classes)
    return copy.deepcopy(_BUILT[key])


@dataclass
class LocalUpdate:
    state: dict[str, torch.Tensor]
    metrics: dict[str, float]
    # SCAFFOLD: the hospital's next control variate (mean raw gradient), by parameter name
    control: dict[str, np.ndarray] | None = None


Controls = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]


def train_locally(
    hospital: Hospital,
    cfg: MedfedConfig,
    global_state: dict[str, torch.Tensor],
    num_classes: int,
    server_round: int,
    run_id: str,
    controls: Controls | None = None,
    model: torch.nn.Module | None = None,
) -> LocalUpdate:
    """Local epochs from the global model; FedProx adds mu/2 ||w - w_global||^2 to the loss,
    ``federated.loss_correction`` corrects the loss for the hospital's own label distribution.

    ``controls`` (SCAFFOLD) are the server's and the hospital's control variates by parameter
    name: ``c - c_i`` is added to every gradient, and the update carries the next ``c_i``.
    Trains on ``training.device`` (the returned state is on the CPU); ``model``, when given,
    is the run's model already built (its weights and buffers are set to ``global_state``)."""
    seed = cfg.training.seed + 1000 * server_round + hash_name(hospital.name)
    set_seed(seed)
    device = training_device(cfg.training)
    if model is None:
        model = build_run_model(cfg, num_classes)
    model.load_state_dict(global_state)
    restore_local_bn(model, hospital, cfg)
    model.to(device)
    loader = ArrayLoader(
        hospital.data.images,
        hospital.data.labels,
        indices=hospital.train_idx,
        batch_size=cfg.training.batch_size,
        shuffle=True,
        seed=seed,
        transform=train_transform(cfg.data, seed),
        device=device,
    )
    mu = cfg.federated.proximal_mu if cfg.federated.strategy == Strategy.FED_PROX else 0.0
    global_params = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model, cfg.training, lr=round_learning_rate(cfg, server_round))
    start = time.perf_counter()
    metrics = {"epsilon": -1.0, "budget-exhausted": 0, "train_loss": -1.0, "train_accuracy": -1.0}
    drift = None if controls is None else drift_correction(model, controls, device)
    if cfg.privacy.mode == "sample":
        dp_metrics = train_with_dp(hospital, cfg, model, optimizer, run_id, seed)
        metrics.update(dp_metrics)
    elif cfg.federated.local_steps != 0:
        f = cfg.federated
        trained, batches = model, loader
        if isinstance(model, ScatterNet) and not train_transform(cfg.data, seed).is_random:
            # fixed features, no augmentation: computed once, only the head trains
            features, labels = scatter_dataset(hospital, cfg, model, device).tensors
            trained = ScatterHead(model)
            batches = DataLoader(
                TensorDataset(features.to(device), labels.to(device)),
                batch_size=cfg.training.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
            )
        result = train(
            trained,
            batches,
            f.local_epochs,
            optimizer,
            proximal_mu=mu,
            global_params=global_params,
            max_steps=f.local_steps,
            amp=uses_amp(cfg.training, device),
            correction=label_correction(
                hospital.class_counts(num_classes),
                f.loss_correction,
                tau=f.logit_adjustment_tau,
                alpha=f.restricted_softmax_alpha,
            ),
            drift=drift,
        )
        metrics.update(train_loss=float(result.loss), train_accuracy=float(result.accuracy))
    state = to_cpu(model.state_dict())
    keep_local_bn(model, hospital, cfg, state)
    metrics["train_seconds"] = time.perf_counter() - start
    control = None
    if controls is not None and drift is not None:
        names = [name for name, _ in model.named_parameters()]
        if drift.steps:
            mean = [g.detach().cpu().numpy() for g in drift.mean_gradient()]
            control = dict(zip(names, mean, strict=True))
        else:  # no step taken: the hospital's control variate stays as it was
            control = dict(controls[1])
    return LocalUpdate(state=state, metrics=metrics, control=control)


def drift_correction(
    model: torch.nn.Module, controls: Controls, device: torch.device
) -> DriftCorrection:
    """SCAFFOLD's ``c - c_i`` for each of the model's parameters, on ``device``."""
    server, local = controls
    correction = []
    for name, param in model.named_parameters():
        if name not in server or name not in local:
            raise DataError(f"SCAFFOLD: no control variate for parameter {name!r}")
        change = torch.from_numpy(np.asarray(server[name] - local[name], dtype=np.float32))
        if tuple(change.shape) != tuple(param.shape):
            raise DataError(f"SCAFFOLD: control variate of {name!r} has shape {change.shape}")
        correction.append(change.to(device))
    return DriftCorrection(correction)


def round_learning_rate(cfg: MedfedConfig, server_round: int) -> float:
    """The hospitals' learning rate in ``server_round`` (from 1) under ``federated.lr_decay``."""
    rate = cfg.training.learning_rate
    if cfg.federated.lr_decay == "none":
        return rate
    progress = min(server_round - 1, cfg.federated.rounds) / cfg.federated.rounds
    return rate * 0.5 * (1 + math.cos(math.pi * progress))


def train_with_dp(
    hospital: Hospital,
    cfg: MedfedConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    run_id: str,
    seed: int,
) -> dict[str, float]:
    """DP-SGD (Opacus) for this round; the accountant's history is kept between rounds.

    A hospital whose next round would pass ``privacy.epsilon_budget`` does not train: it
    returns the global model unchanged and says its budget is spent.
    """
    epochs = cfg.federated.local_epochs
    accountant = AccountantStore(hospital.state_dir / "accountant.json", run_id)
    idx = hospital.train_idx
    device = training_device(cfg.training)
    if isinstance(model, ScatterNet):  # fixed features, computed once per hospital and run
        dataset = scatter_dataset(hospital, cfg, model, device)
        trained, transform = ScatterHead(model), _as_float
    else:
        dataset = image_dataset(hospital.data.images[idx], hospital.data.labels[idx])
        trained, transform = model, train_transform(cfg.data, seed)
    dp = prepare_dp_training(
        trained,
        optimizer,
        dataset,
        batch_size=cfg.training.batch_size,
        cfg=cfg.privacy,
        total_epochs=epochs * cfg.federated.rounds,
        history=accountant.load(),
        batch_transform=transform,
        device=device,
    )
    with dp:
        if budget_exhausted(dp.projected_epsilon(epochs), cfg.privacy):
            return {
                "epsilon": dp.epsilon(),
                "budget-exhausted": 1,
                "train_loss": -1.0,
                "train_accuracy": -1.0,
            }
        with warnings.catch_warnings():  # Opacus warns that the input needs no gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            result = train(dp.model, dp.loader, epochs, dp.optimizer)
        accountant.save(dp.history)
        return {
            "epsilon": dp.epsilon(),
            "budget-exhausted": 0,
            "train_loss": float(result.loss),
            "train_accuracy": float(result.accuracy),
        }


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float()


def scatter_dataset(
    hospital: Hospital,
    cfg: MedfedConfig,
    model: ScatterNet,
    device: torch.device,
    part: str = "train",
) -> TensorDataset:
    """The fixed ScatterNet features of the hospital's ``part`` images ("train" or "val";
    normalised, no augmentation) with their labels. The features are computed the first time
    and kept in its state folder for the run."""
    idx = hospital.train_idx if part == "train" else hospital.val_idx
    labels = torch.as_tensor(hospital.data.labels[idx])
    path = hospital.state_dir / f"scatter-features-{part}.pt"
    key = f"{cfg.model.name}:{cfg.data.image_size}:{len(idx)}"
    if path.is_file():
        kept = torch.load(path, weights_only=True)
        if kept.get("key") == key:
            return TensorDataset(kept["features"], labels)
    loader = ArrayLoader(
        hospital.data.images,
        hospital.data.labels,
        indices=idx,
        batch_size=256,
        transform=eval_transform(cfg.data),
        device=device,
    )
    features = model.features_of(loader)
    tmp = path.with_suffix(".tmp")
    torch.save({"key": key, "features": features}, tmp)
    tmp.replace(path)
    return TensorDataset(features, labels)


def evaluate_locally(
    hospital: Hospital, cfg: MedfedConfig, model: torch.nn.Module
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The model's metrics on the local validation set, then (unless FedBN) its BatchNorm
    moments on the local training images (see :func:`bn_statistics`). Under FedBN the
    hospital's own BatchNorm is put in first. Runs on ``training.device`` (the model is moved
    there), in bfloat16 where it computes that natively (see :func:`measuring_pass`)."""
    restore_local_bn(model, hospital, cfg)
    device = training_device(cfg.training)
    model.to(device)
    held_out = len(hospital.val_idx) > 0
    batch_size = max(cfg.training.batch_size, 64)
    if isinstance(model, ScatterNet):  # fixed features, computed once per hospital and run
        dataset = scatter_dataset(hospital, cfg, model, device, "val" if held_out else "train")
        result = evaluate(ScatterHead(model), DataLoader(dataset, batch_size))
        return result, bn_statistics(hospital, cfg, model)
    loader = ArrayLoader(
        hospital.data.images,
        hospital.data.labels,
        indices=hospital.val_idx if held_out else hospital.train_idx,
        batch_size=batch_size,
        transform=eval_transform(cfg.data),
        device=device,
    )
    with measuring_pass(model):  # one change of the model's layout for both passes
        result = evaluate(model, loader, amp=uses_amp(cfg.training, device))
        return result, bn_statistics(hospital, cfg, model)


def hash_name(name: str) -> int:
    """A stable small integer from a hospital name (Python's hash() is salted per process)."""
    return sum(ord(c) * (i + 1) for i, c in enumerate(name)) % 997
