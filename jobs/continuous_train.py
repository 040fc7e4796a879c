"""Ray job: continuous training, as ``kolray train-continuous``.

    ray job submit --working-dir . -- python jobs/continuous_train.py --interval-hours 6
    ray job submit --working-dir . -- python jobs/continuous_train.py --once --gpus-per-trial 0.25

Each cycle: analyze → features → tune both models → evaluate → promote if better → tell Serve.
Options are those of ``kolray train-continuous``; --once prints the cycle's summary as JSON.
"""

import sys

from kolray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-continuous", *sys.argv[1:]]))
