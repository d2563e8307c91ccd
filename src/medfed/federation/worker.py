"""``python -m medfed.federation.worker RUN_ID --store URL``: one run's background process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medfed.federation.runtime import RunSettings
from medfed.store import RunStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_id")
    parser.add_argument("--store", required=True, help="SQLAlchemy URL of the run store")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    store = RunStore(args.store)
    run = store.get_run(args.run_id)
    settings = RunSettings(
        run_id=run.id,
        config=run.config,
        store_url=args.store,
        home=str(Path(run.config["home"])),
        resume=args.resume,
    )
    try:
        from medfed.federation.simulation import run_simulated

        run_simulated(settings, int(run.config["federated"]["num_clients"]))
    except BaseException as exc:
        if store.get_run(run.id).status in ("pending", "running"):
            store.set_status(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
            store.publish(run.id, "run_failed", {"error": str(exc)})
        raise
    return 0 if store.get_run(run.id).status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
