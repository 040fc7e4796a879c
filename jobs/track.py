"""Ray job: poll the tracked wallets.

    ray job submit --working-dir . -- python jobs/track.py --once
    ray job submit --working-dir . -- python jobs/track.py --interval 60

Settings (database, RPC URLs with their keys, rates) come from the KOLRAY_* environment of the job
(``--runtime-env-json '{"env_vars": {...}}'``) or the cluster nodes.
"""

import sys

from kolray.cli import main

if __name__ == "__main__":
    sys.exit(main(["track", *sys.argv[1:]]))
