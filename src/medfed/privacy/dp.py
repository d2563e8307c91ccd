"""Sample-level differential privacy (DP-SGD) for a hospital's local training, through Opacus.

Per-example gradients are clipped to ``privacy.max_grad_norm`` and Gaussian noise is added at
every optimizer step; batches are drawn by Poisson sampling, as the accounting assumes. The
hospital's spent budget is tracked by Opacus' RDP accountant, whose history is restored from and
saved to an :class:`~medfed.privacy.accounting.AccountantStore` around each round
(``privacy.accountant: prv``: Opacus' PRV accountant, tighter, for the noise and the epsilon).

Typical round at a hospital (see :func:`prepare_dp_training`)::

    model = make_dp_compatible(build_model(...))        # or build with norm="group"
    optimizer = make_optimizer(model, cfg.training)
    store = AccountantStore(state_dir / "accountant.json", run_id)
    with prepare_dp_training(model, optimizer, image_dataset(images, labels),
                             batch_size=..., cfg=cfg.privacy, total_epochs=...,
                             history=store.load(), batch_transform=...) as dp:
        if budget_exhausted(dp.projected_epsilon(epochs), cfg.privacy):
            ...  # do not train; report the hospital as out of budget
        train(dp.model, dp.loader, epochs, dp.optimizer)
        store.save(dp.history)
        epsilon = dp.epsilon()
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from medfed.config import PrivacyConfig
from medfed.errors import PrivacyError
from medfed.privacy.accounting import HistoryEntry, calibrated_noise, epsilon_from_history

BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def image_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    """uint8 images (N, C, H, W) and integer labels as a dataset Opacus can Poisson-sample."""
    if images.ndim != 4 or len(images) != len(labels):
        raise PrivacyError(
            f"images must be (N, C, H, W) with one label each; got {images.shape} and "
            f"{len(labels)} labels"
        )
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(images)), torch.as_tensor(labels))


class BatchTransformLoader:
    """Applies a batch transform (e.g. augmentation + normalisation of uint8 images) to each
    ``(x, y)`` of a loader (default: ``x / 255``), and converts labels to int64. Keeps ``len()``.

    Empty batches (possible under Poisson sampling) are passed on as empty float tensors, so the
    optimizer still takes its noisy step. With a ``device`` other than the CPU each uint8 batch
    is copied there first (non-blocking from the loader's pinned memory) and transformed there.
    """

    def __init__(
        self,
        loader: DataLoader,
        transform: BatchTransform | None = None,
        device: torch.device | None = None,
    ):
        self.loader = loader
        self.transform = transform
        self.device = device if device is not None and device.type != "cpu" else None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            if len(x) == 0:
                yield x.float(), y.long()
            elif self.transform is None:
                yield x.float() / 255, y.long()
            else:
                yield self.transform(x), y.long()


def incompatible_layers(model: nn.Module) -> list[str]:
    """``"name, name (Type): reason"`` for the layers Opacus cannot train with DP-SGD."""
    layers: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(module))
        for error in validator(module) if validator else []:
            reason = f"({type(module).__name__}): {str(error).split('. ')[0]}"
            layers.setdefault(reason, []).append(name or "(root)")
    return [f"{', '.join(names)} {reason}" for reason, names in layers.items()]


def make_dp_compatible(model: nn.Module) -> nn.Module:
    """The model itself when DP-SGD can train it, else a copy with BatchNorm -> GroupNorm.

    The replacement GroupNorm has ``gcd(32, channels)`` groups, exactly what
    ``build_model(..., norm="group")`` builds, so the server can build the same architecture.
    Raises :class:`PrivacyError` naming each layer that cannot be fixed.
    """
    if not incompatible_layers(model):
        return model
    fixed = ModuleValidator.fix(model)
    remaining = incompatible_layers(fixed)
    if remaining:
        raise PrivacyError(
            "model not compatible with DP-SGD: " + "; ".join(remaining) + ": choose another "
            "model or set privacy.mode to 'client' (client-level DP needs no model change)"
        )
    return fixed


@dataclass
class DPTraining:
    """Everything a DP-SGD round needs: train ``model`` with ``optimizer`` over ``loader``.

    ``model`` is the very module passed in (Opacus hooks attached, state dict keys unchanged).
    Call :meth:`close` (or use ``with``) after training to detach the hooks.
    """

    model: nn.Module
    optimizer: DPOptimizer
    loader: BatchTransformLoader
    engine: PrivacyEngine
    noise_multiplier: float
    sample_rate: float
    delta: float
    _hooks: Any = field(repr=False)
    accountant: str = "rdp"

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    @property
    def history(self) -> list[HistoryEntry]:
        """The accountant's history (all rounds so far): save it with an AccountantStore."""
        return [(float(n), float(q), int(s)) for n, q, s in self.engine.accountant.history]

    def epsilon(self) -> float:
        """Epsilon spent so far (all rounds) at ``privacy.delta``."""
        return epsilon_from_history(self.history, self.delta, self.accountant)

    def projected_epsilon(self, epochs: int) -> float:
        """Epsilon after training ``epochs`` more epochs: check the budget before training."""
        planned = (self.noise_multiplier, self.sample_rate, epochs * self.steps_per_epoch)
        return epsilon_from_history([*self.history, planned], self.delta, self.accountant)

    def close(self) -> None:
        """Detach Opacus' per-sample gradient hooks from the model."""
        self._hooks.cleanup()

    def __enter__(self) -> DPTraining:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def prepare_dp_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    *,
    batch_size: int,
    cfg: PrivacyConfig,
    total_epochs: int | None = None,
    history: Sequence[Sequence[float]] | None = None,
    batch_transform: BatchTransform | None = None,
    seed: int | None = None,
    device: torch.device | None = None,
) -> DPTraining:
    """Make one round of local training differentially private (Opacus, Poisson sampling).

    - ``model`` must be DP-compatible (see :func:`make_dp_compatible`; build it before the
      optimizer, whose parameters must be the model's).
    - ``dataset`` yields ``(uint8 image, label)``; ``batch_transform`` then runs on each uint8
      batch (B, C, H, W), e.g. the data module's ``train_transform(cfg, seed)``.
    - The noise is ``cfg.noise_multiplier``, or calibrated so that ``cfg.target_epsilon`` is
      reached after ``total_epochs`` epochs in all (local epochs x rounds): the same noise every
      round, so the budget holds across the whole run.
    - ``history`` is the accountant history of earlier rounds (``AccountantStore.load()``).
    - ``seed`` makes sampling and noise reproducible: for tests only, since anyone who knows
      the seed can subtract the noise. Leave it None in real runs.
    - ``device``: where the model already is (moved before the optimizer was built). Batches
      are copied there from pinned memory on CUDA; clipping and noise happen there too.
    """
    if cfg.mode != "sample":
        raise PrivacyError(f"privacy.mode={cfg.mode!r}: DP-SGD runs only with mode 'sample'")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise PrivacyError("no training examples at this hospital: DP-SGD needs data")
    model.train()
    problems = incompatible_layers(model)
    if problems:
        raise PrivacyError(
            "model not compatible with DP-SGD: " + "; ".join(problems) + ": set model.norm: "
            "group (or build the model through make_dp_compatible before the optimizer)"
        )
    _disable_inplace_ops(model)
    on_cuda = device is not None and device.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, pin_memory=on_cuda)
    sample_rate = 1 / len(loader)
    noise = _noise_multiplier(cfg, sample_rate, len(loader), total_epochs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=cfg.accountant)
    if history:
        engine.accountant.history = [(float(n), float(q), int(s)) for n, q, s in history]
    generator = None
    if seed is not None:  # the noise is drawn where the gradients are
        generator = torch.Generator(device=device or "cpu").manual_seed(seed)
    hooks, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise,
        max_grad_norm=cfg.max_grad_norm,
        poisson_sampling=True,
        noise_generator=generator,
        wrap_model=False,
    )
    return DPTraining(
        model=model,
        optimizer=dp_optimizer,
        loader=BatchTransformLoader(dp_loader, batch_transform, device),
        engine=engine,
        noise_multiplier=noise,
        sample_rate=sample_rate,
        delta=cfg.delta,
        _hooks=hooks,
        accountant=cfg.accountant,
    )


def _disable_inplace_ops(model: nn.Module) -> None:
    """In-place activations (``ReLU(inplace=True)``) break Opacus' backward hooks; turning them
    off changes no weight and no result."""
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False


def _noise_multiplier(
    cfg: PrivacyConfig, sample_rate: float, steps_per_epoch: int, total_epochs: int | None
) -> float:
    if cfg.noise_multiplier is not None and cfg.target_epsilon is not None:
        raise PrivacyError(
            "privacy.noise_multiplier and privacy.target_epsilon are both set: keep only one"
        )
    if cfg.noise_multiplier is not None:
        return cfg.noise_multiplier
    if cfg.target_epsilon is None:
        raise PrivacyError(
            "privacy.mode = 'sample' needs privacy.noise_multiplier (e.g. 1.0) or "
            "privacy.target_epsilon (e.g. 8)"
        )
    if total_epochs is None:
        raise PrivacyError("privacy.target_epsilon needs the run's total epochs to set the noise")
    return calibrated_noise(
        cfg.target_epsilon, cfg.delta, sample_rate, total_epochs * steps_per_epoch, cfg.accountant
    )


def spent_epsilon(engine: PrivacyEngine, delta: float) -> float:
    """Epsilon at ``delta`` spent so far according to the engine's accountant."""
    return epsilon_from_history(engine.accountant.history, delta)


def budget_exhausted(epsilon: float, cfg: PrivacyConfig) -> bool:
    """True when ``epsilon`` goes past ``privacy.epsilon_budget`` (never when it is unset).

    Pass :meth:`DPTraining.projected_epsilon` before training to stop a hospital before it
    overspends, or the spent epsilon to report its state.
    """
    return cfg.epsilon_budget is not None and epsilon > cfg.epsilon_budget
