"""Membership-inference audit of a finished simulated run's global model.

Members are the images the simulated hospitals trained on (each hospital's local training
split); non-members are the held-out test set, which no hospital ever saw. The round-0 global
model, when the run saved one, serves as the reference model of the calibrated attack. A run
with ``privacy.canaries`` is also attacked on its planted canaries against its held-out ones
(stored under ``audit.canaries``): the leak of the examples a model can only know by heart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfed.config import MedfedConfig, config_from_dict, run_config
from medfed.data.canaries import Canaries
from medfed.data.datasets import ImageSet, load_image_set, resolve_test_path
from medfed.data.loader import ArrayLoader
from medfed.data.transforms import eval_transform
from medfed.errors import FederationError
from medfed.federation.hospital import build_run_model, open_hospital
from medfed.privacy.membership_inference import AuditResult, membership_audit
from medfed.store import CheckpointRecord, RunRecord, RunStore
from medfed.store.artifacts import ArtifactStore, home_of_checkpoint

AUDIT_BATCH_SIZE = 256


def audit_run(
    store: RunStore,
    run_id: str,
    *,
    max_examples: int = 1000,
    seed: int = 0,
    platform: MedfedConfig | None = None,
) -> AuditResult:
    """Attack the run's latest global model; store the result in ``final_metrics["audit"]``.

    Up to ``max_examples`` members and as many non-members (seeded subsamples) are scored.
    ``platform`` is the platform's configuration (home, model key); without it the home is
    the one whose artifacts hold the run's checkpoints.
    """
    if max_examples < 2:
        raise FederationError(f"max_examples={max_examples}: the audit needs at least 2 per side")
    run = store.get_run(run_id)
    if run.mode == "deployment":
        raise FederationError(
            f"run {run_id} ran in deployment mode: its training images stay at the hospitals, "
            "so the platform cannot tell members apart; audit a simulated run of the same "
            "configuration instead"
        )
    target = _trained_checkpoint(store, run)
    if platform is None:
        home = home_of_checkpoint(target.path)
        platform = config_from_dict({} if home is None else {"home": str(home)})
    cfg = run_config(platform, run.config, source=f"run {run_id} config")
    test_set = _test_set(cfg, run_id)
    class_names = list(cfg.data.class_names or test_set.class_names)
    members, member_idx, canaries = _members(cfg, run_id, class_names)

    rng = np.random.default_rng(seed)
    artifacts = ArtifactStore.for_config(cfg, create_key=False)
    model = _load_model(cfg, artifacts, target, len(class_names))
    initial = _initial_checkpoint(store, run_id)
    reference = _load_model(cfg, artifacts, initial, len(class_names)) if initial else None
    ordinary = np.setdiff1d(member_idx, canaries.planted)
    result = membership_audit(
        model,
        _loader(cfg, members, _subsample(ordinary, max_examples, rng)),
        _loader(cfg, test_set, _subsample(np.arange(len(test_set)), max_examples, rng)),
        reference,
        seed=seed,
    )
    canary_result = None
    planted = np.intersect1d(canaries.planted, member_idx)  # not those in local validation
    if len(planted) >= 2:
        canary_result = membership_audit(
            model,
            _loader(cfg, members, planted),
            _loader(cfg, members, canaries.held_out),
            reference,
            seed=seed,
        )
    _store_result(store, run_id, result, canary_result, target.round, reference is not None, seed)
    return result


def _trained_checkpoint(store: RunStore, run: RunRecord) -> CheckpointRecord:
    latest = store.latest_checkpoint(run.id)
    if latest is None or latest.round == 0:
        raise FederationError(
            f"run {run.id} ({run.status}) has no checkpoint of a trained round yet: "
            "audit it once at least one round has finished"
        )
    return latest


def _initial_checkpoint(store: RunStore, run_id: str) -> CheckpointRecord | None:
    return next((c for c in store.checkpoints(run_id) if c.round == 0), None)


def _test_set(cfg: MedfedConfig, run_id: str) -> ImageSet:
    path = resolve_test_path(cfg.data)
    if path is None:
        raise FederationError(
            f"run {run_id} has no held-out test set ({cfg.data.path}/test missing and "
            "data.test_path unset): the audit needs images no hospital trained on as non-members"
        )
    cache = cfg.data.cache_dir or Path(cfg.home) / "cache"
    return load_image_set(path, cfg.data, cache, class_names=cfg.data.class_names)


def _members(
    cfg: MedfedConfig, run_id: str, class_names: list[str]
) -> tuple[ImageSet, np.ndarray, Canaries]:
    """The run's training images, the indices the simulated hospitals trained on, and the
    run's canaries."""
    num = cfg.federated.num_clients
    hospitals = [
        open_hospital(
            cfg,
            {"partition-id": p, "num-partitions": num, "home": str(cfg.home)},
            run_id,
            class_names,
        )
        for p in range(num)
    ]
    indices = np.unique(np.concatenate([h.train_idx for h in hospitals]))
    return hospitals[0].data, indices, hospitals[0].canaries


def _subsample(indices: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(indices) <= limit:
        return indices
    return np.sort(rng.choice(indices, size=limit, replace=False))


def _loader(cfg: MedfedConfig, images: ImageSet, indices: np.ndarray) -> ArrayLoader:
    return ArrayLoader(
        images.images,
        images.labels,
        indices=indices,
        batch_size=AUDIT_BATCH_SIZE,
        transform=eval_transform(cfg.data),
    )


def _load_model(
    cfg: MedfedConfig, artifacts: ArtifactStore, checkpoint: CheckpointRecord, num_classes: int
) -> torch.nn.Module:
    state, _ = artifacts.load_state_dict(
        Path(checkpoint.path), run_id=checkpoint.run_id, round=checkpoint.round
    )
    model = build_run_model(cfg, num_classes)
    model.load_state_dict(state)
    return model.eval()


def _store_result(
    store: RunStore,
    run_id: str,
    result: AuditResult,
    canary_result: AuditResult | None,
    model_round: int,
    has_reference: bool,
    seed: int,
) -> None:
    """Merge the audit into the run's final metrics, keeping every other key."""
    audit: dict[str, Any] = {
        **result.to_dict(),
        "model_round": model_round,
        "reference": "round-0 model" if has_reference else "per-class losses",
        "seed": seed,
    }
    if canary_result is not None:
        audit["canaries"] = canary_result.to_dict()
    final = dict(store.get_run(run_id).final_metrics or {})
    store.set_final_metrics(run_id, {**final, "audit": audit})
