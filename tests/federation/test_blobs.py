"""Payloads beside Flower's messages: the ServerApp's files, the gateway's signed GET and PUT,
and what each side checks before it uses a byte of a blob."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from medfed.federation import gateway
from medfed.federation.blob_files import (
    BLOB_PATH,
    MAX_PENDING_UPLOADS,
    blob_root,
    run_folder,
    uploads_of,
)
from medfed.federation.blobs import (
    MIN_BYTES_KEY,
    REF_RUN,
    REF_SHA,
    REF_SIZE,
    HospitalBlobs,
    PlatformBlobs,
    blob_ref,
)
from medfed.federation.certs import write_private
from medfed.federation.codec import CodecError
from medfed.federation.keys import fingerprint, load_private_key, new_key_pair, signed_headers
from medfed.federation.wire import ARRAYS_KEY, CONFIG_KEY, ReplyRejected
from medfed.federation.wire_records import payload_record, payload_view
from medfed.store import RunStore
from serving import serving

NODES = {"north": 11, "south": 22}
RUN = run_folder("run-1")
THRESHOLD = 1000


@pytest.fixture(autouse=True)
def task_identity(monkeypatch) -> None:
    for field in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, field, 1)  # as the ServerApp's process has


@pytest.fixture
def platform(tmp_path: Path):
    """A gateway (plain HTTP, hospital keys checked) on a port of its own, its store and blob
    folder, and the key files of two registered hospitals and of one that was removed."""
    store = RunStore(f"sqlite:///{tmp_path / 'store.db'}")
    keys = {}
    for name in (*NODES, "gone"):
        private, public = new_key_pair()
        store.register_hospital(name, public, fingerprint(public))
        write_private(tmp_path / f"{name}.key", private)
        keys[name] = tmp_path / f"{name}.key"
    for name, node in NODES.items():
        store.set_hospital_node(name, node)
    store.remove_hospital("gone")
    home = tmp_path / "home"
    app = gateway.create_gateway("http://127.0.0.1:1", None, store, blobs=blob_root(home))
    with serving(app) as address:
        yield {"address": address, "store": store, "home": home, "keys": keys}


def hospital(platform: dict, name: str) -> HospitalBlobs:
    return HospitalBlobs(platform["address"], None, platform["keys"][name])


def message(payload: bytes) -> Message:
    content = RecordDict({ARRAYS_KEY: payload_record(payload), CONFIG_KEY: ConfigRecord()})
    return Message(content, dst_node_id=NODES["north"], message_type="train")


def url(platform: dict, sha: str) -> str:
    return f"http://{platform['address']}{BLOB_PATH}/{sha}"


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_the_model_and_the_update_travel_as_blobs_and_arrive_unchanged(platform: dict) -> None:
    rng = np.random.default_rng(0)
    model, update = rng.bytes(50_000), rng.bytes(30_000)
    sent = message(model)
    server = PlatformBlobs(platform["home"], platform["store"], "run-1", 10**6, threshold=THRESHOLD)
    server.offload([sent])
    ref = sent.content[ARRAYS_KEY]
    sha = hashlib.sha256(model).hexdigest()
    assert dict(ref) == {REF_SHA: sha, REF_SIZE: len(model), REF_RUN: run_folder("run-1")}
    assert sent.content[CONFIG_KEY][MIN_BYTES_KEY] == THRESHOLD

    north = hospital(platform, "north")
    north.fetch(sent.content)
    assert bytes(payload_view(sent.content[ARRAYS_KEY], 10**6)) == model
    reply = Message(RecordDict({ARRAYS_KEY: payload_record(update)}), reply_to=sent)
    north.upload(sent, reply)
    north.close()
    assert dict(reply.content[ARRAYS_KEY])[REF_SIZE] == len(update)
    assert len(stored_files(uploads_of(blob_root(platform["home"]), "north"))) == 1

    content = server.fetch(NODES["north"], reply.content)
    assert bytes(payload_view(content[ARRAYS_KEY], 10**6)) == update
    server.clear_sent()
    assert stored_files(blob_root(platform["home"])) == []  # read once, then gone


def test_runs_sending_the_same_model_keep_their_own_copies(platform: dict) -> None:
    first, second = message(b"w" * 5000), message(b"w" * 5000)
    runs = [
        PlatformBlobs(platform["home"], platform["store"], run, 10**6, threshold=THRESHOLD)
        for run in ("run-1", "run-2")
    ]
    runs[0].offload([first])
    runs[1].offload([second])
    runs[0].clear_sent()  # run 1's phase is over; run 2's hospitals still fetch theirs
    resumed = message(b"w" * 5000)
    PlatformBlobs(platform["home"], platform["store"], "run-3", 10**6, THRESHOLD).offload([resumed])
    PlatformBlobs(platform["home"], platform["store"], "run-3", 10**6, THRESHOLD)  # run 3 resumed
    run_3 = blob_root(platform["home"]) / "down" / run_folder("run-3")
    assert stored_files(run_3) == []  # what the stopped attempt left is gone
    hospital(platform, "north").fetch(second.content)
    assert bytes(payload_view(second.content[ARRAYS_KEY], 10**6)) == b"w" * 5000
    with pytest.raises(CodecError, match="answered 404"):
        hospital(platform, "north").fetch(first.content)


def test_small_payloads_and_replies_not_asked_for_stay_in_the_message(platform: dict) -> None:
    sent = message(b"x" * (THRESHOLD - 1))
    PlatformBlobs(platform["home"], platform["store"], "run-1", 10**6, THRESHOLD).offload([sent])
    assert bytes(payload_view(sent.content[ARRAYS_KEY], 10**6)) == b"x" * (THRESHOLD - 1)
    unasked = message(b"y" * 5000)  # the platform did not say it takes uploads
    reply = Message(RecordDict({ARRAYS_KEY: payload_record(b"z" * 5000)}), reply_to=unasked)
    hospital(platform, "north").upload(unasked, reply)
    assert bytes(payload_view(reply.content[ARRAYS_KEY], 10**6)) == b"z" * 5000


def test_the_gateway_serves_and_takes_blobs_only_from_registered_signing_hospitals(
    platform: dict, tmp_path: Path
) -> None:
    body = os.urandom(4000)
    sha = hashlib.sha256(body).hexdigest()
    intruder, _ = new_key_pair()
    write_private(tmp_path / "intruder.key", intruder)
    signed = {
        name: signed_headers(load_private_key(path))
        for name, path in {**platform["keys"], "intruder": tmp_path / "intruder.key"}.items()
    }
    forged = dict(signed["north"], **{"flwr-timestamp": signed["south"]["flwr-timestamp"]})
    forged["flwr-signature"] = signed["south"]["flwr-signature"]
    for headers, status in (
        ({}, 401),
        (forged, 401),  # south's signature under north's key
        (signed["intruder"], 403),
        (signed["gone"], 403),
    ):
        assert httpx.put(url(platform, sha), content=body, headers=headers).status_code == status
        assert httpx.get(url(platform, f"{RUN}/{sha}"), headers=headers).status_code == status
    assert stored_files(blob_root(platform["home"])) == []

    north = signed["north"]
    for name in (f"{RUN}/{sha}", sha, f"{RUN.upper()}/{sha}", f"up/{sha}"):
        assert httpx.get(url(platform, name), headers=north).status_code == 404  # never sent
    assert httpx.put(url(platform, "../" + sha), content=body, headers=north).status_code == 404
    assert httpx.put(url(platform, sha.upper()), content=body, headers=north).status_code == 404
    wrong = httpx.put(url(platform, sha), content=body[:-1] + b"!", headers=north)
    assert wrong.status_code == 400 and "Content-Length" in wrong.json()["detail"]
    assert stored_files(blob_root(platform["home"])) == []  # nothing half-written is kept
    assert httpx.put(url(platform, sha), content=body, headers=north).status_code == 201
    assert stored_files(blob_root(platform["home"])) == [
        uploads_of(blob_root(platform["home"]), "north") / sha
    ]


def test_an_upload_larger_than_the_gateway_takes_is_refused_unread(
    platform: dict, monkeypatch
) -> None:
    monkeypatch.setattr(gateway, "MAX_BLOB_BYTES", 1000)
    headers = signed_headers(load_private_key(platform["keys"]["north"]))
    body = os.urandom(1001)
    reply = httpx.put(
        url(platform, hashlib.sha256(body).hexdigest()), content=body, headers=headers
    )
    assert reply.status_code == 413 and "at most 1000" in reply.json()["detail"]


def test_a_hospital_keeps_only_its_newest_uploads_waiting(platform: dict) -> None:
    north = hospital(platform, "north")
    asked = message(b"")
    asked.content[CONFIG_KEY][MIN_BYTES_KEY] = 1
    for i in range(MAX_PENDING_UPLOADS + 2):
        reply = Message(RecordDict({ARRAYS_KEY: payload_record(b"%d" % i * 100)}), reply_to=asked)
        north.upload(asked, reply)
        time.sleep(0.01)  # distinct modification times
    kept = stored_files(uploads_of(blob_root(platform["home"]), "north"))
    newest = {hashlib.sha256(b"%d" % i * 100).hexdigest() for i in range(2, 6)}
    assert {p.name for p in kept} == newest


def test_the_platform_refuses_a_blob_another_hospital_uploaded_or_that_changed(
    platform: dict,
) -> None:
    server = PlatformBlobs(platform["home"], platform["store"], "run-1", 5000, threshold=1)
    asked = message(b"")
    asked.content[CONFIG_KEY][MIN_BYTES_KEY] = 1
    reply = Message(RecordDict({ARRAYS_KEY: payload_record(b"u" * 3000)}), reply_to=asked)
    hospital(platform, "south").upload(asked, reply)
    ref = reply.content[ARRAYS_KEY]
    with pytest.raises(ReplyRejected, match="not uploaded by this hospital"):
        server.fetch(NODES["north"], RecordDict({ARRAYS_KEY: ref}))
    (path,) = stored_files(uploads_of(blob_root(platform["home"]), "south"))
    path.write_bytes(b"v" * 3000)
    with pytest.raises(ReplyRejected, match="do not match its reference"):
        server.fetch(NODES["south"], RecordDict({ARRAYS_KEY: ref}))
    too_large = blob_ref(ref[REF_SHA], 5001)
    with pytest.raises(ReplyRejected, match="5000 at most"):
        server.fetch(NODES["south"], RecordDict({ARRAYS_KEY: too_large}))
    garbled = ConfigRecord({REF_SHA: "../../etc/passwd", REF_SIZE: 1})
    with pytest.raises(ReplyRejected, match="not a SHA-256"):
        server.fetch(NODES["south"], RecordDict({ARRAYS_KEY: garbled}))


def test_a_hospital_refuses_a_blob_that_does_not_match_its_reference(platform: dict) -> None:
    sent = message(b"m" * 2000)
    PlatformBlobs(platform["home"], platform["store"], "run-1", 10**6, threshold=1).offload([sent])
    (path,) = stored_files(blob_root(platform["home"]) / "down" / run_folder("run-1"))
    path.write_bytes(b"n" * 2000)
    with pytest.raises(CodecError, match="do not match its reference"):
        hospital(platform, "north").fetch(sent.content)
    path.unlink()
    with pytest.raises(CodecError, match="answered 404"):
        hospital(platform, "north").fetch(sent.content)
