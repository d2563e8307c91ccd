"""The PDF report: four A4 pages drawn with matplotlib, tables included (no other dependency).

Page 1 holds the key figures, run summary and configuration; the next pages follow the HTML
report's sections and numbering with their charts and tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from textwrap import shorten

from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure, FigureBase
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import FancyBboxPatch, Rectangle

from medfed.reports import charts
from medfed.reports.content import ReportContent, Table

A4 = (8.27, 11.69)
ROW_INCHES = 0.24
SETTING_INCHES = 0.2
PAGE_INCHES = 9.6
MAX_TABLE_ROWS = 30
MAX_CHART_INCHES = 6.0
HEADER_FRACTION = 0.075
FOOTER_FRACTION = 0.035
SOFT = "#f2f5f8"
LINE = "#cfd7e0"
FAILED = "#fbe9ec"


@dataclass
class Block:
    """One part of a page: its height in inches and how to draw it into a sub-figure."""

    inches: float
    draw: Callable[[FigureBase], None]


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


def _place(figure: Figure, blocks: list[Block]) -> None:
    """Stack the blocks from the top; unused height stays empty at the bottom of the page."""
    spare = PAGE_INCHES - sum(b.inches for b in blocks)
    if spare > 0.1:
        blocks = [*blocks, Block(spare, lambda _: None)]
    heights = [b.inches for b in blocks]
    subfigures = figure.subfigures(len(blocks), 1, height_ratios=heights, squeeze=False)
    for block, subfigure in zip(blocks, subfigures.ravel(), strict=True):
        block.draw(subfigure)


def _pages(content: ReportContent) -> list[list[Block]]:
    """The pages, in the order and with the section numbers of the HTML report.

    Four pages for a usual run; a part that does not fit (many hospitals or rounds) goes on.
    """
    parts = [
        _summary_page(content),
        _data_and_curves_page(content),
        _evaluation_page(content),
        _operations_page(content),
    ]
    return [page for blocks in parts for page in _paginate(blocks)]


def _paginate(blocks: list[Block]) -> list[list[Block]]:
    pages: list[list[Block]] = [[]]
    used = 0.0
    for block in blocks:
        if pages[-1] and used + block.inches > PAGE_INCHES:
            pages.append([])
            used = 0.0
        pages[-1].append(block)
        used += block.inches
    return pages


def _summary_page(c: ReportContent) -> list[Block]:
    blocks = [Block(1.1, lambda f: _kpi_cards(f, c)), _pairs_block("1  Run summary", c.overview)]
    if c.error:
        blocks.append(_text_block("The run ended with an error", c.error, charts.CORAL))
    sections = [*c.settings.items(), ("Privacy", c.privacy)]
    left, right = sections[::2], sections[1::2]
    lines = max(_settings_lines(column) for column in (left, right))
    blocks.append(Block(lines * SETTING_INCHES + 0.4, lambda f: _settings_columns(f, left, right)))
    return blocks


def _data_and_curves_page(c: ReportContent) -> list[Block]:
    blocks = _table_blocks("3  Data per hospital", c.data_table)
    if c.train_examples:
        height = min(0.8 + 0.3 * len(c.hospitals), MAX_CHART_INCHES)
        blocks.append(Block(height, lambda f: charts.plot_hospital_data(f, c)))
    if not c.rounds:
        blocks.append(_text_block("4  Learning curves", "No round has finished yet.", charts.AMBER))
        return blocks
    blocks.append(
        Block(3.2, lambda f: _titled(f, "4  Learning curves", charts.plot_global_curves, c))
    )
    if c.hospital_accuracy:
        blocks.append(Block(2.9, lambda f: charts.plot_hospital_accuracy(f, c)))
    return blocks


def _evaluation_page(c: ReportContent) -> list[Block]:
    blocks = [
        *_table_blocks("5  Final evaluation of the global model", c.metrics_table),
        Block(3.7, lambda f: _confusion_and_roc(f, c)),
        *_table_blocks(f"6  Hospitals in round {c.last_round}", c.last_round_table, 6.5),
    ]
    if c.failures:
        rows = [[str(r), hospital, phase, error] for r, hospital, phase, error in c.failures]
        failures = Table(
            ["Round", "Hospital", "Phase", "Reason"], rows, [True, False, False, False]
        )
        blocks.extend(_table_blocks("Failed replies over the whole run", failures))
    return blocks


def _operations_page(c: ReportContent) -> list[Block]:
    blocks = []
    if c.rounds:
        blocks.append(
            Block(
                2.8,
                lambda f: _titled(f, "7  Duration and traffic", charts.plot_duration_traffic, c),
            )
        )
    blocks.extend(_table_blocks("Rounds", c.traffic_table))
    if c.epsilons:
        blocks.append(
            Block(2.5, lambda f: _titled(f, "8  Privacy", charts.plot_epsilon, c, c.epsilon_budget))
        )
    elif c.privacy_mode == "none":
        text = "No differential privacy was applied in this run (privacy.mode = none)."
        blocks.append(_text_block("8  Privacy", text, charts.TEAL))
    else:
        text = "Differential privacy was configured, but no ε was recorded per round."
        blocks.append(_text_block("8  Privacy", text, charts.AMBER))
    if c.audit:
        blocks.append(
            _pairs_block("Membership-inference audit", c.audit, c.audit_reading, columns=1)
        )
    else:
        text = "No membership-inference audit was run for this run."
        blocks.append(_text_block("Membership-inference audit", text, charts.TEAL))
    return blocks


def _settings_lines(column: list[tuple[str, list]]) -> int:
    return sum(len(rows) + 2 for _, rows in column)


# ------------------------------------------------------------------------------ drawing kit


def _titled(target: FigureBase, title: str, plot: Callable, *args: object) -> None:
    target.suptitle(title, x=0.0, ha="left", fontsize=12, weight="bold", color=charts.NAVY)
    plot(target, *args)


def _kpi_cards(target: FigureBase, c: ReportContent) -> None:
    ax = _blank_axes(target)
    count = len(c.kpis)
    width, gap = 1 / count, 0.012
    for index, kpi in enumerate(c.kpis):
        left = index * width + gap / 2
        ax.add_patch(
            FancyBboxPatch(
                (left, 0.04), width - gap, 0.9, boxstyle="round,pad=0,rounding_size=0.01",
                facecolor=SOFT, edgecolor=LINE, linewidth=0.6, transform=ax.transAxes,
            )
        )  # fmt: skip
        ax.add_patch(
            Rectangle((left, 0.9), width - gap, 0.04, color=charts.NAVY, transform=ax.transAxes)
        )
        centre = left + (width - gap) / 2
        ax.text(centre, 0.72, kpi.label.upper(), ha="center", fontsize=6.5, color=charts.MUTED)
        ax.text(centre, 0.38, kpi.value, ha="center", fontsize=12, weight="bold", color=charts.INK)
        ax.text(centre, 0.14, kpi.detail, ha="center", fontsize=5.5, color=charts.MUTED)


def _blank_axes(target: FigureBase) -> Axes:
    ax = target.subplots()
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return ax


def _table_blocks(title: str, table: Table, font_size: float = 7.5) -> list[Block]:
    """The table in blocks of at most MAX_TABLE_ROWS rows, so long ones continue on a new page."""
    if table.empty:
        return [_text_block(title, "Nothing was recorded.", charts.AMBER)]
    blocks = []
    for start in range(0, len(table.rows), MAX_TABLE_ROWS):
        part = Table(
            table.columns,
            table.rows[start : start + MAX_TABLE_ROWS],
            table.numeric,
            frozenset(i - start for i in table.failed_rows),
        )
        heading = title if start == 0 else f"{title} (continued)"
        blocks.append(
            Block(
                (len(part.rows) + 1) * ROW_INCHES + 0.45,
                lambda f, part=part, heading=heading: _table(f, heading, part, font_size),
            )
        )
    return blocks


def _table(target: FigureBase, title: str, table: Table, font_size: float) -> None:
    target.suptitle(title, x=0.0, ha="left", fontsize=12, weight="bold", color=charts.NAVY)
    ax = _blank_axes(target)
    cells = [[shorten(cell, 38, placeholder="…") for cell in row] for row in table.rows]
    widths = [
        max(len(header), *(len(row[index]) for row in cells)) + 3
        for index, header in enumerate(table.columns)
    ]
    drawn = ax.table(
        cellText=cells,
        colLabels=table.columns,
        colWidths=[w / sum(widths) for w in widths],
        cellLoc="left",
        colLoc="left",
        bbox=(0, 0, 1, 1),
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(font_size)
    for (row, col), cell in drawn.get_celld().items():
        cell.set_linewidth(0)
        cell.PAD = 0.1 if table.numeric[col] else 0.03
        text = cell.get_text()
        if table.numeric[col]:
            text.set_horizontalalignment("right")
        if row == 0:
            cell.set_facecolor(SOFT)
            text.set_color(charts.MUTED)
            text.set_weight("bold")
        elif row - 1 in table.failed_rows:
            cell.set_facecolor(FAILED)
        elif cells[row - 1][0] == "Total":
            cell.set_facecolor(SOFT)
            text.set_weight("bold")
    rows = len(cells) + 1
    for line in range(rows + 1):
        ax.axhline(line / rows, color="#9aa5b1" if line in (0, rows - 1, rows) else LINE, lw=0.6)


def _pairs_block(
    title: str, rows: list[tuple[str, str]], footnote: str = "", columns: int = 2
) -> Block:
    per_column = -(-len(rows) // columns)
    height = per_column * ROW_INCHES + 0.4 + (0.3 if footnote else 0)
    return Block(height, lambda f: _pairs(f, title, rows, footnote, per_column))


def _pairs(
    target: FigureBase, title: str, rows: list[tuple[str, str]], footnote: str, per_column: int
) -> None:
    target.suptitle(title, x=0.0, ha="left", fontsize=12, weight="bold", color=charts.NAVY)
    ax = _blank_axes(target)
    columns = [rows[i : i + per_column] for i in range(0, len(rows), per_column)]
    key_width = 0.42 if len(columns) == 1 else 0.16
    bottom = 0.25 if footnote else 0.0
    step = (1 - bottom) / max(per_column, 1)
    for index, column in enumerate(columns):
        left = index * 0.52
        for line, (key, value) in enumerate(column):
            y = 1 - (line + 0.5) * step
            ax.text(left, y, key, fontsize=8, color=charts.MUTED, va="center")
            ax.text(
                left + key_width,
                y,
                _fit(value, 40 if len(columns) == 1 else 34),
                fontsize=7.5,
                weight="bold",
                va="center",
                color=charts.INK,
            )
            ax.plot([left, left + 0.48], [y - step / 2] * 2, color=LINE, linewidth=0.5)
    if footnote:
        ax.text(0, bottom / 3, footnote, fontsize=7.5, color=charts.MUTED, wrap=True)


def _settings_columns(target: FigureBase, left: list, right: list) -> None:
    target.suptitle(
        "2  Configuration", x=0.0, ha="left", fontsize=12, weight="bold", color=charts.NAVY
    )
    ax = _blank_axes(target)
    step = 1 / max(_settings_lines(column) for column in (left, right))
    for offset, column in ((0.0, left), (0.52, right)):
        y = 1.0
        for title, rows in column:
            y -= step
            ax.text(
                offset, y + step * 0.2, title.upper(), fontsize=8, weight="bold", color=charts.NAVY
            )
            for key, value in rows:
                y -= step
                ax.text(offset, y + step * 0.3, key, fontsize=8, color=charts.MUTED)
                ax.text(
                    offset + 0.2,
                    y + step * 0.3,
                    _fit(value, 32),
                    fontsize=8,
                    weight="bold",
                    color=charts.INK,
                )
                ax.plot([offset, offset + 0.48], [y] * 2, color=LINE, linewidth=0.5)
            y -= step


def _fit(value: str, width: int) -> str:
    """``value`` in at most ``width`` characters; paths keep their end, text its start."""
    if len(value) <= width:
        return value
    if "/" in value and " " not in value:
        return "…" + value[-(width - 1) :]
    return shorten(value, width, placeholder="…")


def _text_block(title: str, text: str, colour: str) -> Block:
    def draw(target: FigureBase) -> None:
        target.suptitle(title, x=0.0, ha="left", fontsize=12, weight="bold", color=charts.NAVY)
        ax = _blank_axes(target)
        ax.add_patch(Rectangle((0, 0.05), 0.006, 0.9, color=colour, transform=ax.transAxes))
        ax.text(
            0.02, 0.5, shorten(text, 300, placeholder="…"), fontsize=8.5, va="center", wrap=True
        )

    return Block(0.85, draw)


def _confusion_and_roc(target: FigureBase, c: ReportContent) -> None:
    left, right = target.subfigures(1, 2, wspace=0.04)
    if c.confusion is not None:
        charts.plot_confusion(left, c)
    else:
        _notice(left, "No confusion matrix was recorded for this run.")
    if c.roc is not None:
        charts.plot_roc(right, c.roc)
    else:
        _notice(right, f"ROC curve not available. {c.roc_note}")


def _notice(target: FigureBase, text: str) -> None:
    ax = _blank_axes(target)
    ax.add_patch(
        Rectangle(
            (0, 0.3), 1, 0.4, facecolor="#fdf6e8", edgecolor=charts.AMBER, transform=ax.transAxes
        )
    )
    ax.text(0.04, 0.5, text, fontsize=8.5, va="center", wrap=True)
