"""Ray job: the whole pipeline on a chain-twin world (world → track → analyze → features → tune).

    ray job submit --working-dir . -- python jobs/pipeline.py --kols 60 --days 120 --world-dir /tmp/kolray-world

Uses the job's KOLRAY_* settings (database, storage): pass them with
``--runtime-env-json '{"env_vars": {"KOLRAY_DATABASE_URL": "...", "KOLRAY_STORAGE_URI": "s3://..."}}'``.
Prints one JSON summary line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from kolray.pipeline import PipelineOptions

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = PipelineOptions(world_dir=Path("."))
    parser.add_argument("--kols", type=int, default=defaults.kols)
    parser.add_argument("--days", type=float, default=defaults.days)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--trials", type=int, default=defaults.trials)
    parser.add_argument("--max-epochs", type=int, default=defaults.max_epochs)
    parser.add_argument("--models", default="token,kol")
    parser.add_argument("--world-dir", type=Path, default=None, help="Default: a temporary directory.")
    args = parser.parse_args(argv)

    from kolray.config import SettingsError, get_settings
    from kolray.logs import configure_logging
    from kolray.pipeline import run_pipeline

    try:
        get_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging()
    with tempfile.TemporaryDirectory(prefix="kolray-world-") as tmp:
        options = PipelineOptions(
            world_dir=args.world_dir or Path(tmp) / "world",
            kols=args.kols,
            days=args.days,
            seed=args.seed,
            trials=args.trials,
            max_epochs=args.max_epochs,
            models=[m for m in args.models.split(",") if m],
        )
        result = run_pipeline(options, say=lambda message: print(message, flush=True))
    print(json.dumps(result.model_dump(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
