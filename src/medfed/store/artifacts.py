"""Model artifacts encrypted at rest (AES-256-GCM), bound to their run and round.

The key comes from (first match): the ``key`` given, the ``MEDFED_MODEL_KEY`` environment
variable (URL-safe base64 of 32 bytes), the ``key_file`` given or ``MEDFED_MODEL_KEY_FILE``, and
else ``HOME/secret.key``, made once with mode 0600. So the key can live outside the home.

An artifact names the run and round it belongs to in a header that is authenticated as the
cipher's associated data: a checkpoint moved to another run's or round's place is refused.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medfed.config import run_definition
from medfed.errors import StoreError
from medfed.store.home import create_secret_file, make_private_dir, tighten

if TYPE_CHECKING:
    from medfed.config import MedfedConfig

MAGIC_V1 = b"MEDFEDA1"  # before binding: associated data is the marker alone
MAGIC = b"MEDFEDA2"  # marker, 2-byte header length, JSON header {"run", "round"}, nonce, data
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_FILE = "secret.key"
KEY_ENV = "MEDFED_MODEL_KEY"
KEY_FILE_ENV = "MEDFED_MODEL_KEY_FILE"
FILE_MODE = 0o600


class ArtifactStore:
    """Encrypted files under ``root`` (see the module for where the key comes from)."""

    def __init__(
        self,
        root: Path,
        key: bytes | None = None,
        *,
        key_file: Path | None = None,
        create_key: bool = True,
    ):
        """``create_key=False``: a missing key file is an error instead of a new key."""
        self.root = Path(root)
        self.key_path: Path | None = None
        env_key = os.environ.get(KEY_ENV, "").strip()
        if key is not None:
            raw, self.key_source = _decode_key(key, "the key given"), "the key given"
        elif env_key:
            raw, self.key_source = _decode_key(env_key.encode("ascii", "replace"), KEY_ENV), KEY_ENV
        else:
            chosen = key_file or os.environ.get(KEY_FILE_ENV) or self.root.parent / KEY_FILE
            self.key_path = Path(chosen)
            raw, self.key_source = _key_file(self.key_path, create_key), str(self.key_path)
        self._aead = AESGCM(raw)

    @classmethod
    def for_config(cls, cfg: MedfedConfig, *, create_key: bool = True) -> ArtifactStore:
        """The platform's artifacts: ``HOME/artifacts`` with ``model_key`` or
        ``model_key_file`` of ``cfg``."""
        key = cfg.model_key.encode("ascii", "replace") if cfg.model_key else None
        store = cls(
            Path(cfg.home) / "artifacts",
            key,
            key_file=cfg.model_key_file,
            create_key=create_key,
        )
        if key is not None:
            store.key_source = "model_key (MEDFED_MODEL_KEY)"
        return store

    def path_of(self, name: str | Path) -> Path:
        """Where artifact ``name`` lives; absolute paths are taken as they are."""
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    def save(
        self, name: str, data: bytes, *, run_id: str | None = None, round: int | None = None
    ) -> Path:
        """Encrypt ``data`` into ``root/name`` (written atomically, mode 0600), bound to
        ``run_id`` and ``round`` when given; returns the path."""
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise StoreError(f"artifact name {name!r} must be a relative path inside {self.root}")
        path = self.root / relative
        make_private_dir(self.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = _header(run_id, round)
        nonce = os.urandom(NONCE_BYTES)
        blob = header + nonce + self._aead.encrypt(nonce, data, header)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        os.replace(partial, path)
        return path

    def load(
        self, path: str | Path, *, run_id: str | None = None, round: int | None = None
    ) -> bytes:
        """The decrypted bytes; a StoreError when missing, tampered with, encrypted with
        another key, or bound to another run or round than ``run_id`` / ``round`` (when given).

        Artifacts written without a binding (or before bindings existed) are not checked.
        """
        path = self.path_of(path)
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"artifact {path} cannot be read: {exc.strerror}") from None
        header, bound, rest = _split(blob, path)
        nonce, ciphertext = rest[:NONCE_BYTES], rest[NONCE_BYTES:]
        try:
            data = self._aead.decrypt(nonce, ciphertext, header)
        except InvalidTag:
            raise StoreError(
                f"artifact {path} cannot be decrypted: it was modified or damaged, or was "
                f"encrypted with another key than {self.key_source}; restore the file or the key"
            ) from None
        _check_binding(path, bound, run_id, round)
        return data

    def save_state_dict(
        self,
        name: str,
        state_dict: dict[str, Any],
        meta: dict[str, Any],
        *,
        run_id: str | None = None,
        round: int | None = None,
    ) -> Path:
        """Encrypt a model's ``state_dict`` with ``meta`` (plain numbers, strings, lists,
        dicts), bound to ``run_id`` / ``round``. A ``config`` in ``meta`` keeps only what
        defines the run (no database, API or key settings)."""
        import torch

        buffer = io.BytesIO()
        torch.save({"state_dict": state_dict, "meta": _clean_meta(meta)}, buffer)
        return self.save(name, buffer.getvalue(), run_id=run_id, round=round)

    def load_state_dict(
        self, path: str | Path, *, run_id: str | None = None, round: int | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(state_dict, meta)`` of an artifact written by :meth:`save_state_dict`; checked
        against ``run_id`` / ``round`` when given."""
        content = _torch_load(self.load(path, run_id=run_id, round=round), self.path_of(path))
        return content["state_dict"], _clean_meta(content["meta"])

    def export_plain(
        self,
        path: str | Path,
        out: str | Path,
        *,
        run_id: str | None = None,
        round: int | None = None,
    ) -> Path:
        """Write the artifact decrypted as a normal ``.pt`` file (``torch.load`` reads it);
        checked against ``run_id`` / ``round`` when given. An older checkpoint whose meta
        held platform settings is written without them."""
        data = self.load(path, run_id=run_id, round=round)
        content = _torch_load(data, self.path_of(path))
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        clean = _clean_meta(content["meta"])
        if clean != content["meta"]:
            import torch

            buffer = io.BytesIO()
            torch.save({**content, "meta": clean}, buffer)
            data = buffer.getvalue()
        out.write_bytes(data)
        return out


def home_of_checkpoint(path: str | Path) -> Path | None:
    """The home whose artifacts hold the checkpoint at ``path`` (``HOME/artifacts/RUN/FILE``,
    as the platform writes them), or None."""
    path = Path(path)
    if path.is_absolute() and len(path.parents) > 2 and path.parents[1].name == "artifacts":
        return path.parents[2]
    return None


def _header(run_id: str | None, round: int | None) -> bytes:
    body = json.dumps(
        {"run": None if run_id is None else str(run_id), "round": round},
        separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")
    return MAGIC + struct.pack(">H", len(body)) + body


def _split(blob: bytes, path: Path) -> tuple[bytes, dict[str, Any], bytes]:
    """(associated data, binding, nonce + ciphertext) of an artifact's bytes."""
    if blob.startswith(MAGIC_V1):
        return MAGIC_V1, {}, blob[len(MAGIC_V1) :]
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 2:
        raise StoreError(f"{path} is not an encrypted medfed artifact")
    (length,) = struct.unpack(">H", blob[len(MAGIC) : len(MAGIC) + 2])
    end = len(MAGIC) + 2 + length
    try:
        bound = json.loads(blob[len(MAGIC) + 2 : end])
    except (UnicodeDecodeError, json.JSONDecodeError):
        bound = None
    if not isinstance(bound, dict):
        raise StoreError(f"artifact {path} has a damaged header: restore the file")
    return blob[:end], bound, blob[end:]


def _check_binding(
    path: Path, bound: dict[str, Any], run_id: str | None, round: int | None
) -> None:
    stored_run, stored_round = bound.get("run"), bound.get("round")
    if run_id is not None and stored_run is not None and stored_run != str(run_id):
        raise StoreError(
            f"checkpoint {path} belongs to run {stored_run}, not run {run_id}: it was moved or "
            "copied from another run; restore the run's own checkpoint"
        )
    if round is not None and stored_round is not None and stored_round != int(round):
        raise StoreError(
            f"checkpoint {path} belongs to round {stored_round}, not round {round}: it was "
            "moved or copied from another round; restore the round's own checkpoint"
        )


def _clean_meta(meta: Any) -> Any:
    if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
        return {**meta, "config": run_definition(meta["config"])}
    return meta


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
            'URL-safe base64 (make one with `python -c "import base64, os; '
            'print(base64.urlsafe_b64encode(os.urandom(32)).decode())"`)'
        )
    return raw


def _key_file(path: Path, create: bool) -> bytes:
    """Read the key file (tightened to mode 0600), creating it with a fresh random key when
    missing and ``create``.

    The new key is written to a private temporary file first and linked into place, so a
    concurrent reader never sees a half-written key and only one key ever wins.
    """
    if not path.exists():
        if not create:
            raise StoreError(
                f"no artifact key {path}: the checkpoints cannot be decrypted; point "
                "model_key_file (or MEDFED_MODEL_KEY) at the platform's key"
            )
        create_secret_file(path, base64.urlsafe_b64encode(os.urandom(KEY_BYTES)) + b"\n")
    tighten(path)
    try:
        return _decode_key(path.read_bytes(), f"key file {path}")
    except OSError as exc:
        raise StoreError(f"key file {path} cannot be read: {exc.strerror}") from None
