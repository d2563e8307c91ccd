"""Large payloads beside Flower's messages: files on the platform host, named by their SHA-256.

Flower 1.41 carries a message's arrays through four Python HTTP hops each way (ServerApp,
SuperLink, gateway, SuperNode, executor), each one decrypting, re-encrypting and hashing them:
an uncompressed ResNet-18 round moves 180 MB that way. In a deployed run a payload of at least
:func:`min_bytes` travels instead as a file: the ServerApp writes the model it sends to
``down/RUN/``; each hospital's executor fetches it from the gateway (``GET BLOB_PATH/RUN/SHA``)
and uploads its reply's payload there (``PUT BLOB_PATH/SHA``), which keeps it in
``up/HOSPITAL/``. Both requests are signed with the hospital's key like its Fleet calls, over
the same TLS port. The message carries a reference instead (:func:`blob_ref`): the hash and the
size. Whoever reads a blob checks both before using a byte of it, and the platform reads a
hospital's blob only from that hospital's own folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import ssl
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from medfed.federation.blob_files import (
    BLOB_PATH,
    MAX_BLOB_BYTES,
    OPEN_UPLOADER,
    RUN_HEX,
    SHA_HEX,
    blob_root,
    run_folder,
    uploads_of,
    write_blob,
)
from medfed.federation.codec import CodecError
from medfed.federation.hospitals import hospital_name
from medfed.federation.keys import load_private_key, signed_headers
from medfed.federation.wire import CONFIG_KEY, ReplyRejected
from medfed.federation.wire_records import is_payload, payload_record, payload_view
from medfed.store import RunStore

log = logging.getLogger("medfed.blobs")

REF_SHA, REF_SIZE, REF_RUN = "blob-sha256", "blob-size", "blob-run"
MIN_BYTES_KEY = "blob-min-bytes"  # message config: upload reply payloads at least this large
MIN_BYTES_ENV = "MEDFED_BLOB_MIN_BYTES"
DEFAULT_MIN_BYTES = 1 << 20  # below this a payload's hops cost less than a request of its own
TIMEOUT_S = 300.0


def min_bytes() -> int:
    """Payloads at least this large travel as blobs (``MEDFED_BLOB_MIN_BYTES``, default 1 MiB)."""
    raw = os.environ.get(MIN_BYTES_ENV, "")
    if raw.isdigit():
        return int(raw)
    if raw:
        log.warning("%s=%r is not a byte count; using %d", MIN_BYTES_ENV, raw, DEFAULT_MIN_BYTES)
    return DEFAULT_MIN_BYTES


def blob_ref(sha: str, size: int, run: str = "") -> ConfigRecord:
    """A reference to a blob: its hash and size, and the run's folder for one the platform sent."""
    return ConfigRecord({REF_SHA: sha, REF_SIZE: size, **({REF_RUN: run} if run else {})})


def read_ref(record: object) -> tuple[str, int, str] | None:
    """``(sha, size, run)`` of a blob reference (``run`` empty for a hospital's upload), None
    for any other record; CodecError if garbled."""
    if not isinstance(record, ConfigRecord) or REF_SHA not in record:
        return None
    sha, size, run = record.get(REF_SHA), record.get(REF_SIZE), record.get(REF_RUN, "")
    if not set(record.keys()) <= {REF_SHA, REF_SIZE, REF_RUN} or not isinstance(sha, str):
        raise CodecError(f"blob reference: expected {REF_SHA}, {REF_SIZE} and {REF_RUN}")
    if not SHA_HEX.fullmatch(sha) or not isinstance(size, int) or not 0 <= size <= MAX_BLOB_BYTES:
        raise CodecError(f"blob reference: not a SHA-256 and a size ({sha[:70]!r}, {size!r})")
    if not isinstance(run, str) or (run and not RUN_HEX.fullmatch(run)):
        raise CodecError(f"blob reference: not a run folder ({str(run)[:70]!r})")
    return sha, size, run


def checked(data: bytes | bytearray, sha: str, size: int) -> bytes | bytearray:
    """``data``, if it is the blob ``sha`` of ``size`` bytes; CodecError otherwise."""
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
        raise CodecError(f"blob {sha[:12]}: {len(data)} bytes that do not match its reference")
    return data


def large_payloads(content: RecordDict, threshold: int) -> Iterable[tuple[str, memoryview]]:
    """The payload records of a message at least ``threshold`` bytes large, by key."""
    for key, record in list(content.items()):
        if isinstance(record, ArrayRecord) and is_payload(record):
            payload = payload_view(record, sys.maxsize)
            if len(payload) >= threshold:
                yield key, payload


# ------------------------------------------------------------------------------ platform side
class PlatformBlobs:
    """The ServerApp's side: large payloads of outgoing messages written to ``down/``, the
    references in replies read from the replying hospital's ``up/`` folder, each at most
    ``max_bytes`` (the largest payload of the run's model)."""

    def __init__(
        self, home: Path, store: RunStore, run_id: str, max_bytes: int, threshold: int | None = None
    ):
        self.root = blob_root(home)
        self.run = run_folder(run_id)
        self.store = store
        self.max_bytes = max_bytes
        self.threshold = min_bytes() if threshold is None else threshold
        self.sent: set[str] = set()
        shutil.rmtree(self.root / "down" / self.run, ignore_errors=True)  # a stopped attempt's

    def offload(self, messages: Iterable[Message]) -> None:
        """Put each message's large payloads in ``down/`` and a reference in their place; tell
        the hospitals which replies to upload the same way."""
        for message in messages:
            content = message.content
            for key, payload in large_payloads(content, self.threshold):
                sha = write_blob(self.root / "down" / self.run, payload)
                self.sent.add(sha)
                content[key] = blob_ref(sha, len(payload), self.run)
            config = content.get(CONFIG_KEY)
            if isinstance(config, ConfigRecord):
                config[MIN_BYTES_KEY] = self.threshold

    def clear_sent(self) -> None:
        """Remove what :meth:`offload` wrote (once a phase's replies are in)."""
        for sha in self.sent:
            (self.root / "down" / self.run / sha).unlink(missing_ok=True)
        self.sent.clear()

    def fetch(self, node_id: int, content: RecordDict) -> RecordDict:
        """``content`` with each blob reference replaced by the payload the hospital uploaded;
        ReplyRejected for a reference to a blob it did not upload, too large, or not matching.
        """
        for key, record in list(content.items()):
            try:
                ref = read_ref(record)
                if ref is not None:
                    content[key] = payload_record(self._read_upload(node_id, *ref[:2]))
            except CodecError as exc:
                raise ReplyRejected(str(exc)) from None
        return content

    def _read_upload(self, node_id: int, sha: str, size: int) -> bytes | bytearray:
        if size > self.max_bytes:
            raise CodecError(f"blob {sha[:12]} of {size} bytes: {self.max_bytes} at most")
        uploader = hospital_name(self.store, node_id) or OPEN_UPLOADER
        path = uploads_of(self.root, uploader) / sha
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CodecError(f"blob {sha[:12]} was not uploaded by this hospital") from None
        path.unlink(missing_ok=True)
        return checked(data, sha, size)


# ------------------------------------------------------------------------------ hospital side
class HospitalBlobs:
    """A hospital executor's side: fetch the blobs a message names, upload a reply's."""

    def __init__(self, server_address: str, ca_path: Path | None, key_path: Path | None):
        self.key = None if key_path is None else load_private_key(key_path)
        verify: ssl.SSLContext | bool = False
        if ca_path is not None:
            verify = ssl.create_default_context(cafile=str(ca_path))
        scheme = "http" if ca_path is None else "https"
        self.client = httpx.Client(
            base_url=f"{scheme}://{server_address}{BLOB_PATH}/",
            verify=verify,
            timeout=TIMEOUT_S,
            trust_env=False,
        )

    def _headers(self) -> dict[str, str]:
        return {} if self.key is None else signed_headers(self.key)

    def fetch(self, content: RecordDict) -> None:
        """Replace each blob reference in a received message with the payload it names."""
        for key, record in list(content.items()):
            ref = read_ref(record)
            if ref is not None:
                content[key] = payload_record(self._download(*ref))

    def _download(self, sha: str, size: int, run: str) -> bytes | bytearray:
        data = bytearray()
        with self.client.stream("GET", f"{run}/{sha}", headers=self._headers()) as reply:
            _raise_for(reply, f"fetching blob {sha[:12]}")
            for chunk in reply.iter_bytes():
                data += chunk
                if len(data) > size:
                    break
        return checked(data, sha, size)

    def upload(self, message: Message, reply: Message) -> None:
        """Upload a reply's large payloads and put references in their place, when the message
        it answers asks for that (its config's :data:`MIN_BYTES_KEY`)."""
        config = message.content.get(CONFIG_KEY)
        threshold = config.get(MIN_BYTES_KEY) if isinstance(config, ConfigRecord) else None
        if not isinstance(threshold, int) or reply.has_error():
            return
        for key, payload in large_payloads(reply.content, threshold):
            data = bytes(payload)
            sha = hashlib.sha256(data).hexdigest()
            answer = self.client.put(sha, content=data, headers=self._headers())
            _raise_for(answer, f"uploading blob {sha[:12]}")
            reply.content[key] = blob_ref(sha, len(data))

    def around(self, app: Callable[..., Message]) -> Callable[..., Message]:
        """``app`` answering messages whose payloads travel as blobs."""

        def answer(message: Message, context: Context) -> Message:
            self.fetch(message.content)
            reply = app(message=message, context=context)
            self.upload(message, reply)
            return reply

        return answer

    def close(self) -> None:
        self.client.close()


def _raise_for(reply: httpx.Response, doing: str) -> None:
    if reply.status_code >= 400:
        reply.read()
        try:
            detail = reply.json().get("detail", reply.text)
        except ValueError:
            detail = reply.text
        raise CodecError(f"{doing}: the platform answered {reply.status_code}: {detail[:200]}")
