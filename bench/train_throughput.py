"""Training speed of medfed's path against a bare PyTorch loop, and cold vs warm data loading.

Run: ``.venv/bin/python bench/train_throughput.py [--model resnet18] [--epochs 4] [--threads N]
[--device cpu|auto|cuda|mps] [--amp]``.

Both paths train the same model (same seed) with Adam at the same batch size on the same
images, one epoch each in turn (order alternating) so background load hits both alike:

- medfed: ``ArrayLoader`` over the uint8 cache + ``eval_transform`` (normalisation only, no
  augmentation) + ``trainer.train``;
- bare: a plain loop over the same images preloaded as normalised float32 tensors.

``--device`` (default cpu) runs both on that device: medfed's loader copies each uint8 batch
from pinned memory and normalises it there, the bare loop holds its tensors there already;
``--amp`` (CUDA) trains both under float16 autocast with gradient scaling.

Images per second are averaged over the epochs after the first (warm-up). Target: medfed at
least 0.95 of the bare loop. Images per CPU second of this process are shown too: with
``--threads 1`` they stay meaningful when other processes load the machine.

The cold/warm figures time ``load_image_set`` (decode into a fresh cache dir, then again from
the cache as a new process would) plus one augmented epoch (``train_transform``) through
medfed's path.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from medfed.config import DataConfig, TrainingConfig
from medfed.data.datasets import load_image_set
from medfed.data.loader import ArrayLoader
from medfed.data.synthetic import write_synthetic_dataset
from medfed.data.transforms import eval_transform, train_transform
from medfed.errors import ConfigError
from medfed.learning.device import autocast, resolve_device
from medfed.learning.trainer import make_optimizer, set_seed, train
from medfed.models import MODEL_NAMES, build_model

DEMO_DATA = Path("data/demo")
TARGET_RATIO = 0.95
SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=MODEL_NAMES)
    parser.add_argument("--data", type=Path, default=None, help="default: data/demo or synthetic")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="per path; the first is warm-up")
    parser.add_argument("--images", type=int, default=1024, help="training images used")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument("--device", default="cpu", choices=("cpu", "auto", "cuda", "mps"))
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    return parser.parse_args(argv)


def fresh_model(args: argparse.Namespace) -> torch.nn.Module:
    set_seed(SEED)
    return build_model(args.model, in_channels=1, num_classes=2).to(args.torch_device)


def dataset(args: argparse.Namespace, scratch: Path) -> tuple[Path, str]:
    if args.data is not None:
        return args.data, str(args.data)
    if DEMO_DATA.is_dir():
        return DEMO_DATA, f"{DEMO_DATA} (demo)"
    count = max(args.images // 2, 8)
    root = write_synthetic_dataset(scratch / "synthetic", n_per_class=count, size=args.image_size)
    return root, f"synthetic, {2 * count} TIFFs"


def first_epoch(
    path: Path, cfg: DataConfig, cache: Path, args: argparse.Namespace
) -> tuple[float, float, int]:
    """Seconds to load the set (decode or cache) and to train one augmented epoch on it."""
    start = time.perf_counter()
    images = load_image_set(path, cfg, cache)
    rows = np.random.default_rng(SEED).permutation(len(images))[: args.images]
    loader = ArrayLoader(
        images.images,
        images.labels,
        indices=rows,
        batch_size=args.batch_size,
        shuffle=True,
        seed=SEED,
        transform=train_transform(cfg, SEED),
        device=args.torch_device,
    )
    loaded = time.perf_counter()
    model = fresh_model(args)
    train(model, loader, 1, make_optimizer(model, TrainingConfig()), amp=args.amp)
    synchronize(args.torch_device)
    return loaded - start, time.perf_counter() - loaded, len(images)


def bare_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """One epoch of the plain loop over preloaded tensors (where they are)."""
    model.train()
    order = torch.randperm(len(y_all), generator=generator).to(x_all.device)
    for begin in range(0, len(y_all), batch_size):
        rows = order[begin : begin + batch_size]
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            F.cross_entropy(model(x_all[rows]), y_all[rows]).backward()
            optimizer.step()
            continue
        with autocast(x_all.device, True):
            loss = F.cross_entropy(model(x_all[rows]), y_all[rows])
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Speed:
    """Images per wall-clock second and per CPU second of this process."""

    wall: float
    cpu: float


def timed(count: int, run: Callable[[], object], device: torch.device) -> Speed:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    synchronize(device)
    return Speed(count / (time.perf_counter() - wall), count / (time.process_time() - cpu))


def steady_state(
    path: Path, cfg: DataConfig, cache: Path, args: argparse.Namespace
) -> tuple[list[Speed], list[Speed]]:
    """Speed of each epoch, medfed's path and the bare loop, interleaved (order alternating)."""
    images = load_image_set(path, cfg, cache)
    rows = np.random.default_rng(SEED).permutation(len(images))[: args.images]
    normalise = eval_transform(cfg)
    loader = ArrayLoader(
        images.images,
        images.labels,
        indices=rows,
        batch_size=args.batch_size,
        shuffle=True,
        seed=SEED,
        transform=normalise,
        device=args.torch_device,
    )
    device = args.torch_device
    x_all = normalise(torch.from_numpy(np.ascontiguousarray(images.images[rows]))).to(device)
    y_all = torch.from_numpy(np.asarray(images.labels, dtype=np.int64)[rows]).to(device)
    medfed_model, bare_model = fresh_model(args), fresh_model(args)
    medfed_opt = make_optimizer(medfed_model, TrainingConfig())
    bare_opt = make_optimizer(bare_model, TrainingConfig())
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    generator = torch.Generator().manual_seed(SEED)
    count = len(rows)
    medfed_speed, bare_speed = [], []
    for epoch in range(args.epochs):
        runs = [
            (medfed_speed, lambda: train(medfed_model, loader, 1, medfed_opt, amp=args.amp)),
            (
                bare_speed,
                lambda: bare_epoch(
                    bare_model, bare_opt, x_all, y_all, args.batch_size, generator, scaler
                ),
            ),
        ]
        for speeds, run in runs if epoch % 2 == 0 else reversed(runs):
            speeds.append(timed(count, run, device))
    return medfed_speed, bare_speed


def report(args, source, cold, warm, medfed_speed, bare_speed) -> None:
    console = Console()
    console.print(
        f"[bold]{args.model}[/], {args.image_size} px, batch {args.batch_size}, "
        f"{min(args.images, cold[2])} of {cold[2]} images from {source}, "
        f"{torch.get_num_threads()} torch threads, device {args.torch_device}"
        + (", amp" if args.amp and args.torch_device.type == "cuda" else "")
    )
    table = Table(title="training throughput, no augmentation on either path")
    for header in ("epoch", "medfed img/s", "bare img/s", "ratio", "ratio per CPU s"):
        table.add_column(header, justify="right")
    for epoch, (ours, bare) in enumerate(zip(medfed_speed, bare_speed, strict=True), start=1):
        table.add_row(
            f"{epoch} (warm-up)" if epoch == 1 else str(epoch),
            f"{ours.wall:.1f}",
            f"{bare.wall:.1f}",
            f"{ours.wall / bare.wall:.3f}",
            f"{ours.cpu / bare.cpu:.3f}",
        )
    console.print(table)
    ours = np.mean([s.wall for s in medfed_speed[1:]])
    bare = np.mean([s.wall for s in bare_speed[1:]])
    ours_cpu = np.mean([s.cpu for s in medfed_speed[1:]])
    bare_cpu = np.mean([s.cpu for s in bare_speed[1:]])
    verdict = "[green]meets[/]" if ours / bare >= TARGET_RATIO else "[red]misses[/]"
    console.print(
        f"after warm-up: medfed {ours:.1f} img/s, bare {bare:.1f} img/s, ratio {ours / bare:.3f} "
        f"({verdict} the {TARGET_RATIO} target)"
    )
    console.print(
        f"per CPU second: medfed {ours_cpu:.1f} img, bare {bare_cpu:.1f} img, "
        f"ratio {ours_cpu / bare_cpu:.3f}"
    )
    console.print(
        f"cold cache: load+decode {cold[0]:.2f} s + first augmented epoch {cold[1]:.2f} s "
        f"= {cold[0] + cold[1]:.2f} s"
    )
    console.print(
        f"warm cache: load {warm[0]:.2f} s + first augmented epoch {warm[1]:.2f} s "
        f"= {warm[0] + warm[1]:.2f} s"
    )
    if os.getloadavg()[0] > os.cpu_count():
        console.print(
            f"[yellow]load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: other "
            "processes compete, so wall-clock figures are noisy; trust the per-CPU ratio "
            "(with --threads 1)[/]"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch is warm-up")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        args.torch_device = resolve_device(args.device)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="medfed-bench-") as scratch:
        path, source = dataset(args, Path(scratch))
        cfg = DataConfig(path=path, image_size=args.image_size, channels=1)
        cache = Path(scratch) / "cache"
        cold = first_epoch(path, cfg, cache, args)
        warm = first_epoch(path, cfg, cache, args)
        medfed_speed, bare_speed = steady_state(path, cfg, cache, args)
    report(args, source, cold, warm, medfed_speed, bare_speed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
