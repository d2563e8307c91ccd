"""SCAFFOLD (Karimireddy et al., 2020): FedAvg whose hospitals correct their gradients for drift.

The server keeps a control variate ``c`` (one float32 tensor per trainable parameter, zeros at
first) and sends it with the global model. Each hospital keeps its own ``c_i`` between rounds
(on disk, like the error-feedback residual), adds ``c - c_i`` to every gradient it computes, and
after training takes as its new ``c_i`` the mean raw gradient of its steps (SCAFFOLD's option II,
which for plain SGD is exactly ``c_i - c + (x - y_i) / (K * lr)``); it sends ``c_i' - c_i``
back next to its update. The server adds the sum of these changes divided by
``federated.num_clients`` to ``c``; the model itself is averaged as FedAvg does.

Both control arrays travel as one float32 payload each (as large as the model, uncompressed),
and a hospital's change is checked like its update (layout, finite values, norm) before the
strategy sees it. ``c`` lives in the ServerApp's memory: a resumed run starts it at zero again
(the hospitals' own ``c_i`` correct it within a round).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as fl

from medfed.federation.codec import (
    CodecError,
    TensorSpec,
    decode_weights,
    encode_weights,
    max_payload_size,
)
from medfed.federation.saved_state import load_npz, save_npz
from medfed.federation.wire import payload_record, payload_view

CONTROL_KEY = "scaffold"  # the server's c in a message; a hospital's change of c_i in a reply
CONTROL_FILE = "scaffold.npz"
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def control_layout(layout: Sequence[TensorSpec]) -> list[TensorSpec]:
    """The model's trainable parameters (BatchNorm buffers left out), each as float32."""
    return [
        TensorSpec(spec.name, spec.shape, np.dtype(np.float32))
        for spec in layout
        if not spec.name.endswith(BUFFER_SUFFIXES)
    ]


def pack_control(arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """Control arrays as one float32 payload record."""
    return payload_record(encode_weights([np.asarray(a, np.float32) for a in arrays], "fp32"))


def unpack_control(record: object, layout: Sequence[TensorSpec]) -> list[np.ndarray]:
    """Control arrays from a received record, checked against ``layout`` (from
    :func:`control_layout`): names' shapes, float32, finite; :class:`CodecError` otherwise."""
    if not isinstance(record, ArrayRecord):
        raise CodecError(f"{CONTROL_KEY!r}: expected the control variate payload")
    return decode_weights(payload_view(record, max_payload_size(layout)), layout)


def control_norm(arrays: Sequence[np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.dot(a.ravel(), a.ravel())) for a in arrays)))


class ControlStore:
    """A hospital's control variate ``c_i`` in one ``.npz`` file, kept for one run."""

    def __init__(self, path: Path, run_id: str):
        self.path = Path(path)
        self.run_id = str(run_id)

    def load(self, layout: Sequence[TensorSpec]) -> list[np.ndarray]:
        """This run's ``c_i`` when it fits ``layout``, else zeros (a hospital's first round)."""
        try:
            data = load_npz(self.path)
            if str(data["run_id"]) == self.run_id and int(data["count"]) == len(layout):
                arrays = [data[f"a{i}"] for i in range(len(layout))]
                if all(a.shape == s.shape for a, s in zip(arrays, layout, strict=True)):
                    return [a.astype(np.float32) for a in arrays]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass
        return [np.zeros(spec.shape, np.float32) for spec in layout]

    def save(self, arrays: Sequence[np.ndarray]) -> None:
        """Replace the kept ``c_i`` atomically."""
        named = {f"a{i}": np.array(a, np.float32) for i, a in enumerate(arrays)}
        save_npz(self.path, run_id=np.str_(self.run_id), count=np.int64(len(arrays)), **named)


class SCAFFOLD(fl.FedAvg):
    """FedAvg plus the server's control variate (see the module's docstring).

    Replies reach :meth:`aggregate_train` checked (:func:`medfed.federation.replies.
    check_train_reply` decodes each hospital's change of ``c_i`` under :data:`CONTROL_KEY`).
    """

    def __init__(self, *, num_clients: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.num_clients = max(1, num_clients)
        self.control: list[np.ndarray] | None = None
        self.names: list[str] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.control is None:
            layout = [
                TensorSpec(name, tuple(array.shape), np.dtype(array.dtype))
                for name, array in arrays.items()
            ]
            specs = control_layout(layout)
            self.names = [spec.name for spec in specs]
            self.control = [np.zeros(spec.shape, np.float32) for spec in specs]
        record = pack_control(self.control)
        for msg in messages:
            msg.content[CONTROL_KEY] = record
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        changes = []
        for msg in replies:
            if msg.has_error() or CONTROL_KEY not in msg.content:
                continue
            record = msg.content.pop(CONTROL_KEY)
            changes.append([record[name].numpy() for name in self.names])
        if changes and self.control is not None:
            for index, total in enumerate(self.control):
                total += sum(change[index] for change in changes) / self.num_clients
        return super().aggregate_train(server_round, replies)


def checked_change(record: object, global_record: ArrayRecord, max_norm: float) -> ArrayRecord:
    """A hospital's change of ``c_i``, decoded against the global model's trainable
    parameters, finite and of L2 norm at most ``max_norm``; :class:`CodecError` otherwise."""
    layout = [
        TensorSpec(name, tuple(array.shape), np.dtype(np.float32))
        for name, array in global_record.items()
    ]
    specs = control_layout(layout)
    arrays = unpack_control(record, specs)
    norm = control_norm(arrays)
    if not norm <= max_norm:
        raise CodecError(
            f"{CONTROL_KEY}: control variate change of norm {norm:.4g} is above "
            f"federated.max_update_norm={max_norm:g}"
        )
    return ArrayRecord({spec.name: Array(a) for spec, a in zip(specs, arrays, strict=True)})
