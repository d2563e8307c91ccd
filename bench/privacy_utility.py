"""Privacy against utility: test accuracy and membership-attack AUC per privacy / codec setting.

Run: ``.venv/bin/python bench/privacy_utility.py`` (make the data first with
``.venv/bin/medfed data demo data/demo``). Every setting trains the same model (cancer_cnn with
GroupNorm, which DP-SGD accepts) with the same local optimizer for the same number of rounds on
4 simulated hospitals with an IID split of the training images, then scores the final global
model on the held-out test set and attacks it with the membership-inference audit
(`medfed audit`). Settings: no DP, sample-level DP-SGD at epsilon 8, 3 and 1 (delta 1e-5,
clip 1.0), and top-k 1% + 8-bit update compression with error feedback.

Every setting trains with SGD (what DP-SGD uses) and cosine decay of the learning rate over the
rounds, so the last rounds take small steps and the final accuracy does not hinge on one noisy
round.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _common import simulate_run
from medfed.config import load_config
from medfed.federation.audit import audit_run
from medfed.federation.runner import absolute_paths

COMPRESSION_TOLERANCE_POINTS = 1.0


def dp_setting(epsilon: float) -> dict[str, Any]:
    return {
        "privacy.mode": "sample",
        "privacy.target_epsilon": epsilon,
        "privacy.delta": 1e-5,
        "privacy.max_grad_norm": 1.0,
    }


BASELINE = "no DP, no compression"
COMPRESSED = "top-k 1% + 8-bit (error feedback)"
SETTINGS: dict[str, dict[str, Any]] = {
    BASELINE: {},
    COMPRESSED: {
        "compression.topk": 0.01,
        "compression.quant_bits": 8,
        "compression.error_feedback": True,
    },
    "sample DP, epsilon 8": dp_setting(8.0),
    "sample DP, epsilon 3": dp_setting(3.0),
    "sample DP, epsilon 1": dp_setting(1.0),
}


@dataclass
class Outcome:
    name: str
    accuracy: float
    epsilon: float | None
    auc: float
    calibrated_auc: float
    tpr_at_1pct_fpr: float
    n_members: int
    seconds: float


def run_setting(name: str, overrides: dict[str, Any], args: argparse.Namespace) -> Outcome:
    """Train one setting in its own home, then audit the final global model."""
    home = Path(args.work) / name.replace(" ", "_").replace(",", "").replace("%", "pct")
    home.mkdir(parents=True, exist_ok=True)
    cfg = absolute_paths(
        load_config(
            None,
            {
                "name": f"bench {name}",
                "home": str(home),
                "data.path": str(args.data),
                "data.image_size": args.image_size,
                "data.cache_dir": str(Path(args.work) / "cache"),
                "model.name": "cancer_cnn",
                "model.norm": "group",
                "partition.scheme": "iid",
                "federated.num_clients": args.hospitals,
                "federated.rounds": args.rounds,
                "federated.local_epochs": args.local_epochs,
                "training.seed": args.seed,
                "training.optimizer": args.optimizer,
                "training.learning_rate": args.learning_rate,
                "training.batch_size": args.batch_size,
                "federated.lr_decay": args.lr_decay,
                **overrides,
            },
        )
    )
    start = time.perf_counter()
    store, run_id = simulate_run(cfg)
    with store:
        rounds = store.rounds(run_id)
        audit = audit_run(store, run_id, max_examples=args.max_examples, seed=args.seed)
    return Outcome(
        name=name,
        accuracy=float(rounds[-1].metrics["accuracy"]),
        epsilon=rounds[-1].epsilon,
        auc=audit.auc,
        calibrated_auc=audit.calibrated_auc,
        tpr_at_1pct_fpr=max(audit.tpr_at_1pct_fpr, audit.calibrated_tpr_at_1pct_fpr),
        n_members=audit.n_members,
        seconds=time.perf_counter() - start,
    )


def results_table(outcomes: list[Outcome], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Privacy vs utility: {args.hospitals} IID hospitals, cancer_cnn (GroupNorm), "
        f"{args.image_size} px, {args.rounds} rounds x {args.local_epochs} local epoch(s)"
    )
    columns = (
        "setting",
        "test accuracy",
        "vs baseline (points)",
        "epsilon",
        "attack AUC",
        "calibrated AUC",
        "best TPR at 1% FPR",
        "members",
        "time (s)",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "setting" else "right")
    baseline = outcomes[0].accuracy
    for o in outcomes:
        table.add_row(
            o.name,
            f"{o.accuracy:.1%}",
            "-" if o is outcomes[0] else f"{100 * (o.accuracy - baseline):+.1f}",
            "-" if o.epsilon is None else f"{o.epsilon:.2f}",
            f"{o.auc:.3f}",
            f"{o.calibrated_auc:.3f}",
            f"{o.tpr_at_1pct_fpr:.1%}",
            str(o.n_members),
            f"{o.seconds:.0f}",
        )
    return table


def compression_verdict(outcomes: list[Outcome]) -> str | None:
    by_name = {o.name: o for o in outcomes}
    if BASELINE not in by_name or COMPRESSED not in by_name:
        return None
    gap = 100 * (by_name[COMPRESSED].accuracy - by_name[BASELINE].accuracy)
    within = abs(gap) <= COMPRESSION_TOLERANCE_POINTS
    return (
        f"Compressed updates ({COMPRESSED}): {gap:+.1f} accuracy points against uncompressed, "
        f"{'within' if within else 'NOT within'} {COMPRESSION_TOLERANCE_POINTS:g} point."
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-examples", type=int, default=1000, help="per side of the audit")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr-decay", choices=["none", "cosine"], default="cosine")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SETTINGS),
        metavar="SETTING",
        help="run only these settings (the baseline always runs first): "
        + ", ".join(SETTINGS).replace("%", "%%"),
    )
    parser.add_argument("--work", type=Path, help="folder for the runs; default a temp folder")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # the hospitals' Ray workers inherit it
    if not (args.data / "test").is_dir():
        raise SystemExit(f"{args.data}/test not found: run `medfed data demo {args.data}` first")
    chosen = [BASELINE] + [n for n in SETTINGS if n != BASELINE and n in (args.only or SETTINGS)]
    console = Console(width=160)
    with tempfile.TemporaryDirectory(prefix="medfed-bench-") as scratch:
        args.work = args.work or Path(scratch)
        outcomes = []
        for name in chosen:
            console.print(f"[bold]{name}[/] …", highlight=False)
            outcome = run_setting(name, SETTINGS[name], args)
            console.print(
                f"  accuracy {outcome.accuracy:.1%}, attack AUC {outcome.auc:.3f} / "
                f"calibrated {outcome.calibrated_auc:.3f}, {outcome.seconds:.0f} s",
                highlight=False,
            )
            outcomes.append(outcome)
    console.print(results_table(outcomes, args))
    console.print(
        f"Every setting trains with {args.optimizer}, learning rate {args.learning_rate:g} "
        f"({args.lr_decay} decay over the rounds), batch {args.batch_size}.",
        highlight=False,
    )
    verdict = compression_verdict(outcomes)
    if verdict:
        console.print(verdict, highlight=False)


if __name__ == "__main__":
    main()
