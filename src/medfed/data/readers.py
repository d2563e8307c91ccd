"""Scanning a dataset folder into a validated manifest of samples, before any training.

Two layouts:

- ``kaggle``: ``ROOT/train_labels.csv`` with header ``id,label`` and images ``ROOT/train/<id>.tif``
  (any supported suffix). A label is a class index or a class name. Class names come from the
  caller, else from ``ROOT/classes.txt`` (one name per line, line 1 = class 0), else from the
  labels (indices ``0..max`` or the sorted distinct names).
- ``folders``: ``ROOT/<class_name>/**/*.{tif,tiff,png,jpg,jpeg[,dcm]}``; classes are the sorted
  folder names holding images. ``ROOT/test/`` holding folders is a held-out set and is ignored.

Every problem is collected first and reported in one :class:`DataError`; with ``skip_bad`` the
bad items are left out and listed in ``DataManifest.skipped`` instead.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from medfed.data.images import ImageInfo, ImageReadError, is_image_file, probe_image
from medfed.data.manifest import PROBLEM_KINDS as PROBLEM_KINDS
from medfed.data.manifest import (
    SHOWN_OFFENDERS,
    DataManifest,
    Problem,
    Sample,
    describe_problems,
    problem_lines,
)
from medfed.errors import DataError

LABELS_CSV = "train_labels.csv"
IMAGE_DIR = "train"
CLASSES_FILE = "classes.txt"
HELD_OUT_DIR = "test"
FEW_IMAGES = 5  # a class with fewer images than this cannot be learned or evaluated


@dataclass
class _Scan:
    class_names: list[str]
    samples: list[Sample]
    problems: list[Problem]


def detect_layout(root: Path) -> str:
    """The layout of ROOT: ``kaggle`` (train_labels.csv, train/) or ``folders`` (one per class)."""
    image_dir = root / IMAGE_DIR
    if (root / LABELS_CSV).is_file():
        return "kaggle"
    if image_dir.is_dir() and any(p.is_dir() for p in image_dir.iterdir()):
        raise DataError(
            f"{image_dir} holds folders but {root} has no {LABELS_CSV}: for one folder per "
            f"class, pass {image_dir} as the dataset path"
        )
    if image_dir.is_dir():
        return "kaggle"
    if any(_class_dirs(root)):
        return "folders"
    raise DataError(
        f"no dataset found in {root}: expected {LABELS_CSV} with {IMAGE_DIR}/ (Kaggle layout) "
        "or one folder of images per class"
    )


def scan_dataset(
    root: Path,
    layout: str = "auto",
    class_names: list[str] | None = None,
    skip_bad: bool = False,
    check_images: bool = True,
    min_classes: int = 2,
) -> DataManifest:
    """List and validate a dataset; raise one DataError describing every problem found.

    ``check_images`` reads each file's header and checks it is complete (no pixel decoding).
    ``min_classes``: fewer classes with images than this is an error (a classifier needs two).
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} not found: check data.path or the PATH given")
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "kaggle":
        scan = _scan_kaggle(root, class_names)
    elif layout == "folders":
        scan = _scan_folders(root, class_names)
    else:
        raise DataError(f"unknown data layout {layout!r}: use auto, kaggle or folders")
    infos = _check_images(root, scan) if check_images else []
    if scan.problems and not skip_bad:
        raise DataError(describe_problems(root, scan.problems))
    _check_usable(root, scan, min_classes)
    manifest = DataManifest(root, layout, scan.class_names, scan.samples, scan.problems, infos)
    manifest.warnings = few_images_warnings(manifest)
    return manifest


def few_images_warnings(manifest: DataManifest) -> list[str]:
    """One warning per class with fewer than FEW_IMAGES usable images, naming it."""
    warnings = []
    for index, count in enumerate(manifest.class_counts().tolist()):
        if count < FEW_IMAGES:
            name = manifest.class_names[index]
            warnings.append(
                f"{manifest.root}: class {name!r} (label {index}) has {count} image(s), fewer "
                f"than {FEW_IMAGES}: too few to learn or evaluate it; add images of it or "
                "check its labels"
            )
    return warnings


def read_class_names(root: Path) -> list[str] | None:
    """Class names from ROOT/classes.txt (one per line, in class order), if the file exists."""
    path = root / CLASSES_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [name for name in names if name]
    if len(set(names)) != len(names) or not names:
        raise DataError(f"{path}: class names must be non-empty and distinct, one per line")
    return names


def _scan_kaggle(root: Path, declared: list[str] | None) -> _Scan:
    csv_path, image_dir = root / LABELS_CSV, root / IMAGE_DIR
    if not csv_path.is_file():
        raise DataError(
            f"{csv_path} not found: the Kaggle layout needs {LABELS_CSV} (header id,label) "
            f"next to {IMAGE_DIR}/"
        )
    if not image_dir.is_dir():
        raise DataError(f"{image_dir} not found: the Kaggle layout keeps images in {IMAGE_DIR}/")
    files = _files_by_id(image_dir)
    rows, problems = _read_rows(csv_path)
    declared = declared or read_class_names(root)
    _check_one_kind_of_label(csv_path, rows, declared)
    class_names, indices = _resolve_labels([label for _, label, _ in rows], declared)
    samples = []
    for (sample_id, label_text, line), index in zip(rows, indices, strict=True):
        where = f"{LABELS_CSV} line {line}"
        path = files.get(sample_id)
        if path is None:
            text = f"{where}: no image {IMAGE_DIR}/{sample_id}.tif"
            problems.append(Problem("missing_image", text, image_dir / f"{sample_id}.tif", line))
        elif index is None:
            text = f"{where}: label {label_text!r} is not one of {class_names}"
            problems.append(Problem("unknown_label", text, csv_path, line))
        else:
            samples.append(Sample(sample_id, path, index, line))
    listed = {files[sample_id] for sample_id, _, _ in rows if sample_id in files}
    for path in sorted(set(files.values()) - listed):
        text = f"{path.relative_to(root)} has no row in {LABELS_CSV}"
        problems.append(Problem("unlisted_image", text, path))
    return _Scan(class_names, samples, problems)


def _files_by_id(image_dir: Path) -> dict[str, Path]:
    """Images in a folder, reachable by file name and by file name without suffix."""
    files: dict[str, Path] = {}
    with os.scandir(image_dir) as entries:
        for entry in entries:
            path = Path(entry.path)
            if entry.is_file() and is_image_file(path):
                files.setdefault(path.stem, path)
                files[path.name] = path
    return files


def _read_rows(csv_path: Path) -> tuple[list[tuple[str, str, int]], list[Problem]]:
    """(id, label, line) of each well-formed row, and the malformed / duplicate rows."""
    rows, problems, first_line = [], [], {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            _check_header(csv_path, header)
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    text = f"{LABELS_CSV} line {line}: expected 'id,label', found {row!r}"
                    problems.append(Problem("bad_row", text, csv_path, line))
                    continue
                sample_id, label = row[0].strip(), row[1].strip()
                if sample_id in first_line:
                    text = (
                        f"{LABELS_CSV} line {line}: id {sample_id!r} already on line "
                        f"{first_line[sample_id]}"
                    )
                    problems.append(Problem("duplicate_id", text, csv_path, line))
                    continue
                first_line[sample_id] = line
                rows.append((sample_id, label, line))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: not a readable UTF-8 CSV file ({exc})") from None
    return rows, problems


def _check_header(csv_path: Path, header: list[str] | None) -> None:
    found = [cell.strip().lower() for cell in header or []]
    if found != ["id", "label"]:
        shown = ",".join(header) if header else "nothing (empty file)"
        raise DataError(
            f"{csv_path} line 1: the header must be 'id,label', found {shown!r}; "
            "fix the first line of the file"
        )


def _check_one_kind_of_label(
    csv_path: Path, rows: list[tuple[str, str, int]], declared: list[str] | None
) -> None:
    """A DataError when the label column mixes class indices and class names (``0``, ``1``
    and ``tumour``): it cannot say whether ``tumour`` is a third class or one of the two."""
    names = set(declared or ())
    indices: list[tuple[str, int]] = []
    named: list[tuple[str, int]] = []
    for _, label, line in rows:
        if label in names:
            named.append((label, line))
        elif _as_int(label) is not None:
            indices.append((label, line))
        else:
            named.append((label, line))
    if not indices or not named:
        return

    def kind(found: list[tuple[str, int]]) -> str:
        values = sorted({label for label, _ in found})
        shown = ", ".join(repr(v) for v in values[:SHOWN_OFFENDERS])
        more = ", ..." if len(values) > SHOWN_OFFENDERS else ""
        return f"{len(found)} row(s) ({shown}{more}; first on line {found[0][1]})"

    raise DataError(
        f"{csv_path}: the label column mixes class indices, {kind(indices)}, and class names, "
        f"{kind(named)}; use one kind: class indices with {CLASSES_FILE} naming them (one "
        "name per line, line 1 = class 0), or class names throughout"
    )


def _resolve_labels(
    labels: list[str], declared: list[str] | None
) -> tuple[list[str], list[int | None]]:
    """Class names and each label's class index (None when outside the classes)."""
    if declared is not None:
        by_name = {name: index for index, name in enumerate(declared)}
        return list(declared), [_label_index(text, by_name, len(declared)) for text in labels]
    numbers = [_as_int(text) for text in labels]
    if all(number is not None for number in numbers):
        top = max((n for n in numbers if n is not None), default=-1)
        names = [str(index) for index in range(top + 1)]
        return names, [n if n is not None and n >= 0 else None for n in numbers]
    names = sorted(set(labels))
    return names, [names.index(text) for text in labels]


def _label_index(text: str, by_name: dict[str, int], count: int) -> int | None:
    if text in by_name:
        return by_name[text]
    number = _as_int(text)
    return number if number is not None and 0 <= number < count else None


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _scan_folders(root: Path, declared: list[str] | None) -> _Scan:
    folders = {d.name: _images_under(d) for d in _class_dirs(root, keep=declared)}
    if declared is not None:
        class_names = list(declared)
    else:
        class_names = sorted(name for name, images in folders.items() if images)
    index_of = {name: index for index, name in enumerate(class_names)}
    samples, problems = [], []
    for name in sorted(folders):
        for path in folders[name]:
            sample_id = path.relative_to(root).with_suffix("").as_posix()
            if name in index_of:
                samples.append(Sample(sample_id, path, index_of[name], None))
            else:
                text = f"{path.relative_to(root)}: folder {name!r} is not one of {class_names}"
                problems.append(Problem("unknown_label", text, path))
    for path in sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p)):
        problems.append(Problem("unlisted_image", f"{path.name} is not in a class folder", path))
    return _Scan(class_names, samples, problems)


def _class_dirs(root: Path, keep: list[str] | None = None) -> list[Path]:
    """Sub-folders of ROOT that may be classes: not hidden, not the held-out test/ set."""
    dirs = []
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.name.startswith((".", "_")):
            continue
        held_out = path.name == HELD_OUT_DIR and any(p.is_dir() for p in path.iterdir())
        if held_out and not (keep and HELD_OUT_DIR in keep):
            continue
        dirs.append(path)
    return dirs


def _images_under(folder: Path) -> list[Path]:
    found = []
    for parent, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(parent) / name for name in sorted(filenames))
    return [path for path in found if is_image_file(path)]


def _check_images(root: Path, scan: _Scan) -> list[ImageInfo]:
    """Probe every sample's file; unreadable ones move from samples to problems."""
    good, infos = [], []
    for sample in scan.samples:
        try:
            infos.append(probe_image(sample.path))
        except ImageReadError as exc:
            where = f" ({LABELS_CSV} line {sample.line})" if sample.line else ""
            text = f"{sample.path.relative_to(root)}: {exc.reason}{where}"
            scan.problems.append(Problem("unreadable", text, sample.path, sample.line))
            continue
        good.append(sample)
    scan.samples = good
    return infos


def _check_usable(root: Path, scan: _Scan, min_classes: int) -> None:
    if not scan.samples:
        if scan.problems:
            lines = problem_lines(scan.problems)
            raise DataError(
                f"{root}: no usable images remain after leaving out {len(scan.problems)} bad "
                "item(s):\n" + "\n".join(lines)
            )
        raise DataError(
            f"{root}: the dataset is empty (no images found); add images in the Kaggle "
            f"layout ({LABELS_CSV} + {IMAGE_DIR}/) or one folder per class"
        )
    present = sorted({sample.label for sample in scan.samples})
    if len(present) < min_classes:
        names = ", ".join(scan.class_names[index] for index in present)
        raise DataError(
            f"{root}: only {len(present)} class(es) with images ({names}) but a classifier "
            f"needs at least {min_classes}: add images of the other classes or check the labels"
        )
