"""``medfed train-central``: the centralized baseline every federated run is compared with."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich import get_console
from rich.table import Table

from medfed.config import MedfedConfig, load_config

console = get_console()  # the console progress bars draw on, so lines print above them


def register(app: typer.Typer) -> None:
    app.command("train-central")(train_central)


def train_central(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file"),
    data: Path | None = typer.Option(None, "--data", help="dataset folder (data.path)"),
    epochs: int | None = typer.Option(None, "--epochs", help="training.epochs"),
    model: str | None = typer.Option(None, "--model", help="cancer_cnn, resnet18 or resnet50"),
    out: Path | None = typer.Option(None, "--out", help="output folder for metrics and model"),
) -> None:
    """Train one model on all the data, test it after every epoch and save it."""
    from medfed.learning.central import run_central

    overrides = {"data.path": data, "training.epochs": epochs, "model.name": model}
    cfg = load_config(config, overrides)
    out_dir = out or default_out_dir(cfg)
    console.print(
        f"training [bold]{cfg.model.name}[/] on {cfg.data.path} "
        f"({cfg.data.image_size} px, {cfg.training.epochs} epochs)"
    )
    result = run_central(cfg, out_dir, progress=True, on_epoch=_print_epoch)
    console.print(epoch_table(result.epochs))
    console.print(
        f"{result.num_train} training / {result.num_test} test images "
        f"(test: {result.test_source}); {result.seconds:.1f} s"
    )
    console.print(f"metrics: {result.metrics_path}\nmodel:   {result.model_path}")


def default_out_dir(cfg: MedfedConfig) -> Path:
    """HOME/central/NAME-YYYYmmdd-HHMMSS."""
    return cfg.home / "central" / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _print_epoch(epoch: int, row: dict[str, Any]) -> None:
    train, test = row["train"], row["test"]
    console.print(
        f"epoch {epoch}: train loss {train['loss']:.4f} acc {train['accuracy']:.3f} | "
        f"test loss {test['loss']:.4f} acc {test['accuracy']:.3f} | "
        f"{train['images_per_second']:.0f} img/s"
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def epoch_table(rows: list[dict[str, Any]]) -> Table:
    """One line per epoch: train and test loss/accuracy, F1, AUC, time and speed."""
    table = Table(title="centralized training")
    headers = ("epoch", "train loss", "train acc", "test loss", "test acc", "F1", "AUC")
    for header in (*headers, "sec", "img/s"):
        table.add_column(header, justify="right")
    for row in rows:
        train, test = row["train"], row["test"]
        table.add_row(
            str(row["epoch"]),
            _fmt(train["loss"]),
            _fmt(train["accuracy"], 3),
            _fmt(test["loss"]),
            _fmt(test["accuracy"], 3),
            _fmt(test["f1"], 3),
            _fmt(test["auc"], 3),
            f"{train['seconds']:.1f}",
            f"{train['images_per_second']:.0f}",
        )
    return table
