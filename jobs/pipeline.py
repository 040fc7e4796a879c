"""Ray job: the whole pipeline on a chain-twin world, as ``kolray pipeline``.

    ray job submit --working-dir . -- python jobs/pipeline.py --kols 60 --days 120 --world-dir /tmp/world

Options are those of ``kolray pipeline``. Settings come from the job's KOLRAY_* environment:
``--runtime-env-json '{"env_vars": {"KOLRAY_DATABASE_URL": "...", "KOLRAY_STORAGE_URI": "s3://..."}}'``.
Prints one JSON summary line at the end.
"""

import sys

from kolray.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
