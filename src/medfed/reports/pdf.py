"""The PDF report: five A4 pages drawn with matplotlib, tables included (no other dependency).

Page 1 holds the key figures, run summary and configuration; the next pages follow the HTML
report's sections and numbering with their charts and tables.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Rectangle

from medfed.reports import charts, clinical_charts
from medfed.reports import pdf_kit as kit
from medfed.reports.content import ReportContent, Table

A4 = (8.27, 11.69)
HEADER_FRACTION = 0.075
FOOTER_FRACTION = 0.035


def write_pdf(content: ReportContent, path: Path) -> int:
    """Write the report to ``path``; returns the number of pages."""
    pages = _pages(content)
    with charts.report_style(), PdfPages(path, metadata=_metadata(content)) as pdf:
        for number, blocks in enumerate(pages, start=1):
            figure = _page(content, number, len(pages))
            _place(figure, blocks)
            pdf.savefig(figure)
    return len(pages)


def _metadata(content: ReportContent) -> dict[str, str]:
    return {
        "Title": f"{content.title}: {content.run_name}",
        "Subject": f"medfed run {content.run_id}",
        "Creator": f"medfed {content.version}",
    }


def _page(content: ReportContent, number: int, total: int) -> Figure:
    """An A4 figure with the report's header band and footer; blocks go between them."""
    figure = Figure(figsize=A4)
    figure.set_layout_engine(
        ConstrainedLayoutEngine(
            rect=(0.06, FOOTER_FRACTION + 0.01, 0.88, 1 - HEADER_FRACTION - FOOTER_FRACTION - 0.02),
            h_pad=0.06,
            w_pad=0.04,
        )
    )
    top = 1 - HEADER_FRACTION
    figure.patches.append(
        Rectangle((0, top), 1, HEADER_FRACTION, transform=figure.transFigure, color=charts.NAVY)
    )
    figure.text(0.06, top + 0.045, content.title, color="white", fontsize=15, weight="bold")
    figure.text(
        0.06,
        top + 0.018,
        f"{content.run_name}  ·  run {content.run_id}",
        color="#dbe6f1",
        fontsize=9,
    )
    figure.text(
        0.94,
        top + 0.045,
        content.status.upper(),
        color="white",
        fontsize=9,
        weight="bold",
        ha="right",
    )
    figure.text(0.94, top + 0.018, content.generated_at, color="#dbe6f1", fontsize=8, ha="right")
    figure.text(
        0.06,
        0.018,
        f"medfed {content.version} · federated evaluation report",
        fontsize=7,
        color=charts.MUTED,
    )
    figure.text(
        0.94, 0.018, f"Page {number} of {total}", fontsize=7, color=charts.MUTED, ha="right"
    )
    return figure


def _place(figure: Figure, blocks: list[kit.Block]) -> None:
    """Stack the blocks from the top; unused height stays empty at the bottom of the page."""
    spare = kit.PAGE_INCHES - sum(b.inches for b in blocks)
    if spare > 0.1:
        blocks = [*blocks, kit.Block(spare, lambda _: None)]
    heights = [b.inches for b in blocks]
    subfigures = figure.subfigures(len(blocks), 1, height_ratios=heights, squeeze=False)
    for block, subfigure in zip(blocks, subfigures.ravel(), strict=True):
        block.draw(subfigure)


def _pages(content: ReportContent) -> list[list[kit.Block]]:
    """The pages, in the order and with the section numbers of the HTML report.

    Five pages for a usual run; a part that does not fit (many hospitals or rounds) goes on.
    """
    parts = [
        _summary_page(content),
        _data_and_curves_page(content),
        _evaluation_page(content),
        _clinical_page(content),
        _operations_page(content),
    ]
    return [page for blocks in parts for page in _paginate(blocks)]


def _paginate(blocks: list[kit.Block]) -> list[list[kit.Block]]:
    pages: list[list[kit.Block]] = [[]]
    used = 0.0
    for block in blocks:
        if pages[-1] and used + block.inches > kit.PAGE_INCHES:
            pages.append([])
            used = 0.0
        pages[-1].append(block)
        used += block.inches
    return pages


def _summary_page(c: ReportContent) -> list[kit.Block]:
    blocks = [
        kit.Block(1.1, lambda f: kit.kpi_cards(f, c)),
        kit.pairs_block("1  Run summary", c.overview),
    ]
    if c.error:
        blocks.append(kit.text_block("The run ended with an error", c.error, charts.CORAL))
    sections = [*c.settings.items(), ("Privacy", c.privacy)]
    left, right = sections[::2], sections[1::2]
    lines = max(kit.settings_lines(column) for column in (left, right))
    blocks.append(
        kit.Block(lines * kit.SETTING_INCHES + 0.4, lambda f: kit.settings_columns(f, left, right))
    )
    return blocks


def _data_and_curves_page(c: ReportContent) -> list[kit.Block]:
    blocks = kit.table_blocks("3  Data per hospital", c.data_table)
    if c.train_examples:
        height = min(0.8 + 0.3 * len(c.hospitals), kit.MAX_CHART_INCHES)
        blocks.append(kit.Block(height, lambda f: charts.plot_hospital_data(f, c)))
    if not c.rounds:
        blocks.append(
            kit.text_block("4  Learning curves", "No round has finished yet.", charts.AMBER)
        )
        return blocks
    blocks.append(
        kit.Block(3.2, lambda f: kit.titled(f, "4  Learning curves", charts.plot_global_curves, c))
    )
    if c.hospital_accuracy:
        blocks.append(kit.Block(2.9, lambda f: charts.plot_hospital_accuracy(f, c)))
    return blocks


def _evaluation_page(c: ReportContent) -> list[kit.Block]:
    blocks = [
        *kit.table_blocks("5  Final evaluation of the global model", c.metrics_table),
        kit.Block(3.7, lambda f: kit.confusion_and_roc(f, c)),
        *kit.table_blocks(f"9  Hospitals in round {c.last_round}", c.last_round_table, 6.5),
    ]
    if c.failures:
        rows = [[str(r), hospital, phase, error] for r, hospital, phase, error in c.failures]
        failures = Table(
            ["Round", "Hospital", "Phase", "Reason"], rows, [True, False, False, False]
        )
        blocks.extend(kit.table_blocks("Failed replies over the whole run", failures))
    return blocks


def _clinical_page(c: ReportContent) -> list[kit.Block]:
    """Scores for screening, where the model looks, and the results per hospital."""
    e = c.evaluation
    if e is None:
        note = f"Calibration, operating points and heat maps not available. {c.roc_note}"
        blocks = [kit.text_block("6  Scores for screening", note, charts.AMBER)]
    else:
        blocks = kit.table_blocks(
            f"6  Scores for screening (ECE {c.ece}, n = {e.num_samples:,})", c.operating_table
        )
        blocks.append(kit.Block(2.6, lambda f: clinical_charts.plot_reliability(f, e)))
        if e.explanations:
            rows = -(-len(e.explanations) // 4)
            blocks.append(
                kit.Block(
                    0.5 + 1.45 * rows,
                    lambda f: kit.titled(
                        f, "7  Where the model looks", clinical_charts.plot_heatmaps, e
                    ),
                )
            )
    title = "8  Results per hospital"
    if c.sites is not None and c.sites.round is not None:
        title += f" (round {c.sites.round}; worst: {c.sites.worst or '—'})"
    blocks.extend(kit.table_blocks(title, c.sites_table, 6.5))
    return blocks


def _operations_page(c: ReportContent) -> list[kit.Block]:
    blocks = []
    if c.rounds:
        blocks.append(
            kit.Block(
                2.8,
                lambda f: kit.titled(
                    f, "10  Duration and traffic", charts.plot_duration_traffic, c
                ),
            )
        )
    blocks.extend(kit.table_blocks("Rounds", c.traffic_table))
    if c.epsilons:
        blocks.append(
            kit.Block(
                2.5,
                lambda f: kit.titled(f, "11  Privacy", charts.plot_epsilon, c, c.epsilon_budget),
            )
        )
    elif c.privacy_mode == "none":
        text = "No differential privacy was applied in this run (privacy.mode = none)."
        blocks.append(kit.text_block("11  Privacy", text, charts.TEAL))
    else:
        text = "Differential privacy was configured, but no ε was recorded per round."
        blocks.append(kit.text_block("11  Privacy", text, charts.AMBER))
    if c.audit:
        blocks.append(
            kit.pairs_block("Membership-inference audit", c.audit, c.audit_reading, columns=1)
        )
    else:
        text = "No membership-inference audit was run for this run."
        blocks.append(kit.text_block("Membership-inference audit", text, charts.TEAL))
    return blocks
