"""Ray job: continuous training.

    ray job submit --working-dir . -- python jobs/continuous_train.py --interval-hours 6
    ray job submit --working-dir . -- python jobs/continuous_train.py --once --gpus-per-trial 0.25

Each cycle: analyze → features → Tune both models → evaluate → promote if better → tell Serve.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval-hours", type=float, default=6.0, help="Hours between cycle starts.")
    parser.add_argument("--once", action="store_true", help="Run one cycle and exit.")
    parser.add_argument("--model", choices=["token", "kol", "all"], default="all")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--oracle-world", default=None, help="Twin world directory (evaluation-only oracle).")
    args = parser.parse_args(argv)
    if args.interval_hours <= 0:
        parser.error("--interval-hours must be > 0")

    from kolray.config import SettingsError, get_settings
    from kolray.learn.stage import CycleOptions, run_schedule, train_cycle
    from kolray.logs import configure_logging

    try:
        get_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging()
    options = CycleOptions(
        models=["token", "kol"] if args.model == "all" else [args.model],
        trials=args.trials,
        max_epochs=args.max_epochs,
        gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial,
        oracle_world=args.oracle_world,
    )
    say = lambda message: print(message, flush=True)  # noqa: E731 - the job log is stdout
    if args.once:
        result = train_cycle(options, say)
        print(json.dumps(result.model_dump(), default=str))
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_schedule(options, args.interval_hours * 3600, stop=stop, say=say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
