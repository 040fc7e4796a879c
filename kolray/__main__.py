import sys

from kolray.cli import main

sys.exit(main())
