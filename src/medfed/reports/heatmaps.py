"""Test images and their Grad-CAM heat maps as small PNGs (base64) for the report and the
dashboard."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib import colormaps
from PIL import Image

SHOWN_PIXELS = 160  # images are enlarged to this width so a 64 or 96 px patch can be seen
HEAT_ALPHA = 0.5
COLOURMAP = "jet"


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W), C 1 or 3, as uint8 (H, W, 3)."""
    pixels = np.asarray(image, dtype=np.uint8).transpose(1, 2, 0)
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """The heat map (H, W in 0..1) coloured and blended over the image (C, H, W uint8); the
    blend is weighted by the heat, so cold regions show the image as it is."""
    rgb = as_rgb(image).astype(np.float32)
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    coloured = colormaps[COLOURMAP](heat)[..., :3].astype(np.float32) * 255.0
    weight = (alpha * heat)[..., None]
    return np.clip(rgb * (1 - weight) + coloured * weight, 0, 255).astype(np.uint8)


def png_base64(pixels: np.ndarray, width: int = SHOWN_PIXELS) -> str:
    """An (H, W, 3) uint8 image enlarged to ``width`` pixels, as base64 PNG."""
    picture = Image.fromarray(pixels)
    height = max(1, round(width * picture.height / picture.width))
    picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def png_pixels(encoded: str) -> np.ndarray:
    """The pixels of a base64 PNG (for the PDF report)."""
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as picture:
        return np.asarray(picture.convert("RGB"))
