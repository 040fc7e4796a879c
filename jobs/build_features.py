"""Ray job: the point-in-time token and KOL feature datasets, as ``kolray features --json``.

    ray job submit --working-dir . -- python jobs/build_features.py [--out s3://bucket/prefix] \
        [--dataset token|kol|all] [--horizon-hours H] [--embargo-hours E] [--oracle-world DIR]

Options are those of ``kolray features``. Settings (KOLRAY_DATABASE_URL, KOLRAY_STORAGE_URI) come
from the job's environment (``--runtime-env-json``); the shards run on the job's Ray cluster. Prints
the build summary as one JSON line; exits non-zero with a one-line reason on failure.
"""

import sys

from kolray.cli import main

if __name__ == "__main__":
    sys.exit(main(["features", "--json", *sys.argv[1:]]))
