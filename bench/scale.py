"""medfed at PatchCamelyon size: data check, first decode into the cache, one federated round.

Run: ``nice -n 10 .venv/bin/python bench/scale.py [--images 220025] [--data DIR]``.

1. write: a synthetic Kaggle-layout set like the Kaggle histopathologic cancer detection set
   (``train_labels.csv`` + ``train/<40-hex id>.tif``, RGB 96x96 uint8, 59.5% / 40.5% labels)
   and a labelled ``test/`` of ``--test-images``; kept and reused when ``DIR`` holds it.
2. check: ``medfed data check DIR`` (every header read and checked): images per second.
3. decode: a new process decodes the set into an empty cache (header check, then the
   streaming decode into a memory-mapped file).
4. round: one simulated round of 4 hospitals with cancer_cnn, each training one local epoch
   over its quarter (``--steps N`` stops each hospital after N batches), with the central
   evaluation, the checkpoint and the explanations.

Every measured stage runs as its own process; its peak memory is the largest sum, sampled
every 0.1 s, of the resident sets of that process and all its descendants (Ray's workers
included), read from ``/proc``. Goals on 2 cores: the check under 2 minutes and 1 GB.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# This folder holds compression.py, which tifffile would import as Python's compression package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

PCAM_IMAGES = 220_025
POSITIVE_SHARE = 89_117 / 220_025  # the Kaggle set's share of tumour patches
CLASS_NAMES = ["normal", "tumour"]
SIZE = 96
CHUNK = 2_000
SAMPLE_S = 0.1
CHECK_GOAL_S = 120.0
CHECK_GOAL_BYTES = 2**30
PAGE = os.sysconf("SC_PAGE_SIZE")
console = Console()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=PCAM_IMAGES, help="training patches")
    parser.add_argument("--test-images", type=int, default=2_000, help="held-out patches")
    parser.add_argument("--data", type=Path, default=None, help="default: a folder in /tmp")
    parser.add_argument(
        "--stages", default="write,check,decode,round", help="comma-separated stages to run"
    )
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=-1, help="batches per hospital; -1: epoch")
    parser.add_argument("--home", type=Path, default=None, help="default: next to the data")
    parser.add_argument("--stage-child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ the dataset
def sample_id(index: int, split: str) -> str:
    """A 40-hex-digit id, as the Kaggle set names its patches."""
    return hashlib.sha1(f"{split}-{index}".encode()).hexdigest()


def patch(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 96x96 RGB patch: pink tissue noise, with dark purple nuclei clusters for tumour."""
    base = np.array([222, 170, 200], dtype=np.float32)
    image = base + rng.normal(0, 14, size=(SIZE, SIZE, 3)).astype(np.float32)
    count = 30 if label else 8
    yy, xx = np.ogrid[0:SIZE, 0:SIZE]
    for _ in range(count):
        cy, cx = rng.integers(0, SIZE, size=2)
        radius = rng.uniform(2.0, 4.5 if label else 3.0)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image[mask] = (90, 50, 140)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_chunk(task: tuple[Path, str, int, int, list[int]]) -> int:
    folder, split, start, seed, labels = task
    rng = np.random.default_rng(seed)
    for offset, label in enumerate(labels):
        name = sample_id(start + offset, split)
        tifffile.imwrite(folder / f"{name}.tif", patch(label, rng), photometric="rgb")
    return len(labels)


def write_split(root: Path, split: str, count: int, seed: int) -> None:
    """``root/train_labels.csv`` + ``root/train/`` with ``count`` patches, written by 2
    processes in chunks."""
    folder = root / "train"
    folder.mkdir(parents=True, exist_ok=True)
    labels = (np.random.default_rng(seed).random(count) < POSITIVE_SHARE).astype(int).tolist()
    tasks = [
        (folder, split, start, seed + start, labels[start : start + CHUNK])
        for start in range(0, count, CHUNK)
    ]
    from medfed.data.progress import progress_bar

    with ProcessPoolExecutor(2) as pool, progress_bar() as bar:
        task = bar.add_task(f"writing {count:,} {split} patches", total=count)
        for done in pool.map(_write_chunk, tasks):
            bar.advance(task, done)
    with open(root / "train_labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label"])
        writer.writerows((sample_id(i, split), label) for i, label in enumerate(labels))
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")


def write_dataset(root: Path, images: int, test_images: int) -> float:
    """Write the set unless ``root`` holds it already; seconds taken (0 when reused)."""
    marker = root / ".bench-scale.json"
    wanted = {"images": images, "test_images": test_images, "version": 1}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return 0.0
    start = time.perf_counter()
    write_split(root, "train", images, seed=1)
    if test_images:
        write_split(root / "test", "test", test_images, seed=2)
    marker.write_text(json.dumps(wanted))
    return time.perf_counter() - start


# --------------------------------------------------------------------------- measurement
@dataclass
class Measured:
    seconds: float
    peak_bytes: int
    processes: int
    output: str


def tree_rss(root: int) -> tuple[int, int]:
    """(sum of the resident sets of ``root`` and its descendants in bytes, their number)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in members]
        members.update(children)
        frontier.extend(children)
    total = 0
    for pid in members:
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
                total += int(handle.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total, len(members)


def measure(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``command``; wall time, peak resident memory of its process tree, its stdout."""
    peak = [0, 0]
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, env={**os.environ, **(env or {})})
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss, count = tree_rss(process.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], count)
                done.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if code != 0:
        raise SystemExit(f"{' '.join(command[:4])} … exited {code}:\n{text[-2000:]}")
    return Measured(seconds, peak[0], peak[1], text)


def medfed_command(*args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from medfed.cli import main; sys.exit(main())",
        *args,
    ]


def child(stage: str, args: argparse.Namespace) -> list[str]:
    command = [sys.executable, __file__, "--stage-child", stage, "--data", str(args.data)]
    command += ["--home", str(args.home), "--hospitals", str(args.hospitals)]
    return command + ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]


# ------------------------------------------------------------------- stages run as children
def data_config(args: argparse.Namespace):
    from medfed.config import DataConfig

    return DataConfig(
        path=args.data,
        image_size=SIZE,
        channels=3,
        class_names=CLASS_NAMES,
        normalize_mean=0.5,
        normalize_std=0.25,
        cache_dir=args.home / "cache",
    )


def decode_stage(args: argparse.Namespace) -> dict[str, float]:
    from medfed.data.cache import load_images
    from medfed.data.datasets import validated_manifest

    cfg = data_config(args)
    start = time.perf_counter()
    manifest = validated_manifest(args.data, cfg.cache_dir, class_names=CLASS_NAMES)
    scanned = time.perf_counter()
    images = load_images(manifest, SIZE, 3, cfg.cache_dir)
    decoded = time.perf_counter()
    test = validated_manifest(args.data / "test", cfg.cache_dir, class_names=CLASS_NAMES)
    load_images(test, SIZE, 3, cfg.cache_dir)
    return {
        "images": len(images),
        "scan_s": scanned - start,
        "decode_s": decoded - scanned,
        "test_s": time.perf_counter() - decoded,
        "memory_mapped": float(isinstance(images, np.memmap)),
    }


def round_stage(args: argparse.Namespace) -> dict[str, float]:
    import logging

    from medfed.config import load_config
    from medfed.federation.runner import absolute_paths

    sys.path.append(str(BENCH))
    from _common import simulate_run

    for name in ("flwr", "ray", "medfed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    overrides = {
        "home": str(args.home),
        "name": "scale",
        "data.path": str(args.data),
        "data.image_size": SIZE,
        "data.channels": 3,
        "data.class_names": CLASS_NAMES,
        "data.normalize_mean": 0.5,
        "data.normalize_std": 0.25,
        "data.cache_dir": str(args.home / "cache"),
        "model.name": "cancer_cnn",
        "training.batch_size": args.batch_size,
        "federated.num_clients": args.hospitals,
        "federated.min_train_clients": args.hospitals,
        "federated.min_available_clients": args.hospitals,
        "federated.rounds": 1,
        "federated.local_epochs": 1,
        "federated.local_steps": args.steps,
        "federated.round_timeout": 24 * 3600,
    }
    cfg = absolute_paths(load_config(None, overrides))
    start = time.perf_counter()
    store, run_id = simulate_run(cfg)
    seconds = time.perf_counter() - start
    (summary,) = store.rounds(run_id)
    trained = [c.num_examples for c in store.client_results(run_id, 1) if c.phase == "train"]
    if args.steps > 0:  # each hospital stopped after that many batches
        trained = [min(n, args.steps * args.batch_size) for n in trained]
    return {
        "run_s": seconds,
        "round_s": float(summary.duration_s),
        "accuracy": float(summary.metrics.get("accuracy", float("nan"))),
        "hospital_images": float(sum(trained)),
    }


# ----------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.data = (
        args.data or Path(tempfile.gettempdir()) / f"medfed-scale-{args.images}"
    ).absolute()
    args.home = (args.home or args.data.parent / f"{args.data.name}-home").absolute()
    if args.stage_child:
        stage = decode_stage if args.stage_child == "decode" else round_stage
        print("RESULT " + json.dumps(stage(args)))
        return
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    rows: list[tuple[str, str, str, str]] = []
    total = args.images + args.test_images
    if "write" in stages:
        seconds = write_dataset(args.data, args.images, args.test_images)
        note = "reused" if seconds == 0 else f"{total / seconds:,.0f} images/s"
        rows.append(("write the set", _time(seconds), "-", note))
    if "check" in stages:
        m = measure(medfed_command("data", "check", str(args.data)))
        verdict = (
            "goal met"
            if m.seconds < CHECK_GOAL_S and m.peak_bytes < CHECK_GOAL_BYTES
            else ("GOAL MISSED (2 min, 1 GB)")
        )
        rate = f"{total / m.seconds:,.0f} images/s, {verdict}"
        rows.append(("medfed data check", _time(m.seconds), _size(m.peak_bytes), rate))
    if "decode" in stages:
        import shutil

        shutil.rmtree(args.home / "cache", ignore_errors=True)
        m = measure(child("decode", args))
        result = _result(m)
        rate = total / (result["decode_s"] + result["test_s"])
        note = (
            f"header check {_time(result['scan_s'])}, decode {_time(result['decode_s'])} "
            f"({rate:,.0f} images/s), memory-mapped: {bool(result['memory_mapped'])}"
        )
        rows.append(("first decode into the cache", _time(m.seconds), _size(m.peak_bytes), note))
        cache_bytes = sum(p.stat().st_size for p in (args.home / "cache").glob("images-*.npy"))
        rows.append(("cache on disk", "-", "-", _size(cache_bytes)))
    if "round" in stages:
        m = measure(child("round", args), env={"RAY_DEDUP_LOGS": "0"})
        result = _result(m)
        images = result["hospital_images"]
        note = (
            f"{args.hospitals} hospitals, {images:,.0f} images trained "
            f"({images / result['round_s']:,.0f}/s), {m.processes} processes, "
            f"accuracy {result['accuracy']:.3f}"
        )
        rows.append(("one federated round", _time(result["round_s"]), _size(m.peak_bytes), note))
        rows.append(("  whole simulated run", _time(m.seconds), "-", "Ray start and stop included"))
    table = Table(title=f"medfed at {args.images:,} + {args.test_images:,} RGB {SIZE}x{SIZE} TIFFs")
    for column in ("stage", "time", "peak memory (all processes)", "figures"):
        table.add_column(column, justify="right" if column in ("time",) else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"data: {args.data}  home: {args.home}", soft_wrap=True)


def _result(measured: Measured) -> dict[str, float]:
    for line in measured.output.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise SystemExit(f"the stage printed no result:\n{measured.output[-2000:]}")


def _time(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _size(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


if __name__ == "__main__":
    main()
