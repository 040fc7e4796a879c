"""Ray job: swaps → positions → KOL statistics (incremental), as ``kolray analyze --json``.

    ray job submit --working-dir . -- python jobs/analyze.py [--full] [--as-of 2024-06-01T00:00:00Z]

Options are those of ``kolray analyze``. Settings come from the job's KOLRAY_* environment
(``--runtime-env-json '{"env_vars": {"KOLRAY_DATABASE_URL": "..."}}'``). Prints the run summary as
one JSON line; exits non-zero with a one-line reason on failure.
"""

import sys

from kolray.cli import main

if __name__ == "__main__":
    sys.exit(main(["analyze", "--json", *sys.argv[1:]]))
