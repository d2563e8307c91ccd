"""What a hospital keeps between rounds, each in one ``.npz`` file that names its run.

Each round runs in a fresh process, so this state lives on disk: the error-feedback residual
(:class:`ResidualStore`) and the hospital's copy of the global model (:class:`CopyStore`). Writes
are atomic (temporary file + rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfed.federation.codec_format import TensorSpec

VERSION_PATTERN = re.compile(r"[0-9a-f]{32}")  # a downlink version of the global model


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
            with np.load(self.path, allow_pickle=False) as data:
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
