"""Upload size and speed of the update codec for one ResNet50-sized update.

Run: ``.venv/bin/python bench/compression.py``. The update is small gaussian deltas (sigma 1e-3)
shaped like torchvision's resnet50 state dict (~25.6 M entries, ~102 MB as fp32). The target is
at most 2 MB per hospital per round. Top-k keeps the largest entries of the whole update (the
default), except in the "per tensor" row.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torchvision.models import resnet50

from medfed.federation.codec import (
    CodecSpec,
    decode_update,
    decode_weights,
    encode_update,
    encode_weights,
)

TARGET_MB = 2.0
MB = 1e6


def resnet50_update(sigma: float, seed: int) -> list[np.ndarray]:
    """Gaussian deltas with the shapes and dtypes of resnet50's state dict."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    update = []
    for tensor in resnet50(weights=None).state_dict().values():
        if tensor.is_floating_point():
            update.append(rng.normal(0.0, sigma, tuple(tensor.shape)).astype(np.float32))
        else:
            update.append(np.full(tuple(tensor.shape), 10, dtype=np.int64))
    return update


def settings() -> list[tuple[str, CodecSpec]]:
    base = [
        ("none", CodecSpec()),
        ("8-bit", CodecSpec(quant_bits=8)),
        ("4-bit", CodecSpec(quant_bits=4)),
        ("top-k 10%", CodecSpec(topk=0.1)),
        ("top-k 1%", CodecSpec(topk=0.01)),
        ("top-k 0.1%", CodecSpec(topk=0.001)),
        ("top-k 1% + 8-bit", CodecSpec(topk=0.01, quant_bits=8)),
        ("top-k 1% + 8-bit, per tensor", CodecSpec(topk=0.01, quant_bits=8, topk_scope="tensor")),
        ("top-k 1% + 4-bit", CodecSpec(topk=0.01, quant_bits=4)),
    ]
    out = []
    for name, spec in base:
        out.append((name, spec))
        lossless = dataclasses.replace(spec, lossless=True)
        out.append(("lossless only" if name == "none" else f"{name} + zlib", lossless))
    return out


def relative_error(update: list[np.ndarray], decoded: list[np.ndarray]) -> float:
    """||decoded - update|| / ||update|| over the float tensors (integers pass exactly)."""
    pairs = [
        (u.astype(np.float64), d)
        for u, d in zip(update, decoded, strict=True)
        if u.dtype == np.float32
    ]
    num = sum(float(np.sum((u - d) ** 2)) for u, d in pairs)
    den = sum(float(np.sum(u**2)) for u, _ in pairs)
    return (num / den) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sigma", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    console = Console(width=120)
    update = resnet50_update(args.sigma, args.seed)
    raw_bytes = sum(a.nbytes for a in update)
    entries = sum(a.size for a in update)
    console.print(
        f"resnet50 update: {len(update)} tensors, {entries / 1e6:.2f} M entries, "
        f"{raw_bytes / MB:.1f} MB raw"
    )

    table = Table(title="Uplink: one hospital's update per round")
    for column in ("setting", "size (MB)", "ratio vs fp32", "encode (s)", "decode (s)"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    table.add_column("rel. L2 error", justify="right")
    table.add_column(f"<= {TARGET_MB:g} MB", justify="center")
    table.add_row("raw fp32 bytes (baseline)", f"{raw_bytes / MB:.2f}", "1.0", "-", "-", "0", "")

    rng = np.random.default_rng(args.seed)
    for name, spec in settings():
        start = time.perf_counter()
        payload, _ = encode_update(update, spec, rng=rng)
        encoded = time.perf_counter()
        decoded = decode_update(payload)
        decoded_at = time.perf_counter()
        size = len(payload)
        table.add_row(
            name,
            f"{size / MB:.2f}",
            f"{raw_bytes / size:.1f}",
            f"{encoded - start:.2f}",
            f"{decoded_at - encoded:.2f}",
            f"{relative_error(update, decoded):.3f}",
            "yes" if size <= TARGET_MB * MB else "no",
        )
    console.print(table)

    weights = [a * 100 for a in update]
    downlink = Table(title="Downlink: global weights broadcast")
    for column in ("precision", "size (MB)", "ratio vs fp32", "encode (s)", "decode (s)"):
        downlink.add_column(column, justify="left" if column == "precision" else "right")
    downlink.add_column("rel. L2 error", justify="right")
    for precision in ("fp32", "fp16", "int8"):
        start = time.perf_counter()
        payload = encode_weights(weights, precision)
        encoded = time.perf_counter()
        decoded = decode_weights(payload)
        decoded_at = time.perf_counter()
        downlink.add_row(
            precision,
            f"{len(payload) / MB:.2f}",
            f"{raw_bytes / len(payload):.1f}",
            f"{encoded - start:.2f}",
            f"{decoded_at - encoded:.2f}",
            f"{relative_error(weights, decoded):.4f}",
        )
    console.print(downlink)


if __name__ == "__main__":
    main()
