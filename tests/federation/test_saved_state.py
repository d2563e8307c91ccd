"""A hospital's state files: kept in memory by the process that wrote or read them, never
trusted once another process has replaced or removed them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from medfed.federation import saved_state
from medfed.federation.saved_state import KEPT_FILES, ResidualStore, load_npz, save_npz


def write_elsewhere(path: Path, **entries: np.ndarray) -> None:
    """Replace ``path`` as another process does (its own temporary file and rename)."""
    tmp = path.with_name("other.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **entries)
    os.replace(tmp, path)


def test_a_saved_file_loads_from_memory_read_only(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "state.npz"
    weights = np.arange(6, dtype=np.float32)
    save_npz(path, w=weights)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("read from disk"))
    loaded = load_npz(path)
    assert loaded["w"] is weights
    with pytest.raises(ValueError, match="read-only"):
        loaded["w"][0] = 1.0


def test_a_file_replaced_by_another_process_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "residual.npz"
    store = ResidualStore(path, "run-1")
    store.save([np.ones(4, np.float32)])
    write_elsewhere(path, run_id=np.str_("run-1"), count=np.int64(1), r0=np.full(4, 7.0))
    assert store.load()[0].tolist() == [7.0] * 4
    path.unlink()
    assert store.load() is None  # a removed file is gone, whatever was kept


def test_a_file_changed_in_place_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    save_npz(path, w=np.zeros(3))
    time.sleep(0.05)  # file times tick every few milliseconds
    with open(tmp_path / "state.npz", "r+b") as handle:  # same inode, new time and content
        np.savez(handle, w=np.full(3, 2.0))
    assert load_npz(path)["w"].tolist() == [2.0] * 3


def test_only_the_latest_files_are_kept(tmp_path: Path, monkeypatch) -> None:
    paths = [tmp_path / f"f{i}.npz" for i in range(KEPT_FILES + 1)]
    for index, path in enumerate(paths):
        save_npz(path, w=np.full(2, float(index)))
    assert paths[0] not in saved_state._kept
    reads = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    assert load_npz(paths[0])["w"].tolist() == [0.0, 0.0]
    assert load_npz(paths[-1])["w"].tolist() == [float(KEPT_FILES)] * 2
    assert reads == [paths[0]]
