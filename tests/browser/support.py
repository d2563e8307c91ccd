"""A real medfed server (uvicorn in a thread) on a SQLite store, and runs seeded into it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.api import create_app
from medfed.config import MedfedConfig, config_from_dict
from medfed.store import ArtifactStore, RunStore
from serving import serving

ADMIN = ("admin", "admin-password")
SECRET_KEY = "browser-tests-" + "0" * 32  # the API asks for at least 32 bytes
VIEWER = ("viewer", "viewer-password")
STATIC_INDEX = Path(__file__).resolve().parents[2] / "src/medfed/api/static/index.html"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts/screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Server:
    url: str
    store: RunStore
    cfg: MedfedConfig


def server_config(home: Path, **values: Any) -> MedfedConfig:
    """The server's config: its home (database, artifacts) in ``home``, a fixed secret."""
    return config_from_dict({"home": str(home), "api": {"secret_key": SECRET_KEY}, **values})


@contextmanager
def running_server(home: Path, **values: Any) -> Iterator[Server]:
    """The medfed app served by uvicorn on a free port, with an admin and a viewer user."""
    home.mkdir(parents=True, exist_ok=True)
    cfg = server_config(home, **values)
    store = RunStore(cfg.database_url)
    store.add_user(*ADMIN, role="admin")
    store.add_user(*VIEWER, role="viewer")
    try:
        with serving(create_app(cfg, store), lifespan="on") as address:
            yield Server(url=f"http://{address}", store=store, cfg=cfg)
    finally:
        store.close()


def _curve(start: float, end: float, fraction: float, wobble: float) -> float:
    """A saturating learning curve from ``start`` to ``end`` with a small wobble."""
    return end - (end - start) * math.exp(-3.0 * fraction) + wobble * math.sin(7.0 * fraction)


def seed_run(
    server: Server,
    name: str,
    *,
    strategy: str = "FedAvg",
    rounds: int = 5,
    rounds_done: int | None = None,
    hospitals: int = 3,
    status: str = "finished",
    final_accuracy: float = 0.9,
    epsilon_per_round: float | None = None,
    with_checkpoint: bool = True,
) -> str:
    """A run written straight to the store, as the federation layer writes one.

    Rounds carry global metrics with a confusion matrix over 40 test images, every hospital
    has a train and an evaluate reply per round, and the last round has an encrypted model.
    """
    store, home = server.store, Path(server.cfg.home)
    done = rounds if rounds_done is None else rounds_done
    values = server.cfg.to_dict()
    values["name"] = name
    values["federated"].update(strategy=strategy, rounds=rounds, num_clients=hospitals)
    values["data"]["class_names"] = ["normal", "tumour"]
    if epsilon_per_round is not None:
        values["model"]["norm"] = "group"
        values["privacy"].update(mode="sample", noise_multiplier=1.1)
    run_id = store.create_run(
        name,
        config_from_dict(values).to_dict(),
        mode="simulation",
        strategy=strategy,
        num_rounds=rounds,
        created_by=ADMIN[0],
    )
    if status != "pending":
        store.set_status(run_id, "running")
    metrics: dict[str, Any] = {}
    for r in range(1, done + 1):
        metrics = _round_metrics(r / rounds, final_accuracy)
        eps = None if epsilon_per_round is None else epsilon_per_round * math.sqrt(r)
        for h in range(hospitals):
            _seed_hospital(store, run_id, r, h, hospitals, metrics["accuracy"], eps)
        store.record_round(
            run_id,
            r,
            metrics=metrics,
            duration_s=4.0 + 0.7 * r,
            bytes_up=hospitals * 1_200_000,
            bytes_down=hospitals * 2_400_000,
            epsilon=eps,
            num_clients_ok=hospitals,
        )
    if done and with_checkpoint:
        _seed_checkpoint(store, home, run_id, done, metrics["accuracy"])
    if status in ("finished", "failed", "stopped"):
        if status == "finished":
            store.set_final_metrics(run_id, {**metrics, "best_round": done})
        error = (
            "hospital-2: no reply within federated.round_timeout" if status == "failed" else None
        )
        store.set_status(run_id, status, error=error)
    return run_id


def _round_metrics(fraction: float, final_accuracy: float) -> dict[str, Any]:
    accuracy = round(_curve(0.5, final_accuracy, fraction, 0.01), 4)
    positives, negatives = 20, 20
    tp = round(positives * min(1.0, accuracy + 0.02))
    tn = round(negatives * max(0.0, accuracy - 0.02))
    return {
        "loss": round(_curve(0.69, 0.25, fraction, 0.01), 4),
        "accuracy": accuracy,
        "precision": round(tp / max(1, tp + negatives - tn), 4),
        "recall": round(tp / positives, 4),
        "f1": round(2 * tp / max(1, 2 * tp + (negatives - tn) + (positives - tp)), 4),
        "auc": round(min(0.995, accuracy + 0.04), 4),
        "confusion_matrix": [[tn, negatives - tn], [positives - tp, tp]],
    }


def _seed_hospital(
    store: RunStore,
    run_id: str,
    round_: int,
    index: int,
    hospitals: int,
    global_accuracy: float,
    epsilon: float | None,
) -> None:
    hospital = f"hospital-{index}"
    skew = (index - (hospitals - 1) / 2) * 0.03
    store.touch_hospital(hospital)
    common = {"hospital": hospital, "status": "ok", "num_examples": 120 + 40 * index}
    store.record_client_result(
        run_id,
        round_,
        phase="train",
        metrics={
            "train-loss": round(0.6 / round_ + 0.1, 4),
            "class-counts": [70 + 10 * index, 50 + 30 * index],
        },
        duration_s=2.5 + 0.3 * index,
        bytes_up=1_200_000,
        bytes_down=2_400_000,
        epsilon=epsilon,
        **common,
    )
    store.record_client_result(
        run_id,
        round_,
        phase="evaluate",
        metrics={
            "accuracy": round(min(0.99, global_accuracy + skew), 4),
            "loss": round(0.7 / (round_ + 0.5) + 0.15 - skew, 4),
            "auc": round(min(0.995, global_accuracy + 0.04 + skew), 4),
            "confusion_matrix": _site_matrix(min(0.99, global_accuracy + skew), 12 + 4 * index),
        },
        duration_s=0.4 + 0.1 * index,
        bytes_down=2_400_000,
        **common,
    )


def _site_matrix(accuracy: float, positives: int, negatives: int = 12) -> list[list[int]]:
    """A hospital's held-out confusion matrix near ``accuracy``."""
    tp, tn = round(positives * accuracy), round(negatives * accuracy)
    return [[tn, negatives - tn], [positives - tp, tp]]


def _seed_checkpoint(
    store: RunStore, home: Path, run_id: str, round_: int, accuracy: float
) -> None:
    import torch

    artifacts = ArtifactStore(home / "artifacts")
    state = {"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}
    path = artifacts.save_state_dict(
        f"{run_id}/round-{round_}.pt", state, {"round": round_, "run_id": run_id}
    )
    store.record_checkpoint(
        run_id,
        round_,
        str(path),
        metric_name="accuracy",
        metric_value=accuracy,
        size_bytes=path.stat().st_size,
    )
