"""``medfed audit RUN_ID``: membership-inference audit of a simulated run's global model."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from medfed.commands.runs import ConfigOption, DbOption
from medfed.config import load_config

CHANCE_MARGIN = 0.05


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)


def audit(
    run_id: Annotated[str, typer.Argument(help="run id, or its first characters")],
    config: ConfigOption = None,
    db: DbOption = None,
    max_examples: Annotated[
        int, typer.Option("--max-examples", min=2, help="members and non-members scored, each")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the subsamples")] = 0,
) -> None:
    """Can an attacker tell the hospitals' training images from unseen ones? (simulated runs)"""
    from medfed.federation.run_audit import audit_run
    from medfed.store import RunStore

    cfg = load_config(config)
    console = Console()
    with RunStore(db or cfg.database_url) as store:
        full_id = store.resolve_run_id(run_id)
        with console.status(f"Attacking the global model of run {full_id}…"):
            # --db alone names no home: the run's checkpoints tell where it is
            platform = None if db and config is None else cfg
            result = audit_run(
                store, full_id, max_examples=max_examples, seed=seed, platform=platform
            )
        run = store.get_run(full_id)
        rounds = store.rounds(full_id)
    console.print(_table(run.final_metrics["audit"], full_id))
    epsilon = rounds[-1].epsilon if rounds else None
    if epsilon is not None:
        delta = run.config.get("privacy", {}).get("delta")
        console.print(f"Differential privacy of the run: epsilon {epsilon:.2f}, delta {delta:g}")
    console.print(_reading(result.auc, result.calibrated_auc), highlight=False, soft_wrap=True)
    canaries = run.final_metrics["audit"].get("canaries")
    if canaries:
        reading = _reading(canaries["auc"], canaries["calibrated_auc"])
        console.print(f"Planted canaries: {reading}", highlight=False, soft_wrap=True)


def _table(audit: dict[str, Any], run_id: str) -> Table:
    table = Table(title=f"Membership-inference audit of run {run_id}, round {audit['model_round']}")
    for column in ("attack", "ROC AUC", "TPR at 1% FPR", "members / non-members"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    sizes = f"{audit['n_members']} / {audit['n_nonmembers']}"
    table.add_row("loss threshold", f"{audit['auc']:.3f}", f"{audit['tpr_at_1pct_fpr']:.1%}", sizes)
    table.add_row(
        f"calibrated by {audit['reference']}",
        f"{audit['calibrated_auc']:.3f}",
        f"{audit['calibrated_tpr_at_1pct_fpr']:.1%}",
        sizes,
    )
    canaries = audit.get("canaries")
    if canaries:
        counts = f"{canaries['n_members']} / {canaries['n_nonmembers']}"
        for name, prefix in (("loss threshold", ""), ("calibrated", "calibrated_")):
            table.add_row(
                f"canaries: {name}",
                f"{canaries[f'{prefix}auc']:.3f}",
                f"{canaries[f'{prefix}tpr_at_1pct_fpr']:.1%}",
                counts,
            )
    return table


def _reading(auc: float, calibrated_auc: float) -> str:
    """One line on what the strongest attack's AUC means."""
    best = max(auc, calibrated_auc)
    if best <= 0.5 + CHANCE_MARGIN:
        return (
            f"Best attack AUC {best:.3f} is near 0.5: the attack cannot tell members from "
            "non-members."
        )
    if best <= 0.6 + CHANCE_MARGIN:
        return (
            f"Best attack AUC {best:.3f}: some membership leakage; the model remembers part of "
            "its training images."
        )
    return (
        f"Best attack AUC {best:.3f}: clear membership leakage; consider differential privacy "
        "(privacy.mode sample) before sharing this model."
    )
