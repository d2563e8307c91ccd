"""What a hospital keeps between rounds, each in one ``.npz`` file that names its run.

Each round runs in a fresh process, so this state lives on disk: the error-feedback residual
(:class:`ResidualStore`). Writes are atomic (temporary file + rename), so a crash never leaves
half a file.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


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
            with np.load(self.path, allow_pickle=False) as data:
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


def save_npz(path: Path, **entries: np.ndarray) -> None:
    """Write ``entries`` to the ``.npz`` file ``path`` atomically, synced to disk."""
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
        raise
