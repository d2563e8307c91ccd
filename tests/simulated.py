"""A tiny simulated federated run in the test's own process (cancer_cnn, 16 px, 2 hospitals)."""

from __future__ import annotations

from pathlib import Path

from medfed.config import load_config
from medfed.federation.runner import absolute_paths, create_run
from medfed.federation.runtime import RunSettings
from medfed.federation.simulation import run_simulated
from medfed.store import RunStore


def tiny_overrides(data: Path, home: Path, **extra: object) -> dict[str, object]:
    return {
        "home": str(home),
        "data.path": str(data),
        "data.image_size": 16,
        "model.name": "cancer_cnn",
        "training.batch_size": 8,
        "training.learning_rate": 0.003,
        "federated.num_clients": 2,
        "federated.rounds": 2,
        **extra,
    }


def simulate(data: Path, home: Path, **extra: object) -> tuple[RunStore, str]:
    """Run it to the end; returns the store and the run id."""
    cfg = absolute_paths(load_config(None, tiny_overrides(data, home, **extra)))
    home.mkdir(parents=True, exist_ok=True)
    store = RunStore(cfg.database_url)
    run_id = create_run(cfg, store)
    settings = RunSettings(
        run_id=run_id, config=cfg.to_dict(), store_url=store.url, home=str(cfg.home)
    )
    run_simulated(settings, cfg.federated.num_clients)
    return store, run_id
