"""What scanning a dataset gives: its samples, the problems found, and how they are told."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfed.data.images import ImageInfo

SHOWN_OFFENDERS = 3

PROBLEM_KINDS = {
    "bad_row": "malformed CSV rows",
    "duplicate_id": "duplicate ids",
    "missing_image": "CSV rows with no image file",
    "unlisted_image": "images with no CSV row or class folder",
    "unknown_label": "labels outside the declared classes",
    "unreadable": "unreadable or truncated images",
}


@dataclass(frozen=True)
class Sample:
    """One labelled image; ``line`` is its CSV line number (Kaggle layout)."""

    id: str
    path: Path
    label: int
    line: int | None


@dataclass(frozen=True)
class Problem:
    """One bad item: its kind (a key of PROBLEM_KINDS) and a text naming the file / CSV line."""

    kind: str
    text: str
    path: Path | None = None
    line: int | None = None


@dataclass
class DataManifest:
    """A validated dataset: its usable samples and what was skipped."""

    root: Path
    layout: str
    class_names: list[str]
    samples: list[Sample]
    skipped: list[Problem]
    infos: list[ImageInfo] = field(default_factory=list)  # per sample, when images were checked
    warnings: list[str] = field(default_factory=list)  # usable, but worth a look

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((s.label for s in self.samples), dtype=np.int64, count=len(self))

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def class_counts(self) -> np.ndarray:
        """Number of samples per class, in class order."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def __len__(self) -> int:
        return len(self.samples)


def describe_problems(root: Path, problems: list[Problem]) -> str:
    """Count each kind of problem, name the first offenders and say what to do."""
    return "\n".join(
        [
            f"{root}: {len(problems)} problem(s) in the dataset:",
            *problem_lines(problems),
            "Fix or remove these items (`medfed data check PATH` lists them), "
            "or pass --skip-bad (data.skip_bad: true) to leave them out.",
        ]
    )


def problem_lines(problems: list[Problem]) -> list[str]:
    """One line per kind of problem: how many, and the first offenders."""
    counts = Counter(p.kind for p in problems)
    lines = []
    for kind, label in PROBLEM_KINDS.items():
        if counts[kind]:
            shown = [p.text for p in problems if p.kind == kind][:SHOWN_OFFENDERS]
            more = "; ..." if counts[kind] > SHOWN_OFFENDERS else ""
            lines.append(f"  {counts[kind]} {label}: " + "; ".join(shown) + more)
    return lines
