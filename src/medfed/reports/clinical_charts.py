"""Charts of the final model's clinical evaluation: the reliability diagram and the heat maps."""

from __future__ import annotations

from matplotlib.figure import FigureBase
from matplotlib.ticker import PercentFormatter

from medfed.reports.charts import CORAL, INK, MUTED, NAVY
from medfed.reports.clinical import FinalEvaluation
from medfed.reports.heatmaps import png_pixels

KIND_COLOURS = {
    "true positive": NAVY,
    "true negative": NAVY,
    "correct": NAVY,
    "false positive": CORAL,
    "false negative": CORAL,
    "misclassified": CORAL,
}


def plot_reliability(target: FigureBase, evaluation: FinalEvaluation) -> None:
    """Observed frequency against predicted probability per bin, with the bins' counts."""
    ax = target.subplots()
    bins = [b for b in evaluation.calibration["bins"] if b["count"]]
    width = evaluation.calibration["bins"][0]["upper"] - evaluation.calibration["bins"][0]["lower"]
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    ax.bar(
        centres,
        [b["observed"] for b in bins],
        width=width * 0.9,
        color=NAVY,
        alpha=0.8,
        label="Observed",
    )
    ax.plot(
        [b["confidence"] for b in bins],
        [b["confidence"] for b in bins],
        "o",
        color=CORAL,
        markersize=4,
        label="Mean predicted",
    )
    ax.plot([0, 1], [0, 1], color=MUTED, linestyle="--", linewidth=1, label="Perfect calibration")
    for centre, b in zip(centres, bins, strict=True):
        ax.text(centre, 0.02, f"{b['count']}", ha="center", fontsize=6, color="white")
    kind = evaluation.calibration.get("kind", "positive class")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"Predicted probability ({kind})")
    ax.set_ylabel("Observed frequency")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ece = evaluation.calibration.get("ece")
    ax.set_title(f"Reliability diagram (ECE {ece:.3f})" if ece is not None else "Reliability")
    ax.legend(loc="upper left", fontsize=7)


def plot_heatmaps(target: FigureBase, evaluation: FinalEvaluation, columns: int = 4) -> None:
    """The explained test images as a grid of heat maps over the images, captioned."""
    items = evaluation.explanations
    rows = max(1, -(-len(items) // columns))
    axes = target.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, item in zip(axes.ravel(), items, strict=False):
        ax.imshow(png_pixels(item.heatmap))
        ax.set_title(
            f"{item.kind}\n{item.true_class} → {item.predicted_class}, p {item.probability:.2f}",
            fontsize=6.5,
            color=KIND_COLOURS.get(item.kind, INK),
            loc="center",
        )
