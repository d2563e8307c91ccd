"""Privacy and compression against utility: test accuracy, attack AUC and upload per setting.

Run: ``.venv/bin/python bench/privacy_utility.py`` (make the data first with
``.venv/bin/medfed data demo data/demo``). Two studies, each against its own uncompressed,
non-private baseline trained the same way, on simulated hospitals with an IID split of the
training images. Every run's final global model is scored on the held-out test set and attacked
with the membership-inference audit (`medfed audit`).

- privacy: 2 hospitals, cancer_cnn with GroupNorm (which DP-SGD accepts), SGD at 0.1 with
  cosine decay (what DP-SGD learns best with), 10 rounds of 10 local epochs without
  augmentation, so the non-private model has every chance to learn its training images by
  heart (averaging over more hospitals blurs what each one learnt by heart). 100 mislabelled
  canaries are planted among them (100 more held out): the canary AUC is the attack's success on
  them, the leak that differential privacy bounds. Settings: no DP, then sample-level DP-SGD at
  epsilon 8, 3 and 1 (delta 1e-5, clip 1.0).
- compression: 4 hospitals, the demo's ResNet-18 (GroupNorm), SGD at 0.03 with cosine decay
  over 20 rounds of 1 local epoch: uncompressed, then top-k 1% + 8-bit with error feedback over
  the whole update (the default) and over each tensor. The compressed run must end within 1 accuracy
  point of the uncompressed one.

``--seeds N`` repeats every setting with N training seeds (model initialisation, batches,
augmentation) and reports the mean: single runs differ by several points.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from rich.console import Console
from rich.table import Table

from _common import simulate_run
from medfed.config import load_config
from medfed.federation.audit import audit_run
from medfed.federation.runner import absolute_paths

COMPRESSION_TOLERANCE_POINTS = 1.0
CANARIES = 100


@dataclass(frozen=True)
class Study:
    """Settings that differ from a first, baseline setting in one respect, trained alike."""

    name: str
    recipe: dict[str, Any]
    settings: dict[str, dict[str, Any]]

    @property
    def baseline(self) -> str:
        return next(iter(self.settings))


def dp_setting(epsilon: float) -> dict[str, Any]:
    return {
        "privacy.mode": "sample",
        "privacy.target_epsilon": epsilon,
        "privacy.delta": 1e-5,
        "privacy.max_grad_norm": 1.0,
    }


def codec_setting(scope: str) -> dict[str, Any]:
    return {
        "compression.topk": 0.01,
        "compression.quant_bits": 8,
        "compression.error_feedback": True,
        "compression.topk_scope": scope,
    }


COMPRESSED = "top-k 1% + 8-bit, error feedback"
STUDIES = {
    "privacy": Study(
        "privacy",
        {
            "model.name": "cancer_cnn",
            "training.optimizer": "sgd",
            "training.learning_rate": 0.1,
            "federated.num_clients": 2,
            "federated.rounds": 10,
            "federated.local_epochs": 10,
            "data.rotation": 0.0,
            "data.hflip": False,
            "privacy.canaries": CANARIES,
        },
        {
            "no DP": {},
            "sample DP, epsilon 8": dp_setting(8.0),
            "sample DP, epsilon 3": dp_setting(3.0),
            "sample DP, epsilon 1": dp_setting(1.0),
        },
    ),
    "compression": Study(
        "compression",
        {
            "model.name": "resnet18",
            "training.optimizer": "sgd",
            "training.learning_rate": 0.03,
            "federated.num_clients": 4,
            "federated.rounds": 20,
            "federated.local_epochs": 1,
        },
        {
            "uncompressed": {},
            COMPRESSED: codec_setting("model"),
            f"{COMPRESSED}, per tensor": codec_setting("tensor"),
        },
    ),
}


@dataclass
class Outcome:
    name: str
    accuracy: float
    epsilon: float | None
    auc: float
    calibrated_auc: float
    tpr_at_1pct_fpr: float
    canary_auc: float | None
    upload_kb: float
    seconds: float


def run_setting(study: Study, name: str, seed: int, args: argparse.Namespace) -> Outcome:
    """Train one setting with one seed in its own home, then audit the final global model."""
    slug = name.replace(" ", "_").replace(",", "").replace("%", "pct").replace("+", "plus")
    home = Path(args.work) / study.name / f"{slug}-seed{seed}"
    home.mkdir(parents=True, exist_ok=True)
    cfg = absolute_paths(
        load_config(
            None,
            {
                "name": f"bench {study.name}: {name} (seed {seed})",
                "home": str(home),
                "data.path": str(args.data),
                "data.image_size": args.image_size,
                "data.cache_dir": str(Path(args.work) / "cache"),
                "model.norm": "group",
                "partition.scheme": "iid",
                "federated.lr_decay": "cosine",
                "training.batch_size": 32,
                "training.seed": seed,
                **study.recipe,
                **overrides(args),
                **study.settings[name],
            },
        )
    )
    start = time.perf_counter()
    store, run_id = simulate_run(cfg)
    with store:
        rounds = store.rounds(run_id)
        audit = audit_run(store, run_id, max_examples=args.max_examples, seed=seed)
        canaries = store.get_run(run_id).final_metrics["audit"].get("canaries")
    uploads = [r.bytes_up / max(r.num_clients_ok, 1) for r in rounds]
    return Outcome(
        name=name,
        accuracy=float(rounds[-1].metrics["accuracy"]),
        epsilon=rounds[-1].epsilon,
        auc=audit.auc,
        calibrated_auc=audit.calibrated_auc,
        tpr_at_1pct_fpr=max(audit.tpr_at_1pct_fpr, audit.calibrated_tpr_at_1pct_fpr),
        canary_auc=max(canaries["auc"], canaries["calibrated_auc"]) if canaries else None,
        upload_kb=mean(uploads) / 1e3,
        seconds=time.perf_counter() - start,
    )


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe keys given on the command line."""
    flags = {
        "federated.num_clients": args.hospitals,
        "federated.rounds": args.rounds,
        "federated.local_epochs": args.local_epochs,
    }
    return {key: value for key, value in flags.items() if value is not None}


def _accuracy_cell(runs: list[Outcome]) -> str:
    accuracies = [o.accuracy for o in runs]
    if len(runs) == 1:
        return f"{accuracies[0]:.1%}"
    return f"{mean(accuracies):.1%} ({min(accuracies):.1%}-{max(accuracies):.1%})"


def results_table(
    study: Study, results: dict[str, list[Outcome]], args: argparse.Namespace
) -> Table:
    recipe = {**study.recipe, **overrides(args)}
    augmented = recipe.get("data.rotation", 1) or recipe.get("data.hflip", True)
    table = Table(
        title=f"{study.name}: {recipe['federated.num_clients']} IID hospitals, "
        f"{recipe['model.name']} (GroupNorm), {args.image_size} px, "
        f"{recipe['federated.rounds']} rounds x {recipe['federated.local_epochs']} local "
        f"epoch(s), {recipe['training.optimizer']} at {recipe['training.learning_rate']:g} with "
        f"cosine decay, {'with' if augmented else 'no'} augmentation, {args.seeds} seed(s)"
    )
    columns = (
        "setting",
        "test accuracy",
        "vs baseline (points)",
        "epsilon",
        "attack AUC",
        "calibrated AUC",
        "best TPR at 1% FPR",
        "canary AUC",
        "upload / hospital / round",
        "time (s)",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "setting" else "right")
    baseline = mean([o.accuracy for o in results[study.baseline]])
    for name, runs in results.items():
        epsilons = [o.epsilon for o in runs if o.epsilon is not None]
        canary_aucs = [o.canary_auc for o in runs if o.canary_auc is not None]
        table.add_row(
            name,
            _accuracy_cell(runs),
            "-" if name == study.baseline else f"{gap_points(runs, baseline):+.1f}",
            f"{mean(epsilons):.2f}" if epsilons else "-",
            f"{mean([o.auc for o in runs]):.3f}",
            f"{mean([o.calibrated_auc for o in runs]):.3f}",
            f"{mean([o.tpr_at_1pct_fpr for o in runs]):.1%}",
            f"{mean(canary_aucs):.3f}" if canary_aucs else "-",
            f"{mean([o.upload_kb for o in runs]):,.0f} KB",
            f"{mean([o.seconds for o in runs]):.0f}",
        )
    return table


def gap_points(runs: list[Outcome], baseline_accuracy: float) -> float:
    return 100 * (mean([o.accuracy for o in runs]) - baseline_accuracy)


def compression_verdict(results: dict[str, list[Outcome]]) -> str | None:
    study = STUDIES["compression"]
    if COMPRESSED not in results or study.baseline not in results:
        return None
    baseline = mean([o.accuracy for o in results[study.baseline]])
    gap = gap_points(results[COMPRESSED], baseline)
    within = abs(gap) <= COMPRESSION_TOLERANCE_POINTS
    return (
        f"Compressed updates ({COMPRESSED}): {gap:+.1f} accuracy points against uncompressed "
        f"(mean of {len(results[COMPRESSED])} seed(s)), "
        f"{'within' if within else 'NOT within'} {COMPRESSION_TOLERANCE_POINTS:g} point."
    )


def parse_args() -> argparse.Namespace:
    names = [name for study in STUDIES.values() for name in study.settings]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    parser.add_argument("--study", choices=[*STUDIES, "both"], default="both")
    parser.add_argument("--rounds", type=int, help="default: the study's own")
    parser.add_argument("--local-epochs", type=int, help="default: the study's own")
    parser.add_argument("--hospitals", type=int, help="default: the study's own")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-examples", type=int, default=1000, help="per side of the audit")
    parser.add_argument("--seed", type=int, default=42, help="the first training seed")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per setting")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=names,
        metavar="SETTING",
        help="run only these settings (each study's baseline always runs first): "
        + ", ".join(names).replace("%", "%%"),
    )
    parser.add_argument("--work", type=Path, help="folder for the runs; default a temp folder")
    return parser.parse_args()


def chosen_settings(study: Study, only: list[str] | None) -> list[str]:
    """The study's settings to run, baseline first; none when ``only`` names none of them."""
    if only is None:
        return list(study.settings)
    picked = [n for n in study.settings if n in only and n != study.baseline]
    return [study.baseline, *picked] if picked or study.baseline in only else []


def main() -> None:
    args = parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # the hospitals' Ray workers inherit it
    if not (args.data / "test").is_dir():
        raise SystemExit(f"{args.data}/test not found: run `medfed data demo {args.data}` first")
    studies = list(STUDIES.values()) if args.study == "both" else [STUDIES[args.study]]
    seeds = [args.seed + i for i in range(args.seeds)]
    console = Console(width=180)
    with tempfile.TemporaryDirectory(prefix="medfed-bench-") as scratch:
        args.work = args.work or Path(scratch)
        for study in studies:
            results: dict[str, list[Outcome]] = {}
            for name in chosen_settings(study, args.only):
                for seed in seeds:
                    console.print(f"[bold]{study.name}: {name}[/], seed {seed} …", highlight=False)
                    outcome = run_setting(study, name, seed, args)
                    canary = f", canary AUC {outcome.canary_auc:.3f}" if outcome.canary_auc else ""
                    console.print(
                        f"  accuracy {outcome.accuracy:.1%}, attack AUC {outcome.auc:.3f} / "
                        f"calibrated {outcome.calibrated_auc:.3f}{canary}, upload "
                        f"{outcome.upload_kb:,.0f} KB per hospital per round, "
                        f"{outcome.seconds:.0f} s",
                        highlight=False,
                    )
                    results.setdefault(name, []).append(outcome)
            if results:
                console.print(results_table(study, results, args))
            verdict = compression_verdict(results) if study.name == "compression" else None
            if verdict:
                console.print(verdict, highlight=False)


if __name__ == "__main__":
    main()
