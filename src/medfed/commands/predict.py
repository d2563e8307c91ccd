"""``medfed predict`` (a trained model on a hospital's images) and ``medfed export`` (ONNX)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.console import Console

from medfed.config import load_config
from medfed.errors import ConfigError, DataError, StoreError

if TYPE_CHECKING:  # torch is imported only when a command runs: `medfed --help` stays light
    from medfed.models.bundle import ModelBundle

console = Console(stderr=True)

ModelArgument = Annotated[
    str, typer.Argument(help="a downloaded model file (.pt), or a run id on this platform")
]
RoundOption = Annotated[
    int | None, typer.Option("--round", min=0, help="with a run id: that round's model")
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="medfed YAML config (home, database, key)")
]


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("export")(export)


def predict(
    model: ModelArgument,
    path: Annotated[
        Path, typer.Argument(help="an image, a folder of images or a Kaggle-layout set")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write")] = Path(
        "predictions.csv"
    ),
    threshold: Annotated[
        float | None,
        typer.Option(help="two classes: positive when p(last class) >= this (default 0.5)"),
    ] = None,
    round_: RoundOption = None,
    config: ConfigOption = None,
) -> None:
    """Classify images with a trained model, using the preprocessing recorded in the model."""
    from medfed.learning.predict import check_threshold, list_items, predict_images

    bundle = open_model(model, round_, config)
    check_threshold(bundle, threshold)
    items = list_items(path, bundle.class_names)
    prep = bundle.preprocessing
    console.print(
        f"{bundle.model_name} ({bundle.source}), classes {', '.join(bundle.class_names)}; "
        f"images as {prep.image_size}x{prep.image_size}, {prep.channels} channel(s), "
        f"normalised with mean {prep.mean:g} / std {prep.std:g}",
        soft_wrap=True,
        highlight=False,
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle = open(out, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise ConfigError(f"--out {out} cannot be written: {exc.strerror}") from None
    with handle:
        summary = predict_images(bundle, items, handle, threshold, progress=True)
    counts = ", ".join(f"{name} {count:,}" for name, count in summary.predicted.items())
    line = f"{summary.images:,} images -> {out} ({counts})"
    if summary.accuracy is not None:
        line += f"; accuracy against the labels {summary.accuracy:.1%}"
    console.print(line, soft_wrap=True, highlight=False)
    if summary.unreadable:
        raise DataError(
            f"{len(summary.unreadable)} image(s) could not be read and are not in {out} (the "
            f"others are); first: {summary.unreadable[0]}"
        )


def export(
    model: ModelArgument,
    format_: Annotated[
        str, typer.Option("--format", click_type=click.Choice(["onnx"]), help="export format")
    ] = "onnx",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="default: MODEL.onnx")] = None,
    round_: RoundOption = None,
    config: ConfigOption = None,
) -> None:
    """Export a model to ONNX, its preprocessing and classes in the metadata, checked against
    the PyTorch model's output."""
    from medfed.learning.export import export_onnx, require_onnx

    require_onnx()
    bundle = open_model(model, round_, config)
    target = out or Path(f"{Path(model).stem if Path(model).is_file() else model[:8]}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_onnx(bundle, target)
    console.print(
        f"{result.path}: {bundle.model_name} ({bundle.source}) as ONNX; ONNX Runtime matches "
        f"PyTorch on {result.checked_images} images (largest difference "
        f"{result.max_difference:.1e})",
        soft_wrap=True,
        highlight=False,
    )


def open_model(model: str, round_: int | None, config: Path | None) -> ModelBundle:
    """The model file at ``model``, or the (encrypted) checkpoint of run ``model`` on this
    platform, its latest or ``round_``."""
    from medfed.models.bundle import bundle_from_content, load_model_file, with_class_names

    if Path(model).is_file():
        if round_ is not None:
            raise ConfigError("--round applies to a run id, not to a model file")
        return load_model_file(Path(model))
    if Path(model).suffix in (".pt", ".pth") or "/" in model:
        raise ConfigError(f"model file {model} not found: check the path (or give a run id)")
    from medfed.store import ArtifactStore, RunStore

    cfg = load_config(config)
    with RunStore(cfg.database_url) as store:
        run = store.get_run(store.resolve_run_id(model))
        checkpoints = store.checkpoints(run.id)
    chosen = [c for c in checkpoints if round_ is None or c.round == round_]
    if not chosen:
        which = "any round" if round_ is None else f"round {round_}"
        raise StoreError(f"run {run.id} has no model of {which}")
    checkpoint = max(chosen, key=lambda c: c.round)
    artifacts = ArtifactStore.for_config(cfg, create_key=False)
    state, meta = artifacts.load_state_dict(checkpoint.path, run_id=run.id, round=checkpoint.round)
    if not isinstance(meta.get("config"), dict):
        meta = {**meta, "config": run.config}
    names = (run.config.get("data") or {}).get("class_names") or []
    content = with_class_names({"state_dict": state, "meta": meta}, names)
    return bundle_from_content(content, f"run {run.id} round {checkpoint.round}")
