"""The report's charts, drawn with matplotlib into any figure or sub-figure (no pyplot)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, FigureBase
from matplotlib.ticker import MaxNLocator, PercentFormatter

from medfed.reports.content import ReportContent
from medfed.reports.roc import RocData
from medfed.store.vocabulary import Metric

INK = "#1b2a3a"
MUTED = "#6b7785"
GRID = "#dde3ea"
NAVY = "#1f4e79"
TEAL = "#2a9d8f"
CORAL = "#d1495b"
AMBER = "#e9a23b"
VIOLET = "#6a4c93"
SERIES = [NAVY, TEAL, AMBER, VIOLET, "#4d908e", "#b5838d", "#577590", "#90be6d"]
CROWDED_LEGEND = 6
# The scores drawn on one 0-1 axis, with their colours and labels.
METRIC_COLOURS = {Metric.ACCURACY: NAVY, Metric.F1: TEAL, Metric.AUC: AMBER}
METRIC_LABELS = {Metric.ACCURACY: "Accuracy", Metric.F1: "F1 score", Metric.AUC: "AUC"}

STYLE = {
    "text.parse_math": False,  # hospital names and errors may hold "$"
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.edgecolor": "#9aa5b1",
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.7,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "lines.linewidth": 1.8,
    "lines.markersize": 4.5,
}


@contextmanager
def report_style() -> Iterator[None]:
    """Apply the report's chart style (matplotlib's Agg canvas is used for every file)."""
    with matplotlib.rc_context(STYLE):
        yield


def figure_png_base64(draw: Callable[[FigureBase], None], size: tuple[float, float]) -> str:
    """Draw into a new figure of ``size`` inches and return it as base64 PNG."""
    with report_style():
        figure = Figure(figsize=size, dpi=110, layout="constrained")
        draw(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", facecolor="white")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _round_axis(ax: Axes) -> None:
    ax.set_xlabel("Round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _plot_series(ax: Axes, rounds: list[int], values: list[float | None], **style) -> bool:
    points = [(r, v) for r, v in zip(rounds, values, strict=True) if v is not None]
    if not points:
        return False
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, marker="o", **style)
    return True


def plot_global_curves(target: FigureBase, content: ReportContent) -> None:
    """Accuracy, F1 and AUC of the global model per round, and its loss."""
    left, right = target.subplots(1, 2, width_ratios=[1.35, 1])
    drawn = [
        _plot_series(
            left,
            content.rounds,
            content.curves[name],
            color=METRIC_COLOURS[name],
            label=METRIC_LABELS[name],
        )
        for name in METRIC_LABELS
    ]
    left.set_title("Global model per round")
    left.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    left.set_ylim(max(0.0, _low(content) - 0.05), 1.01)
    _round_axis(left)
    _legend_or_note(left, any(drawn), "lower right", "No accuracy, F1 or AUC recorded")
    drawn = [
        _plot_series(
            right, content.rounds, content.curves[Metric.LOSS], color=CORAL, label="Test loss"
        ),
        _plot_series(
            right,
            content.rounds,
            content.curves["train_loss"],
            color=MUTED,
            linestyle="--",
            label="Training loss (hospitals)",
        ),
    ]
    right.set_title("Loss")
    _round_axis(right)
    _legend_or_note(right, any(drawn), "upper right", "No loss recorded")


def _legend_or_note(ax: Axes, drawn: bool, loc: str, note: str) -> None:
    """A legend when a series was drawn, else ``note`` in the middle of the empty axes."""
    if drawn:
        ax.legend(loc=loc)
        return
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, note, ha="center", va="center", color=MUTED, transform=ax.transAxes)


def _low(content: ReportContent) -> float:
    values = [v for n in METRIC_LABELS for v in content.curves[n] if v is not None]
    return min(values, default=0.0)


def plot_hospital_accuracy(target: FigureBase, content: ReportContent) -> None:
    """Each hospital's accuracy per round, the global model's for reference, failures marked."""
    ax = target.subplots()
    for index, (hospital, series) in enumerate(content.hospital_accuracy.items()):
        rounds = sorted(series)
        ax.plot(
            rounds,
            [series[r] for r in rounds],
            marker="o",
            color=SERIES[index % len(SERIES)],
            label=hospital,
        )
    _plot_series(
        ax,
        content.rounds,
        content.curves[Metric.ACCURACY],
        color=INK,
        linestyle=":",
        label="Global model",
    )
    failed_rounds = sorted({failure[0] for failure in content.failures})
    if failed_rounds:
        ax.scatter(
            failed_rounds,
            [0.02] * len(failed_rounds),
            marker="X",
            s=60,
            color=CORAL,
            transform=ax.get_xaxis_transform(),
            label="Round with a failed reply",
            zorder=5,
            clip_on=False,
        )
    phase = "local test data" if content.hospital_accuracy_phase == "evaluate" else "training data"
    ax.set_title(f"Accuracy per hospital ({phase})")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    if len(content.hospital_accuracy) > CROWDED_LEGEND:
        columns = -(-len(content.hospital_accuracy) // 14)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), ncols=columns, fontsize=6.5)
    else:
        ax.legend(loc="lower right", ncols=2)
    _round_axis(ax)


def plot_confusion(target: FigureBase, content: ReportContent) -> None:
    """The final confusion matrix: counts, and the share of each true class."""
    matrix = content.confusion
    ax = target.subplots()
    names = content.class_names if len(content.class_names) == len(matrix) else None
    labels = names or [str(k) for k in range(len(matrix))]
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    for i in range(len(matrix)):
        for j in range(len(matrix)):
            colour = "white" if shares[i, j] > 0.55 else INK
            ax.text(
                j,
                i,
                f"{matrix[i, j]:,}\n{shares[i, j]:.0%}",
                ha="center",
                va="center",
                color=colour,
                fontsize=10 if len(matrix) <= 4 else 7,
                fontweight="bold",
            )
    crowded = sum(len(label) for label in labels) > 24
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=30 if crowded else 0,
        ha="right" if crowded else "center",
    )
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title("Confusion matrix (test set)")
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_roc(target: FigureBase, roc: RocData) -> None:
    """The ROC curve with its AUC and the chance diagonal."""
    ax = target.subplots()
    ax.fill_between(roc.fpr, roc.tpr, step=None, color=NAVY, alpha=0.08)
    label = "micro-average, " if roc.averaged else ""
    ax.plot(roc.fpr, roc.tpr, color=NAVY, label=f"Global model ({label}AUC = {roc.auc:.3f})")
    ax.plot([0, 1], [0, 1], color=MUTED, linestyle="--", linewidth=1, label="Chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 − specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    scored = f", positive class {roc.positive_class}" if roc.positive_class else ""
    ax.set_title(f"ROC curve (n = {roc.num_samples:,}{scored})")
    ax.legend(loc="lower right")


def plot_hospital_data(target: FigureBase, content: ReportContent) -> None:
    """Training examples per hospital, split by class when hospitals reported class counts."""
    ax = target.subplots()
    hospitals = content.hospitals
    positions = np.arange(len(hospitals))
    if content.class_counts:
        left = np.zeros(len(hospitals))
        for index, name in enumerate(content.class_names):
            counts = np.array([content.class_counts.get(h, {}).get(name, 0) for h in hospitals])
            ax.barh(positions, counts, left=left, color=SERIES[index % len(SERIES)], label=name)
            left += counts
        ax.legend(title="Class", loc="upper left", bbox_to_anchor=(1.01, 1), title_fontsize=8)
    else:
        sizes = [content.train_examples.get(h, 0) for h in hospitals]
        ax.barh(positions, sizes, color=NAVY)
    ax.set_yticks(positions, hospitals)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Training examples")
    ax.set_title("Data per hospital")


def plot_duration_traffic(target: FigureBase, content: ReportContent) -> None:
    """Seconds per round, and bytes sent to and received from the hospitals per round."""
    left, right = target.subplots(1, 2)
    rounds = np.array(content.rounds)
    left.bar(rounds, [d or 0 for d in content.durations], color=TEAL, width=0.6)
    left.set_title("Duration per round")
    left.set_ylabel("Seconds")
    left.grid(axis="x", visible=False)
    _round_axis(left)
    up = np.array([b or 0 for b in content.bytes_up], dtype=float)
    down = np.array([b or 0 for b in content.bytes_down], dtype=float)
    scale, unit = _byte_unit(max(up.max(initial=0), down.max(initial=0)))
    width = 0.38
    right.bar(
        rounds - width / 2, up / scale, width, color=NAVY, label="Upload (hospitals → server)"
    )
    right.bar(
        rounds + width / 2, down / scale, width, color=AMBER, label="Download (server → hospitals)"
    )
    right.set_ylim(top=max(up.max(initial=0), down.max(initial=0)) / scale * 1.3 or 1)
    right.set_title("Traffic per round")
    right.set_ylabel(unit)
    right.grid(axis="x", visible=False)
    right.legend(loc="upper left", ncols=2)
    _round_axis(right)


def _byte_unit(largest: float) -> tuple[float, str]:
    for power, unit in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        if largest >= 1024**power:
            return 1024.0**power, unit
    return 1.0, "Bytes"


def plot_epsilon(target: FigureBase, content: ReportContent, budget: float | None) -> None:
    """Privacy budget spent (ε) after each round, with the budget line when one is set."""
    ax = target.subplots()
    rounds = sorted(content.epsilons)
    ax.plot(rounds, [content.epsilons[r] for r in rounds], marker="o", color=VIOLET, label="ε")
    if budget:
        ax.axhline(
            budget, color=CORAL, linestyle="--", linewidth=1.2, label=f"Budget ε = {budget:g}"
        )
    ax.set_ylim(0, max([budget or 0, *content.epsilons.values()]) * 1.15 or 1)
    ax.set_title("Privacy spent per round (ε, higher = less private)")
    ax.set_ylabel("ε")
    ax.legend(loc="lower right")
    _round_axis(ax)
