"""Rounds and seconds to 90% and 95% test accuracy: federated settings against central training.

Run: ``.venv/bin/python bench/time_to_accuracy.py [--rounds 10] [--central-epochs N]`` (make the
data first with ``.venv/bin/medfed data demo data/demo``).

Settings, all on the same images, model, image size, batch size and learning rate (Adam):

- FedAvg and FedProx (proximal_mu 0.01) with 4 simulated hospitals (one CPU each), one local
  epoch per round, hospitals' images split IID or by Dirichlet(0.5) over the labels;
- the centralized trainer (``medfed.learning.central.run_central``) for up to N epochs
  (default: as many as rounds), its learning rate decaying along a cosine over those epochs.

Accuracy is the held-out test set's (``data/demo/test``) after every round or epoch. Seconds
are cumulative: for federated runs the sum of the rounds' ``duration_s`` (train + evaluate +
central test evaluation, excluding Ray start-up); for central training the wall time from the
call of ``run_central`` (images already decoded in the cache) to the end of that epoch's test
evaluation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _common import add_run_flags, check_data, quiet_logs, run_config, simulate, warm_cache
from medfed.learning.central import run_central

THRESHOLDS = (0.90, 0.95)
FEDERATED = {
    "FedAvg, IID": {"federated.strategy": "FedAvg", "partition.scheme": "iid"},
    "FedProx mu 0.01, IID": {
        "federated.strategy": "FedProx",
        "federated.proximal_mu": 0.01,
        "partition.scheme": "iid",
    },
    "FedAvg, Dirichlet 0.5": {
        "federated.strategy": "FedAvg",
        "partition.scheme": "dirichlet",
        "partition.alpha": 0.5,
    },
    "FedProx mu 0.01, Dirichlet 0.5": {
        "federated.strategy": "FedProx",
        "federated.proximal_mu": 0.01,
        "partition.scheme": "dirichlet",
        "partition.alpha": 0.5,
    },
}
CENTRAL = "central"


@dataclass
class Curve:
    """Test accuracy and cumulative seconds after each round (or epoch)."""

    name: str
    unit: str
    accuracy: list[float]
    seconds: list[float]

    def first_reaching(self, threshold: float) -> tuple[int, float] | None:
        for step, (acc, secs) in enumerate(zip(self.accuracy, self.seconds, strict=True), 1):
            if acc >= threshold:
                return step, secs
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_flags(parser, rounds=10)
    parser.add_argument("--central-epochs", type=int, default=0, help="default: --rounds")
    parser.add_argument(
        "--only", nargs="*", default=None, help=f"settings to run: {', '.join(FEDERATED)}, central"
    )
    return parser.parse_args(argv)


def federated_curve(args: argparse.Namespace, home: Path, name: str) -> Curve:
    rounds = simulate(run_config(args, home, **FEDERATED[name]))
    seconds, total = [], 0.0
    for record in rounds:
        total += record.duration_s
        seconds.append(total)
    return Curve(name, "rounds", [float(r.metrics["accuracy"]) for r in rounds], seconds)


def central_curve(args: argparse.Namespace, home: Path) -> Curve:
    epochs = args.central_epochs or args.rounds
    cfg = run_config(args, home, **{"training.epochs": epochs})
    accuracy: list[float] = []
    seconds: list[float] = []
    start = time.perf_counter()

    def on_epoch(_epoch: int, row: dict) -> None:
        accuracy.append(float(row["test"]["accuracy"]))
        seconds.append(time.perf_counter() - start)

    run_central(cfg, home / "central", progress=False, on_epoch=on_epoch)
    return Curve(CENTRAL, "epochs", accuracy, seconds)


def describe(curve: Curve, threshold: float) -> tuple[str, str]:
    hit = curve.first_reaching(threshold)
    if hit is None:
        return f"not in {len(curve.accuracy)}", "-"
    return str(hit[0]), f"{hit[1]:.0f}"


def show_progress(console: Console, curve: Curve) -> None:
    steps = ", ".join(
        f"{acc:.3f}@{secs:.0f}s" for acc, secs in zip(curve.accuracy, curve.seconds, strict=True)
    )
    console.print(f"{curve.name} ({curve.unit}): {steps}")


def report(console: Console, args: argparse.Namespace, curves: list[Curve]) -> None:
    table = Table(title="time to accuracy on the held-out test set")
    table.add_column("setting")
    for threshold in THRESHOLDS:
        table.add_column(f"to {threshold:.0%}", justify="right")
        table.add_column(f"s to {threshold:.0%}", justify="right")
    table.add_column("final accuracy", justify="right")
    table.add_column("total s", justify="right")
    for curve in curves:
        cells = [cell for threshold in THRESHOLDS for cell in describe(curve, threshold)]
        table.add_row(
            f"{curve.name} ({curve.unit})",
            *cells,
            f"{curve.accuracy[-1]:.4f}",
            f"{curve.seconds[-1]:.0f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_data(args.data)
    quiet_logs()
    console = Console()
    names = args.only if args.only else [*FEDERATED, CENTRAL]
    unknown = [n for n in names if n != CENTRAL and n not in FEDERATED]
    if unknown:
        raise SystemExit(f"--only: unknown setting(s) {unknown}; choose from {list(FEDERATED)}")
    with tempfile.TemporaryDirectory(prefix="medfed-tta-") as scratch:
        home = (args.home or Path(scratch)).resolve()
        warm_cache(run_config(args, home))
        console.print(
            f"[bold]{args.model}[/], {args.image_size} px, {args.data}, {args.hospitals} "
            f"hospitals, up to {args.rounds} rounds of {args.local_epochs} local epoch(s), "
            f"batch {args.batch_size}, Adam lr {args.lr:g}; central: up to "
            f"{args.central_epochs or args.rounds} epochs, cosine learning-rate decay"
        )
        curves = []
        for name in names:
            curve = (
                central_curve(args, home) if name == CENTRAL else federated_curve(args, home, name)
            )
            show_progress(console, curve)
            curves.append(curve)
    report(console, args, curves)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
