"""The centralized baseline and its CLI command on the tiny TIFF sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medfed.cli import main
from medfed.config import config_from_dict
from medfed.errors import DataError
from medfed.learning.central import run_central
from medfed.models import load_checkpoint

torch.set_num_threads(1)


def small_config(data: Path, home: Path, **training):
    return config_from_dict(
        {
            "home": str(home),
            "data": {"path": str(data), "image_size": 32},
            "model": {"name": "cancer_cnn"},
            "training": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, **training},
        }
    )


def test_run_central_writes_metrics_and_a_loadable_checkpoint(kaggle_dataset, tmp_path):
    cfg = small_config(kaggle_dataset, tmp_path / "home")
    rows = []
    result = run_central(
        cfg, tmp_path / "out", progress=False, on_epoch=lambda e, row: rows.append(e)
    )
    assert rows == [1, 2]
    assert (result.num_train, result.num_test) == (32, 12)
    assert result.test_source == str(kaggle_dataset / "test")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    for epoch in metrics["epochs"]:
        assert {"loss", "accuracy"} <= epoch["train"].keys()
        assert {"loss", "accuracy", "f1", "auc", "confusion_matrix"} <= epoch["test"].keys()
    assert metrics["final"] == metrics["epochs"][-1]["test"]
    assert metrics["final"]["accuracy"] > 0.5
    assert metrics["config"]["model"]["name"] == "cancer_cnn"
    assert metrics["seconds"] > 0

    checkpoint = load_checkpoint(tmp_path / "out" / "model.pt")
    assert checkpoint.class_names == result.class_names
    assert checkpoint.model_name == "cancer_cnn" and checkpoint.in_channels == 1
    assert checkpoint.extra["data"]["image_size"] == 32
    images = torch.rand(3, 1, 32, 32)
    checkpoint.model.eval()
    assert checkpoint.model(images).shape == (3, 2)


def test_without_test_folder_a_stratified_fifth_is_held_out(tmp_path):
    from medfed.data.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "plain", n_per_class=10, size=32)
    cfg = small_config(data, tmp_path / "home", epochs=1)
    result = run_central(cfg, tmp_path / "out", progress=False)
    assert (result.num_train, result.num_test) == (16, 4)
    assert "stratified 20%" in result.test_source
    matrix = np.array(result.final["confusion_matrix"])
    assert matrix.sum(axis=1).tolist() == [2, 2]


def test_too_small_to_split_is_a_data_error(tmp_path):
    from medfed.data.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "tiny", n_per_class=2, size=32)
    with pytest.raises(DataError, match="test set"):
        run_central(small_config(data, tmp_path / "home"), tmp_path / "out", progress=False)


def write_config(tmp_path: Path, data: Path, extra: str = "") -> Path:
    path = tmp_path / "config.yml"
    path.write_text(
        f"home: {tmp_path / 'home'}\n"
        f"data:\n  path: {data}\n  image_size: 32\n"
        "training:\n  batch_size: 8\n  threads: 1\n" + extra,
        encoding="utf-8",
    )
    return path


def test_cli_trains_and_says_where_results_are(kaggle_dataset, tmp_path, capsys):
    config = write_config(tmp_path, kaggle_dataset)
    out = tmp_path / "run"
    argv = ["train-central", "--config", str(config), "--epochs", "1", "--model", "cancer_cnn"]
    code = main([*argv, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert (out / "metrics.json").is_file() and (out / "model.pt").is_file()
    assert str(out / "metrics.json") in printed.replace("\n", "")
    assert "centralized training" in printed and "epoch 1: train loss" in printed
    assert json.loads((out / "metrics.json").read_text())["config"]["training"]["epochs"] == 1


def test_cli_data_flag_overrides_the_config(folder_dataset, tmp_path):
    config = write_config(tmp_path, tmp_path / "elsewhere")
    out = tmp_path / "run"
    argv = ["train-central", "-c", str(config), "--data", str(folder_dataset), "--epochs", "1"]
    assert main([*argv, "--model", "cancer_cnn", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["data"]["path"] == str(folder_dataset)


@pytest.mark.parametrize(
    ("flags", "extra", "key"),
    [
        (["--epochs", "0"], "", "training.epochs"),
        (["--model", "vgg16"], "", "model.name"),
        ([], "  optimizer: adamw\n", "training.optimizer"),
    ],
)
def test_cli_bad_value_is_one_clear_line(kaggle_dataset, tmp_path, capsys, flags, extra, key):
    config = write_config(tmp_path, kaggle_dataset, extra)
    code = main(["train-central", "--config", str(config), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert key in err and str(config) in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
