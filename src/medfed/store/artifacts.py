"""Model artifacts encrypted at rest (AES-256-GCM), with a key file made once per home."""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medfed.errors import StoreError

MAGIC = b"MEDFEDA1"  # format marker and associated data of every artifact
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_FILE = "secret.key"


class ArtifactStore:
    """Encrypted files under ``root``.

    The key is ``key`` (32 raw bytes or their URL-safe base64) or else the key file
    ``root/../secret.key``, created with mode 0600 the first time.
    """

    def __init__(self, root: Path, key: bytes | None = None):
        self.root = Path(root)
        self.key_path = None if key is not None else self.root.parent / KEY_FILE
        raw = _decode_key(key, "the key given") if key is not None else _key_file(self.key_path)
        self._aead = AESGCM(raw)

    def path_of(self, name: str | Path) -> Path:
        """Where artifact ``name`` lives; absolute paths are taken as they are."""
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    def save(self, name: str, data: bytes) -> Path:
        """Encrypt ``data`` into ``root/name`` (written atomically); returns the path."""
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise StoreError(f"artifact name {name!r} must be a relative path inside {self.root}")
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        nonce = os.urandom(NONCE_BYTES)
        blob = MAGIC + nonce + self._aead.encrypt(nonce, data, MAGIC)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(blob)
        os.replace(partial, path)
        return path

    def load(self, path: str | Path) -> bytes:
        """The decrypted bytes; a StoreError when missing, tampered with or the key differs."""
        path = self.path_of(path)
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"artifact {path} cannot be read: {exc.strerror}") from None
        if not blob.startswith(MAGIC):
            raise StoreError(f"{path} is not an encrypted medfed artifact")
        nonce, ciphertext = (
            blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES],
            blob[len(MAGIC) + NONCE_BYTES :],
        )
        try:
            return self._aead.decrypt(nonce, ciphertext, MAGIC)
        except InvalidTag:
            key = self.key_path or "the key given"
            raise StoreError(
                f"artifact {path} cannot be decrypted: it was modified or damaged, or was "
                f"encrypted with another key than {key}; restore the file or the key"
            ) from None

    def save_state_dict(self, name: str, state_dict: dict[str, Any], meta: dict[str, Any]) -> Path:
        """Encrypt a model's ``state_dict`` with ``meta`` (plain numbers, strings, lists, dicts)."""
        import torch

        buffer = io.BytesIO()
        torch.save({"state_dict": state_dict, "meta": meta}, buffer)
        return self.save(name, buffer.getvalue())

    def load_state_dict(self, path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(state_dict, meta)`` of an artifact written by :meth:`save_state_dict`."""
        content = _torch_load(self.load(path), self.path_of(path))
        return content["state_dict"], content["meta"]

    def export_plain(self, path: str | Path, out: str | Path) -> Path:
        """Write the artifact decrypted as a normal ``.pt`` file (``torch.load`` reads it)."""
        data = self.load(path)
        _torch_load(data, self.path_of(path))
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        return out


def _torch_load(data: bytes, path: Path) -> dict[str, Any]:
    import torch

    try:
        content = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign content
        raise StoreError(f"artifact {path} holds no model checkpoint ({exc})") from None
    if not isinstance(content, dict) or not {"state_dict", "meta"} <= content.keys():
        raise StoreError(f"artifact {path} holds no model checkpoint (no state_dict/meta)")
    return content


def _decode_key(key: bytes, source: object) -> bytes:
    if len(key) == KEY_BYTES:
        return key
    try:
        raw = base64.urlsafe_b64decode(key.strip())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise StoreError(
            f"{source} is not an artifact key: it must be {KEY_BYTES} bytes or their "
            "URL-safe base64"
        )
    return raw


def _key_file(path: Path) -> bytes:
    """Read the key file, creating it (mode 0600) with a fresh random key when missing.

    The new key is written to a private temporary file first and linked into place, so a
    concurrent reader never sees a half-written key and only one key ever wins.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.urlsafe_b64encode(os.urandom(KEY_BYTES)) + b"\n")
        try:
            os.link(partial, path)
        except FileExistsError:
            pass
        finally:
            partial.unlink()
    try:
        return _decode_key(path.read_bytes(), f"key file {path}")
    except OSError as exc:
        raise StoreError(f"key file {path} cannot be read: {exc.strerror}") from None
