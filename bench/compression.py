"""Traffic of the update codec for a ResNet50-sized model, each way and both ways together.

Run: ``.venv/bin/python bench/compression.py``. An update is small gaussian deltas (sigma 1e-3)
shaped like torchvision's resnet50 state dict (~25.6 M entries, ~102 MB as fp32). Top-k keeps the
largest entries of the whole update (the default), except in the "per tensor" row.

The last table counts both directions: ``--hospitals`` hospitals (4) send such updates with
error feedback, the server averages them (FedAvg) and each hospital receives the new global model
through medfed's downlink (:class:`~medfed.federation.downlink.DownlinkSender`): a full copy when
it joins, then, when the setting says so, the change since its copy. Independent random updates
keep little in common, so the global model changes in up to ``hospitals`` x 1% of its entries a
round: harder on the downlink than real training, whose updates share their largest entries.
The target is at most 2 MB per hospital per round, both directions together, after the join.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torchvision.models import resnet50

from medfed.config import CompressionConfig
from medfed.federation.codec import (
    CodecSpec,
    decode_update,
    decode_weights,
    encode_update,
    encode_weights,
)
from medfed.federation.downlink import DownlinkSender, apply_delta

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
        out.append(("lossless only" if name == "none" else f"{name} + zstd", lossless))
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


UPLOAD = {"compression.topk": 0.01, "compression.quant_bits": 8}


def both_ways_settings() -> list[tuple[str, dict[str, object]]]:
    """Settings of the both-ways table, as ``compression.*`` keys."""
    down = {"compression.downlink_quant_bits": 8}
    return [
        ("uncompressed (fp32 both ways)", {}),
        ("uploads top-k 1% + 8-bit, full int8 copies", {**UPLOAD, "compression.downlink": "int8"}),
        ("top-k 1% up, 1% down, 8-bit", {**UPLOAD, **down, "compression.downlink_topk": 0.01}),
        ("top-k 1% up, 2% down, 8-bit", {**UPLOAD, **down, "compression.downlink_topk": 0.02}),
        (
            "top-k 1% up, 2% down, 8-bit + zstd (recommended)",
            {**UPLOAD, **down, "compression.downlink_topk": 0.02, "compression.lossless": True},
        ),
        (
            "top-k 1% up, 3% down 4-bit + zstd",
            {
                **UPLOAD,
                "compression.downlink_topk": 0.03,
                "compression.downlink_quant_bits": 4,
                "compression.lossless": True,
            },
        ),
    ]


@dataclass
class Traffic:
    """One setting's bytes per hospital: the first round (a full copy down), then each later
    round, and how far the hospitals' copy trails the global model."""

    join_down: int
    up: list[int]
    down: list[int]
    behind: float  # ||global - copy|| in units of the last round's change of the global model


def both_ways(
    base: list[np.ndarray], settings: dict[str, object], args: argparse.Namespace
) -> Traffic:
    """``args.rounds`` rounds of FedAvg with ``args.hospitals`` hospitals under ``settings``."""
    cfg = CompressionConfig(**{k.split(".", 1)[1]: v for k, v in settings.items()})
    uplink = CodecSpec.from_config(cfg)
    sender = DownlinkSender(cfg)
    rng = np.random.default_rng(args.seed)
    hospitals = range(args.hospitals)
    global_model = [a.copy() for a in base]
    copies: dict[int, list[np.ndarray]] = {}
    residuals: dict[int, list[np.ndarray] | None] = dict.fromkeys(hospitals)
    up: list[int] = []
    down: list[int] = []
    join_down = 0
    change: list[np.ndarray] = []
    for server_round in range(1, args.rounds + 2):
        arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in global_model]
        made: dict = {}
        for h in hospitals:  # the downlink: what each hospital receives and rebuilds
            packed = sender.encode_for(h, arrays, server_round, made)
            decoded = decode_update(packed.payload)
            copies[h] = decoded if packed.full else apply_delta(copies[h], decoded)
            if server_round == 1:
                join_down = len(packed.payload)
            else:
                down.append(len(packed.payload))
        sender.confirm(list(hospitals))  # every hospital replied
        if server_round == args.rounds + 1:
            break
        deltas = []
        for h in hospitals:  # the uplink, with each hospital's error feedback
            update = resnet50_like(base, args.sigma, rng)
            payload, residuals[h] = encode_update(update, uplink, residual=residuals[h], rng=rng)
            up.append(len(payload))
            deltas.append(decode_update(payload))
        change = [sum(d[i] for d in deltas) / len(deltas) for i in range(len(base))]
        global_model = [g + c for g, c in zip(global_model, change, strict=True)]
    weights = [i for i, a in enumerate(base) if a.dtype.kind == "f"]  # not the batch counters
    last = np.sqrt(sum(float(np.sum(np.square(change[i], dtype=np.float64))) for i in weights))
    gap = np.sqrt(
        sum(
            float(np.sum(np.square(global_model[i] - copies[0][i], dtype=np.float64)))
            for i in weights
        )
    )
    return Traffic(join_down, up, down, float(gap / last))


def resnet50_like(
    base: list[np.ndarray], sigma: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """One hospital's update: gaussian deltas for float tensors, +10 for batch counters."""
    return [
        rng.normal(0.0, sigma, a.shape).astype(np.float32)
        if a.dtype.kind == "f"
        else np.full(a.shape, 10, a.dtype)
        for a in base
    ]


def both_ways_table(args: argparse.Namespace) -> Table:
    torch.manual_seed(args.seed)
    base = [t.numpy().copy() for t in resnet50(weights=None).state_dict().values()]
    table = Table(
        title=f"Both ways: per hospital, {args.hospitals} hospitals, FedAvg, "
        f"rounds 2-{args.rounds + 1} after a first full copy"
    )
    for column in (
        "setting",
        "join: down (MB)",
        "up (MB)",
        "down (MB)",
        "total / round (MB)",
        f"<= {TARGET_MB:g} MB",
        "copy behind (rounds)",
    ):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for name, settings in both_ways_settings():
        traffic = both_ways(base, settings, args)
        up, down = np.mean(traffic.up) / MB, np.mean(traffic.down) / MB
        table.add_row(
            name,
            f"{traffic.join_down / MB:.2f}",
            f"{up:.2f}",
            f"{down:.2f}",
            f"{up + down:.2f}",
            "yes" if up + down <= TARGET_MB else "no",
            f"{traffic.behind:.2f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sigma", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hospitals", type=int, default=4, help="both-ways table")
    parser.add_argument("--rounds", type=int, default=5, help="both-ways table, after the join")
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
    console.print(both_ways_table(args))


if __name__ == "__main__":
    main()
