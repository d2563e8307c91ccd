"""The final model as a clinician would judge it, computed once per run after its last round:
calibration, screening operating points and Grad-CAM heat maps of chosen test images.

The result is stored with the run as the encrypted artifact ``RUN/final-evaluation`` (JSON),
bound to the run and its last round; the report, the dashboard and ``medfed runs show`` read it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medfed.data.loader import ArrayLoader
from medfed.data.transforms import eval_transform
from medfed.errors import MedfedError, StoreError
from medfed.learning.explain import grad_cam, pick_examples
from medfed.learning.metrics import calibration, operating_points
from medfed.learning.trainer import predict_proba
from medfed.reports.heatmaps import as_rgb, overlay, png_base64

if TYPE_CHECKING:
    from medfed.config import DataConfig, MedfedConfig
    from medfed.data.datasets import ImageSet
    from medfed.store import RunStore
    from medfed.store.artifacts import ArtifactStore

log = logging.getLogger("medfed.reports")
ARTIFACT = "final-evaluation"
FORMAT = 1
PER_KIND = 4


@dataclass
class Explanation:
    """One explained test image: what it is, what the model said, and where it looked."""

    id: str
    kind: str
    true_class: str
    predicted_class: str
    probability: float  # of the positive class (binary) or of the predicted class
    image: str  # base64 PNG
    heatmap: str  # base64 PNG: the heat map over the image


@dataclass
class FinalEvaluation:
    """What the final model scored on the held-out test set, and the explained images."""

    round: int
    num_samples: int
    class_names: list[str]
    positive_class: str | None
    calibration: dict[str, Any]
    operating_points: list[dict[str, Any]]
    explanations: list[Explanation] = field(default_factory=list)
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinalEvaluation:
        items = [Explanation(**item) for item in data.get("explanations", [])]
        return cls(**{**data, "explanations": items})

    @property
    def scores(self) -> dict[str, Any]:
        """Calibration and operating points only (no images)."""
        return {"calibration": self.calibration, "operating_points": self.operating_points}


def evaluate_final_model(
    model: nn.Module,
    test_set: ImageSet,
    data: DataConfig,
    class_names: list[str],
    round: int,
    per_kind: int = PER_KIND,
) -> FinalEvaluation:
    """Score ``model`` on ``test_set`` and explain up to ``per_kind`` images of each kind."""
    transform = eval_transform(data)
    loader = ArrayLoader(test_set.images, test_set.labels, batch_size=128, transform=transform)
    y_true, y_prob = predict_proba(model, loader)
    return evaluation_from_predictions(
        model, test_set, transform, class_names, round, y_true, y_prob, per_kind
    )


def evaluation_from_predictions(
    model: nn.Module,
    test_set: ImageSet,
    transform: Any,
    class_names: list[str],
    round: int,
    y_true: np.ndarray,
    y_prob: np.ndarray,
    per_kind: int = PER_KIND,
) -> FinalEvaluation:
    """:func:`evaluate_final_model` from predictions already made on ``test_set``."""
    binary = y_prob.shape[1] == 2
    picks = pick_examples(y_true, y_prob, per_kind)
    explanations = []
    if picks:
        rows = np.array([p.index for p in picks])
        images = np.asarray(test_set.images[rows])
        heat = grad_cam(model, transform(torch.from_numpy(images)), [p.target for p in picks])
        for pick, image, cam in zip(picks, images, heat, strict=True):
            probability = y_prob[pick.index, 1] if binary else y_prob[pick.index].max()
            explanations.append(
                Explanation(
                    id=str(test_set.ids[pick.index]),
                    kind=pick.kind,
                    true_class=class_names[int(y_true[pick.index])],
                    predicted_class=class_names[pick.target],
                    probability=float(probability),
                    image=png_base64(as_rgb(image)),
                    heatmap=png_base64(overlay(image, cam)),
                )
            )
    return FinalEvaluation(
        round=round,
        num_samples=int(len(y_true)),
        class_names=list(class_names),
        positive_class=class_names[1] if binary else None,
        calibration=calibration(y_true, y_prob),
        operating_points=operating_points(y_true, y_prob),
        explanations=explanations,
    )


def save_final_evaluation(
    artifacts: ArtifactStore, run_id: str, evaluation: FinalEvaluation
) -> Path:
    """Store the evaluation with the run (encrypted, bound to the run and its round)."""
    data = json.dumps(evaluation.to_dict(), separators=(",", ":")).encode("utf-8")
    return artifacts.save(f"{run_id}/{ARTIFACT}", data, run_id=run_id, round=evaluation.round)


def load_final_evaluation(artifacts: ArtifactStore, run_id: str) -> FinalEvaluation | None:
    """The run's stored evaluation, or None when none was computed; a StoreError when the
    file cannot be decrypted or read."""
    path = artifacts.path_of(f"{run_id}/{ARTIFACT}")
    if not path.is_file():
        return None
    try:
        data = json.loads(artifacts.load(path, run_id=run_id))
        evaluation = FinalEvaluation.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{path}: the stored final evaluation is unreadable ({exc})") from None
    return evaluation


def record_final_evaluation(
    store: RunStore,
    artifacts: ArtifactStore,
    run_id: str,
    cfg: MedfedConfig,
    model: nn.Module,
    test_set: ImageSet | None,
) -> FinalEvaluation | None:
    """After a run's last round: evaluate and explain its latest checkpoint (the model it
    hands out) on the platform's held-out test set and store the result with the run.

    Returns None (logged, never raised) when there is no test set or checkpoint, or it fails:
    explaining never fails a run.
    """
    if test_set is None or len(test_set) == 0:
        log.info("run %s: no held-out test set, so the final model is not explained", run_id)
        return None
    try:
        checkpoint = store.latest_checkpoint(run_id)
        if checkpoint is None or checkpoint.round == 0:
            return None
        state, _ = artifacts.load_state_dict(
            Path(checkpoint.path), run_id=run_id, round=checkpoint.round
        )
        model.load_state_dict(state)
        class_names = list(cfg.data.class_names or test_set.class_names)
        evaluation = evaluate_final_model(model, test_set, cfg.data, class_names, checkpoint.round)
        save_final_evaluation(artifacts, run_id, evaluation)
    except (MedfedError, RuntimeError, ValueError, OSError) as exc:
        log.warning("run %s: the final model could not be explained: %s", run_id, exc)
        return None
    return evaluation
