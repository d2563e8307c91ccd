"""``python -m medfed.federation.worker RUN_ID [--resume] [--cpus N]``: one run's process.

The run queue starts it (:mod:`medfed.federation.queue`) with ``MEDFED_STORE_URL`` and
``MEDFED_HOME`` (and the model key, when configured) in its environment, never on its command
line, which every user of the host can read. It trains the run's stored definition with the
platform's home and store, on at most ``--cpus`` CPUs (threads and Ray alike), at a lower CPU
priority (nice 10) than the platform's API.

It owns every process it starts. Started in its own session, it first forks a watchdog (in a
session of its own) that waits for the worker to end, however it ends: then it ends every
process carrying the worker's marker (Ray's daemons and agents, the hospitals' actors), marks
the run ``interrupted`` when the worker could not say how the run ended, and, when the run
ended on its own, starts the next queued runs. SIGTERM or SIGINT end the worker at once: the
run is marked ``interrupted`` and keeps its last checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from medfed.config import run_definition
from medfed.federation.runtime import HOME_ENV, STORE_URL_ENV, RunSettings
from medfed.store import ACTIVE_STATUSES, ENDED_ON_ITS_OWN, EventType, RunStatus, RunStore
from medfed.store.home import private_home

TOKEN_ENV = "MEDFED_WORKER_TOKEN"  # as medfed.federation.processes.TOKEN_ENV
SIGNAL_EXIT_DEADLINE_S = 10.0
# Training is batch work: the worker and everything it starts yield the CPU to the platform's
# API and dashboard, which people wait on.
NICENESS = 10
_WATCHDOG_PIPE: list[int] = []  # the pipe's write end: open for as long as the worker lives


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_id")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--cpus", type=int, default=0, help="CPUs admitted (0: all)")
    args = parser.parse_args(argv)
    store_url = os.environ.pop(STORE_URL_ENV, "")  # not passed on to the processes it starts
    home = os.environ.get(HOME_ENV, "")
    if not store_url or not home:
        parser.exit(
            2,
            f"medfed worker: {STORE_URL_ENV} and {HOME_ENV} must be set; runs are started by "
            "`medfed run`, `medfed server` or the dashboard, not by hand\n",
        )

    private_home(Path(home))
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    token = os.environ.get(TOKEN_ENV, "")
    if token:
        start_watchdog(args.run_id, token, store_url)
    store = RunStore(store_url)
    run = store.get_run(args.run_id)
    settings = RunSettings(
        run_id=run.id,
        config=run_definition(run.config),
        store_url=store_url,
        home=home,
        resume=args.resume,
    )
    on_signal = _interrupt_handler(store, run.id)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        from medfed.federation.simulation import run_simulated

        run_simulated(
            settings,
            settings.cfg.federated.num_clients,
            cpus=args.cpus or None,
            after_ray_start=lambda: signal.signal(signal.SIGTERM, on_signal),
        )
    except (SystemExit, KeyboardInterrupt):
        _mark_interrupted(store, run.id, "its worker was asked to end")
        raise
    except BaseException as exc:
        if store.get_run(run.id).status in ACTIVE_STATUSES:
            store.set_status(run.id, RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
            store.publish(run.id, EventType.RUN_FAILED, {"error": str(exc)})
        raise
    return 0 if store.get_run(run.id).status == RunStatus.FINISHED else 1


def _mark_interrupted(store: RunStore, run_id: str, why: str) -> None:
    from medfed.federation.queue import mark_interrupted

    mark_interrupted(store, run_id, why)


def _interrupt_handler(store: RunStore, run_id: str):  # noqa: ANN202 - a signal handler
    """SIGTERM / SIGINT: mark the run interrupted and leave at once (the watchdog ends the
    worker's processes); a hard deadline keeps a stuck store from holding the exit."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        code = 128 + signum
        threading.Timer(SIGNAL_EXIT_DEADLINE_S, os._exit, (code,)).start()
        with contextlib.suppress(Exception):
            name = signal.Signals(signum).name
            _mark_interrupted(store, run_id, f"its worker received {name}")
        os._exit(code)

    return handler


def start_watchdog(run_id: str, token: str, store_url: str) -> int:
    """Fork the watchdog of this worker (see the module's doc); returns its pid."""
    read_end, write_end = os.pipe()  # not inherited by the programs the worker starts
    worker = os.getpid()
    child = os.fork()
    if child:
        os.close(read_end)
        _WATCHDOG_PIPE.append(write_end)
        return child
    os.close(write_end)
    code = 1
    try:
        os.setsid()  # the worker's group may be signalled; the watchdog stays
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            while os.read(read_end, 1):
                pass  # returns b"" once the worker has ended, whatever ended it
        watch_over(run_id, token, store_url, worker)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - a forked child never returns to the worker
        with contextlib.suppress(Exception):
            print(f"medfed watchdog of run {run_id}: {type(exc).__name__}: {exc}", flush=True)
    finally:
        os._exit(code)


def watch_over(run_id: str, token: str, store_url: str, worker_pid: int) -> None:
    """What the watchdog does once the worker has ended: end its processes, settle the run's
    status, and admit queued runs when the run ended on its own."""
    from medfed.federation.processes import end_processes
    from medfed.federation.queue import RunQueue, mark_interrupted
    from medfed.federation.run_paths import worker_pid_file

    end_processes(token, group=worker_pid)
    home = os.environ[HOME_ENV]
    with RunStore(store_url, migrate=False) as store:
        queue = RunQueue.from_worker_environment(store)
        with queue.locked():
            pid_file = worker_pid_file(home, run_id)
            current = pid_file.read_text().strip() if pid_file.is_file() else ""
            if current == str(worker_pid):  # not restarted meanwhile
                mark_interrupted(store, run_id, "its worker ended before the run did (killed?)")
        if store.get_run(run_id).status in ENDED_ON_ITS_OWN:
            queue.admit()


if __name__ == "__main__":
    sys.exit(main())
