"""The platform's blob folder: model payloads kept as files named by their SHA-256.

``down/RUN/SHA`` holds what a run's ServerApp sends in a phase, until the phase's replies are in
(``RUN`` is :func:`run_folder`: runs may send the same model). ``up/HOSPITAL/SHA`` holds what a
hospital uploaded through the gateway, until the ServerApp reads it: at most
:data:`MAX_PENDING_UPLOADS` of them and none older than :data:`STALE_UPLOAD_S`. See ``blobs.py``
for why payloads travel this way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path

BLOB_PATH = "/medfed/v1/blobs"  # on the gateway: GET BLOB_PATH/RUN/SHA, PUT BLOB_PATH/SHA
MAX_BLOB_BYTES = 1 << 30  # what the gateway accepts at most; readers check their own limits
OPEN_UPLOADER = "_open"  # a platform started with --insecure knows no hospital
MAX_PENDING_UPLOADS = 4
STALE_UPLOAD_S = 3600.0
SHA_HEX = re.compile(r"[0-9a-f]{64}")
RUN_HEX = re.compile(r"[0-9a-f]{16}")


def blob_root(home: Path) -> Path:
    """The platform's blob folder (the gateway and the ServerApp share it)."""
    return Path(home).resolve() / "flwr" / "blobs"


def run_folder(run_id: str) -> str:
    """The name of a run's ``down/`` folder: a hash of its id (ids may hold any character)."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


def write_blob(folder: Path, payload: bytes | memoryview) -> str:
    """Write ``payload`` to ``folder/SHA`` (atomically, once); its SHA-256."""
    sha = hashlib.sha256(payload).hexdigest()
    path = folder / sha
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".{sha}.{os.getpid()}.part"
        part.write_bytes(payload)
        os.replace(part, path)
    return sha


def uploads_of(root: Path, uploader: str) -> Path:
    return root / "up" / uploader


def prune_uploads(folder: Path, keep: int = MAX_PENDING_UPLOADS) -> None:
    """Keep a hospital's ``keep`` newest uploads and none older than :data:`STALE_UPLOAD_S`."""
    entries = []
    for path in folder.iterdir():
        if not SHA_HEX.fullmatch(path.name):
            continue  # an upload still arriving
        with contextlib.suppress(FileNotFoundError):
            entries.append((path.stat().st_mtime, path))
    entries.sort(reverse=True)
    oldest_kept = time.time() - STALE_UPLOAD_S
    for rank, (mtime, path) in enumerate(entries):
        if rank >= keep or mtime < oldest_kept:
            path.unlink(missing_ok=True)
