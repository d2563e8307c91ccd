"""Deployment on loopback: the platform's SuperLink behind its Fleet-only gateway, over TLS, and
registered hospitals' SuperNodes; `medfed run --deploy` across them."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from medfed.cli import main
from medfed.config import load_config
from medfed.data.synthetic import write_synthetic_dataset
from medfed.federation.blob_files import blob_root
from medfed.federation.blobs import MIN_BYTES_ENV
from medfed.federation.certs import CertPaths, init_certs, write_private
from medfed.federation.hospital_node import HospitalLink, start_hospital
from medfed.federation.hospitals import (
    add_hospital,
    control_client,
    remove_hospital,
    sync_registrations,
)
from medfed.federation.keys import new_key_pair
from medfed.federation.superlink import (
    start_platform_link,
    stop_process_group,
    wait_for_port,
)
from medfed.store import RunStore
from serving import free_port

pytestmark = pytest.mark.slow

CONTROL_CALLS = [
    "/v1/control/start-run",
    "/v1/control/stop-run",
    "/v1/control/list-runs",
    "/v1/control/register-node",
    "/v1/control/unregister-node",
    "/v1/control/list-nodes",
    "/v1/runtime/get-nodes",
    "/v1/runtime/push-messages",
    "/v1/fleet/../control/list-runs",
    "/docs",
]


def write_config(tmp_path: Path, **federated) -> Path:
    platform_data = write_synthetic_dataset(
        tmp_path / "platform", n_per_class=4, size=16, seed=7, test_per_class=5
    )
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "home": str(tmp_path / "home"),
                "data": {"path": str(platform_data), "image_size": 16},
                "model": {"name": "cancer_cnn"},
                "training": {"batch_size": 8},
                "federated": {
                    "server_address": f"127.0.0.1:{free_port()}",
                    "num_clients": 2,
                    "rounds": 1,
                    "round_timeout": 120,
                    **federated,
                },
                "deployment": {"superlink_port": free_port()},
            }
        )
    )
    return config


def test_the_control_client_trusts_the_platform_ca_as_httpx_recommends(tmp_path: Path) -> None:
    init_certs(tmp_path, ["localhost"], force=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=DeprecationWarning, module="httpx")
        client = control_client(free_port(), tmp_path / "ca.pem")
    client.close()


def test_registered_hospitals_train_over_tls_and_the_control_port_stays_closed(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv(MIN_BYTES_ENV, str(2**40))  # payloads inside Flower's messages
    config = write_config(tmp_path)
    assert main(["certs", "init", "--host", "localhost", "--config", str(config)]) == 0
    cfg = load_config(config)
    store = RunStore(cfg.database_url)
    keys = {}
    for name in ("north", "south"):
        _, keys[name] = add_hospital(cfg, store, name)
        write_private(tmp_path / f"{name}.key", keys[name])
    ca = cfg.certs_dir / "ca.pem"
    link = start_platform_link(cfg, store.url)
    processes = list(link.processes)
    try:
        sync_registrations(cfg, store)
        for site, name in enumerate(("north", "south")):
            write_synthetic_dataset(tmp_path / f"site{site}", n_per_class=10, size=16, seed=site)
            hospital = HospitalLink(cfg.federated.server_address, ca, tmp_path / f"{name}.key")
            processes.append(
                start_hospital(
                    cfg,
                    hospital,
                    data_path=tmp_path / f"site{site}",
                    port=free_port(),
                    name="claims-to-be-someone-else",
                    log_file=tmp_path / f"{name}.log",
                )
            )
        gateway = f"https://{cfg.federated.server_address}"
        context = ssl.create_default_context(cafile=str(ca))
        for path in CONTROL_CALLS:
            reply = httpx.post(gateway + path, verify=context, content=b"\x00")
            assert reply.status_code == 404, (path, reply.status_code)
        with pytest.raises(httpx.TransportError):  # the gateway speaks TLS only
            httpx.post(f"http://{cfg.federated.server_address}/v1/fleet/get-run")
        assert main(["run", "--deploy", "--config", str(config)]) == 0
    finally:
        for process in processes:
            stop_process_group(process, timeout=30)

    out = " ".join(capsys.readouterr().out.split())
    assert "(the connected hospitals)" in out, out  # started, or queued until both connect
    run = store.list_runs()[0][0]
    assert run.mode == "deployment" and run.status == "finished", run.error
    results = store.client_results(run.id)
    assert {(c.hospital, c.phase, c.status) for c in results} == {
        (name, phase, "ok") for name in ("north", "south") for phase in ("train", "evaluate")
    }
    assert {c.num_examples for c in results if c.phase == "train"} == {17}  # 20 minus validation
    rounds = store.rounds(run.id)
    assert len(rounds) == 1 and sum(map(sum, rounds[0].metrics["confusion_matrix"])) == 10
    assert {h.name: h.last_seen is not None for h in store.list_hospitals()} == {
        "north": True,
        "south": True,
    }
    assert "blob" not in (cfg.home / "flwr" / "gateway.log").read_text()
    assert not blob_root(cfg.home).exists()


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> dict:
    """A platform's gateway and SuperLink (TLS, hospital keys) with north registered and
    east removed; no run."""
    tmp_path = tmp_path_factory.mktemp("platform")
    config = write_config(tmp_path, server_address=f"0.0.0.0:{free_port()}")  # every address
    assert main(["certs", "init", "--host", "localhost", "--config", str(config)]) == 0
    cfg = load_config(config)
    store = RunStore(cfg.database_url)
    for name in ("north", "east"):
        _, key = add_hospital(cfg, store, name)
        write_private(tmp_path / f"{name}.key", key)
    remove_hospital(cfg, store, "east")
    rogue, _ = new_key_pair()
    write_private(tmp_path / "rogue.key", rogue)
    write_synthetic_dataset(tmp_path / "site", n_per_class=4, size=16, seed=3)
    link = start_platform_link(cfg, store.url)
    sync_registrations(cfg, store)
    yield {"tmp": tmp_path, "config": config, "cfg": cfg}
    for process in link.processes:
        stop_process_group(process)


def client(platform: dict, *args: str) -> list[str]:
    tmp = platform["tmp"]
    port = platform["cfg"].federated.server_address.rsplit(":", 1)[1]
    return [
        "client",
        "--config",
        str(platform["config"]),
        "--server",
        f"127.0.0.1:{port}",
        "--data",
        str(tmp / "site"),
        "--ca",
        str(platform["cfg"].certs_dir / "ca.pem"),
        *args,
    ]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("rogue.key", "this hospital key is not registered on this platform"),
        ("east.key", "hospital 'east' was removed from this platform"),
        ("nowhere.key", "no hospital key at"),
    ],
)
def test_hospitals_without_a_valid_registration_are_refused_in_one_line(
    platform: dict, key: str, expected: str, capsys
) -> None:
    assert main(client(platform, "--key", str(platform["tmp"] / key))) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_a_hospital_key_others_can_read_is_refused(platform: dict, capsys) -> None:
    key = platform["tmp"] / "north-open.key"
    key.write_bytes((platform["tmp"] / "north.key").read_bytes())
    key.chmod(0o644)
    assert main(client(platform, "--key", str(key))) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_tls_problems_at_the_hospital_are_one_line_errors(platform: dict, capsys) -> None:
    tmp, cfg = platform["tmp"], platform["cfg"]
    port = cfg.federated.server_address.rsplit(":", 1)[1]
    other = init_certs(tmp / "other", ["localhost"]).folder
    key = str(tmp / "north.key")
    cases = [
        (["--key", key, "--ca", str(other / "ca.pem")], "does not vouch for"),
        (["--key", key, "--ca", str(tmp / "missing.pem")], "no CA certificate at"),
        (["--key", key, "--server", f"127.0.0.2:{port}"], "not valid for '127.0.0.2'"),
        (["--key", key, "--server", f"127.0.0.1:{free_port()}"], "nothing answers at"),
        (["--insecure"], "it expects TLS"),
    ]
    for args, expected in cases:
        assert main(client(platform, *args)) == 2, args
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (args, err)


def test_an_expired_platform_certificate_is_named_at_the_hospital(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    cfg = load_config(config)
    paths = init_certs(cfg.certs_dir, ["localhost"])
    expire(paths)
    store = RunStore(cfg.database_url)
    _, key = add_hospital(cfg, store, "north")
    write_private(tmp_path / "north.key", key)
    host, port = cfg.federated.server_address.rsplit(":", 1)
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medfed.federation.gateway",
            "--host",
            host,
            "--port",
            port,
            "--upstream-port",
            str(free_port()),
            "--certs",
            str(paths.folder),
        ],
        env={**os.environ, "MEDFED_STORE_URL": store.url},
        start_new_session=True,
    )
    try:
        wait_for_port(host, int(port), gateway, tmp_path / "gateway.log")
        write_synthetic_dataset(tmp_path / "site", n_per_class=4, size=16, seed=3)
        args = ["client", "--config", str(config), "--data", str(tmp_path / "site")]
        assert main([*args, "--key", str(tmp_path / "north.key")]) == 2
    finally:
        stop_process_group(gateway)
    err = capsys.readouterr().err
    assert "the platform's certificate expired on" in err and "Traceback" not in err


def expire(paths: CertPaths) -> None:
    """Re-issue the server certificate with a validity that ended yesterday."""
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), None)
    old = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    cert = builder.sign(ca_key, hashes.SHA384())
    paths.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
