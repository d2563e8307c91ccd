"""What a hospital keeps between rounds, each in one ``.npz`` file that names its run.

A round may run in a fresh process (a simulated hospital's actor), so this state lives on disk:
the error-feedback residual (:class:`ResidualStore`) and the hospital's copy of the global model
(:class:`CopyStore`). Writes are atomic (temporary file + rename), so a crash never leaves half a
file. A process also keeps what it last wrote or read (:func:`load_npz`): a deployed hospital's
long-lived trainer then reads nothing back, and never a file another process has replaced since.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfed.federation.codec_format import TensorSpec

VERSION_PATTERN = re.compile(r"[0-9a-f]{32}")  # a downlink version of the global model
# How many files a process keeps in memory, the most recently used: one hospital's copy of the
# model, residual and control variate. ResNet-18 takes 45 MB a file.
KEPT_FILES = 3
_FileIdentity = tuple[int, int, int]  # inode, modification time (ns), size
_kept: OrderedDict[Path, tuple[_FileIdentity, dict[str, np.ndarray]]] = OrderedDict()
_kept_lock = threading.Lock()


class ResidualStore:
    """A hospital's error-feedback residual, kept in one ``.npz`` file between rounds.

    The file remembers the run it belongs to: :meth:`load` returns None for another run's
    residual (a new run starts from zero).
    """

    def __init__(self, path: Path, run_id: str | int):
        self.path = Path(path)
        self.run_id = str(run_id)

    def load(self) -> list[np.ndarray] | None:
        """The residual saved for this run, or None (no file, another run, unreadable file)."""
        try:
            data = load_npz(self.path)
            if str(data["run_id"]) != self.run_id:
                return None
            count = int(data["count"])
            return [data[f"r{i}"] for i in range(count)]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None

    def save(self, residual: list[np.ndarray] | None) -> None:
        """Replace the stored residual atomically; None deletes it."""
        if residual is None:
            self.clear()
            return
        arrays = {f"r{i}": np.asarray(r) for i, r in enumerate(residual)}
        save_npz(self.path, run_id=np.str_(self.run_id), count=np.int64(len(residual)), **arrays)

    def clear(self) -> None:
        """Forget the stored residual."""
        self.path.unlink(missing_ok=True)


class CopyStore:
    """A hospital's copy of the global model, kept in one ``.npz`` file between rounds.

    The file names its run and version (:data:`VERSION_PATTERN`).
    """

    def __init__(self, path: Path, run_id: str):
        self.path = Path(path)
        self.run_id = str(run_id)

    def load(self, layout: Sequence[TensorSpec]) -> tuple[str, list[np.ndarray]] | None:
        """``(version, arrays)`` kept for this run if they fit ``layout``, else None."""
        try:
            data = load_npz(self.path)
            if str(data["run_id"]) != self.run_id or int(data["count"]) != len(layout):
                return None
            version = str(data["version"])
            arrays = []
            for index, spec in enumerate(layout):
                array = data[f"a{index}"]
                if array.shape != spec.shape or not spec.accepts(array.dtype):
                    return None
                arrays.append(array)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None
        return (version, arrays) if VERSION_PATTERN.fullmatch(version) else None

    def save(self, version: str, arrays: Sequence[np.ndarray]) -> None:
        """Replace the kept copy atomically."""
        named = {f"a{i}": np.asarray(a) for i, a in enumerate(arrays)}
        save_npz(
            self.path,
            run_id=np.str_(self.run_id),
            version=np.str_(version),
            count=np.int64(len(arrays)),
            **named,
        )


def save_npz(path: Path, **entries: np.ndarray) -> None:
    """Write ``entries`` to the ``.npz`` file ``path`` atomically, synced to disk, and keep
    them in memory for :func:`load_npz`: the arrays given become read-only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **entries)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        with _kept_lock:
            _kept.pop(path, None)
        raise
    _keep(path, _identity(path), entries)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The entries of the ``.npz`` file ``path``, read-only: from memory when this process
    wrote or read that very file last (the same inode, modification time and size)."""
    identity = _identity(path)
    with _kept_lock:
        kept = _kept.get(path)
        if kept is not None and kept[0] == identity:
            _kept.move_to_end(path)
            return kept[1]
    with np.load(path, allow_pickle=False) as data:
        entries = {name: data[name] for name in data.files}
    _keep(path, identity, entries)
    return entries


def _identity(path: Path) -> _FileIdentity:
    status = path.stat()
    return status.st_ino, status.st_mtime_ns, status.st_size


def _keep(path: Path, identity: _FileIdentity, entries: dict[str, np.ndarray]) -> None:
    entries = {name: np.asarray(value) for name, value in entries.items()}
    for array in entries.values():
        array.flags.writeable = False  # what a later load returns must be what the file holds
    with _kept_lock:
        _kept[path] = (identity, entries)
        _kept.move_to_end(path)
        while len(_kept) > KEPT_FILES:
            _kept.popitem(last=False)
