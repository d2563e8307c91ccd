"""Train and evaluate a classifier with plain PyTorch; FedProx's proximal term, loss corrections
for a hospital's own label distribution and SCAFFOLD's gradient correction included."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from medfed.config import TrainingConfig
from medfed.errors import DataError
from medfed.learning.device import autocast, model_device
from medfed.learning.metrics import classification_metrics

Batch = tuple[torch.Tensor, torch.Tensor]
EpochCallback = Callable[[int, dict[str, Any]], None]


class BatchLoader(Iterable[Batch], Sized, Protocol):
    """Anything that yields ``(x, y)`` batches and knows how many: ArrayLoader, DataLoader."""


@dataclass
class TrainResult:
    """Loss and accuracy of the last epoch, and every epoch's figures."""

    loss: float
    accuracy: float
    num_examples: int
    seconds: float
    epochs: list[dict[str, Any]] = field(default_factory=list)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so CPU training is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(
    model: nn.Module, cfg: TrainingConfig, lr: float | None = None
) -> torch.optim.Optimizer:
    """Adam or SGD (with momentum) over the trainable parameters, as ``cfg`` says."""
    params = [p for p in model.parameters() if p.requires_grad]
    rate = cfg.learning_rate if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(params, lr=rate, weight_decay=cfg.weight_decay)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )


@dataclass
class LabelCorrection:
    """What the training loss sees instead of the raw logits: ``logits * scale + bias``.

    ``bias`` (one value per class) is logit adjustment by the local class prior (balanced
    softmax at tau 1, as in FedLC); ``scale`` multiplies the logits of classes the hospital
    lacks (restricted softmax, FedRS). Accuracy and evaluation always use the raw logits.
    """

    bias: torch.Tensor
    scale: torch.Tensor

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.scale.to(logits.device) + self.bias.to(logits.device)


def label_correction(
    counts: list[int], kind: str, tau: float = 1.0, alpha: float = 0.5
) -> LabelCorrection | None:
    """The loss correction for a hospital holding ``counts`` images of each class.

    ``logit_adjustment``: ``bias = tau * log((n_c + 1) / (n + C))`` (Laplace-smoothed prior, so a
    missing class gets a large negative bias rather than minus infinity). ``restricted_softmax``:
    logits of classes with no local image scaled by ``alpha``. ``none``: None.
    """
    if kind == "none":
        return None
    n = torch.tensor(counts, dtype=torch.float32)
    if kind == "logit_adjustment":
        prior = (n + 1) / (n.sum() + len(counts))
        return LabelCorrection(bias=tau * prior.log(), scale=torch.ones_like(n))
    if kind == "restricted_softmax":
        scale = torch.where(n > 0, torch.ones_like(n), torch.full_like(n, alpha))
        return LabelCorrection(bias=torch.zeros_like(n), scale=scale)
    raise ValueError(
        f"unknown loss correction {kind!r}: none, logit_adjustment, restricted_softmax"
    )


@dataclass
class DriftCorrection:
    """SCAFFOLD at one hospital: ``correction[k]`` (server control variate minus the
    hospital's) is added to parameter k's gradient before each optimizer step, and the raw
    gradients (before the correction) are summed in ``gradient_sum`` over ``steps`` steps;
    their mean is the hospital's next control variate. Tensors follow ``model.parameters()``.
    """

    correction: list[torch.Tensor]
    gradient_sum: list[torch.Tensor] = field(default_factory=list)
    steps: int = 0

    def mean_gradient(self) -> list[torch.Tensor]:
        """The mean raw gradient over the steps taken (zeros when none were)."""
        return [g / max(self.steps, 1) for g in self.gradient_sum]

    def apply(self, params: list[torch.Tensor]) -> None:
        """Record each parameter's raw gradient, then add its correction."""
        if not self.gradient_sum:
            self.gradient_sum = [torch.zeros_like(p) for p in params]
        for p, c, total in zip(params, self.correction, self.gradient_sum, strict=True):
            if p.grad is None:
                continue
            total += p.grad
            p.grad += c.to(p.grad.device)
        self.steps += 1


def _proximal_term(params: list[torch.Tensor], anchors: list[torch.Tensor]) -> torch.Tensor:
    """sum ||w - w_global||^2 over the model's parameters."""
    return sum((p - a).pow(2).sum() for p, a in zip(params, anchors, strict=True))


def train(
    model: nn.Module,
    loader: BatchLoader,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    *,
    proximal_mu: float = 0.0,
    global_params: list[torch.Tensor] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = False,
    description: str = "train",
    on_epoch: EpochCallback | None = None,
    max_steps: int | None = None,
    amp: bool = False,
    correction: LabelCorrection | None = None,
    drift: DriftCorrection | None = None,
) -> TrainResult:
    """Minimise cross-entropy (+ ``proximal_mu``/2 * ||w - w_global||^2 when mu > 0).

    ``correction`` changes the logits the loss sees (see :class:`LabelCorrection`); ``drift``
    adds SCAFFOLD's correction to every gradient and records the raw ones (see
    :class:`DriftCorrection`; its tensors follow ``model.parameters()``).

    ``max_steps`` (at least 1) ends training after that many optimizer steps, within an epoch.
    Training runs where the model is: batches are moved there (non-blocking) unless it is on
    the CPU. ``amp`` (CUDA only; ignored elsewhere) trains under float16 autocast with
    gradient scaling.

    ``global_params`` follow ``model.parameters()`` order; by default they are a detached copy
    of the weights at the start. ``scheduler`` (if any) steps after every optimizer step.
    ``on_epoch(epoch, figures)`` runs after each epoch (from 1).
    An Opacus DPOptimizer replaces each gradient by its clipped, noised per-sample sum, so the
    proximal term has no effect under DP-SGD.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    steps_left = [max_steps]
    params = list(model.parameters())
    if drift is not None and len(drift.correction) != len(params):
        raise ValueError(
            f"drift correction has {len(drift.correction)} tensors, model {len(params)}"
        )
    anchors: list[torch.Tensor] = []
    if proximal_mu > 0 and global_params is None:
        anchors = [p.detach().clone() for p in params]
    elif proximal_mu > 0:
        anchors = [g.detach() for g in global_params]
        if len(anchors) != len(params):
            raise ValueError(f"global_params has {len(anchors)} tensors, model {len(params)}")
    device = model_device(model)
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None
    start = time.perf_counter()
    history: list[dict[str, Any]] = []
    with _progress(progress) as bar:
        for epoch in range(1, epochs + 1):
            task = bar.add_task(f"{description} epoch {epoch}/{epochs}", total=len(loader))
            figures = _train_epoch(
                model,
                loader,
                optimizer,
                scheduler,
                proximal_mu,
                params,
                anchors,
                bar,
                task,
                steps_left,
                device,
                scaler,
                correction,
                drift,
            )
            figures["epoch"] = epoch
            history.append(figures)
            bar.remove_task(task)
            if on_epoch is not None:
                on_epoch(epoch, figures)
            if steps_left[0] == 0:
                break
    last = history[-1]
    return TrainResult(
        loss=last["loss"],
        accuracy=last["accuracy"],
        num_examples=last["num_examples"],
        seconds=time.perf_counter() - start,
        epochs=history,
    )


def _train_epoch(
    model: nn.Module,
    loader: BatchLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    proximal_mu: float,
    params: list[torch.Tensor],
    anchors: list[torch.Tensor],
    bar: Progress,
    task: Any,
    steps_left: list[int | None],
    device: torch.device,
    scaler: torch.amp.GradScaler | None,
    correction: LabelCorrection | None = None,
    drift: DriftCorrection | None = None,
) -> dict[str, Any]:
    """One pass over ``loader`` (shorter when ``steps_left[0]`` runs out: it counts down);
    sums stay tensors on the model's device so no step waits on a host sync."""
    model.train()
    start = time.perf_counter()
    move = device.type != "cpu"
    precision = autocast(device, scaler is not None)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    proximal_sum = torch.zeros((), device=device)
    seen = 0
    for x, y in loader:
        if move:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision:
            logits = model(x)
            seen_logits = logits if correction is None else correction.apply(logits)
            # sum / n is the mean, and 0 (not NaN) for the empty batches Poisson sampling draws
            loss = F.cross_entropy(seen_logits, y, reduction="sum") / max(len(y), 1)
            total = loss
            if proximal_mu > 0:
                proximal = _proximal_term(params, anchors)
                total = loss + proximal_mu / 2 * proximal
                proximal_sum += proximal.detach() * len(y)
        if scaler is None:
            total.backward()
            if drift is not None:
                drift.apply(params)
            optimizer.step()
        else:
            scaler.scale(total).backward()
            if drift is not None:
                scaler.unscale_(optimizer)
                drift.apply(params)
            scaler.step(optimizer)
            scaler.update()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(dim=1) == y).sum()
        seen += len(y)
        bar.advance(task)
        if steps_left[0] is not None:
            steps_left[0] -= 1
            if steps_left[0] == 0:
                break
    if seen == 0:
        raise DataError("no training examples in this loader: check the dataset and partition")
    seconds = time.perf_counter() - start
    figures = {
        "loss": loss_sum.item() / seen,
        "accuracy": correct.item() / seen,
        "num_examples": seen,
        "seconds": seconds,
        "images_per_second": seen / seconds if seconds > 0 else 0.0,
    }
    if proximal_mu > 0:
        figures["proximal"] = proximal_sum.item() / seen
    return figures


@torch.inference_mode()
def _logits(model: nn.Module, loader: BatchLoader, amp: bool) -> tuple[np.ndarray, torch.Tensor]:
    """Labels and float32 logits on the CPU, the model run where it is."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    move = device.type != "cpu"
    try:
        outputs, targets = [], []
        with autocast(device, amp):
            for x, y in loader:
                if move:
                    x = x.to(device, non_blocking=True)
                outputs.append(model(x))
                targets.append(y)
    finally:
        model.train(was_training)
    if not outputs:
        raise DataError("no evaluation examples in this loader: check the test set")
    y_true = torch.cat(targets).cpu().numpy().astype(np.int64)
    return y_true, torch.cat(outputs).float().cpu()


def predict_proba(
    model: nn.Module, loader: BatchLoader, amp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """True labels and softmax class probabilities over the whole loader, computed where the
    model is (``amp``: under float16 autocast on CUDA)."""
    y_true, logits = _logits(model, loader, amp)
    return y_true, torch.softmax(logits, dim=1).numpy()


def evaluate(model: nn.Module, loader: BatchLoader, amp: bool = False) -> dict[str, Any]:
    """Mean cross-entropy, :func:`classification_metrics` and ``num_examples``, computed where
    the model is (``amp``: under float16 autocast on CUDA)."""
    y_true, logits = _logits(model, loader, amp)
    loss = F.cross_entropy(logits, torch.from_numpy(y_true)).item()
    probs = torch.softmax(logits, dim=1).numpy()
    return {
        "loss": loss,
        "num_examples": len(y_true),
        **classification_metrics(y_true, probs, num_classes=logits.shape[1]),
    }
