"""A model file exported to ONNX, with its preprocessing and classes in the ONNX metadata, and
checked against the PyTorch model's output (onnx and onnxruntime: the ``onnx`` extra)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfed.data.transforms import BatchTransform
from medfed.errors import ConfigError, ModelError
from medfed.models.bundle import ModelBundle

OPSET = 17
CHECK_IMAGES = 8
TOLERANCE = 1e-4  # largest difference allowed between PyTorch and ONNX Runtime probabilities


@dataclass(frozen=True)
class ExportResult:
    path: Path
    checked_images: int
    max_difference: float


def require_onnx() -> None:
    """A ConfigError saying how to install the extra when onnx or onnxruntime is missing."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"ONNX export needs {' and '.join(missing)}: install the extra with "
            "`pip install 'medfed[onnx]'` (make setup installs it)"
        )


def metadata(bundle: ModelBundle) -> dict[str, str]:
    """What a user of the ONNX file needs to prepare its input, as ONNX metadata strings."""
    prep = bundle.preprocessing
    return {
        "medfed.model": bundle.model_name,
        "medfed.source": bundle.source,
        "medfed.class_names": json.dumps(bundle.class_names),
        "medfed.preprocessing": json.dumps(
            {
                **prep.to_dict(),
                "input": "uint8 image resized to image_size x image_size (bilinear), "
                "grey (channels 1) or RGB (channels 3), as float32 (x / 255 - mean) / std, NCHW",
                "output": "class probabilities (softmax), one column per class",
            }
        ),
    }


class _WithSoftmax(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def export_onnx(
    bundle: ModelBundle, out: Path, images: np.ndarray | None = None, seed: int = 0
) -> ExportResult:
    """Write ``bundle`` to ``out`` as ONNX (batch size free, probabilities out) and compare
    ONNX Runtime's output with PyTorch's on ``images`` (uint8 N, C, H, W; default: a few
    seeded random images); a ModelError when they differ."""
    require_onnx()
    import onnx
    import onnxruntime

    prep = bundle.preprocessing
    shape = (prep.channels, prep.image_size, prep.image_size)
    if images is None:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(CHECK_IMAGES, *shape), dtype=np.uint8)
    x = BatchTransform(prep.mean, prep.std)(torch.from_numpy(np.asarray(images)))
    wrapped = _WithSoftmax(bundle.model).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        wrapped,
        (x[:1],),
        str(out),
        input_names=["image"],
        output_names=["probabilities"],
        dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    model = onnx.load(str(out))
    for key, value in metadata(bundle).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {"image": x.numpy()})[0]
    with torch.inference_mode():
        torch_probs = wrapped(x).numpy()
    difference = float(np.abs(onnx_probs - torch_probs).max())
    if not difference <= TOLERANCE:
        out.unlink(missing_ok=True)
        raise ModelError(
            f"the ONNX export of {bundle.model_name} differs from the PyTorch model by "
            f"{difference:.2g} (allowed {TOLERANCE:g}); it was not kept"
        )
    return ExportResult(out, len(x), difference)


def read_metadata(path: Path) -> dict[str, str]:
    """The ``medfed.*`` metadata of an exported ONNX file."""
    require_onnx()
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props if p.key.startswith("medfed.")}
