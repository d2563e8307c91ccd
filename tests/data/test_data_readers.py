"""Reading both dataset layouts and rejecting every kind of bad input with a clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medfed.data.images import HAS_PYDICOM, load_image, load_resized, probe_image
from medfed.data.readers import scan_dataset
from medfed.data.synthetic import synthetic_image, write_synthetic_dataset
from medfed.errors import DataError


def _csv(root: Path) -> Path:
    return root / "train_labels.csv"


def _lines(root: Path) -> list[str]:
    return _csv(root).read_text(encoding="utf-8").splitlines()


def _write_lines(root: Path, lines: list[str]) -> None:
    _csv(root).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- layouts and formats -------------------------------------------------------------------


def test_kaggle_layout(kaggle_dataset: Path) -> None:
    manifest = scan_dataset(kaggle_dataset)
    assert manifest.layout == "kaggle"
    assert manifest.class_names == ["0", "1"]
    assert len(manifest) == 32
    assert manifest.labels.dtype == np.int64
    assert manifest.class_counts().tolist() == [16, 16]
    first = manifest.samples[0]
    assert first.line == 2 and first.path == kaggle_dataset / "train" / f"{first.id}.tif"
    rows = dict(line.split(",") for line in _lines(kaggle_dataset)[1:])
    assert all(int(rows[s.id]) == s.label for s in manifest.samples)
    assert manifest.infos[0].width == 32 and manifest.infos[0].bit_depth == 8


def test_folder_layout_ignores_held_out_test(folder_dataset: Path) -> None:
    manifest = scan_dataset(folder_dataset)
    assert manifest.layout == "folders"
    assert manifest.class_names == ["class_0", "class_1"]
    assert len(manifest) == 32
    assert all(s.id.startswith(manifest.class_names[s.label] + "/") for s in manifest.samples)
    assert len(scan_dataset(folder_dataset / "test")) == 12


@pytest.mark.parametrize("layout", ["kaggle", "folders"])
@pytest.mark.parametrize(("channels", "dtype"), [(1, "uint16"), (3, "uint8"), (3, "uint16")])
def test_grey_rgb_8_and_16_bit(tmp_path: Path, layout: str, channels: int, dtype: str) -> None:
    root = write_synthetic_dataset(
        tmp_path, layout=layout, n_per_class=3, channels=channels, dtype=dtype
    )
    manifest = scan_dataset(root, layout=layout)
    assert len(manifest) == 6
    info = manifest.infos[0]
    assert (info.channels, info.bit_depth) == (channels, 16 if dtype == "uint16" else 8)
    image = load_image(manifest.samples[0].path)
    assert image.dtype == np.uint8 and image.shape == (32, 32, channels)
    assert image.max() > 150  # 16-bit data uses the whole 8-bit range, not just a sliver of it


def test_sixteen_bit_maps_full_range_linearly(tmp_path: Path) -> None:
    """v / 257, not a per-image stretch: a dim 16-bit image stays dim."""
    values = np.full((8, 8), 514, dtype=np.uint16)
    values[0, :3] = [257, 32896, 1000]
    tifffile.imwrite(tmp_path / "a.tif", values)
    Image.fromarray(values).save(tmp_path / "a.png")
    for name in ("a.tif", "a.png"):
        assert load_image(tmp_path / name)[0, :4, 0].tolist() == [1, 128, 4, 2]
        assert load_resized(tmp_path / name, 4, 1)[0, 3, 3] == 2


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg"])
def test_png_and_jpeg_in_class_folders(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    for label, name in enumerate(["benign", "malignant"]):
        (tmp_path / name).mkdir()
        for index in range(3):
            pixels = synthetic_image(label, 2, 40, 3 if index else 1, "uint8", rng)
            Image.fromarray(pixels).save(tmp_path / name / f"{index}{suffix}")
    manifest = scan_dataset(tmp_path)
    assert manifest.class_names == ["benign", "malignant"]
    assert manifest.class_counts().tolist() == [3, 3]
    assert {info.channels for info in manifest.infos} == {1, 3}
    grey = load_resized(manifest.samples[1].path, 16, 1)
    rgb = load_resized(manifest.samples[0].path, 16, 3)
    assert grey.shape == (1, 16, 16) and rgb.shape == (3, 16, 16)


@pytest.mark.skipif(not HAS_PYDICOM, reason="pydicom not installed")
def test_dicom_in_class_folders(tmp_path: Path) -> None:
    from pydicom import examples

    for name, example in (("ct", "ct"), ("mr", "mr")):
        (tmp_path / name).mkdir()
        shutil.copy(examples.get_path(example), tmp_path / name / "slice.dcm")
    manifest = scan_dataset(tmp_path)
    assert manifest.class_names == ["ct", "mr"]
    assert manifest.infos[0].format == "DICOM" and manifest.infos[0].bit_depth == 16
    image = load_image(manifest.samples[0].path)
    assert image.shape == (128, 128, 1) and image.min() == 0 and image.max() == 255


def test_labels_as_names_and_classes_file(kaggle_dataset: Path) -> None:
    lines = _lines(kaggle_dataset)
    names = {"0": "normal", "1": "tumour"}
    _write_lines(
        kaggle_dataset, [lines[0]] + [f"{r.split(',')[0]},{names[r[-1]]}" for r in lines[1:]]
    )
    assert scan_dataset(kaggle_dataset).class_names == ["normal", "tumour"]
    (kaggle_dataset / "classes.txt").write_text("tumour\nnormal\n")
    manifest = scan_dataset(kaggle_dataset)
    assert manifest.class_names == ["tumour", "normal"]
    by_id = dict(line.split(",") for line in _lines(kaggle_dataset)[1:])
    assert all(manifest.class_names[s.label] == by_id[s.id] for s in manifest.samples)


def test_missing_root_and_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        scan_dataset(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no dataset found"):
        scan_dataset(tmp_path)


# --- each kind of bad input ----------------------------------------------------------------


def test_missing_image_names_csv_line(kaggle_dataset: Path) -> None:
    (kaggle_dataset / "train" / "img00003.tif").unlink()
    with pytest.raises(DataError) as info:
        scan_dataset(kaggle_dataset)
    message = str(info.value)
    assert "1 CSV rows with no image file" in message
    assert "train_labels.csv line 5" in message and "img00003" in message
    assert "--skip-bad" in message


def test_image_without_row(kaggle_dataset: Path) -> None:
    shutil.copy(kaggle_dataset / "train" / "img00000.tif", kaggle_dataset / "train" / "stray.tif")
    with pytest.raises(DataError, match=r"1 images with no CSV row.*train/stray\.tif has no row"):
        scan_dataset(kaggle_dataset)


def test_loose_image_in_folder_layout(folder_dataset: Path) -> None:
    shutil.copy(folder_dataset / "class_0" / "img00000.tif", folder_dataset / "loose.tif")
    with pytest.raises(DataError, match="loose.tif is not in a class folder"):
        scan_dataset(folder_dataset)


def test_unreadable_and_truncated_images(kaggle_dataset: Path) -> None:
    (kaggle_dataset / "train" / "img00001.tif").write_bytes(b"this is not an image")
    path = kaggle_dataset / "train" / "img00002.tif"
    path.write_bytes(path.read_bytes()[:400])
    (kaggle_dataset / "train" / "img00004.tif").write_bytes(b"")
    with pytest.raises(DataError) as info:
        scan_dataset(kaggle_dataset)
    message = str(info.value)
    assert "3 unreadable or truncated images" in message
    assert "img00001.tif" in message and "line 3" in message
    assert "img00002.tif: truncated TIFF" in message
    assert "img00004.tif" in message


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_png_and_jpeg(folder_dataset: Path, suffix: str) -> None:
    pixels = tifffile.imread(folder_dataset / "class_0" / "img00000.tif")
    target = folder_dataset / "class_0" / f"cut{suffix}"
    Image.fromarray(pixels).save(target)
    target.write_bytes(target.read_bytes()[:-30])
    with pytest.raises(DataError, match=rf"cut{suffix}: truncated"):
        probe_image(target)
    with pytest.raises(DataError, match="1 unreadable or truncated"):
        scan_dataset(folder_dataset)


def test_label_outside_declared_classes(kaggle_dataset: Path) -> None:
    lines = _lines(kaggle_dataset)
    lines[6] = lines[6].split(",")[0] + ",7"
    lines[9] = lines[9].split(",")[0] + ",-1"
    _write_lines(kaggle_dataset, lines)
    (kaggle_dataset / "classes.txt").write_text("normal\ntumour\n")
    with pytest.raises(DataError, match=r"2 labels outside.*line 7: label '7'.*line 10"):
        scan_dataset(kaggle_dataset)
    with pytest.raises(DataError, match="line 7: label '7'"):
        scan_dataset(kaggle_dataset, class_names=["a", "b"])


def test_negative_label_without_declared_classes(kaggle_dataset: Path) -> None:
    lines = _lines(kaggle_dataset)
    lines[3] = lines[3].split(",")[0] + ",-1"
    _write_lines(kaggle_dataset, lines)
    with pytest.raises(DataError, match="line 4: label '-1'"):
        scan_dataset(kaggle_dataset)


def test_unknown_class_folder(folder_dataset: Path) -> None:
    with pytest.raises(DataError, match=r"16 labels outside.*folder 'class_1' is not one of"):
        scan_dataset(folder_dataset, class_names=["class_0", "other"])


def test_duplicate_id(kaggle_dataset: Path) -> None:
    lines = _lines(kaggle_dataset)
    _write_lines(kaggle_dataset, [*lines, lines[1]])
    with pytest.raises(DataError, match="line 34: id 'img00000' already on line 2"):
        scan_dataset(kaggle_dataset)


def test_malformed_row(kaggle_dataset: Path) -> None:
    lines = _lines(kaggle_dataset)
    lines[2] = lines[2] + ",extra"
    _write_lines(kaggle_dataset, lines)
    with pytest.raises(DataError, match="1 malformed CSV rows: train_labels.csv line 3"):
        scan_dataset(kaggle_dataset)


@pytest.mark.parametrize("header", ["name,class", "img00099,0", ""])
def test_wrong_or_missing_header(kaggle_dataset: Path, header: str) -> None:
    lines = _lines(kaggle_dataset)
    _write_lines(kaggle_dataset, [header, *lines[1:]] if header else [])
    with pytest.raises(DataError, match=r"train_labels.csv line 1: the header must be 'id,label'"):
        scan_dataset(kaggle_dataset)


def test_missing_csv(kaggle_dataset: Path) -> None:
    _csv(kaggle_dataset).unlink()
    with pytest.raises(DataError, match=r"train_labels.csv not found"):
        scan_dataset(kaggle_dataset)


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    _write_lines(tmp_path, ["id,label"])
    with pytest.raises(DataError, match="the dataset is empty"):
        scan_dataset(tmp_path)
    folders = tmp_path / "folders"
    (folders / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="the dataset is empty"):
        scan_dataset(folders)


def test_single_class(kaggle_dataset: Path) -> None:
    lines = _lines(kaggle_dataset)
    _write_lines(kaggle_dataset, [lines[0]] + [r.split(",")[0] + ",0" for r in lines[1:]])
    with pytest.raises(DataError, match=r"only 1 class\(es\) with images \(0\)"):
        scan_dataset(kaggle_dataset)
    assert len(scan_dataset(kaggle_dataset, min_classes=1)) == 32


def test_message_counts_each_kind_and_names_first_offenders(kaggle_dataset: Path) -> None:
    for index in range(5):
        (kaggle_dataset / "train" / f"img0000{index}.tif").unlink()
    (kaggle_dataset / "train" / "img00009.tif").write_bytes(b"junk")
    with pytest.raises(DataError) as info:
        scan_dataset(kaggle_dataset)
    message = str(info.value)
    assert "6 problem(s)" in message
    assert "5 CSV rows with no image file" in message and "; ..." in message
    assert "line 2" in message and "line 4" in message and "line 6" not in message
    assert "1 unreadable or truncated images" in message and "img00009.tif" in message


# --- skip_bad ------------------------------------------------------------------------------


def test_skip_bad_leaves_bad_items_out(kaggle_dataset: Path) -> None:
    (kaggle_dataset / "train" / "img00003.tif").unlink()
    (kaggle_dataset / "train" / "img00005.tif").write_bytes(b"junk")
    shutil.copy(kaggle_dataset / "train" / "img00000.tif", kaggle_dataset / "train" / "stray.tif")
    manifest = scan_dataset(kaggle_dataset, skip_bad=True)
    assert len(manifest) == 30
    assert {s.id for s in manifest.samples}.isdisjoint({"img00003", "img00005", "stray"})
    kinds = sorted(p.kind for p in manifest.skipped)
    assert kinds == ["missing_image", "unlisted_image", "unreadable"]
    assert len(manifest.infos) == len(manifest)


def test_skip_bad_still_fails_when_nothing_usable(kaggle_dataset: Path) -> None:
    for path in (kaggle_dataset / "train").glob("*.tif"):
        path.unlink()
    with pytest.raises(DataError, match=r"(?s)no usable images remain.*32 CSV rows with no image"):
        scan_dataset(kaggle_dataset, skip_bad=True)


def test_skip_bad_still_fails_with_one_class_left(kaggle_dataset: Path) -> None:
    lines = _lines(kaggle_dataset)
    for line in lines[1:]:
        sample_id, label = line.split(",")
        if label == "1":
            (kaggle_dataset / "train" / f"{sample_id}.tif").write_bytes(b"junk")
    with pytest.raises(DataError, match="only 1 class"):
        scan_dataset(kaggle_dataset, skip_bad=True)


def test_check_images_false_skips_header_reads(kaggle_dataset: Path) -> None:
    (kaggle_dataset / "train" / "img00001.tif").write_bytes(b"junk")
    manifest = scan_dataset(kaggle_dataset, check_images=False)
    assert len(manifest) == 32 and manifest.infos == []


def test_train_test_folders_without_csv_point_to_the_right_path(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "train", layout="folders", n_per_class=2)
    with pytest.raises(DataError, match=r"train holds folders.*pass .*train as the dataset path"):
        scan_dataset(tmp_path)
    assert len(scan_dataset(tmp_path / "train")) == 4
