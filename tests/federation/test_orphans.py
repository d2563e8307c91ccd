"""A run's worker owns every process it starts: killing it mid-round leaves none behind, the
run is interrupted, and `medfed run --resume` continues it from its last checkpoint."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from medfed.cli import main
from medfed.config import load_config
from medfed.federation.queue import Limits
from medfed.federation.runner import absolute_paths, start_run
from medfed.store import RunStore
from simulated import tiny_overrides

pytestmark = pytest.mark.slow
PROC = Path("/proc")


def wait_for(predicate, timeout: float = 180.0, every: float = 0.2) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(every)


def _stat(pid: int) -> list[str] | None:
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` in the process tree."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


@pytest.mark.skipif(not PROC.is_dir(), reason="needs /proc to see the process tree")
def test_a_killed_worker_leaves_no_process_and_its_run_resumes(
    kaggle_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    overrides = tiny_overrides(kaggle_dataset, home, **{"federated.rounds": 3})
    config = tmp_path / "config.yml"
    nested: dict = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config.write_text(yaml.safe_dump(nested))
    cfg = absolute_paths(load_config(config))
    home.mkdir(parents=True)
    store = RunStore(cfg.database_url)
    run_id = start_run(cfg, store)
    pid = int((home / "runs" / run_id / "worker.pid").read_text())
    command = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    cpus = Limits.from_config(cfg.platform).cpus_per_run
    assert [b"--cpus", str(cpus).encode()] == command[command.index(b"--cpus") :][:2]

    # Mid-run: a round is recorded and the next one's hospitals train (Ray, its agents,
    # their actors).
    wait_for(lambda: store.last_completed_round(run_id) >= 1)
    owned = descendants(pid)
    names = {(PROC / str(p) / "comm").read_text().strip() for p in owned if alive(p)}
    assert {"raylet", "gcs_server"} <= names, names  # Ray is the worker's own
    os.kill(pid, signal.SIGKILL)

    wait_for(lambda: not any(alive(p) for p in owned | {pid}), timeout=30)
    wait_for(lambda: store.get_run(run_id).status == "interrupted", timeout=30)
    run = store.get_run(run_id)
    assert "medfed run --resume" in run.error
    assert store.events(run_id)[-1].type == "run_interrupted"

    assert main(["run", "--config", str(config), "--resume", run_id[:8]]) == 0
    assert "finished" in capsys.readouterr().out
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    assert [r.round for r in store.rounds(run_id)] == [1, 2, 3]
    store.close()
