"""Data checks: a label column mixing class indices and names is an error naming both kinds;
a class with fewer than a handful of images is a warning naming it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medfed.cli import main
from medfed.data.readers import FEW_IMAGES, scan_dataset
from medfed.data.synthetic import write_synthetic_dataset
from medfed.errors import DataError


def relabel(root: Path, labels: dict[int, str]) -> None:
    """Set the label of some rows (0-based data rows) of root/train_labels.csv."""
    path = root / "train_labels.csv"
    rows = list(csv.reader(path.open()))
    for index, label in labels.items():
        rows[index + 1][1] = label
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.fixture
def kaggle(tmp_path: Path) -> Path:
    return write_synthetic_dataset(tmp_path / "set", layout="kaggle", n_per_class=8, size=16)


def test_indices_mixed_with_a_name_is_an_error_naming_both_kinds(kaggle: Path) -> None:
    relabel(kaggle, {5: "tumour"})
    with pytest.raises(DataError) as raised:
        scan_dataset(kaggle)
    message = str(raised.value)
    assert "mixes class indices" in message and "class names" in message
    assert "'0', '1'" in message  # the indices found
    assert "'tumour'" in message and "line 7" in message  # the name and where it is
    assert "classes.txt" in message  # what to do


def test_the_mix_is_an_error_with_declared_classes_too(kaggle: Path) -> None:
    (kaggle / "classes.txt").write_text("no\nyes\n")
    relabel(kaggle, {0: "no", 1: "yes"})  # names, while the other rows keep indices
    with pytest.raises(DataError, match="mixes class indices"):
        scan_dataset(kaggle)
    relabel(kaggle, {i: "yes" if i % 2 else "no" for i in range(16)})
    assert scan_dataset(kaggle).class_names == ["no", "yes"]  # names throughout: fine


def test_names_throughout_or_indices_throughout_pass(kaggle: Path) -> None:
    assert scan_dataset(kaggle).class_names == ["0", "1"]
    relabel(kaggle, {i: "tumour" if i % 2 else "healthy" for i in range(16)})
    manifest = scan_dataset(kaggle)
    assert manifest.class_names == ["healthy", "tumour"] and manifest.warnings == []


def test_data_check_reports_the_mix_in_two_lines_and_fails(
    kaggle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relabel(kaggle, {3: "tumour"})
    assert main(["data", "check", str(kaggle)]) == 2
    err = capsys.readouterr().err
    assert "mixes class indices" in err and "'tumour'" in err
    assert "Traceback" not in err


def test_a_class_with_a_handful_of_images_is_a_warning_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_synthetic_dataset(tmp_path / "set", layout="folders", n_per_class=8, size=16)
    rare = root / "rare"
    rare.mkdir()
    for path in sorted((root / "class_0").iterdir())[: FEW_IMAGES - 2]:
        path.rename(rare / path.name)
    manifest = scan_dataset(root)
    assert len(manifest.warnings) == 1
    assert "'rare'" in manifest.warnings[0] and f"{FEW_IMAGES - 2} image(s)" in manifest.warnings[0]

    assert main(["data", "check", str(root)]) == 0  # a warning, not a problem
    out = capsys.readouterr().out
    assert "warning:" in out and "'rare'" in out and "1 warning(s)" in out


def test_enough_images_per_class_gives_no_warning(tmp_path: Path) -> None:
    root = write_synthetic_dataset(
        tmp_path / "set", layout="kaggle", n_per_class=FEW_IMAGES, size=16
    )
    assert scan_dataset(root).warnings == []
