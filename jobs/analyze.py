"""Ray job entrypoint: swaps → positions → KOL statistics (incremental).

    ray job submit --working-dir . -- python jobs/analyze.py [--full] [--as-of 2024-06-01T00:00:00Z]

Thin on purpose: it parses arguments and calls :func:`kolray.analyzer.analyze`, the same function
``kolray analyze`` calls, against the configured database (``KOLRAY_DATABASE_URL``; pass it with
``--runtime-env-json '{"env_vars": {"KOLRAY_DATABASE_URL": "..."}}'``). The stage is I/O bound and
single-process by design, so it needs no Ray tasks; it runs the same on a laptop or a cluster's
head node. Prints the run summary as one JSON line; exits 1 with a one-line reason on failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="rebuild every wallet from scratch")
    parser.add_argument(
        "--as-of", default=None, help="unix seconds, ISO-8601 or 'now' (default: after the newest swap)"
    )
    args = parser.parse_args(argv)

    try:
        import kolray  # noqa: F401
    except ImportError:  # run from a checkout that is not installed: the repository root is one up
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    from kolray.analyzer import analyze, parse_as_of
    from kolray.config import get_settings
    from kolray.db.migrate import upgrade
    from kolray.logs import configure_logging
    from kolray.secrets import redact_text

    configure_logging()
    try:
        as_of = None if args.as_of is None else parse_as_of(args.as_of)
    except ValueError as error:
        parser.error(f"--as-of: {error}")
    try:
        summary = analyze(upgrade(get_settings().database_url), full=args.full, as_of=as_of)
    except Exception as error:
        print(f"error: {redact_text(f'{type(error).__name__}: {error}')}", file=sys.stderr)
        return 1
    print(json.dumps(summary.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
