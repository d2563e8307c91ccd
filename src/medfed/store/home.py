"""The platform's home folder: private to its owner (0700), secret files in it 0600."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
SECRET_FILE_MODE = 0o600
# Files the platform keeps in its home that only its owner may read.
SECRET_FILES = (
    "medfed.db",
    "medfed.db-wal",
    "medfed.db-shm",
    "secret.key",
    "api_secret.key",
    "demo-login.txt",
)


def tighten(path: Path) -> None:
    """Take group and other access away from ``path`` when this user owns it (best effort:
    a file someone else owns is left as it is)."""
    try:
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and info.st_uid == os.getuid():
            os.chmod(path, mode & ~0o077)
    except OSError:
        pass


def make_private_dir(path: Path) -> Path:
    """``path`` as a folder; when it is made here it gets mode 0700 (parents as usual)."""
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=DIR_MODE)
    return path


def create_secret_file(path: Path, content: bytes) -> None:
    """Write ``content`` to a new file ``path`` (mode 0600) in a private folder; when another
    process creates it first, its file stays.

    The content is written to a private temporary file first and linked into place, so a
    concurrent reader never sees half of it and only one writer ever wins.
    """
    make_private_dir(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    try:
        os.link(partial, path)
    except FileExistsError:
        pass
    finally:
        partial.unlink()


def private_home(home: Path) -> Path:
    """Make ``home`` (mode 0700), or take group and other access away from an existing one
    and from the secret files in it; returns it."""
    home = make_private_dir(Path(home))
    tighten(home)
    for name in SECRET_FILES:
        if (home / name).exists():
            tighten(home / name)
    return home
