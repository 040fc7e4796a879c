"""``kolray features`` on storage it cannot write: one line naming the path, a non-zero exit, no
traceback; refused before any work when the storage root itself is unwritable, and reported the
same way when a write fails later inside a Ray Data task."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from kolray.analyzer import analyze
from kolray.cli import main
from kolray.commands.features import _write_error
from kolray.db.migrate import upgrade
from kolray.db.tables import Run
from kolray.features.build import BuildOptions, build_features
from kolray.features.source import FeatureError
from kolray.testing.synthetic_market import MarketParams, populate


def feature_runs() -> list[str]:
    from kolray.config import get_settings

    with upgrade(get_settings().database_url).connect() as conn:
        return list(conn.scalars(select(Run.status).where(Run.kind == "features")))


@pytest.mark.parametrize("where", ["under a file", "a file"])
def test_unwritable_storage_is_refused_in_one_line_before_any_work(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    out = afile / "store" if where == "under a file" else afile
    assert main(["features", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"error: cannot write to {out}: Not a directory\n"
    assert captured.out == ""
    assert afile.read_text() == "not a directory"
    assert feature_runs() == []  # the build never started (no run record, no snapshot, no Ray)


def test_a_write_that_fails_inside_a_ray_task_is_one_line_too(
    data_dir: Path, tmp_path: Path, ray_session
) -> None:
    """The real command in its own process (its stderr as a user sees it), on the test's Ray."""
    from kolray.config import get_settings

    engine = upgrade(get_settings().database_url)
    populate(engine, MarketParams(kols=4, days=20, positions_per_kol_day=2.0, seed=5))
    analyze(engine, full=True)
    out = tmp_path / "store"
    out.mkdir()
    (out / "datasets").write_text("in the way")  # the root is writable; the datasets are not

    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    done = subprocess.run(
        [sys.executable, "-m", "kolray", "features", "--out", str(out), "--dataset", "token"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"error: cannot write to {out}: Not a directory (Cannot create directory ")
    assert f"{out}/datasets/token/" in last
    # Ray Data logs that a task failed; the trace is neither there nor in kolray's line.
    assert "Traceback" not in done.stderr and 'File "' not in done.stderr, done.stderr[-3000:]
    assert "RayTaskError" not in done.stderr
    assert feature_runs() == ["failed"]
    assert (out / "datasets").read_text() == "in the way"


def test_only_storage_errors_are_reported_as_such() -> None:
    """A refused database connection deep in a chain is not "cannot write"; a full disk is."""

    def chained(cause: BaseException) -> RuntimeError:
        try:
            raise RuntimeError("wrapped") from cause
        except RuntimeError as error:
            return error

    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert _write_error(chained(refused)) is None
    full = OSError(errno.ENOSPC, "No space left on device")
    assert _write_error(chained(full)) is full


def test_s3_storage_is_probed_too(s3_storage: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A writable bucket passes the probe and keeps no probe object; a missing one is one line."""
    from kolray import storage

    storage.check_writable(s3_storage)
    assert storage.listdir(s3_storage) == []
    missing = "s3://kolray-no-such-bucket-0123/x"
    assert main(["features", "--out", missing]) == 1
    last = capsys.readouterr().err.splitlines()[-1]  # after the moto server's request log
    # The CLI masks the paths of remote URLs in every error line (kolray.cli, redact_text).
    assert last.startswith("error: cannot write to s3://kolray-no-such-bucket-0123/")
    assert last.endswith("The specified bucket does not exist")
    assert feature_runs() == []


def test_the_build_function_refuses_unwritable_storage_before_recording_a_run(
    data_dir: Path, tmp_path: Path
) -> None:
    """What a job (``jobs/build_features.py``) or any caller of the function API gets."""
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    with pytest.raises(FeatureError, match=f"cannot write to {afile}: Not a directory"):
        build_features(BuildOptions(storage_uri=str(afile)))
    assert feature_runs() == []
