"""Ray job: search, train, evaluate and register the models, as ``kolray tune --json``.

    ray job submit --working-dir . -- python jobs/tune.py --model all --trials 16 --gpus-per-trial 0.25

Options are those of ``kolray tune``; settings come from the job's KOLRAY_* environment. Prints one
JSON line per model.
"""

import sys

from kolray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", "--json", *sys.argv[1:]]))
