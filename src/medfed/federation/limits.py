"""What the platform host runs at once: its CPUs and memory, and the run limits from them.

Simulated runs: at most ``platform.max_concurrent_runs`` at once (default from CPUs and memory),
each given ``cpus // max_concurrent_runs`` CPUs; a run's worker reads the limits it was started
under from its environment (:meth:`Limits.from_environment`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from medfed.config import PlatformConfig

CPUS_PER_RUN = 2  # what a simulated run is given by default: two hospitals train at once
MEMORY_PER_RUN = 4 * 2**30  # a worker, its Ray processes and two hospitals' actors, with room
MAX_RUNS_ENV = "MEDFED_PLATFORM__MAX_CONCURRENT_RUNS"
MIN_FREE_ENV = "MEDFED_PLATFORM__MIN_FREE_MEMORY_MB"


def host_cpus() -> int:
    """CPU cores this process may use."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def meminfo(key: str) -> int | None:
    """A /proc/meminfo figure in bytes (None where there is no /proc)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_max_concurrent_runs(cpus: int | None = None, memory: int | None = None) -> int:
    """One simulated run per 2 cores and 4 GiB of memory, at least one."""
    cpus = host_cpus() if cpus is None else cpus
    memory = meminfo("MemTotal") if memory is None else memory
    by_memory = (memory // MEMORY_PER_RUN) if memory else cpus
    return max(1, min(cpus // CPUS_PER_RUN, by_memory))


@dataclass(frozen=True)
class Limits:
    """What the platform host runs at once."""

    max_simulated: int
    min_free_memory_mb: int
    cpus: int

    @classmethod
    def from_config(cls, platform: PlatformConfig) -> Limits:
        maximum = platform.max_concurrent_runs
        return cls(
            max_simulated=default_max_concurrent_runs() if maximum is None else maximum,
            min_free_memory_mb=platform.min_free_memory_mb,
            cpus=host_cpus(),
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The limits a worker was started under (see :meth:`env`)."""
        environ = os.environ if environ is None else environ
        default = PlatformConfig()
        maximum = environ.get(MAX_RUNS_ENV, "")
        return cls(
            max_simulated=int(maximum) if maximum.isdigit() else default_max_concurrent_runs(),
            min_free_memory_mb=int(environ.get(MIN_FREE_ENV, default.min_free_memory_mb)),
            cpus=host_cpus(),
        )

    @property
    def cpus_per_run(self) -> int:
        """CPUs each simulated run is admitted with."""
        return max(1, self.cpus // max(1, self.max_simulated))

    def env(self) -> dict[str, str]:
        """The limits as the environment variables of the platform's configuration."""
        return {MAX_RUNS_ENV: str(self.max_simulated), MIN_FREE_ENV: str(self.min_free_memory_mb)}
