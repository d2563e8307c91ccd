"""``medfed predict`` and ``medfed export``: a trained model at a hospital, with the
preprocessing recorded in the model file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medfed.cli import main
from medfed.config import config_from_dict
from medfed.data.images import load_resized
from medfed.errors import ModelError
from medfed.models import build_model, save_checkpoint
from medfed.models.bundle import load_model_file
from medfed.store import ArtifactStore, RunStore


def run_model_file(path: Path, data: dict, channels: int = 1, classes: int = 2) -> Path:
    """A model as the platform hands it out: state dict + meta with the run's config."""
    torch.manual_seed(0)
    model = build_model("cancer_cnn", channels, classes)
    meta = {"run_id": "abcdef123456", "round": 3, "config": {"model": {"name": "cancer_cnn"}}}
    meta["config"]["data"] = data
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)
    return path


DATA = {"image_size": 16, "channels": 1, "normalize_mean": 0.4, "normalize_std": 0.2}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_predict_applies_the_preprocessing_recorded_in_the_model(
    kaggle_dataset: Path, tmp_path: Path
) -> None:
    model_path = run_model_file(tmp_path / "m.pt", {**DATA, "class_names": ["normal", "tumour"]})
    out = tmp_path / "out" / "predictions.csv"
    assert main(["predict", str(model_path), str(kaggle_dataset), "--out", str(out)]) == 0
    rows = read_csv(out)
    assert len(rows) == 32
    assert list(rows[0]) == [
        "id", "path", "label", "predicted", "p_normal", "p_tumour", "threshold",
    ]  # fmt: skip
    first = rows[0]
    assert first["id"] == "img00000" and first["threshold"] == "0.5"
    assert first["label"] in ("normal", "tumour")
    # the same image through the recorded preprocessing by hand: 16 px, (x/255 - 0.4) / 0.2
    bundle = load_model_file(model_path)
    pixels = load_resized(Path(first["path"]), 16, 1).astype(np.float32)
    x = torch.from_numpy((pixels / 255.0 - 0.4) / 0.2)[None]
    with torch.no_grad():
        expected = torch.softmax(bundle.model(x), dim=1)[0].numpy()
    got = np.array([float(first["p_normal"]), float(first["p_tumour"])])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert first["predicted"] == ("tumour" if got[1] >= 0.5 else "normal")
    for row in rows:
        assert float(row["p_normal"]) + float(row["p_tumour"]) == pytest.approx(1.0, abs=1e-5)


def test_threshold_decides_between_two_classes(folder_dataset: Path, tmp_path: Path) -> None:
    model_path = run_model_file(tmp_path / "m.pt", DATA)
    for threshold, expected in (("0", {"1"}), ("1", {"0"})):
        out = tmp_path / f"t{threshold}.csv"
        args = ["predict", str(model_path), str(folder_dataset / "test"), "--out", str(out)]
        assert main([*args, "--threshold", threshold]) == 0
        rows = read_csv(out)
        assert len(rows) == 12 and "label" not in rows[0]  # a plain folder: no labels
        assert {row["predicted"] for row in rows} == expected
        assert {row["threshold"] for row in rows} == {threshold}
    assert rows[0]["id"].startswith("class_0/test")


def test_bad_models_and_inputs_are_one_clear_error(
    kaggle_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_prep = run_model_file(tmp_path / "a.pt", {"image_size": 16})
    with pytest.raises(ModelError, match=r"does not record its preprocessing.*normalize_mean"):
        load_model_file(no_prep)
    wrong_channels = run_model_file(tmp_path / "b.pt", {**DATA, "channels": 3}, channels=1)
    with pytest.raises(ModelError, match="do not fit cancer_cnn with 3 channel"):
        load_model_file(wrong_channels)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    assert main(["predict", str(tmp_path / "junk.pt"), str(kaggle_dataset)]) == 2
    three = run_model_file(tmp_path / "c.pt", DATA, classes=3)
    args = ["predict", str(three), str(kaggle_dataset), "--out", str(tmp_path / "x.csv")]
    assert main([*args, "--threshold", "0.3"]) == 2
    error = capsys.readouterr().err
    assert "not a readable model file" in error and "--threshold applies to two-class" in error
    assert "Traceback" not in error


def test_an_unreadable_image_is_left_out_and_named(kaggle_dataset: Path, tmp_path: Path) -> None:
    (kaggle_dataset / "test" / "train" / "test00003.tif").write_bytes(b"junk")
    model_path = run_model_file(tmp_path / "m.pt", DATA)
    out = tmp_path / "p.csv"
    assert main(["predict", str(model_path), str(kaggle_dataset / "test"), "--out", str(out)]) == 2
    ids = [row["id"] for row in read_csv(out)]
    assert len(ids) == 11 and "test00003" not in ids


def test_centralized_model_file(kaggle_dataset: Path, tmp_path: Path) -> None:
    model = build_model("cancer_cnn", 3, 2)
    path = save_checkpoint(
        tmp_path / "model.pt", model, model_name="cancer_cnn", norm="batch", in_channels=3,
        class_names=["no", "yes"],
        extra={"data": {**DATA, "channels": 3, "image_size": 24}},
    )  # fmt: skip
    bundle = load_model_file(path)
    assert bundle.class_names == ["no", "yes"] and bundle.preprocessing.image_size == 24
    assert bundle.source == "centralized" and not bundle.model.training


def test_predict_with_a_run_id_on_the_platform(kaggle_dataset: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"home": str(home)}), encoding="utf-8")
    cfg = config_from_dict(
        {
            "home": str(home),
            "data": {**DATA, "path": str(kaggle_dataset)},
            "model": {"name": "cancer_cnn"},
        }
    )
    with RunStore(cfg.database_url) as store:
        run_id = store.create_run(
            "r", cfg.to_dict(), mode="simulation", strategy="FedAvg", num_rounds=2
        )
        store.set_class_names(run_id, ["normal", "tumour"])
        artifacts = ArtifactStore.for_config(cfg)
        torch.manual_seed(1)
        state = build_model("cancer_cnn", 1, 2).state_dict()
        for rnd in (1, 2):
            meta = {"run_id": run_id, "round": rnd, "config": cfg.to_dict()}
            path = artifacts.save_state_dict(
                f"{run_id}/round-{rnd:04d}", state, meta, run_id=run_id, round=rnd
            )
            store.record_checkpoint(run_id, rnd, str(path), metric_name="accuracy",
                                    metric_value=None, size_bytes=1)  # fmt: skip
    out = tmp_path / "p.csv"
    args = ["predict", run_id[:8], str(kaggle_dataset), "--config", str(config), "--out", str(out)]
    assert main([*args, "--round", "1"]) == 0
    rows = read_csv(out)
    assert len(rows) == 32 and "p_tumour" in rows[0]  # class names from the run
    assert main([*args, "--round", "7"]) == 2


def test_export_onnx_records_the_preprocessing_and_matches_pytorch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    from medfed.learning.export import read_metadata

    model_path = run_model_file(tmp_path / "m.pt", {**DATA, "class_names": ["no", "yes"]})
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_path), "--format", "onnx", "--out", str(out)]) == 0
    assert "ONNX Runtime matches PyTorch on 8 images" in capsys.readouterr().err
    meta = read_metadata(out)
    prep = json.loads(meta["medfed.preprocessing"])
    assert (prep["image_size"], prep["channels"], prep["mean"], prep["std"]) == (16, 1, 0.4, 0.2)
    assert json.loads(meta["medfed.class_names"]) == ["no", "yes"]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(5, 1, 16, 16)).astype(np.float32)
    probs = session.run(None, {"image": x})[0]
    bundle = load_model_file(model_path)
    with torch.no_grad():
        expected = torch.softmax(bundle.model(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)  # batch size is free
