"""Multi-host deployment: the platform and each hospital on its own network namespace.

Four namespaces share a bridge in the platform's namespace (10.231.N.0/24). The platform runs
`medfed server` (dashboard and API on its own loopback, Flower's SuperLink on its loopback, the
gateway on its address); two registered hospitals run `medfed client` against that address, over
TLS with their keys; a third namespace holds a key the platform never registered. A two-round
run is started through the API; one hospital is killed in round 2's training; and from a
hospital's namespace, Flower's control API cannot be reached. Needs root to create namespaces
(CI runs as root); skips with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from medfed.data.synthetic import write_synthetic_dataset
from medfed.federation.keys import new_key_pair
from medfed.federation.superlink import APP_DIR
from medfed.store import RunStore

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python")
MEDFED = str(BIN / "medfed")
GATEWAY_PORT = 9092
SUPERLINK_PORT = 9093
API_PORT = 8080
ADMIN = ("coordinator", "multihost-coordinator-password")
ROUND_TIMEOUT_S = 30
# Enough local training (a second or two) that north, killed when its round-2 instruction
# arrives, is still training then.
HOSPITAL_IMAGES_PER_CLASS = 120
LOCAL_EPOCHS = 3
LAB_ENV = "MULTIHOST_LAB"  # marks every process the lab starts (and their children)
QUIET = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONUNBUFFERED": "1",
}

# Relays a Unix socket (the filesystem is shared across namespaces) to the API on the platform
# namespace's loopback: the test reaches the dashboard API the way a coordinator on the
# platform host would.
API_RELAY = r"""
import asyncio, sys

path, port = sys.argv[1], int(sys.argv[2])

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def handle(reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

async def main():
    server = await asyncio.start_unix_server(handle, path)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""

# Run on a hospital's namespace: Flower's SuperLink port on the platform's address, then every
# Control and Runtime call of Flower's HTTP API through the gateway, signed with the hospital's
# registered key and unsigned.
CONTROL_PROBE = r"""
import json, socket, ssl, sys
from pathlib import Path

import httpx
from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES
from medfed.federation.keys import load_private_key, signed_headers

args = json.loads(sys.argv[1])
found = {}
with socket.socket() as sock:
    sock.settimeout(5)
    found["superlink_connect"] = sock.connect_ex((args["ip"], args["superlink_port"]))
paths = sorted({path for _, path in PROTOBUF_REQUEST_TYPES if not path.startswith("/v1/fleet/")})
key = load_private_key(Path(args["key"]))
context = ssl.create_default_context(cafile=args["ca"])
base = "https://%s:%d" % (args["ip"], args["gateway_port"])
with httpx.Client(base_url=base, verify=context, trust_env=False, timeout=10) as client:
    found["signed"] = {p: client.post(p, content=b"", headers=signed_headers(key)).status_code
                       for p in paths}
    found["unsigned"] = {p: client.post(p, content=b"").status_code for p in paths}
    found["unsigned_fleet"] = client.post("/v1/fleet/pull-messages", content=b"").status_code
    blob, sent = "/medfed/v1/blobs/" + "0" * 64, "/medfed/v1/blobs/" + "0" * 16 + "/" + "0" * 64
    found["blob_unsigned"] = [client.get(sent).status_code, client.put(blob).status_code]
    found["blob_unknown"] = client.get(sent, headers=signed_headers(key)).status_code
print(json.dumps(found))
"""


class LabError(Exception):
    """The network namespaces could not be made."""


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise LabError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Host:
    role: str
    ns: str
    ip: str


class Lab:
    """Network namespaces on one bridge, the processes started in them, and their teardown."""

    ROLES = {"plat": 1, "h1": 11, "h2": 12, "rogue": 66}

    def __init__(self, workdir: Path):
        self.tag = secrets.token_hex(3)
        net = f"10.231.{random.randrange(1, 255)}"
        self.hosts = {
            role: Host(role, f"medfed-{role}-{self.tag}", f"{net}.{last}")
            for role, last in self.ROLES.items()
        }
        self.workdir = workdir
        self.created: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.env = {
            k: v
            for k, v in os.environ.items()
            if "proxy" not in k.lower() and not k.startswith("MEDFED_")
        }
        self.env.update(QUIET)
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"  # Flower's commands
        self.env[LAB_ENV] = self.tag

    def __getitem__(self, role: str) -> Host:
        return self.hosts[role]

    def setup(self) -> None:
        """The namespaces, a bridge in the platform's, a veth pair from each hospital's."""
        plat = self["plat"]
        for host in self.hosts.values():
            ip("netns", "add", host.ns)
            self.created.append(host.ns)
            ip("-n", host.ns, "link", "set", "lo", "up")
        ip("-n", plat.ns, "link", "add", "br0", "type", "bridge")
        for host in self.hosts.values():
            if host is plat:
                continue
            port = f"to-{host.role}"
            veth = ["type", "veth", "peer", "name", "eth0", "netns", host.ns]
            ip("link", "add", port, "netns", plat.ns, *veth)
            ip("-n", plat.ns, "link", "set", port, "master", "br0", "up")
            ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            ip("-n", host.ns, "link", "set", "eth0", "up")
        ip("-n", plat.ns, "addr", "add", f"{plat.ip}/24", "dev", "br0")
        ip("-n", plat.ns, "link", "set", "br0", "up")

    def command(self, host: Host, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", host.ns, *argv]

    def start(self, host: Host, argv: list[str], log_name: str) -> subprocess.Popen:
        """``argv`` in the background on ``host``, its output in ``workdir/log_name``."""
        with open(self.workdir / log_name, "ab") as log:
            process = subprocess.Popen(
                self.command(host, argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def run(
        self, host: Host, argv: list[str], *, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(host, argv),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )

    def pids(self, host: Host) -> set[int]:
        return {int(p) for p in ip("netns", "pids", host.ns).split()} - {os.getpid()}

    def kill(self, host: Host) -> int:
        """SIGKILL every process on ``host``'s namespace (the machine dies); how many."""
        killed: set[int] = set()
        for _ in range(100):
            pids = self.pids(host)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed |= pids
            time.sleep(0.1)
        else:
            raise AssertionError(f"processes on {host.ns} survive SIGKILL: {sorted(pids)}")
        for process in self.processes:
            process.poll()  # reap the ones started here
        return len(killed)

    def teardown(self) -> None:
        """Every process on the namespaces killed, the namespaces (and their links) deleted."""
        errors = []
        for ns in list(self.created):
            host = next(h for h in self.hosts.values() if h.ns == ns)
            try:
                self.kill(host)
            except (LabError, AssertionError) as exc:
                errors.append(str(exc))
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        for ns in list(self.created):
            try:
                ip("netns", "del", ns)
                self.created.remove(ns)
            except LabError as exc:
                errors.append(str(exc))
        assert not errors, errors

    def leftovers(self) -> tuple[list[str], list[str]]:
        """Namespaces of this lab still listed, and processes still carrying its mark."""
        listed = ip("netns", "list")
        namespaces = [h.ns for h in self.hosts.values() if h.ns in listed]
        mark = f"{LAB_ENV}={self.tag}".encode()
        alive = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if mark in (proc / "environ").read_bytes().split(b"\0"):
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    alive.append(f"{proc.name}: {cmdline[:120]}")
        return namespaces, alive


class Timings:
    """Prints how long each step took, and when (``pytest -s`` shows them as they come)."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()

    def __call__(self, step: str) -> None:
        now = time.monotonic()
        print(
            f"[multihost] {step}: {now - self.last:.1f}s (at {now - self.start:.1f}s)", flush=True
        )
        self.last = now


@pytest.fixture
def timings() -> Timings:
    return Timings()


@pytest.fixture
def lab(tmp_path: Path, timings: Timings) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces (ip netns add) needs root; CI runs as root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2) to create network namespaces")
    lab = Lab(tmp_path)
    try:
        lab.setup()
    except LabError as exc:
        lab.teardown()
        pytest.skip(f"cannot create network namespaces here: {exc}")
    timings("four network namespaces on a bridge")
    try:
        yield lab
    finally:
        lab.teardown()


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return f"(no {path.name})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    *watched: tuple[subprocess.Popen, Path],
    poll: float = 0.5,
) -> Any:
    """Poll ``check()`` until it returns something truthy; fail if a watched process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process, log in watched:
            if process.poll() is not None:
                ended = f"{log.stem} ended (exit {process.returncode}) before {what}"
                pytest.fail(f"{ended}:\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if result := check():
                return result
        time.sleep(poll)
    details = "\n".join(f"--- {log.name}\n{tail(log)}" for _, log in watched)
    pytest.fail(f"no {what} within {timeout:g}s\n{details}")


def write_yaml(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def hospital_config(tmp_path: Path, name: str) -> Path:
    """A hospital's own config: its home (cache) and the image size it checks its data at."""
    values = {"home": str(tmp_path / f"{name}-home"), "data": {"image_size": 16}}
    return write_yaml(tmp_path / f"{name}.yml", values)


@dataclass
class Platform:
    """`medfed server` on the platform's namespace, and the API reached through the relay."""

    lab: Lab
    workdir: Path
    config: Path
    home: Path
    server: tuple[subprocess.Popen, Path]
    api: httpx.Client

    @property
    def host(self) -> Host:
        return self.lab["plat"]

    @property
    def address(self) -> str:
        return f"{self.host.ip}:{GATEWAY_PORT}"

    @property
    def ca(self) -> Path:
        return self.home / "certs" / "ca.pem"


@pytest.fixture
def platform(lab: Lab, tmp_path: Path, timings: Timings) -> Iterator[Platform]:
    """The platform host set up as its README says, then `medfed server` started."""
    plat = lab["plat"]
    data = write_synthetic_dataset(
        tmp_path / "platform-data", n_per_class=4, size=16, seed=7, test_per_class=5
    )
    home = tmp_path / "platform-home"
    config = write_yaml(
        tmp_path / "platform.yml",
        {
            "home": str(home),
            "api": {"host": "127.0.0.1", "port": API_PORT},
            "data": {"path": str(data), "image_size": 16},
            "model": {"name": "cancer_cnn"},
            "federated": {"server_address": f"{plat.ip}:{GATEWAY_PORT}", "num_clients": 2},
            "deployment": {"superlink_port": SUPERLINK_PORT},
        },
    )
    for argv in (
        ["certs", "init", "--host", plat.ip],
        ["users", "add", ADMIN[0], "--role", "admin"],
        ["hospital", "add", "north", "--out", str(tmp_path / "north.key")],
        ["hospital", "add", "south", "--out", str(tmp_path / "south.key")],
    ):
        done = lab.run(plat, [MEDFED, *argv, "-c", str(config)], stdin=ADMIN[1] + "\n")
        assert done.returncode == 0, f"medfed {' '.join(argv)}: {done.stdout}{done.stderr}"
    timings("platform: certificates, an admin, hospitals north and south registered")

    log = tmp_path / "platform-server.log"
    server = lab.start(plat, [MEDFED, "server", "-c", str(config)], log.name)
    sockets = Path(tempfile.mkdtemp(prefix="medfed-lab-"))  # short: a socket path has a limit
    lab.start(plat, [PYTHON, "-c", API_RELAY, str(sockets / "api"), str(API_PORT)], "relay.log")
    api = httpx.Client(
        transport=httpx.HTTPTransport(uds=str(sockets / "api")),
        base_url=f"http://127.0.0.1:{API_PORT}",
        timeout=30,
        trust_env=False,
    )
    try:
        yield Platform(lab, tmp_path, config, home, (server, log), api)
    finally:
        api.close()
        shutil.rmtree(sockets, ignore_errors=True)


def test_platform_and_hospitals_on_separate_network_namespaces(
    lab: Lab, platform: Platform, tmp_path: Path, timings: Timings
) -> None:
    api = platform.api
    wait_until(
        "the platform's API",
        lambda: api.get("/api/health").status_code == 200,
        90,
        platform.server,
    )
    timings("medfed server up: API and SuperLink on its loopback, gateway on its address")
    login = api.post("/api/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
    assert login.status_code == 200, login.text
    api.headers["Authorization"] = f"Bearer {login.json()['token']}"

    # ------------------------------------------------------------ north and south join
    hospitals = {"north": lab["h1"], "south": lab["h2"]}
    clients: dict[str, tuple[subprocess.Popen, Path]] = {}
    for seed, (name, host) in enumerate(hospitals.items()):
        data = write_synthetic_dataset(
            tmp_path / f"{name}-data", n_per_class=HOSPITAL_IMAGES_PER_CLASS, size=16, seed=seed
        )
        argv = [MEDFED, "client", "--key", str(tmp_path / f"{name}.key"), "--ca", str(platform.ca)]
        argv += ["--server", platform.address, "--data", str(data)]
        argv += ["-c", str(hospital_config(tmp_path, name))]
        log = tmp_path / f"hospital-{name}.log"
        clients[name] = (lab.start(host, argv, log.name), log)

    def both_connected() -> bool:
        listed = {h["name"]: h["status"] for h in api.get("/api/hospitals").json()}
        return listed == {"north": "online", "south": "online"}

    wait_until("both hospitals connected", both_connected, 90, platform.server, *clients.values())
    timings("north and south connected over TLS with their keys")

    # A SuperNode holding a key the platform never registered, started without medfed's check.
    rogue_key = write_rogue_key(tmp_path)
    rogue_log = tmp_path / "rogue-supernode.log"
    argv = [str(BIN / "flower-supernode"), "--superlink", platform.address]
    argv += ["--root-certificates", str(platform.ca)]
    argv += ["--auth-supernode-private-key", str(rogue_key)]
    argv += ["--node-config", f'data-path="{tmp_path / "rogue-data"}" hospital="rogue"']
    rogue_node = lab.start(lab["rogue"], argv, rogue_log.name)

    # ------------------------------------------------------------ a run started through the API
    run_config = {
        "model": {"name": "cancer_cnn"},
        "data": {"image_size": 16},
        "training": {"batch_size": 8, "threads": 1},
        "federated": {
            "rounds": 2,
            "local_epochs": LOCAL_EPOCHS,
            "num_clients": 2,
            "min_train_clients": 1,
            "min_evaluate_clients": 1,
            "min_available_clients": 1,
            "round_timeout": ROUND_TIMEOUT_S,
        },
    }
    created = api.post(
        "/api/runs", json={"name": "multihost", "mode": "deployment", "config": run_config}
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    timings("run submitted through the API")

    # ------------------------------------------------------------ north dies in round 2
    north_process, north_log = clients["north"]

    def north_log_count(line: str) -> int:
        return north_log.read_text(errors="replace").count(line)

    wait_until(
        "north's round-2 training instruction",
        lambda: north_log_count("Receiving: train message") == 2,
        120,
        platform.server,
        poll=0.1,
    )
    killed = lab.kill(hospitals["north"])
    assert north_process.poll() is not None
    # It had its round-2 instruction and had not replied to it: killed mid-round.
    assert north_log_count("Sending: train message") == 1, tail(north_log, 40)
    timings(f"north's machine killed in round 2's training ({killed} processes)")

    # While the platform waits for north: what a hospital can reach, and a stranger's key.
    check_control_port_closed(lab, platform)
    timings("no control call reaches the SuperLink from a hospital (socket, HTTP, flwr CLI)")
    check_unregistered_key_refused(lab, platform, rogue_key)
    timings("`medfed client` with an unregistered key refused")

    def run_ended() -> dict | None:
        run = api.get(f"/api/runs/{run_id}").json()
        return run if run["status"] not in ("pending", "running") else None

    run = wait_until("the end of the run", run_ended, 3 * ROUND_TIMEOUT_S + 60, platform.server)
    timings("run ended")

    # ------------------------------------------------------------ what the platform recorded
    assert run["status"] == "finished", run["error"]
    assert run["mode"] == "deployment" and run["rounds_done"] == 2
    rounds = api.get(f"/api/runs/{run_id}/rounds").json()
    results = api.get(f"/api/runs/{run_id}/clients").json()
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(sum(map(sum, r["metrics"]["confusion_matrix"])) == 10 for r in rounds)
    # Round 1: both trained. Round 2 completed with south alone; north's failure is recorded.
    trained = [(r["num_clients_ok"], r["num_clients_failed"]) for r in rounds]
    assert trained[0][0] == 2 and trained[1] == (1, 1), (trained, results)
    outcome = {(c["round"], c["hospital"], c["phase"]): (c["status"], c["error"]) for c in results}
    assert {hospital for _, hospital, _ in outcome} == {"north", "south"}, outcome
    for round_ in (1, 2):
        assert outcome[(round_, "south", "train")] == ("ok", None), outcome
        assert outcome[(round_, "south", "evaluate")] == ("ok", None), outcome
    assert outcome[(1, "north", "train")] == ("ok", None), outcome
    status, reason = outcome[(2, "north", "train")]
    assert status == "failed", outcome
    # Silent past the round's timeout, or reported gone by the SuperLink (no heartbeats).
    assert f"round_timeout={ROUND_TIMEOUT_S}" in reason or "Node Unavailable" in reason, reason
    # Whatever north was asked after its round-2 instruction (an evaluation still owed, or
    # round 2's if it still counted as connected then) is recorded as failed too.
    later = [v for (r, h, p), v in outcome.items() if h == "north" and (r, p) != (1, "train")]
    assert all(status == "failed" and error for status, error in later), outcome

    # The stranger never became a hospital: not listed, not in any result, no node.
    assert {h["name"] for h in api.get("/api/hospitals").json()} == {"north", "south"}
    assert rogue_node.poll() is None or rogue_node.returncode != 0
    assert "403 Forbidden" in rogue_log.read_text(errors="replace"), tail(rogue_log)
    # Flower's own view on the platform: exactly the two registered nodes, and this one run
    # (nothing was submitted through the gateway).
    with RunStore(f"sqlite:///{platform.home / 'medfed.db'}") as store:
        registered = {store.get_hospital(name).node_id % 2**64 for name in hospitals}
    assert flower_list(lab, platform, "supernode", "ls", key="nodes") == registered
    assert flower_list(lab, platform, "ls", key="runs") == {int(run["flower_run_id"]) % 2**64}
    # The models and updates (over 1 MiB each) went through the gateway as blobs, none is left.
    gateway_log = (platform.home / "flwr" / "gateway.log").read_text(errors="replace")
    for name in hospitals:
        assert f"to '{name}'" in gateway_log and f"from '{name}'" in gateway_log, gateway_log
    blobs = platform.home / "flwr" / "blobs"
    assert [p for p in blobs.rglob("*") if p.is_file()] == [], list(blobs.rglob("*"))
    timings("results checked")

    # Nothing is left behind: no process the test started, no namespace.
    lab.teardown()
    namespaces, processes = lab.leftovers()
    assert namespaces == [] and processes == [], (namespaces, processes)
    timings("namespaces and processes gone")


def write_rogue_key(tmp_path: Path) -> Path:
    """A well-formed hospital key the platform never registered."""
    private_key, _ = new_key_pair()
    key = tmp_path / "rogue.key"
    key.write_bytes(private_key)
    key.chmod(0o600)
    return key


def check_control_port_closed(lab: Lab, platform: Platform) -> None:
    """From south's namespace: Flower's SuperLink port refuses connections, every Control and
    Runtime call through the gateway is refused, and Flower's own CLI can do nothing there."""
    south, workdir = lab["h2"], platform.workdir
    args = {
        "ip": platform.host.ip,
        "gateway_port": GATEWAY_PORT,
        "superlink_port": SUPERLINK_PORT,
        "ca": str(platform.ca),
        "key": str(workdir / "south.key"),
    }
    done = lab.run(south, [PYTHON, "-c", CONTROL_PROBE, json.dumps(args)])
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["superlink_connect"] == errno.ECONNREFUSED, found["superlink_connect"]
    for signed in ("signed", "unsigned"):
        statuses = found[signed]
        for path in (
            "/v1/control/start-run",
            "/v1/control/list-runs",
            "/v1/control/stop-run",
            "/v1/control/register-node",
            "/v1/control/list-nodes",
            "/v1/runtime/pull-messages",
            "/v1/runtime/push-messages",
        ):
            assert path in statuses, sorted(statuses)
        answered = {path: code for path, code in statuses.items() if not 400 <= code < 500}
        assert answered == {}, (signed, answered)
    assert found["unsigned_fleet"] == 401
    assert found["blob_unsigned"] == [401, 401] and found["blob_unknown"] == 404, found

    # Flower's own CLI, pointed at the gateway with the platform's CA.
    flwr_home = workdir / "south-flwr"
    flwr_home.mkdir()
    (flwr_home / "config.toml").write_text(
        f'[superlink.platform]\naddress = "{platform.address}"\n'
        f"root-certificates = {json.dumps(str(platform.ca))}\n"
    )
    flwr = str(BIN / "flwr")
    for argv in (
        [flwr, "ls", "platform", "--format", "json"],
        [flwr, "run", str(APP_DIR), "platform", "--format", "json"],
    ):
        done = lab.run(south, ["env", f"FLWR_HOME={flwr_home}", *argv], timeout=120)
        output = done.stdout + done.stderr
        try:
            reply = json.loads(done.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"flwr {argv[1]}: no JSON reply: {output}")
        # It got through TLS to the gateway, which refused the call.
        assert reply["success"] is False, output
        assert "Fleet API only" in reply["error-message"], output
        assert "run-id" not in reply and "runs" not in reply, output


def check_unregistered_key_refused(lab: Lab, platform: Platform, key: Path) -> None:
    """`medfed client` with a key the platform never registered stops with one line."""
    workdir = platform.workdir
    data = write_synthetic_dataset(workdir / "rogue-data", n_per_class=4, size=16, seed=9)
    argv = [MEDFED, "client", "--key", str(key), "--ca", str(platform.ca)]
    argv += ["--server", platform.address, "--data", str(data)]
    argv += ["-c", str(hospital_config(workdir, "rogue"))]
    done = lab.run(lab["rogue"], argv, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error:") and "not registered" in errors[0], errors


def flower_list(lab: Lab, platform: Platform, *command: str, key: str) -> set[int]:
    """Ids of the runs or nodes Flower's CLI on the platform host lists from the SuperLink."""
    flwr_home = platform.home / "flwr"  # holds the `medfed` connection `medfed server` wrote
    argv = ["env", f"FLWR_HOME={flwr_home}", str(BIN / "flwr"), *command, "medfed"]
    done = lab.run(platform.host, [*argv, "--format", "json"])
    reply = json.loads(done.stdout)
    assert reply.get("success"), done.stdout + done.stderr
    return {int(item["run-id" if key == "runs" else "node-id"]) for item in reply[key]}
