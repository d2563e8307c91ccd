"""Privacy and compression against utility: test accuracy, attack AUC and upload per setting.

Run: ``.venv/bin/python bench/privacy_utility.py`` (make the data first with
``.venv/bin/medfed data demo data/demo``). Two studies, each against its own uncompressed,
non-private baseline trained the same way, on simulated hospitals with an IID split of the
training images. Every run's final global model is scored on the held-out test set and attacked
with the membership-inference audit (`medfed audit`).

- privacy: 2 hospitals, a recipe built for DP-SGD (the new-run form's privacy presets):
  ``scatter_cnn`` (a fixed ScatterNet front end, features computed once per hospital, and a
  small CNN head with GroupNorm and Tanh), 20 rounds of one local epoch without augmentation,
  batches of 256, SGD with momentum 0.9 and cosine decay; without DP at learning rate 0.05,
  with DP the clipping norm 0.1 and the learning rate scaled to match (8.0), the noise
  calibrated by Opacus' PRV accountant. 100 mislabelled canaries are planted among the
  training images (100 more held out): the canary AUC is the attack's success on them, the leak
  that differential privacy bounds. Settings: no DP, then sample-level DP-SGD at epsilon 8, 3
  and 1 (delta 1e-5); the verdict compares epsilon 3 with no DP, seed by seed, against the goal
  of losing at most 5 accuracy points.
- compression: 4 hospitals, the demo's ResNet-18 (GroupNorm), SGD at 0.03 with cosine decay
  over 20 rounds of 1 local epoch, on an IID split and on a Dirichlet 0.5 one: uncompressed, then
  compressed both ways (uploads top-k 1% + 8-bit with error feedback over the whole update; each
  hospital receives the change since its copy, top-k 2% + 8-bit, after a first full copy; Zstandard
  over both). The compressed runs must end within 1 accuracy point of the uncompressed ones at
  equal rounds. Uploads only compressed (over the whole update, or per tensor) run with ``--only``.

``--seeds N`` repeats every setting with N training seeds (model initialisation, batches,
augmentation) and reports the mean, the worst seed and each seed's gap to the baseline trained
with the same seed: single runs differ by several points. With ``--work DIR`` every finished run
keeps its outcome there, and running the study again skips it (a long study can be resumed).
Recipes are chosen with ``--validation F`` (a stratified share F of the training images held
out and scored instead of the test set) and ``--set KEY=JSON`` (keys set in every setting).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from rich.console import Console
from rich.table import Table

from _common import extra_keys, simulate_run, validation_split
from medfed.config import load_config
from medfed.federation.run_audit import audit_run
from medfed.federation.runner import absolute_paths

COMPRESSION_TOLERANCE_POINTS = 1.0
PRIVACY_GOAL_POINTS = 5.0  # DP at epsilon 3 may cost at most this much accuracy
PRIVACY_GOAL_EPSILON = 3.0
CANARIES = 100


IID = {"IID": {"partition.scheme": "iid"}}


@dataclass(frozen=True)
class Study:
    """Settings that differ from a first, baseline setting in one respect, trained alike on
    each partition of the images across hospitals."""

    name: str
    recipe: dict[str, Any]
    settings: dict[str, dict[str, Any]]
    partitions: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(IID))
    default: tuple[str, ...] | None = None  # the settings run without --only (None: all)

    @property
    def baseline(self) -> str:
        return next(iter(self.settings))


def dp_setting(epsilon: float) -> dict[str, Any]:
    """Sample-level DP-SGD at ``epsilon``: small clipping norm, learning rate scaled to it."""
    return {
        "privacy.mode": "sample",
        "privacy.target_epsilon": epsilon,
        "privacy.delta": 1e-5,
        "privacy.max_grad_norm": 0.1,
        "privacy.accountant": "prv",
        "training.learning_rate": 8.0,
    }


def codec_setting(scope: str) -> dict[str, Any]:
    return {
        "compression.topk": 0.01,
        "compression.quant_bits": 8,
        "compression.error_feedback": True,
        "compression.topk_scope": scope,
    }


def both_ways(downlink_topk: float) -> dict[str, Any]:
    """Uploads as :func:`codec_setting` (over the whole update); each hospital receives the
    change since its copy, top-k ``downlink_topk`` + 8-bit; Zstandard over both."""
    return {
        **codec_setting("model"),
        "compression.downlink_topk": downlink_topk,
        "compression.downlink_quant_bits": 8,
        "compression.lossless": True,
    }


UPLINK = "uploads top-k 1% + 8-bit, error feedback"
DOWNLINK_TOPK = 0.02
COMPRESSED = f"both ways: up top-k 1%, down top-k {DOWNLINK_TOPK:.0%}, 8-bit, zstd"
STUDIES = {
    "privacy": Study(
        "privacy",
        {
            "model.name": "scatter_cnn",
            "training.optimizer": "sgd",
            "training.momentum": 0.9,
            "training.learning_rate": 0.05,
            "training.batch_size": 256,
            "federated.num_clients": 2,
            "federated.rounds": 20,
            "federated.local_epochs": 1,
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
            COMPRESSED: both_ways(DOWNLINK_TOPK),
            f"{UPLINK} (uploads only)": codec_setting("model"),
            f"{UPLINK}, per tensor (uploads only)": codec_setting("tensor"),
        },
        partitions={
            **IID,
            "Dirichlet 0.5": {"partition.scheme": "dirichlet", "partition.alpha": 0.5},
        },
        default=("uncompressed", COMPRESSED),
    ),
}


@dataclass
class Outcome:
    name: str
    partition: str
    seed: int
    accuracy: float
    epsilon: float | None
    auc: float
    calibrated_auc: float
    tpr_at_1pct_fpr: float
    canary_auc: float | None
    upload_kb: float
    download_kb: float
    seconds: float


def slug(text: str) -> str:
    kept = text.replace("%", "pct").replace("+", "plus").replace(" ", "_")
    return "".join(c for c in kept if c.isalnum() or c in "_-.")


def run_setting(
    study: Study, partition: str, name: str, seed: int, args: argparse.Namespace
) -> Outcome:
    """Train one setting with one seed in its own home, then audit the final global model; a
    run already finished in ``--work`` is not trained again."""
    home = Path(args.work) / study.name / slug(partition) / f"{slug(name)}-seed{seed}"
    kept = home / "outcome.json"
    if kept.is_file():
        return Outcome(**json.loads(kept.read_text()))
    if home.exists():  # an unfinished run: start it afresh
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    cfg = absolute_paths(
        load_config(
            None,
            {
                "name": f"bench {study.name}: {name}, {partition} (seed {seed})",
                "home": str(home),
                "data.path": str(args.data),
                "data.image_size": args.image_size,
                "data.cache_dir": str(Path(args.work) / "cache"),
                "model.norm": "group",
                "federated.lr_decay": "cosine",
                "training.batch_size": 32,
                "training.seed": seed,
                **study.recipe,
                **study.partitions[partition],
                **overrides(args),
                **study.settings[name],
                **extra_keys(args.set),
            },
        )
    )
    start = time.perf_counter()
    store, run_id = simulate_run(cfg, inline=args.inline)
    with store:
        rounds = store.rounds(run_id)
        audit = audit_run(store, run_id, max_examples=args.max_examples, seed=seed)
        canaries = store.get_run(run_id).final_metrics["audit"].get("canaries")
    hospitals = cfg.federated.num_clients
    outcome = Outcome(
        name=name,
        partition=partition,
        seed=seed,
        accuracy=float(rounds[-1].metrics["accuracy"]),
        epsilon=rounds[-1].epsilon,
        auc=audit.auc,
        calibrated_auc=audit.calibrated_auc,
        tpr_at_1pct_fpr=max(audit.tpr_at_1pct_fpr, audit.calibrated_tpr_at_1pct_fpr),
        canary_auc=max(canaries["auc"], canaries["calibrated_auc"]) if canaries else None,
        upload_kb=mean([r.bytes_up / max(r.num_clients_ok, 1) for r in rounds]) / 1e3,
        download_kb=sum(r.bytes_down for r in rounds) / (hospitals * len(rounds)) / 1e3,
        seconds=time.perf_counter() - start,
    )
    kept.write_text(json.dumps(asdict(outcome)))
    return outcome


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
    return f"{mean(accuracies):.1%} (worst {min(accuracies):.1%}, best {max(accuracies):.1%})"


def paired_gaps(runs: list[Outcome], baseline: list[Outcome]) -> list[float]:
    """Accuracy points against the baseline run of the same seed, seed by seed."""
    by_seed = {o.seed: o.accuracy for o in baseline}
    return [100 * (o.accuracy - by_seed[o.seed]) for o in runs if o.seed in by_seed]


def _kb(value: float) -> str:
    return f"{value / 1e3:,.2f} MB" if value >= 1e3 else f"{value:,.0f} KB"


def results_table(
    study: Study, partition: str, results: dict[str, list[Outcome]], args: argparse.Namespace
) -> Table:
    recipe = {**study.recipe, **overrides(args)}
    augmented = recipe.get("data.rotation", 1) or recipe.get("data.hflip", True)
    table = Table(
        title=f"{study.name}: {recipe['federated.num_clients']} hospitals, {partition}, "
        f"{recipe['model.name']} (GroupNorm), {args.image_size} px, "
        f"{recipe['federated.rounds']} rounds x {recipe['federated.local_epochs']} local "
        f"epoch(s), {recipe['training.optimizer']} at {recipe['training.learning_rate']:g} with "
        f"cosine decay, {'with' if augmented else 'no'} augmentation, {args.seeds} seed(s)"
    )
    columns = (
        "setting",
        "test accuracy",
        "vs baseline: mean (points)",
        "worst seed",
        "epsilon",
        "attack AUC",
        "calibrated AUC",
        "best TPR at 1% FPR",
        "canary AUC",
        "up / hospital / round",
        "down / hospital / round",
        "time (s)",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "setting" else "right")
    baseline = results[study.baseline]
    for name, runs in results.items():
        epsilons = [o.epsilon for o in runs if o.epsilon is not None]
        canary_aucs = [o.canary_auc for o in runs if o.canary_auc is not None]
        gaps = paired_gaps(runs, baseline)
        is_baseline = name == study.baseline
        table.add_row(
            name,
            _accuracy_cell(runs),
            "-" if is_baseline or not gaps else f"{mean(gaps):+.1f}",
            "-" if is_baseline or not gaps else f"{min(gaps):+.1f}",
            f"{mean(epsilons):.2f}" if epsilons else "-",
            f"{mean([o.auc for o in runs]):.3f}",
            f"{mean([o.calibrated_auc for o in runs]):.3f}",
            f"{mean([o.tpr_at_1pct_fpr for o in runs]):.1%}",
            f"{mean(canary_aucs):.3f}" if canary_aucs else "-",
            _kb(mean([o.upload_kb for o in runs])),
            _kb(mean([o.download_kb for o in runs])),
            f"{mean([o.seconds for o in runs]):.0f}",
        )
    return table


def compression_verdict(partition: str, results: dict[str, list[Outcome]]) -> str | None:
    study = STUDIES["compression"]
    if COMPRESSED not in results or study.baseline not in results:
        return None
    gaps = paired_gaps(results[COMPRESSED], results[study.baseline])
    if not gaps:
        return None
    gap, worst = mean(gaps), min(gaps)
    within = abs(gap) <= COMPRESSION_TOLERANCE_POINTS
    return (
        f"{partition}: compressed both ways, {gap:+.1f} accuracy points against uncompressed at "
        f"equal rounds (mean of {len(gaps)} seed(s); worst seed {worst:+.1f}), "
        f"{'within' if within else 'NOT within'} {COMPRESSION_TOLERANCE_POINTS:g} point."
    )


def privacy_verdict(results: dict[str, list[Outcome]]) -> list[str]:
    """Each epsilon's accuracy points against no DP (seed by seed), and the verdict at
    :data:`PRIVACY_GOAL_EPSILON` against the goal of :data:`PRIVACY_GOAL_POINTS` points."""
    baseline = results.get(STUDIES["privacy"].baseline)
    if not baseline:
        return []
    lines = []
    for name, runs in results.items():
        gaps = paired_gaps(runs, baseline)
        epsilons = [o.epsilon for o in runs if o.epsilon is not None]
        if name == STUDIES["privacy"].baseline or not gaps or not epsilons:
            continue
        gap, worst = mean(gaps), min(gaps)
        line = (
            f"{name}: {gap:+.1f} accuracy points against the same recipe without DP (mean of "
            f"{len(gaps)} seed(s); worst seed {worst:+.1f}; spread "
            f"{min(o.accuracy for o in runs):.1%}-{max(o.accuracy for o in runs):.1%})"
        )
        if abs(max(epsilons) - PRIVACY_GOAL_EPSILON) < 0.5:
            met = -gap <= PRIVACY_GOAL_POINTS
            short = "" if met else f", {-gap - PRIVACY_GOAL_POINTS:.1f} points short"
            line += (
                f": the goal (at most {PRIVACY_GOAL_POINTS:g} points at epsilon "
                f"{PRIVACY_GOAL_EPSILON:g}) is {'MET' if met else 'NOT met'}{short}"
            )
        lines.append(line + ".")
    return lines


def parse_args() -> argparse.Namespace:
    names = [name for study in STUDIES.values() for name in study.settings]
    partitions = sorted({p for study in STUDIES.values() for p in study.partitions})
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
        "--inline",
        action="store_true",
        help="hospitals answer in this process, one after the other, without Ray",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=names,
        metavar="SETTING",
        help="run only these settings (each study's baseline always runs first): "
        + ", ".join(names).replace("%", "%%"),
    )
    parser.add_argument(
        "--partitions",
        nargs="+",
        choices=partitions,
        metavar="PARTITION",
        help="run only these splits across hospitals (default: each study's own): "
        + ", ".join(partitions),
    )
    parser.add_argument(
        "--validation",
        type=float,
        default=0.0,
        help="score on this share of the training images held out, not on the test set",
    )
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=JSON", help="keys set in every setting"
    )
    parser.add_argument(
        "--work", type=Path, help="folder for the runs, kept to resume; default a temp folder"
    )
    return parser.parse_args()


def chosen_settings(study: Study, only: list[str] | None) -> list[str]:
    """The study's settings to run, baseline first; none when ``only`` names none of them."""
    if only is None:
        return list(study.default or study.settings)
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
    console = Console(width=200)
    with tempfile.TemporaryDirectory(prefix="medfed-bench-") as scratch:
        args.work = (args.work or Path(scratch)).resolve()
        if args.validation:
            args.data = validation_split(args.data, args.work / "validation", args.validation)
        for study in studies:
            for partition in study.partitions:
                if not args.partitions or partition in args.partitions:
                    run_partition(study, partition, seeds, args, console)


def run_partition(
    study: Study, partition: str, seeds: list[int], args: argparse.Namespace, console: Console
) -> None:
    """Every chosen setting of a study on one partition, each seed; then their table."""
    results: dict[str, list[Outcome]] = {}
    for name in chosen_settings(study, args.only):
        for seed in seeds:
            console.print(
                f"[bold]{study.name}, {partition}: {name}[/], seed {seed} …", highlight=False
            )
            outcome = run_setting(study, partition, name, seed, args)
            console.print(f"  {summary(outcome)}", highlight=False)
            results.setdefault(name, []).append(outcome)
    if results:
        console.print(results_table(study, partition, results, args))
    verdict = compression_verdict(partition, results) if study.name == "compression" else None
    if verdict:
        console.print(verdict, highlight=False)
    if study.name == "privacy":
        for line in privacy_verdict(results):
            console.print(line, highlight=False)


def summary(outcome: Outcome) -> str:
    canary = f", canary AUC {outcome.canary_auc:.3f}" if outcome.canary_auc else ""
    return (
        f"accuracy {outcome.accuracy:.1%}, attack AUC {outcome.auc:.3f} / calibrated "
        f"{outcome.calibrated_auc:.3f}{canary}, per hospital per round: up "
        f"{_kb(outcome.upload_kb)}, down {_kb(outcome.download_kb)}; {outcome.seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
