"""Evaluation reports of federated runs: a self-contained HTML page and a multi-page PDF."""

from medfed.reports.report import FORMATS, build_report, report_content, write_report
from medfed.reports.roc import RocData, compute_roc, roc_from_predictions, roc_of_checkpoint

__all__ = [
    "FORMATS",
    "RocData",
    "build_report",
    "compute_roc",
    "report_content",
    "roc_from_predictions",
    "roc_of_checkpoint",
    "write_report",
]
