"""What ``medfed runs show`` prints about a run's final model: calibration, screening operating
points, and each hospital's evaluation of it (the worst one marked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from medfed.config import load_config
from medfed.errors import MedfedError
from medfed.reports.clinical import ARTIFACT, load_final_evaluation
from medfed.reports.clinical_tables import balance_text, confusion_text
from medfed.reports.sites import site_table
from medfed.store import ArtifactStore, ClientResultRecord, RunRecord


def evaluation_parts(
    run: RunRecord, results: list[ClientResultRecord], config: Path | None, db: str | None
) -> list[Any]:
    """Rich renderables: the final model's scores (when computed) and the per-site table."""
    parts: list[Any] = []
    scores = _scores(run, config, db)
    if scores is not None:
        parts.append(scores)
    sites = _sites(run, results)
    if sites is not None:
        parts.append(sites)
    return parts


def _scores(run: RunRecord, config: Path | None, db: str | None) -> Any:
    try:
        cfg = load_config(config)
        if not (Path(cfg.home) / "artifacts" / run.id / ARTIFACT).is_file():
            return None if db else Text("final model: not scored (no held-out test set)")
        evaluation = load_final_evaluation(ArtifactStore.for_config(cfg, create_key=False), run.id)
    except MedfedError as exc:
        return Text(f"final model scores not readable: {exc}", style="yellow")
    if evaluation is None:
        return None
    ece = evaluation.calibration.get("ece")
    title = (
        f"final model (round {evaluation.round}) on {evaluation.num_samples:,} held-out test "
        f"images: ECE {ece:.3f}"
        if isinstance(ece, int | float)
        else f"final model (round {evaluation.round})"
    )
    table = Table(title=title)
    for column in ("operating point", "threshold", "sensitivity", "specificity"):
        table.add_column(column, justify="left" if column == "operating point" else "right")
    for point in evaluation.operating_points:
        table.add_row(
            point["name"],
            f"{point['threshold']:.3f}",
            f"{point['sensitivity']:.1%}",
            f"{point['specificity']:.1%}",
        )
    if not evaluation.operating_points:
        table.caption = "operating points are defined for two classes"
    return table


def _sites(run: RunRecord, results: list[ClientResultRecord]) -> Table | None:
    config = run.config or {}
    names = list((config.get("data") or {}).get("class_names") or [])
    bn = str((config.get("federated") or {}).get("bn", "average"))
    sites = site_table(results, names, bn)
    if not sites.sites:
        return None
    local = ", own BatchNorm" if bn == "local" else ""
    table = Table(
        title=f"each hospital on its own held-out data (model of round {sites.round}{local})",
        caption=f"classes: {' / '.join(sites.class_names)}",
    )
    for column in ("hospital", "images", "acc", "AUC", "confusion", "held-out", "training"):
        table.add_column(column, justify="right" if column in ("images", "acc", "AUC") else "left")
    for site in sites.sites:
        ok = site.status == "ok"
        table.add_row(
            f"{site.hospital} (worst)" if site.worst else site.hospital,
            str(site.num_examples) if ok else "-",
            f"{site.accuracy:.1%}" if site.accuracy is not None else "-",
            f"{site.auc:.3f}" if site.auc is not None else "-",
            confusion_text(site, sites.class_names) if ok else f"[red]{site.error}[/]",
            balance_text(site.held_out_counts, sites.class_names),
            balance_text(site.train_counts, sites.class_names),
            style="bold yellow" if site.worst else None,
        )
    return table
