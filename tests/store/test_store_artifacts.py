"""Encrypted model artifacts: round trips, the key file, tampering and wrong keys."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
import torch

from medfed.errors import StoreError
from medfed.store import ArtifactStore


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "home" / "models")


def test_round_trip_is_encrypted_with_a_private_key_file(
    artifacts: ArtifactStore, tmp_path: Path
) -> None:
    data = b"weights of a very secret model " * 100
    path = artifacts.save("run1/round_1.pt.enc", data)
    assert path == tmp_path / "home" / "models" / "run1" / "round_1.pt.enc"
    assert b"secret model" not in path.read_bytes()
    assert artifacts.load(path) == data
    assert artifacts.load("run1/round_1.pt.enc") == data
    key_file = tmp_path / "home" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert ArtifactStore(tmp_path / "home" / "models").load(path) == data  # same key file
    assert artifacts.save("run1/round_2", data).read_bytes() != path.read_bytes()  # fresh nonce


def test_tampered_artifact_is_refused(artifacts: ArtifactStore) -> None:
    path = artifacts.save("m.enc", b"0123456789" * 50)
    blob = bytearray(path.read_bytes())
    blob[-20] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(StoreError, match="cannot be decrypted: it was modified"):
        artifacts.load(path)


def test_wrong_key_is_refused(artifacts: ArtifactStore, tmp_path: Path) -> None:
    path = artifacts.save("m.enc", b"data")
    other = ArtifactStore(tmp_path / "home" / "models", key=os.urandom(32))
    with pytest.raises(StoreError, match="encrypted with another key"):
        other.load(path)
    key_file = tmp_path / "home" / "secret.key"
    given = ArtifactStore(tmp_path / "elsewhere", key=key_file.read_bytes())
    assert given.load(path) == b"data"


def test_bad_inputs_are_clear_errors(artifacts: ArtifactStore, tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    plain.write_bytes(b"not encrypted")
    with pytest.raises(StoreError, match="is not an encrypted medfed artifact"):
        artifacts.load(plain)
    with pytest.raises(StoreError, match="cannot be read"):
        artifacts.load("missing.enc")
    for name in ("../escape.enc", "/abs/path.enc"):
        with pytest.raises(StoreError, match="must be a relative path"):
            artifacts.save(name, b"x")
    with pytest.raises(StoreError, match="is not an artifact key"):
        ArtifactStore(tmp_path, key=b"too short")
    bad_key_home = tmp_path / "bad" / "models"
    bad_key_home.parent.mkdir()
    (bad_key_home.parent / "secret.key").write_text("garbage")
    with pytest.raises(StoreError, match=r"key file .*secret.key is not an artifact key"):
        ArtifactStore(bad_key_home)


def test_state_dict_round_trip_and_plain_export(artifacts: ArtifactStore, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    meta = {"round": 3, "metrics": {"accuracy": 0.91}, "model": "cancer_cnn", "classes": ["a"]}
    path = artifacts.save_state_dict("run/round_3.pt.enc", model.state_dict(), meta)
    state_dict, loaded_meta = artifacts.load_state_dict(path)
    assert loaded_meta == meta
    assert state_dict.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(state_dict[name], tensor)
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    fresh.load_state_dict(state_dict)

    out = artifacts.export_plain(path, tmp_path / "download" / "model.pt")
    exported = torch.load(out, weights_only=True)
    assert exported["meta"] == meta
    assert torch.equal(exported["state_dict"]["0.weight"], model.state_dict()["0.weight"])


def test_non_checkpoint_artifact_has_no_state_dict(artifacts: ArtifactStore) -> None:
    path = artifacts.save("raw.enc", b"plain bytes, no torch")
    with pytest.raises(StoreError, match="holds no model checkpoint"):
        artifacts.load_state_dict(path)


def test_base64_key_is_accepted(tmp_path: Path) -> None:
    raw = os.urandom(32)
    first = ArtifactStore(tmp_path / "a", key=raw)
    second = ArtifactStore(tmp_path / "b", key=base64.urlsafe_b64encode(raw))
    assert second.load(first.save("x", b"same key")) == b"same key"
