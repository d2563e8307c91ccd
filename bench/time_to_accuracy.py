"""Rounds and seconds to 90%, 95% and 98% test accuracy on skewed hospitals, against central
training in the same run.

Run: ``nice -n 10 .venv/bin/python bench/time_to_accuracy.py --seeds 5 --work /tmp/tta``
(make the data first with ``.venv/bin/medfed data demo data/demo``).

For each partition of the training images over 4 simulated hospitals (IID; label skew by
Dirichlet 1.0, 0.5 and 0.1; one class per hospital; quantity skew by Dirichlet 0.5 over the
sizes) and each recipe (``RECIPES``: medfed's defaults, the defaults and the demo's recipe
before them, variants of the defaults: GroupNorm, 2 local epochs, SCAFFOLD; and the recipe for
hospitals that hold one class each, run with ``--rounds 80``), one run per
partition seed (``partition.seed`` = ``--seed`` + i). Every run starts from the same
model initialisation (``training.seed``), on the same images, model and image size. The table
gives, per partition and recipe, the rounds and seconds to each threshold (the mean over the
seeds that reached it, with how many did), the final accuracy's mean and worst seed; central
training (``medfed.learning.central.run_central``, medfed's default optimiser and learning rate,
cosine decay over ``--central-epochs``) runs once in the same run.

Accuracy is the held-out test set's (``DATA/test``) after every round or epoch; with
``--validation F`` it is a stratified share F of the training images held out instead (what
recipes are chosen on: never the test set). Seconds are cumulative: for federated runs the sum
of the rounds' ``duration_s`` (train + evaluate + central evaluation, excluding start-up); for
central training the wall time to the end of that epoch's evaluation. ``--inline`` runs the
hospitals in this process one after the other (``medfed.federation.local_grid``: the same
ServerApp, ClientApp handlers, checks and strategies, without Ray, for a loaded machine);
seconds then add up the hospitals' times instead of overlapping them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _common import (
    check_data,
    extra_keys,
    quiet_logs,
    simulate,
    simulate_inline,
    validation_split,
    warm_cache,
)
from medfed.config import MODEL_NAMES, MedfedConfig, load_config
from medfed.federation.runner import absolute_paths
from medfed.learning.central import run_central

THRESHOLDS = (0.90, 0.95, 0.98)
PARTITIONS: dict[str, dict[str, Any]] = {
    "IID": {"partition.scheme": "iid"},
    "Dirichlet 1.0": {"partition.scheme": "dirichlet", "partition.alpha": 1.0},
    "Dirichlet 0.5": {"partition.scheme": "dirichlet", "partition.alpha": 0.5},
    "Dirichlet 0.1": {"partition.scheme": "dirichlet", "partition.alpha": 0.1},
    "one class per hospital": {"partition.scheme": "shards", "partition.classes_per_client": 1},
    "quantity skew 0.5": {"partition.scheme": "quantity", "partition.alpha": 0.5},
}
# What each recipe sets on top of medfed's configuration defaults.
# Hospitals holding one class each: federated SGD, the server's momentum adding the steps up.
SINGLE_CLASS = "single-class recipe (1 step a round, GroupNorm, SGD 0.01, FedAvgM 1.0/0.9)"
RECIPES: dict[str, dict[str, Any]] = {
    "medfed defaults (FedAvg, logit adjustment, cosine)": {},
    "FedAvg, plain cross-entropy, constant rate (defaults before)": {
        "federated.loss_correction": "none",
        "federated.lr_decay": "none",
    },
    "demo before (FedAvg, Adam 3e-4)": {
        "federated.strategy": "FedAvg",
        "training.optimizer": "adam",
        "training.learning_rate": 3e-4,
        "federated.lr_decay": "none",
        "federated.loss_correction": "none",
    },
    "FedAvg + logit adjustment + cosine, GroupNorm": {"model.norm": "group"},
    "FedAvg + logit adjustment + cosine, 2 local epochs": {"federated.local_epochs": 2},
    "SCAFFOLD (SGD 0.05) + logit adjustment + cosine": {
        "federated.strategy": "SCAFFOLD",
        "training.optimizer": "sgd",
        "training.learning_rate": 0.05,
    },
    SINGLE_CLASS: {
        "model.norm": "group",
        "federated.strategy": "FedAvgM",
        "federated.server_learning_rate": 1.0,
        "federated.server_momentum": 0.9,
        "federated.local_steps": 1,
        "federated.lr_decay": "cosine",
        "federated.loss_correction": "none",
        "training.optimizer": "sgd",
        "training.learning_rate": 0.01,
        "training.batch_size": 64,
    },
}
CENTRAL = "central"


@dataclass
class Curve:
    """Accuracy and cumulative seconds after each round (or epoch) of one run."""

    recipe: str
    partition: str
    seed: int
    accuracy: list[float]
    seconds: list[float]

    def first_reaching(self, threshold: float) -> tuple[int, float] | None:
        for step, (acc, secs) in enumerate(zip(self.accuracy, self.seconds, strict=True), 1):
            if acc >= threshold:
                return step, secs
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    parser.add_argument("--model", default=None, choices=MODEL_NAMES, help="default: medfed's")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--central-epochs", type=int, default=0, help="default: --rounds")
    parser.add_argument("--seed", type=int, default=0, help="the first partition seed")
    parser.add_argument("--seeds", type=int, default=5, help="partition seeds per setting")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument(
        "--partitions", nargs="+", choices=list(PARTITIONS), default=list(PARTITIONS)
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="extra keys")
    parser.add_argument("--no-central", action="store_true")
    parser.add_argument("--inline", action="store_true", help="hospitals in this process")
    parser.add_argument(
        "--validation",
        type=float,
        default=0.0,
        help="score on this share of the training images held out, not on the test set",
    )
    parser.add_argument("--work", type=Path, help="keep finished runs here (resumable)")
    return parser.parse_args(argv)


def config(args: argparse.Namespace, home: Path, **keys: Any) -> MedfedConfig:
    overrides: dict[str, Any] = {
        "home": str(home),
        "data.path": str(args.data),
        "data.image_size": args.image_size,
        "data.cache_dir": str(args.work / "cache"),
        "federated.num_clients": args.hospitals,
        "federated.min_available_clients": args.hospitals,
        "federated.rounds": args.rounds,
        **({"model.name": args.model} if args.model else {}),
        **keys,
        **extra_keys(args.set),
    }
    return absolute_paths(load_config(None, overrides))


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def federated_curve(args: argparse.Namespace, recipe: str, partition: str, seed: int) -> Curve:
    home = args.work / slug(recipe) / slug(partition) / f"seed{seed}"
    kept = home / "curve.json"
    if kept.is_file():
        return Curve(**json.loads(kept.read_text()))
    home.mkdir(parents=True, exist_ok=True)
    cfg = config(
        args,
        home,
        name=f"tta {recipe}, {partition}, seed {seed}",
        **RECIPES[recipe],
        **PARTITIONS[partition],
        **{"partition.seed": seed},
    )
    rounds = simulate_inline(cfg) if args.inline else simulate(cfg)
    seconds, total = [], 0.0
    for record in rounds:
        total += record.duration_s
        seconds.append(total)
    accuracy = [float(r.metrics["accuracy"]) for r in rounds]
    curve = Curve(recipe, partition, seed, accuracy, seconds)
    kept.write_text(json.dumps(asdict(curve)))
    return curve


def central_curve(args: argparse.Namespace) -> Curve:
    home = args.work / CENTRAL
    kept = home / "curve.json"
    if kept.is_file():
        return Curve(**json.loads(kept.read_text()))
    epochs = args.central_epochs or args.rounds
    cfg = config(args, home, **{"training.epochs": epochs})
    accuracy: list[float] = []
    seconds: list[float] = []
    start = time.perf_counter()

    def on_epoch(_epoch: int, row: dict) -> None:
        accuracy.append(float(row["test"]["accuracy"]))
        seconds.append(time.perf_counter() - start)

    run_central(cfg, home / "out", progress=False, on_epoch=on_epoch)
    curve = Curve(CENTRAL, "all images", cfg.training.seed, accuracy, seconds)
    home.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(asdict(curve)))
    return curve


def _reach(curves: list[Curve], threshold: float) -> tuple[str, str]:
    hits = [hit for c in curves if (hit := c.first_reaching(threshold)) is not None]
    if not hits:
        return f"none of {len(curves)}", "-"
    note = "" if len(hits) == len(curves) else f" ({len(hits)}/{len(curves)})"
    steps = statistics.mean(h[0] for h in hits)
    secs = statistics.mean(h[1] for h in hits)
    return f"{steps:.1f}{note}", f"{secs:.0f}"


def report(console: Console, args: argparse.Namespace, groups: dict, central: Curve | None) -> None:
    where = f"validation share {args.validation:g}" if args.validation else "held-out test set"
    table = Table(
        title=f"time to accuracy ({where}); {args.hospitals} hospitals, up to {args.rounds} "
        f"rounds, {args.seeds} partition seeds"
    )
    table.add_column("partition")
    table.add_column("recipe")
    for threshold in THRESHOLDS:
        table.add_column(f"rounds to {threshold:.0%}", justify="right")
        table.add_column(f"s to {threshold:.0%}", justify="right")
    for column in ("final: mean", "worst seed", "best seed"):
        table.add_column(column, justify="right")
    for (partition, recipe), curves in groups.items():
        finals = [c.accuracy[-1] for c in curves]
        cells = [cell for t in THRESHOLDS for cell in _reach(curves, t)]
        table.add_row(
            partition,
            recipe,
            *cells,
            f"{statistics.mean(finals):.4f}",
            f"{min(finals):.4f}",
            f"{max(finals):.4f}",
        )
    if central is not None:
        cells = [cell for t in THRESHOLDS for cell in _reach([central], t)]
        final = f"{central.accuracy[-1]:.4f}"
        table.add_row("all images", "central (epochs)", *cells, final, final, final)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_data(args.data)
    quiet_logs()
    console = Console(width=200)
    with tempfile.TemporaryDirectory(prefix="medfed-tta-") as scratch:
        args.work = (args.work or Path(scratch)).resolve()
        args.work.mkdir(parents=True, exist_ok=True)
        if args.validation:
            args.data = validation_split(args.data, args.work / "validation", args.validation)
        warm_cache(config(args, args.work / "warm"))
        seeds = [args.seed + i for i in range(args.seeds)]
        groups: dict[tuple[str, str], list[Curve]] = {}
        for partition in args.partitions:
            for recipe in args.recipes:
                for seed in seeds:
                    curve = federated_curve(args, recipe, partition, seed)
                    steps = " ".join(f"{a:.3f}" for a in curve.accuracy)
                    console.print(f"{partition}, {recipe}, seed {seed}: {steps}", highlight=False)
                    groups.setdefault((partition, recipe), []).append(curve)
        central = None if args.no_central else central_curve(args)
        if central is not None:
            steps = " ".join(f"{a:.3f}" for a in central.accuracy)
            console.print(f"central (epochs): {steps}", highlight=False)
    report(console, args, groups, central)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
