"""The ``kolray`` subcommands, one module per stage. Modules import only light things at top level
so that ``kolray --help`` stays instant; Ray, torch and friends load inside the command bodies."""
