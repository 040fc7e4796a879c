"""Ray job entrypoint: build the point-in-time token and KOL feature datasets.

    ray job submit --working-dir . -- python jobs/build_features.py [--out s3://bucket/prefix] \
        [--dataset token|kol|all] [--horizon-hours 168] [--embargo-hours 24] [--oracle-world DIR]

Thin on purpose: it parses arguments and calls :func:`kolray.features.build_features`, the same
function ``kolray features`` calls, against the configured database and storage
(``KOLRAY_DATABASE_URL``, ``KOLRAY_STORAGE_URI``; pass them with
``--runtime-env-json '{"env_vars": {...}}'``). Inside a job it joins the job's Ray cluster, so the
shards run on its workers. Prints one line per finished phase and the build summary as one JSON
line; exits 1 with a one-line reason on failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="storage URI (default: KOLRAY_STORAGE_URI)")
    parser.add_argument("--dataset", choices=["token", "kol", "all"], default="all")
    parser.add_argument("--horizon-hours", type=float, default=168.0, help="label horizon H")
    parser.add_argument("--embargo-hours", type=float, default=24.0, help="gap between splits")
    parser.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test shares")
    parser.add_argument(
        "--cutoff", default=None, help="unix seconds or ISO-8601 (default: newest swap + 1 s)"
    )
    parser.add_argument("--oracle-world", default=None, help="twin world directory for oracle_p3x")
    parser.add_argument("--shard-rows", type=int, default=50_000, help="positions per Ray task")
    args = parser.parse_args(argv)

    try:
        import kolray  # noqa: F401
    except ImportError:  # run from a checkout that is not installed: the repository root is one up
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    from kolray.analyzer import parse_as_of
    from kolray.config import get_settings
    from kolray.features import BuildOptions, SplitFractions, build_features
    from kolray.logs import configure_logging
    from kolray.secrets import redact_text

    configure_logging()
    try:
        options = BuildOptions(
            storage_uri=args.out,
            datasets=["token", "kol"] if args.dataset == "all" else [args.dataset],
            horizon_s=round(args.horizon_hours * 3600),
            embargo_s=round(args.embargo_hours * 3600),
            cutoff=None if args.cutoff is None else parse_as_of(args.cutoff),
            fractions=SplitFractions.parse(args.split),
            oracle_world=args.oracle_world,
            shard_rows=args.shard_rows,
        )
    except ValueError as error:
        parser.error(str(error).splitlines()[-1])

    def progress(phase: str, done: int, total: int) -> None:
        if done == total:
            print(f"{phase}: {done}/{total}", flush=True)

    try:
        result = build_features(options, database_url=get_settings().database_url, progress=progress)
    except Exception as error:
        print(f"error: {redact_text(f'{type(error).__name__}: {error}')}", file=sys.stderr)
        return 1
    for name, why in result.skipped.items():
        print(f"{name} dataset not written: {why}", file=sys.stderr)
    print(json.dumps(result.to_dict(), default=str), flush=True)
    return 0 if result.manifests else 1


if __name__ == "__main__":
    sys.exit(main())
