"""A hospital's processes: Flower's SuperNode and medfed's long-lived ClientApp executor.

The SuperNode (with shorter waits, see ``supernode.py``) dials the platform and keeps the
hospital's queue of messages; the executor (``executor.py``) answers them with the models and
images it keeps loaded. :func:`run_hospital` supervises both: it restarts the executor if it
dies, and stops everything when the SuperNode ends or when it is itself stopped.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from medfed.config import MedfedConfig
from medfed.errors import FederationError
from medfed.federation.lifetime import child_env, die_with_parent
from medfed.federation.superlink import flower_env, stop_process_group

log = logging.getLogger("medfed.hospital")

WATCH_INTERVAL_S = 0.5
RESTART_PAUSE_S = 2.0
CANNOT_START = 2  # the executor's exit code when its configuration stops it (restarting won't)


@dataclass(frozen=True)
class HospitalLink:
    """How a hospital reaches the platform: address, CA file and key (both None: insecure)."""

    server_address: str
    ca_path: Path | None
    key_path: Path | None

    @classmethod
    def from_config(cls, cfg: MedfedConfig) -> HospitalLink:
        d = cfg.deployment
        if d.insecure:
            return cls(cfg.federated.server_address, None, None)
        if d.hospital_key is None:
            raise FederationError(
                "no hospital key given: pass --key NAME.key (made on the platform with "
                "`medfed hospital add NAME`), or --insecure for a platform without TLS"
            )
        return cls(
            cfg.federated.server_address, d.ca_path or cfg.certs_dir / "ca.pem", d.hospital_key
        )


def supernode_command(
    link: HospitalLink, *, data_path: Path, port: int, home: Path, name: str, threads: int = 0
) -> list[str]:
    """The SuperNode, leaving its ClientApp tasks to medfed's executor (process isolation);
    ``name`` is only a label in its own node config; ``threads``: torch threads (0: the run's
    ``training.threads``)."""
    node_config = f'data-path="{Path(data_path).resolve()}" hospital="{name}" home="{home}"'
    if threads:
        node_config += f" threads={int(threads)}"
    command = [
        sys.executable,
        "-m",
        "medfed.federation.supernode",
        "--superlink",
        link.server_address,
        "--isolation",
        "process",
        "--port",
        str(port),
        "--node-config",
        node_config,
    ]
    if link.ca_path is None:
        return [*command, "--insecure"]
    return [
        *command,
        "--root-certificates",
        str(link.ca_path),
        "--auth-supernode-private-key",
        str(link.key_path),
    ]


def link_arguments(link: HospitalLink) -> list[str]:
    """``--server`` and ``--ca``/``--key`` (or ``--insecure``) naming ``link``."""
    if link.ca_path is None:
        return ["--server", link.server_address, "--insecure"]
    return ["--server", link.server_address, "--ca", str(link.ca_path), "--key", str(link.key_path)]


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="the platform's HOST:PORT")
    parser.add_argument("--ca", type=Path, help="the platform's CA certificate")
    parser.add_argument("--key", type=Path, help="this hospital's private key")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP, no key")


def parsed_link(args: argparse.Namespace) -> HospitalLink:
    if args.insecure:
        return HospitalLink(args.server, None, None)
    return HospitalLink(args.server, args.ca, args.key)


def executor_command(port: int, link: HospitalLink) -> list[str]:
    """The executor, taking tasks at ``port`` and blobs from the platform at ``link``."""
    return [
        sys.executable,
        "-m",
        "medfed.federation.executor",
        "--runtime-port",
        str(port),
        *link_arguments(link),
    ]


def run_hospital(
    cfg: MedfedConfig,
    link: HospitalLink,
    *,
    data_path: Path,
    port: int,
    name: str,
    threads: int = 0,
) -> int:
    """Run the SuperNode and the executor until the SuperNode ends (its exit code) or this
    process is stopped (Ctrl-C, SIGTERM: 0); a dead executor is restarted, unless its
    configuration stopped it (:data:`CANNOT_START`, returned)."""
    home = Path(cfg.home).resolve()
    env = child_env(flower_env(cfg))
    supernode = subprocess.Popen(
        supernode_command(
            link, data_path=data_path, port=port, home=home, name=name, threads=threads
        ),
        env=env,
        start_new_session=True,
    )
    executor = subprocess.Popen(executor_command(port, link), env=env, start_new_session=True)

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        while (code := supernode.poll()) is None:
            if executor.poll() == CANNOT_START:
                log.error("the hospital's trainer cannot start (see above): stopping")
                return CANNOT_START
            if executor.poll() is not None:
                log.warning(
                    "the hospital's trainer stopped (exit %s): starting it again",
                    executor.returncode,
                )
                time.sleep(RESTART_PAUSE_S)
                executor = subprocess.Popen(
                    executor_command(port, link), env=env, start_new_session=True
                )
            time.sleep(WATCH_INTERVAL_S)
        return code
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        for process in (executor, supernode):
            stop_process_group(process)


def start_hospital(
    cfg: MedfedConfig,
    link: HospitalLink,
    *,
    data_path: Path,
    port: int,
    name: str = "hospital",
    threads: int = 0,
    log_file: Path | None = None,
) -> subprocess.Popen:
    """:func:`run_hospital` in a background process of its own session (stop it with
    :func:`~medfed.federation.superlink.stop_process_group`)."""
    command = [
        sys.executable,
        "-m",
        "medfed.federation.hospital_node",
        *link_arguments(link),
        "--data",
        str(data_path),
        "--port",
        str(port),
        "--home",
        str(Path(cfg.home).resolve()),
        "--name",
        name,
        "--threads",
        str(threads),
    ]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - the process owns it
    return subprocess.Popen(
        command,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=child_env(flower_env(cfg)),
        start_new_session=True,
    )


def main(argv: list[str] | None = None) -> int:
    from medfed.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_link_arguments(parser)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--name", default="hospital")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the run's)")
    args = parser.parse_args(argv)
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_config(None, {"home": args.home})
    return run_hospital(
        cfg,
        parsed_link(args),
        data_path=args.data,
        port=args.port,
        name=args.name,
        threads=args.threads,
    )


if __name__ == "__main__":
    sys.exit(main())
