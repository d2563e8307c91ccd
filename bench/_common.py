"""Shared pieces of the federation benchmarks: flags, the run configuration, simulated runs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from medfed.config import MODEL_NAMES, MedfedConfig, load_config
from medfed.data.datasets import load_image_set, resolve_test_path
from medfed.federation.local_grid import LocalGrid, inline_run
from medfed.federation.runner import absolute_paths, create_run
from medfed.federation.runtime import RunSettings
from medfed.federation.simulation import run_simulated
from medfed.store import RunStore
from medfed.store.records import RoundRecord

DEMO_DATA = Path("data/demo")


def add_run_flags(parser: argparse.ArgumentParser, *, rounds: int) -> None:
    """Flags both benchmarks share: data, model, hospitals, rounds and local training."""
    parser.add_argument("--data", type=Path, default=DEMO_DATA, help="Kaggle or folder layout")
    parser.add_argument("--model", default="resnet18", choices=MODEL_NAMES)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--home", type=Path, default=None, help="default: a temporary folder")


def extra_keys(items: list[str]) -> dict[str, Any]:
    """``--set KEY=JSON`` items as configuration keys."""
    import json

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = json.loads(value)
    return out


def validation_split(data: Path, out: Path, fraction: float, seed: int = 0) -> Path:
    """A Kaggle-layout copy of ``data``'s training images (symbolic links) whose ``test/`` is
    a stratified, seeded share ``fraction`` of them and whose training set is the rest:
    recipes are chosen on it, never on the real test set. Returns ``out``."""
    import csv
    import os

    import numpy as np

    with open(data / "train_labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = np.array([row["label"] for row in rows])
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held.update(members[: int(round(len(members) * fraction))].tolist())
    parts = {
        out: [r for i, r in enumerate(rows) if i not in held],
        out / "test": [r for i, r in enumerate(rows) if i in held],
    }
    for folder, chosen in parts.items():
        (folder / "train").mkdir(parents=True, exist_ok=True)
        with open(folder / "train_labels.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "label"])
            for row in chosen:
                writer.writerow([row["id"], row["label"]])
                link = folder / "train" / f"{row['id']}.tif"
                if not link.exists():
                    os.symlink((data / "train" / f"{row['id']}.tif").resolve(), link)
        if (data / "classes.txt").is_file():
            (folder / "classes.txt").write_text((data / "classes.txt").read_text())
    return out


def check_data(path: Path) -> None:
    if not path.is_dir():
        raise SystemExit(
            f"{path}: no dataset there; make the demo data with "
            "`.venv/bin/medfed data demo data/demo` or pass --data"
        )


def run_config(args: argparse.Namespace, home: Path, **extra: Any) -> MedfedConfig:
    """The medfed configuration of one benchmark run (compression off, medfed's defaults)."""
    overrides: dict[str, Any] = {
        "home": str(home),
        "data.path": str(args.data),
        "data.image_size": args.image_size,
        "data.cache_dir": str(home / "cache"),
        "model.name": args.model,
        "training.batch_size": args.batch_size,
        "training.learning_rate": args.lr,
        "federated.num_clients": args.hospitals,
        "federated.rounds": args.rounds,
        "federated.local_epochs": args.local_epochs,
        **extra,
    }
    return absolute_paths(load_config(None, overrides))


def warm_cache(cfg: MedfedConfig) -> list[str]:
    """Decode the training and test images once, so no timed run pays for it; the class names."""
    train = load_image_set(cfg.data.path, cfg.data, cfg.cache_dir)
    test_path = resolve_test_path(cfg.data)
    if test_path is not None:
        load_image_set(test_path, cfg.data, cfg.cache_dir, class_names=train.class_names)
    return list(train.class_names)


def quiet_logs() -> None:
    for name in ("flwr", "ray", "medfed"):
        logging.getLogger(name).setLevel(logging.ERROR)


def simulate_run(cfg: MedfedConfig, inline: bool = False) -> tuple[RunStore, str]:
    """One simulated medfed run in this process, run to its end; its store and run id.
    ``inline``: the hospitals answer in this process (:class:`LocalGrid`), without Ray."""
    store = RunStore(cfg.database_url)
    run_id = create_run(cfg, store)
    settings = RunSettings(
        run_id=run_id, config=cfg.to_dict(), store_url=store.url, home=str(cfg.home)
    )
    if inline:
        run_inline(settings, cfg.federated.num_clients)
    else:
        run_simulated(settings, cfg.federated.num_clients)
    run = store.get_run(run_id)
    if run.status != "finished":
        raise SystemExit(f"medfed run {cfg.name} ({run_id}) ended {run.status}: {run.error}")
    return store, run_id


def simulate(cfg: MedfedConfig) -> list[RoundRecord]:
    """One simulated medfed run in this process; its rounds as recorded in the store."""
    store, run_id = simulate_run(cfg)
    return store.rounds(run_id)


def run_inline(settings: RunSettings, hospitals: int) -> str:
    """The ServerApp's round loop over :class:`LocalGrid` hospitals; the run's final status."""
    return inline_run(LocalGrid(settings, hospitals)).execute()


def simulate_inline(cfg: MedfedConfig) -> list[RoundRecord]:
    """One medfed run with :class:`LocalGrid` hospitals in this process; its recorded rounds."""
    store, run_id = simulate_run(cfg, inline=True)
    return store.rounds(run_id)
