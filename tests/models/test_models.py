"""Model registry: every model builds offline, runs on 1 and 3 channels, loads local weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from medfed.config import MODEL_NAMES as CONFIG_MODEL_NAMES
from medfed.errors import ModelError
from medfed.models import (
    MODEL_NAMES,
    bn_state_keys,
    build_model,
    load_checkpoint,
    save_checkpoint,
)

torch.set_num_threads(1)


def test_registry_offers_the_models_the_config_allows():
    assert set(MODEL_NAMES) == set(CONFIG_MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_gives_one_logit_per_class(name, channels):
    model = build_model(name, channels, num_classes=3).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, channels, 48, 48))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


def test_cancer_cnn_accepts_any_input_size():
    model = build_model("cancer_cnn", 1, 2).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2)
        assert model(torch.randn(1, 1, 96, 80)).shape == (1, 2)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_group_norm_has_no_batch_norm(name):
    model = build_model(name, 1, 2, norm="group")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert bn_state_keys(model) == set()
    for gn in (m for m in model.modules() if isinstance(m, nn.GroupNorm)):
        assert gn.num_channels % gn.num_groups == 0
        assert gn.num_groups <= 32


def test_bn_state_keys_are_exactly_the_batch_norm_entries():
    model = build_model("resnet18", 1, 2)
    keys = bn_state_keys(model)
    state = model.state_dict()
    assert keys <= state.keys()
    assert "bn1.running_mean" in keys and "layer1.0.bn2.weight" in keys
    assert "conv1.weight" not in keys and "fc.weight" not in keys
    assert {k for k in state if "bn" in k or "downsample.1" in k} == keys


def test_unknown_model_and_norm_are_model_errors():
    with pytest.raises(ModelError, match="resnet18"):
        build_model("vgg", 1, 2)
    with pytest.raises(ModelError, match="group"):
        build_model("resnet18", 1, 2, norm="layer")


def test_pretrained_same_architecture_round_trips(tmp_path: Path):
    source = build_model("cancer_cnn", 1, 2)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    loaded = build_model("cancer_cnn", 1, 2, pretrained_path=path)
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_imagenet_checkpoint_adapts_stem_and_skips_head(tmp_path: Path, caplog):
    imagenet = torchvision.models.resnet18(weights=None)  # 3 channels, 1000 classes
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    with caplog.at_level("INFO", logger="medfed.models"):
        model = build_model("resnet18", 1, 2, pretrained_path=path)
    assert torch.allclose(model.conv1.weight, imagenet.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)
    assert torch.equal(model.bn1.running_var, imagenet.bn1.running_var)
    assert model.fc.weight.shape == (2, 512)
    assert "fc.weight" in caplog.text and "conv1.weight" in caplog.text


def test_grey_stem_gives_same_response_as_rgb_on_grey_image(tmp_path: Path):
    rgb = build_model("resnet18", 3, 2).eval()
    path = tmp_path / "rgb.pt"
    torch.save(rgb.state_dict(), path)
    grey = build_model("resnet18", 1, 2, pretrained_path=path).eval()
    image = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(grey(image), rgb(image.repeat(1, 3, 1, 1)), atol=1e-4)


def test_batch_norm_checkpoint_loads_into_group_norm_model(tmp_path: Path):
    path = tmp_path / "bn.pt"
    source = build_model("resnet18", 1, 2, norm="batch")
    torch.save(source.state_dict(), path)
    model = build_model("resnet18", 1, 2, norm="group", pretrained_path=path)
    assert torch.equal(model.layer2[0].bn1.weight, source.layer2[0].bn1.weight)


def test_missing_pretrained_file_names_the_file(tmp_path: Path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(ModelError, match=r"nowhere\.pt.*not found"):
        build_model("resnet18", 1, 2, pretrained_path=missing)


def test_mismatched_weights_are_a_model_error(tmp_path: Path):
    path = tmp_path / "resnet50.pt"
    torch.save(build_model("resnet50", 1, 2).state_dict(), path)
    with pytest.raises(ModelError, match=r"resnet50\.pt: weights do not fit.*model\.name"):
        build_model("resnet18", 1, 2, pretrained_path=path)


def test_file_that_is_not_a_state_dict_is_a_model_error(tmp_path: Path):
    garbage = tmp_path / "notes.pt"
    garbage.write_text("not a tensor file")
    with pytest.raises(ModelError, match=r"notes\.pt"):
        build_model("cancer_cnn", 1, 2, pretrained_path=garbage)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ModelError, match=r"list\.pt: holds no state dict"):
        build_model("cancer_cnn", 1, 2, pretrained_path=listing)


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path: Path):
    model = build_model("cancer_cnn", 3, 4, norm="group")
    path = save_checkpoint(
        tmp_path / "m" / "model.pt",
        model,
        model_name="cancer_cnn",
        norm="group",
        in_channels=3,
        class_names=["a", "b", "c", "d"],
        extra={"image_size": 64},
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.class_names == ["a", "b", "c", "d"]
    assert checkpoint.extra == {"image_size": 64}
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    checkpoint.model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x), checkpoint.model(x))
    # a medfed checkpoint also serves as pretrained weights
    warm = build_model("cancer_cnn", 3, 4, norm="group", pretrained_path=path)
    assert torch.equal(warm.classifier[1].weight, model.classifier[1].weight)


def test_bare_state_dict_is_not_a_checkpoint(tmp_path: Path):
    path = tmp_path / "bare.pt"
    torch.save(build_model("cancer_cnn", 1, 2).state_dict(), path)
    with pytest.raises(ModelError, match="pretrained_path"):
        load_checkpoint(path)
