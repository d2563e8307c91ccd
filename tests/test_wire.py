"""Updates on the wire: hospitals' encoded deltas, and the residual they keep between rounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord

from medfed.federation import wire
from medfed.federation.codec import CodecSpec, ResidualStore, decode_update


def states(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    global_state = {
        "conv.weight": torch.randn(40, 50, generator=generator),
        "norm.bias": torch.randn(8, generator=generator),
    }
    local_state = {
        k: v + 0.1 * torch.randn(v.shape, generator=generator) for k, v in global_state.items()
    }
    return global_state, local_state


def sent(record: ArrayRecord) -> list[np.ndarray]:
    return decode_update(record[wire.PAYLOAD_KEY].numpy().tobytes())


def test_lossless_update_rebuilds_the_local_model(tmp_path: Path) -> None:
    global_state, local_state = states(0)
    path = tmp_path / "residual.npz"
    record, nbytes, clipped = wire.pack_update(
        global_state, local_state, CodecSpec(), path, "run", seed=0
    )
    rebuilt = wire.unpack_update(record, ArrayRecord(global_state)).to_torch_state_dict()
    assert not clipped and nbytes == len(record[wire.PAYLOAD_KEY].numpy())
    for key, value in local_state.items():
        torch.testing.assert_close(rebuilt[key], value)
    assert not path.exists()  # nothing left behind, nothing kept


def test_residual_follows_the_learning_rate(tmp_path: Path) -> None:
    spec = CodecSpec(topk=0.05, dense_below=100)
    path = tmp_path / "residual.npz"
    global_state, local_state = states(1)
    wire.pack_update(global_state, local_state, spec, path, "run", seed=0, learning_rate=0.1)
    per_unit = ResidualStore(path, "run").load()
    assert per_unit is not None and np.abs(per_unit[0]).max() > 0
    assert not per_unit[1].any()  # the small tensor went whole

    # nothing new to send at half the rate: the payload and the new residual together carry
    # half of what was left behind
    record, _, _ = wire.pack_update(
        global_state, global_state, spec, path, "run", seed=1, learning_rate=0.05
    )
    after = ResidualStore(path, "run").load()
    assert after is not None
    np.testing.assert_allclose(
        sent(record)[0] + 0.05 * after[0], 0.5 * 0.1 * per_unit[0], rtol=1e-5, atol=1e-7
    )
