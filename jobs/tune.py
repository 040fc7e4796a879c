"""Ray job entrypoint: search, train, evaluate and register the models.

    ray job submit --working-dir . -- python jobs/tune.py --model all --trials 16 --gpus-per-trial 0.25

Thin on purpose: it parses arguments and calls :func:`kolray.learn.tune.train_and_register`, the same
function ``kolray tune`` calls. Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["token", "kol", "all"], default="all")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--max-concurrent", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--dataset-version", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-promote", action="store_true")
    args = parser.parse_args(argv)
    if args.dataset_version and args.model == "all":
        parser.error("--dataset-version needs --model token or --model kol")

    from kolray.learn.stage import train_and_register
    from kolray.learn.tune import TuneOptions, ensure_ray
    from kolray.logs import configure_logging

    configure_logging()
    ensure_ray()
    options = TuneOptions(
        trials=args.trials,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        max_epochs=args.max_epochs,
        seed=args.seed,
        auto_promote=not args.no_promote,
    )
    for model in ["token", "kol"] if args.model == "all" else [args.model]:
        outcome = train_and_register(
            model,
            dataset_version=args.dataset_version,
            options=options,
            progress=lambda m: print(m, flush=True),
        )
        print(json.dumps(outcome.summary(), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
