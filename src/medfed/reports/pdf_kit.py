"""The PDF report's drawing kit: page blocks, tables, key-value pairs, notices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from textwrap import shorten

from matplotlib.axes import Axes
from matplotlib.figure import FigureBase
from matplotlib.patches import FancyBboxPatch, Rectangle

from medfed.reports import charts
from medfed.reports.content import ReportContent, Table

ROW_INCHES = 0.24
SETTING_INCHES = 0.2
PAGE_INCHES = 9.6
MAX_TABLE_ROWS = 30
MAX_CHART_INCHES = 6.0
SOFT = "#f2f5f8"
LINE = "#cfd7e0"
FAILED = "#fbe9ec"
WORST = "#fdf0d8"


@dataclass
class Block:
    """One part of a page: its height in inches and how to draw it into a sub-figure."""

    inches: float
    draw: Callable[[FigureBase], None]


def settings_lines(column: list[tuple[str, list]]) -> int:
    return sum(len(rows) + 2 for _, rows in column)


def titled(target: FigureBase, title: str, plot: Callable, *args: object) -> None:
    target.suptitle(title, x=0.0, ha="left", fontsize=12, weight="bold", color=charts.NAVY)
    plot(target, *args)


def kpi_cards(target: FigureBase, c: ReportContent) -> None:
    ax = blank_axes(target)
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


def blank_axes(target: FigureBase) -> Axes:
    ax = target.subplots()
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return ax


def table_blocks(title: str, table: Table, font_size: float = 7.5) -> list[Block]:
    """The table in blocks of at most MAX_TABLE_ROWS rows, so long ones continue on a new page."""
    if table.empty:
        return [text_block(title, "Nothing was recorded.", charts.AMBER)]
    blocks = []
    for start in range(0, len(table.rows), MAX_TABLE_ROWS):
        part = Table(
            table.columns,
            table.rows[start : start + MAX_TABLE_ROWS],
            table.numeric,
            frozenset(i - start for i in table.failed_rows),
            frozenset(i - start for i in table.highlighted_rows),
        )
        heading = title if start == 0 else f"{title} (continued)"
        blocks.append(
            Block(
                (len(part.rows) + 1) * ROW_INCHES + 0.45,
                lambda f, part=part, heading=heading: draw_table(f, heading, part, font_size),
            )
        )
    return blocks


def draw_table(target: FigureBase, title: str, table: Table, font_size: float) -> None:
    target.suptitle(title, x=0.0, ha="left", fontsize=12, weight="bold", color=charts.NAVY)
    ax = blank_axes(target)
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
        elif row - 1 in table.highlighted_rows:
            cell.set_facecolor(WORST)
            text.set_weight("bold")
        elif cells[row - 1][0] == "Total":
            cell.set_facecolor(SOFT)
            text.set_weight("bold")
    rows = len(cells) + 1
    for line in range(rows + 1):
        ax.axhline(line / rows, color="#9aa5b1" if line in (0, rows - 1, rows) else LINE, lw=0.6)


def pairs_block(
    title: str, rows: list[tuple[str, str]], footnote: str = "", columns: int = 2
) -> Block:
    per_column = -(-len(rows) // columns)
    height = per_column * ROW_INCHES + 0.4 + (0.3 if footnote else 0)
    return Block(height, lambda f: pairs(f, title, rows, footnote, per_column))


def pairs(
    target: FigureBase, title: str, rows: list[tuple[str, str]], footnote: str, per_column: int
) -> None:
    target.suptitle(title, x=0.0, ha="left", fontsize=12, weight="bold", color=charts.NAVY)
    ax = blank_axes(target)
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
                fit(value, 40 if len(columns) == 1 else 34),
                fontsize=7.5,
                weight="bold",
                va="center",
                color=charts.INK,
            )
            ax.plot([left, left + 0.48], [y - step / 2] * 2, color=LINE, linewidth=0.5)
    if footnote:
        ax.text(0, bottom / 3, footnote, fontsize=7.5, color=charts.MUTED, wrap=True)


def settings_columns(target: FigureBase, left: list, right: list) -> None:
    target.suptitle(
        "2  Configuration", x=0.0, ha="left", fontsize=12, weight="bold", color=charts.NAVY
    )
    ax = blank_axes(target)
    step = 1 / max(settings_lines(column) for column in (left, right))
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
                    fit(value, 32),
                    fontsize=8,
                    weight="bold",
                    color=charts.INK,
                )
                ax.plot([offset, offset + 0.48], [y] * 2, color=LINE, linewidth=0.5)
            y -= step


def fit(value: str, width: int) -> str:
    """``value`` in at most ``width`` characters; paths keep their end, text its start."""
    if len(value) <= width:
        return value
    if "/" in value and " " not in value:
        return "…" + value[-(width - 1) :]
    return shorten(value, width, placeholder="…")


def text_block(title: str, text: str, colour: str) -> Block:
    def draw(target: FigureBase) -> None:
        target.suptitle(title, x=0.0, ha="left", fontsize=12, weight="bold", color=charts.NAVY)
        ax = blank_axes(target)
        ax.add_patch(Rectangle((0, 0.05), 0.006, 0.9, color=colour, transform=ax.transAxes))
        ax.text(
            0.02, 0.5, shorten(text, 300, placeholder="…"), fontsize=8.5, va="center", wrap=True
        )

    return Block(0.85, draw)


def confusion_and_roc(target: FigureBase, c: ReportContent) -> None:
    left, right = target.subfigures(1, 2, wspace=0.04)
    if c.confusion is not None:
        charts.plot_confusion(left, c)
    else:
        notice(left, "No confusion matrix was recorded for this run.")
    if c.roc is not None:
        charts.plot_roc(right, c.roc)
    else:
        notice(right, f"ROC curve not available. {c.roc_note}")


def notice(target: FigureBase, text: str) -> None:
    ax = blank_axes(target)
    ax.add_patch(
        Rectangle(
            (0, 0.3), 1, 0.4, facecolor="#fdf6e8", edgecolor=charts.AMBER, transform=ax.transAxes
        )
    )
    ax.text(0.04, 0.5, text, fontsize=8.5, va="center", wrap=True)
