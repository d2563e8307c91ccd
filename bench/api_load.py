"""The API under dashboard load while a simulated run trains.

Run: ``.venv/bin/python bench/api_load.py [--clients 200] [--seconds 60]``.

Starts ``medfed server`` (a temporary home, SQLite store) and a simulated run on a small
synthetic dataset, then ``--clients`` dashboard clients for ``--seconds``: each follows the
run's live page (server-sent events, reconnecting with ``Last-Event-ID`` as a browser's
EventSource does) and polls the run's detail every 2 s and the run list every 5 s. Then the
run is stopped, and each client's events are compared with the store's: every event delivered
to every client, none lost, repeated or out of order. Alongside, misbehaving clients: some
open an event stream and never read it, some send their request a byte a second; the server
must cut them off without slowing the others.

Prints the p50/p99 latency of the polled reads, the events each client got against the
store's, the server's memory (resident set) over the window, and what became of the
misbehaving clients. Everything runs on this machine (loopback only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from medfed.data.synthetic import write_synthetic_dataset
from medfed.store import RunStore

USERS = [(f"viewer{i}", f"viewer{i}-password") for i in range(4)]
ADMIN = ("admin", "admin-password")
DETAIL_EVERY_S = 2.0
LIST_EVERY_S = 5.0
TERMINAL = {"run_finished", "run_failed", "run_stopped", "run_interrupted"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# A minimal HTTP/1.1 client on asyncio streams: cheap enough to run hundreds of clients on
# the machine that serves them.


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    body = b""
    while True:  # chunked
        size = int((await reader.readline()).strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return body
        body += await reader.readexactly(size)
        await reader.readline()


def request(path: str, port: int, token: str, extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Accept-Encoding: identity\r\n{extra}\r\n"
    ).encode()


@dataclass
class Client:
    """One dashboard tab: the live page's event stream, and polled reads."""

    index: int
    port: int
    token: str
    run_id: str
    events: list[tuple[int, str]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    steady: list[float] = field(default_factory=list)  # once every client is connected
    steady_after: float = 0.0
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0
    ended: bool = False

    async def follow(self) -> None:
        """The event stream, reconnecting with Last-Event-ID until a terminal event."""
        while not self.ended:
            last = f"Last-Event-ID: {self.events[-1][0]}\r\n" if self.events else ""
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                path = f"/api/runs/{self.run_id}/events"
                writer.write(request(path, self.port, self.token, last))
                await writer.drain()
                status, _ = await read_response(reader)
                if status != 200:
                    self.errors.append(f"events: {status}")
                    await asyncio.sleep(1)
                    continue
                await self._read_stream(reader)
                writer.close()
            except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                self.errors.append(f"events: {type(exc).__name__}")
            if not self.ended:
                self.reconnects += 1
                await asyncio.sleep(0.5)

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        pending = ""
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return
            pending += (await reader.readexactly(size)).decode()
            await reader.readline()
            while "\n\n" in pending:
                block, pending = pending.split("\n\n", 1)
                fields = dict(
                    line.split(": ", 1)
                    for line in block.splitlines()
                    if ": " in line and not line.startswith(":")
                )
                if "id" in fields:
                    self.events.append((int(fields["id"]), fields["event"]))
                    if fields["event"] in TERMINAL:
                        self.ended = True
                        return

    async def poll(self, until: float) -> None:
        """Read the run's detail every 2 s and the run list every 5 s on one keep-alive
        connection, timing each read."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        next_detail, next_list = time.monotonic(), time.monotonic() + self.index % 5
        while time.monotonic() < until:
            now = time.monotonic()
            if now >= next_list:
                path, next_list = "/api/runs?page_size=20", now + LIST_EVERY_S
            elif now >= next_detail:
                path, next_detail = f"/api/runs/{self.run_id}", now + DETAIL_EVERY_S
            else:
                await asyncio.sleep(min(next_detail, next_list) - now)
                continue
            started = time.perf_counter()
            try:
                writer.write(request(path, self.port, self.token))
                await writer.drain()
                status, headers = await read_response(reader)
                await read_body(reader, headers)
            except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                self.errors.append(f"poll: {type(exc).__name__}")
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                continue
            self.latencies.append(time.perf_counter() - started)
            if time.monotonic() >= self.steady_after:
                self.steady.append(self.latencies[-1])
            if status != 200:
                self.errors.append(f"poll: {status}")
        writer.close()


async def never_reads(port: int, token: str, run_id: str, until: float) -> str:
    """Opens the event stream with a tiny receive buffer and never reads it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    sock.send(request(f"/api/runs/{run_id}/events", port, token))
    loop = asyncio.get_running_loop()
    data, closed = b"", False
    while time.monotonic() < until + 5 and not closed:  # then drain what is left
        if time.monotonic() < until:
            await asyncio.sleep(1)
            continue
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout=1)
        except (TimeoutError, OSError):
            continue
        data += chunk
        closed = not chunk
    sock.close()
    if closed and b"run_stopped" not in data:
        return f"cut off by the server after {len(data) / 1024:.0f} KiB"
    return f"still connected ({len(data) / 1024:.0f} KiB buffered: its buffers never filled)"


async def sends_slowly(port: int, until: float) -> str:
    """Sends a request a byte a second; reports when the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    text = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200
    for byte in text:
        if time.monotonic() > until:
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
            if await asyncio.wait_for(reader.read(1), timeout=1.0) == b"":
                return f"cut off by the server after {time.monotonic() - started:.0f} s"
        except TimeoutError:
            continue
        except (ConnectionError, OSError):
            return f"cut off by the server after {time.monotonic() - started:.0f} s"
    return "never cut off"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def load(
    args: argparse.Namespace, port: int, server: subprocess.Popen, run_id: str, tokens: list[str]
) -> dict:
    clients = [Client(i, port, tokens[i % len(tokens)], run_id) for i in range(args.clients)]
    start = time.monotonic()
    for client in clients:
        client.steady_after = start + args.ramp + 5
    until = start + args.seconds
    memory: list[tuple[float, float]] = []
    cpu_start = cpu_seconds(server.pid)
    client_cpu_start = time.process_time()

    async def sample_memory() -> None:
        while time.monotonic() < until:
            memory.append((time.monotonic() - start, rss_mb(server.pid)))
            await asyncio.sleep(1)

    async def start_client(client: Client) -> list[asyncio.Task]:
        await asyncio.sleep(client.index * args.ramp / max(1, args.clients))
        return [asyncio.create_task(client.follow()), asyncio.create_task(client.poll(until))]

    bad = [asyncio.create_task(never_reads(port, tokens[0], run_id, until)) for _ in range(3)]
    bad += [asyncio.create_task(sends_slowly(port, until)) for _ in range(3)]
    sampler = asyncio.create_task(sample_memory())
    tasks = [t for ts in await asyncio.gather(*(start_client(c) for c in clients)) for t in ts]
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    await sampler
    cpu_used = cpu_seconds(server.pid) - cpu_start
    client_cpu = time.process_time() - client_cpu_start
    load_average = os.getloadavg()[0]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        credentials = {"username": ADMIN[0], "password": ADMIN[1]}
        admin = (await http.post("/api/auth/login", json=credentials)).json()["token"]
        await http.post(f"/api/runs/{run_id}/stop", headers={"Authorization": f"Bearer {admin}"})
    done, _ = await asyncio.wait(tasks, timeout=90)
    for task in tasks:
        task.cancel()
    misbehaving = await asyncio.gather(*bad)
    return {
        "clients": clients,
        "memory": memory,
        "misbehaving": misbehaving,
        "cpu": cpu_used,
        "client_cpu": client_cpu,
        "load": load_average,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to connect them all")
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument(
        "--server-nice",
        type=int,
        default=0,
        help="CPU priority of the API process (negative needs root): a control for a host "
        "whose other jobs compete with it",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medfed-load-") as tmp:
        run_bench(args, Path(tmp))


def run_bench(args: argparse.Namespace, tmp: Path) -> None:
    home, port = tmp / "home", free_port()
    data = write_synthetic_dataset(
        tmp / "data", layout="kaggle", n_per_class=48, size=32, test_per_class=16
    )
    config = tmp / "medfed.yml"
    config.write_text(
        f"home: {home}\n"
        f"data:\n  path: {data}\n  image_size: 32\n"
        "model:\n  name: cancer_cnn\n"
        f"federated:\n  num_clients: {args.hospitals}\n  rounds: 100000\n"
        "platform:\n  max_concurrent_runs: 1\n"
        f"api:\n  port: {port}\n  secret_key: load-bench-secret-0123456789abcdef0123\n"
    )
    with RunStore(f"sqlite:///{home / 'medfed.db'}") as store:
        store.add_user(*ADMIN, role="admin")
        for user in USERS:
            store.add_user(*user, role="viewer")
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", RAY_USAGE_STATS_ENABLED="0")
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "medfed.cli", "server", "-c", str(config), "--no-superlink"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    if args.server_nice:
        os.setpriority(os.PRIO_PROCESS, server.pid, args.server_nice)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit((tmp / "server.log").read_text()[-3000:])
            time.sleep(0.3)
        login = lambda user: httpx.post(  # noqa: E731
            f"{base}/api/auth/login", json={"username": user[0], "password": user[1]}
        ).json()["token"]
        admin = {"Authorization": f"Bearer {login(ADMIN)}"}
        tokens = [login(user) for user in USERS]
        run = httpx.post(f"{base}/api/runs", json={"name": "under-load"}, headers=admin).json()
        run_id = run["id"]
        print(
            f"run {run_id[:8]} started ({args.hospitals} simulated hospitals); waiting for "
            "its first round",
            flush=True,
        )
        while not any(
            e["round"] >= 1
            for e in httpx.get(f"{base}/api/runs/{run_id}/rounds", headers=admin).json()
        ):
            time.sleep(1)
        print(f"{args.clients} clients for {args.seconds:g} s ...", flush=True)
        result = asyncio.run(load(args, port, server, run_id, tokens))
        time.sleep(1)
        with RunStore(f"sqlite:///{home / 'medfed.db'}", migrate=False) as store:
            stored = [(e.id, e.type) for e in store.events(run_id, 0, 100_000)]
        report(args, result, stored)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def report(args: argparse.Namespace, result: dict, stored: list[tuple[int, str]]) -> None:
    clients: list[Client] = result["clients"]
    latencies = [x for c in clients for x in c.latencies]
    complete = sum(1 for c in clients if c.events == stored)
    lost = sum(len(set(stored) - set(c.events)) for c in clients)
    extra = sum(len(c.events) - len(set(c.events)) for c in clients)
    ordered = sum(1 for c in clients if [e[0] for e in c.events] == sorted(e[0] for e in c.events))
    memory = result["memory"]
    settled = [m for t, m in memory if t >= args.ramp + 5] or [m for _, m in memory]
    errors = [e for c in clients for e in c.errors]
    print()
    print(
        f"reads (run detail every {DETAIL_EVERY_S:g} s, run list every {LIST_EVERY_S:g} s): "
        f"{len(latencies)} in {args.seconds:g} s ({len(latencies) / args.seconds:.0f}/s), "
        f"p50 {1000 * percentile(latencies, 0.5):.0f} ms, "
        f"p99 {1000 * percentile(latencies, 0.99):.0f} ms, "
        f"max {1000 * max(latencies):.0f} ms  (goal: p99 < 200 ms)"
    )
    steady = [x for c in clients for x in c.steady]
    if steady:
        print(
            f"  once all {len(clients)} were connected ({args.ramp + 5:g} s on): "
            f"p50 {1000 * percentile(steady, 0.5):.0f} ms, "
            f"p99 {1000 * percentile(steady, 0.99):.0f} ms"
        )
    print(
        f"events: the store holds {len(stored)} for the run; "
        f"{complete}/{len(clients)} clients got every one in order "
        f"(lost {lost}, repeated {extra}, out of order in {len(clients) - ordered}); "
        f"reconnects {sum(c.reconnects for c in clients)}"
    )
    print(
        f"server memory (RSS): {memory[0][1]:.0f} MB at the start, "
        f"{min(settled):.0f}-{max(settled):.0f} MB once all clients were connected, "
        f"{memory[-1][1]:.0f} MB at the end"
    )
    print(f"misbehaving clients: {'; '.join(result['misbehaving'])}")
    print(
        f"the API process used {result['cpu']:.1f} CPU-s in the {args.seconds:g} s "
        f"({100 * result['cpu'] / args.seconds:.0f}% of one core, "
        f"{1000 * result['cpu'] / max(1, len(latencies)):.1f} ms per polled read, streams "
        f"included); the host's load average was {result['load']:.1f} on "
        f"{os.cpu_count()} cores (nice {args.server_nice} for the API, 10 for training); "
        f"the {args.clients} clients (one process) used {result['client_cpu']:.1f} CPU-s"
    )
    if errors:
        counts: dict[str, int] = {}
        for error in errors:
            counts[error] = counts.get(error, 0) + 1
        print(f"client errors: {json.dumps(counts)}")
    print(f"median events per client: {statistics.median(len(c.events) for c in clients):.0f}")


if __name__ == "__main__":
    main()
