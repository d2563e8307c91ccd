"""Membership-inference audit: can an attacker tell a model's training examples from others?

Two shadow-free attacks on per-example cross-entropy losses, scored on balanced sets of members
(examples the model trained on) and non-members (same distribution, never seen):

- loss threshold (Yeom et al. 2018): score = -loss; members tend to have lower loss;
- difficulty calibration (Watson et al. 2022): score = loss under a reference model - loss
  under the target model, the reference being a model that never saw the members (the initial
  or round-0 global model). Without a reference, each loss is calibrated by its class: score =
  -(loss - mean) / std of the non-members' losses of that class.

An AUC near 0.5 and a TPR near 1% at 1% FPR mean the attack does no better than chance; DP
training bounds how far above chance any attack can go.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from medfed.errors import PrivacyError

LOW_FPR = 0.01


@dataclass(frozen=True)
class AuditResult:
    """Attack success: ROC AUC and TPR at 1% FPR, plain and difficulty-calibrated."""

    auc: float
    tpr_at_1pct_fpr: float
    calibrated_auc: float
    calibrated_tpr_at_1pct_fpr: float
    n_members: int
    n_nonmembers: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def membership_audit(
    model: nn.Module,
    members_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    nonmembers_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    reference_model: nn.Module | None = None,
    *,
    seed: int = 0,
) -> AuditResult:
    """Run both attacks on ``model``; loaders yield ``(x, y)`` batches ready for the model.

    The larger set is subsampled (with ``seed``) to the size of the smaller one, so chance is
    exactly AUC 0.5. ``reference_model``: a model that never saw the members (e.g. the initial
    global model); without one, losses are calibrated per class.
    """
    member_x, member_y = _collect(members_loader)
    other_x, other_y = _collect(nonmembers_loader)
    count = min(len(member_y), len(other_y))
    if count < 2:
        raise PrivacyError(
            f"membership audit needs at least 2 members and 2 non-members; got {len(member_y)} "
            f"and {len(other_y)}: give it a training and a held-out test set"
        )
    rng = np.random.default_rng(seed)
    member_x, member_y = _subsample(member_x, member_y, count, rng)
    other_x, other_y = _subsample(other_x, other_y, count, rng)
    x = torch.cat([member_x, other_x])
    y = torch.cat([member_y, other_y])
    is_member = np.r_[np.ones(count), np.zeros(count)]

    losses = per_example_loss(model, x, y)
    if reference_model is not None:
        calibrated = per_example_loss(reference_model, x, y) - losses
    else:
        calibrated = _class_calibrated_scores(losses, y.numpy(), is_member == 0)
    auc, tpr = _attack_success(is_member, -losses)
    calibrated_auc, calibrated_tpr = _attack_success(is_member, calibrated)
    return AuditResult(auc, tpr, calibrated_auc, calibrated_tpr, count, count)


@torch.inference_mode()
def per_example_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> np.ndarray:
    """Cross-entropy of each example under ``model`` in eval mode (its mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        losses = [
            F.cross_entropy(model(x[i : i + batch_size]), y[i : i + batch_size], reduction="none")
            for i in range(0, len(y), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(losses).double().numpy()


def _collect(loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(torch.as_tensor(y).long())
    if not ys:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(xs), torch.cat(ys)


def _subsample(
    x: torch.Tensor, y: torch.Tensor, count: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.from_numpy(np.sort(rng.choice(len(y), size=count, replace=False)))
    return x[keep], y[keep]


def _class_calibrated_scores(
    losses: np.ndarray, labels: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """-(loss - mean) / std, with the mean and std of the reference examples of the same class."""
    scores = np.empty_like(losses)
    overall = losses[reference]
    for label in np.unique(labels):
        in_class = labels == label
        pool = losses[in_class & reference]
        pool = pool if len(pool) >= 2 else overall
        scores[in_class] = -(losses[in_class] - pool.mean()) / (pool.std() + 1e-12)
    return scores


def _attack_success(is_member: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC, and the best true-positive rate at a false-positive rate of at most 1%."""
    auc = float(roc_auc_score(is_member, scores))
    fpr, tpr, _ = roc_curve(is_member, scores)
    return auc, float(tpr[fpr <= LOW_FPR].max())
