"""The self-contained HTML report: one file, CSS inline, charts as embedded PNG, no scripts."""

from __future__ import annotations

from functools import partial

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from medfed.reports import charts, clinical_charts
from medfed.reports.content import ReportContent

CHART_WIDTH = 9.4
MAX_DATA_CHART_INCHES = 12.0


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("medfed.reports", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )


def chart_images(content: ReportContent) -> dict[str, str]:
    """Base64 PNG of every chart the content has data for, by name."""
    png = charts.figure_png_base64
    images: dict[str, str] = {}
    if content.train_examples:
        height = min(1.2 + 0.35 * len(content.hospitals), MAX_DATA_CHART_INCHES)
        images["data"] = png(
            partial(charts.plot_hospital_data, content=content), (CHART_WIDTH, height)
        )
    if content.rounds:
        images["curves"] = png(
            partial(charts.plot_global_curves, content=content), (CHART_WIDTH, 3.4)
        )
        images["traffic"] = png(
            partial(charts.plot_duration_traffic, content=content), (CHART_WIDTH, 3.0)
        )
    if content.hospital_accuracy:
        images["hospitals"] = png(
            partial(charts.plot_hospital_accuracy, content=content), (CHART_WIDTH, 3.2)
        )
    if content.confusion is not None:
        images["confusion"] = png(partial(charts.plot_confusion, content=content), (4.6, 4.2))
    if content.roc is not None:
        images["roc"] = png(partial(charts.plot_roc, roc=content.roc), (4.6, 4.2))
    if content.evaluation is not None and content.evaluation.calibration.get("bins"):
        images["reliability"] = png(
            partial(clinical_charts.plot_reliability, evaluation=content.evaluation), (4.6, 4.0)
        )
    if content.epsilons:
        images["epsilon"] = png(
            partial(charts.plot_epsilon, content=content, budget=content.epsilon_budget),
            (CHART_WIDTH, 2.8),
        )
    return images


def render_html(content: ReportContent) -> str:
    """The report as one HTML document."""
    template = _environment().get_template("report.html.j2")
    return template.render(c=content, images=chart_images(content))
