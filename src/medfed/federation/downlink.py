"""The downlink: each hospital receives what changed since the copy of the global model it holds.

Off by default: every message carries a full copy at ``compression.downlink`` precision. With
``compression.downlink_topk`` or ``compression.downlink_quant_bits`` set, the ServerApp keeps,
per hospital (Flower node id), the version of the global model that hospital holds and that copy
itself, bit for bit as the hospital rebuilt it (:class:`DownlinkSender`). A message then carries

- ``arrays``: one payload, either the change ``global - copy`` (:func:`~medfed.federation.codec.
  encode_delta`: the largest ``downlink_topk`` of the model's entries, tensors under
  ``dense_below`` whole, values quantized to the nearest of ``2**downlink_quant_bits`` levels), or
  a full copy at ``compression.downlink`` precision;
- ``downlink``: ``{"base": the version the change applies to, "" for a full copy; "version": the
  version it makes}``. A version is the SHA-256 of its base and the payload, so it names one model
  bit for bit, and a hospital can check that a payload is the one the server meant.

What a change leaves out stays in ``global - copy`` and goes out in later rounds: the server's copy
is the error feedback, so nothing is lost, only late. A hospital that missed rounds gets their
budget too (top-k keeps ``downlink_topk * (1 + rounds missed)`` of the model). A hospital gets a
full copy when it holds nothing the server knows, or when the change would be no smaller than a
full copy (it fell that far behind).

The server commits a version to a hospital when that hospital replies without error: it could not
have trained or evaluated without rebuilding that version. An error reply or no reply makes the
server forget the hospital's copy, and its next message is a full copy. The server's state lives
in memory only, so a new or resumed run starts every hospital from a full copy.

A hospital (:func:`receive_global`) keeps its copy in ``downlink.npz`` in its state folder. It
applies a change only to the very version the change names, after checking it against its own
model's layout (names, shapes, dtypes, size cap), that the version matches base and payload, and
that every value stays finite; a hospital without that version (new, restarted, its file lost)
answers with :class:`DownlinkMismatch` naming both versions instead of training on a wrong model.

Server memory: one model per version held, as hospitals hold it (float32 weights).
Hospitals that got every round hold the same version and share one copy; at most one per
hospital, plus the new version while a phase's messages are packed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from medfed.config import CompressionConfig, MedfedConfig
from medfed.federation import wire
from medfed.federation.codec import (
    CodecError,
    CodecSpec,
    TensorSpec,
    decode_update,
    decode_weights,
    encode_delta,
    encode_weights,
    max_payload_size,
    weights_size,
)
from medfed.federation.saved_state import VERSION_PATTERN, CopyStore

COPY_FILE = "downlink.npz"
BASE_KEY = "base"
VERSION_KEY = "version"
FULL = ""  # the base of a full copy
_MAX_EXACT_INTEGER = 2**53


class DownlinkMismatch(CodecError):
    """A hospital was sent a change against a version of the model it does not hold."""


def version_of(base: str, payload: bytes | memoryview) -> str:
    """The version a payload makes from ``base`` (:data:`FULL` for a full copy)."""
    digest = hashlib.sha256(base.encode("ascii"))
    digest.update(b"\0")
    digest.update(payload)
    return digest.hexdigest()[:32]


def apply_delta(
    base: Sequence[np.ndarray], delta: Sequence[np.ndarray], names: Sequence[str] | None = None
) -> list[np.ndarray]:
    """``base + delta`` tensor by tensor, in the delta's dtypes (those of the global model as
    broadcast: a BatchNorm counter that averaging made a float stays one, as in a full copy).

    Raises :class:`CodecError` when a float result is not finite or an integer one leaves the
    range floats hold exactly. Both sides of the downlink compute the same, bit for bit.
    """
    if len(base) != len(delta):
        raise CodecError(f"a change of {len(delta)} tensors for a model of {len(base)}")
    out = []
    for index, (held, change) in enumerate(zip(base, delta, strict=True)):
        label = f"tensor {names[index]!r}" if names else f"tensor {index}"
        if held.shape != change.shape:
            raise CodecError(f"{label}: a change of shape {change.shape} for {held.shape}")
        start = held.astype(change.dtype, copy=False)
        if change.dtype.kind == "f":
            with np.errstate(over="ignore", invalid="ignore"):
                result = np.add(start, change, dtype=change.dtype)
            if not np.isfinite(result).all():
                raise CodecError(f"{label}: the change makes it NaN or infinite")
        else:
            wide = start.astype(np.float64) + change.astype(np.float64)
            if wide.size and np.abs(wide).max() > _MAX_EXACT_INTEGER:
                raise CodecError(f"{label}: the change takes it beyond {_MAX_EXACT_INTEGER}")
            result = start + change
        out.append(np.asarray(result, change.dtype))  # 0-d sums come back as numpy scalars
    return out


# --------------------------------------------------------------------------- server side


@dataclass(frozen=True)
class _Held:
    """A version a hospital holds (or was just sent), and the round it was sent in."""

    version: str
    round: int


@dataclass(frozen=True)
class Packed:
    """One downlink payload and the version it makes from its base."""

    payload: bytes
    base: str
    version: str

    @property
    def full(self) -> bool:
        return self.base == FULL


class DownlinkSender:
    """The ServerApp's side: what each hospital holds, and the payload each message carries.

    :meth:`pack` before a phase's messages go out, :meth:`settle` with the phase's replies.
    """

    def __init__(self, cfg: CompressionConfig):
        self.cfg = cfg
        self.copies: dict[str, list[np.ndarray]] = {}  # version -> the model, as hospitals hold it
        self.held: dict[int, _Held] = {}  # node id -> version confirmed by a reply
        self.pending: dict[int, _Held] = {}  # node id -> version sent, awaiting its reply

    # ------------------------------------------------------------------ Flower messages
    def pack(self, messages: Sequence[Message], server_round: int) -> int:
        """Put each message's global model in the form its hospital receives; the bytes sent.

        Flower's strategies give every message the same content: with full copies only, the
        model is packed once and shared; with changes, each message gets content of its own.
        """
        if not self.cfg.downlink_delta:
            return self._pack_shared(messages)
        total = 0
        views: dict[int, tuple[ArrayRecord, list[np.ndarray]]] = {}
        made: dict[tuple[int, str, float | None], Packed] = {}
        for msg in messages:
            content = msg.content
            if wire.ARRAYS_KEY not in content:
                continue
            record = content[wire.ARRAYS_KEY]
            if id(record) not in views:
                views[id(record)] = (record, wire.broadcast_arrays(record))
            arrays = views[id(record)][1]
            packed = self.encode_for(msg.metadata.dst_node_id, arrays, server_round, made)
            msg.content = RecordDict(
                {
                    **dict(content.items()),
                    wire.ARRAYS_KEY: wire.payload_record(packed.payload),
                    wire.DOWNLINK_KEY: ConfigRecord(
                        {BASE_KEY: packed.base, VERSION_KEY: packed.version}
                    ),
                }
            )
            total += len(packed.payload)
        self._release()
        return total

    def settle(self, replies: Sequence[tuple[int, Message]]) -> None:
        """Learn from a phase's replies (each with the node its message went to): a reply
        without error confirms the version sent; an error or silence forgets the hospital's
        copy, so its next message is a full copy."""
        self.confirm([node for node, reply in replies if not reply.has_error()])

    def confirm(self, nodes: Sequence[int]) -> None:
        """The hospitals in ``nodes`` hold what they were just sent; the others that were sent
        something are not known to hold anything any more."""
        for node in nodes:
            if node in self.pending:
                self.held[node] = self.pending.pop(node)
        self.pending.clear()
        self._release()

    def _pack_shared(self, messages: Sequence[Message]) -> int:
        packed: dict[int, int] = {}
        total = 0
        for msg in messages:
            if wire.ARRAYS_KEY not in msg.content:
                continue
            if id(msg.content) not in packed:
                record, packed[id(msg.content)] = wire.pack_global(
                    msg.content[wire.ARRAYS_KEY], self.cfg.downlink
                )
                msg.content[wire.ARRAYS_KEY] = record
            total += packed[id(msg.content)]
        return total

    # ------------------------------------------------------------------ plain arrays
    def encode_for(
        self,
        node: int,
        arrays: list[np.ndarray],
        server_round: int,
        made: dict[tuple[int, str, float | None], Packed] | None = None,
    ) -> Packed:
        """The payload for ``node``: the change from the copy it holds, or a full copy.

        The version it makes is pending until :meth:`settle` hears from ``node``. ``made``
        shares payloads between hospitals holding the same version within one phase.
        """
        made = {} if made is None else made
        held = self.held.pop(node, None) or self.pending.pop(node, None)
        base, fraction = self._base(held, arrays, server_round)
        key = (id(arrays), base, fraction)
        if key not in made:
            made[key] = self._encode(arrays, base, fraction)
        packed = made[key]
        self.pending[node] = _Held(packed.version, server_round)
        return packed

    def _base(
        self, held: _Held | None, arrays: list[np.ndarray], server_round: int
    ) -> tuple[str, float | None]:
        """The version to send a change against (:data:`FULL`: none) and top-k's fraction."""
        if held is None or not _compatible(self.copies.get(held.version), arrays):
            return FULL, None
        topk = self.cfg.downlink_topk
        if topk is None:
            return held.version, None
        missed = max(0, server_round - held.round - 1)
        return held.version, min(1.0, topk * (1 + missed))

    def _encode(self, arrays: list[np.ndarray], base: str, fraction: float | None) -> Packed:
        if base != FULL:
            copy = self.copies[base]
            change = [g - c.astype(g.dtype, copy=False) for g, c in zip(arrays, copy, strict=True)]
            payload, sent = encode_delta(change, self._spec(fraction))
            if len(payload) < weights_size(arrays, self.cfg.downlink):
                version = version_of(base, payload)
                if version not in self.copies:
                    self.copies[version] = apply_delta(copy, sent)
                return Packed(payload, base, version)
        payload = encode_weights(arrays, self.cfg.downlink)
        version = version_of(FULL, payload)
        if version not in self.copies:
            self.copies[version] = decode_weights(payload)
        return Packed(payload, FULL, version)

    def _spec(self, fraction: float | None) -> CodecSpec:
        return CodecSpec(
            topk=fraction,
            quant_bits=self.cfg.downlink_quant_bits,
            error_feedback=False,
            lossless=self.cfg.lossless,
            dense_below=self.cfg.dense_below,
            topk_scope="model",
        )

    def _release(self) -> None:
        """Drop the copies no hospital holds or was just sent."""
        wanted = {h.version for h in (*self.held.values(), *self.pending.values())}
        for version in set(self.copies) - wanted:
            del self.copies[version]

    @property
    def memory_bytes(self) -> int:
        """Bytes of the copies kept."""
        return sum(a.nbytes for copy in self.copies.values() for a in copy)


def _compatible(copy: list[np.ndarray] | None, arrays: list[np.ndarray]) -> bool:
    return copy is not None and [a.shape for a in copy] == [np.shape(a) for a in arrays]


# --------------------------------------------------------------------------- hospital side


def copy_path(cfg: MedfedConfig, node_config: Mapping[str, Any], run_id: str) -> Path:
    """Where a hospital keeps its copy of the global model: its state folder for the run
    (the folder :func:`~medfed.federation.hospital.open_hospital` gives it)."""
    home = Path(str(node_config.get("home", cfg.home)))
    if "data-path" in node_config:
        name = str(node_config.get("hospital", f"hospital-{node_config.get('client-id', 0)}"))
    else:
        name = f"hospital-{int(node_config.get('partition-id', 0))}"
    return home / "hospitals" / name / run_id / COPY_FILE


def receive_global(
    content: RecordDict, layout: Sequence[TensorSpec], path: Path, run_id: str
) -> dict[str, torch.Tensor]:
    """The global model a message brings, as a state dict, checked against ``layout`` (the
    hospital's own model: :func:`~medfed.federation.wire.state_layout`).

    A message without a ``downlink`` record carries a full copy and nothing is kept. Otherwise
    the hospital's copy in ``path`` is rebuilt (from a full copy, or the change applied to the
    version it names) and saved before the model is used.
    """
    layout = list(layout)
    record = content[wire.ARRAYS_KEY]
    if wire.DOWNLINK_KEY not in content:
        return wire.unpack_global(record, layout)
    base, version = _addressing(content[wire.DOWNLINK_KEY])
    payload = wire.payload_view(record, max_payload_size(layout))
    if version_of(base, payload) != version:
        raise CodecError(f"the model's payload does not make the version it names ({version})")
    store = CopyStore(path, run_id)
    if base == FULL:
        arrays = decode_weights(payload, layout)
    else:
        held = store.load(layout)
        if held is None or held[0] != base:
            holds = f"version {held[0]}" if held else "no copy of the model"
            raise DownlinkMismatch(
                f"this hospital holds {holds}, the platform sent a change to version {base}: "
                "not applied; the platform sends a full copy next time"
            )
        change = decode_update(payload, layout)
        arrays = apply_delta(held[1], change, [spec.name for spec in layout])
    store.save(version, arrays)  # kept read-only: the model gets a copy
    return {spec.name: torch.tensor(a) for spec, a in zip(layout, arrays, strict=True)}


def _addressing(record: Any) -> tuple[str, str]:
    """``(base, version)`` of a message's downlink record, checked."""
    if not isinstance(record, ConfigRecord):
        raise CodecError(f"{wire.DOWNLINK_KEY!r}: expected a config record")
    base, version = record.get(BASE_KEY), record.get(VERSION_KEY)
    if not (isinstance(base, str) and (base == FULL or VERSION_PATTERN.fullmatch(base))):
        raise CodecError(f"{wire.DOWNLINK_KEY!r}: bad base {str(base)[:40]!r}")
    if not (isinstance(version, str) and VERSION_PATTERN.fullmatch(version)):
        raise CodecError(f"{wire.DOWNLINK_KEY!r}: bad version {str(version)[:40]!r}")
    return base, version
