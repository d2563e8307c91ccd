"""``python -m medfed.federation.worker RUN_ID [--resume]``: one run's background process.

The platform starts it with ``MEDFED_STORE_URL`` and ``MEDFED_HOME`` (and the model key, when
configured) in its environment, never on its command line, which every user of the host can
read. It trains the run's stored definition with the platform's home and store.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medfed.config import run_definition
from medfed.federation.runtime import HOME_ENV, STORE_URL_ENV, RunSettings
from medfed.store import RunStore
from medfed.store.home import private_home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_id")
    parser.add_argument("--resume", action="store_true")
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
    store = RunStore(store_url)
    run = store.get_run(args.run_id)
    settings = RunSettings(
        run_id=run.id,
        config=run_definition(run.config),
        store_url=store_url,
        home=home,
        resume=args.resume,
    )
    try:
        from medfed.federation.simulation import run_simulated

        run_simulated(settings, settings.cfg.federated.num_clients)
    except BaseException as exc:
        if store.get_run(run.id).status in ("pending", "running"):
            store.set_status(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
            store.publish(run.id, "run_failed", {"error": str(exc)})
        raise
    return 0 if store.get_run(run.id).status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
