"""Datasets, models and reports live under one storage URI: a local directory or ``s3://bucket/prefix``.

Everything goes through fsspec (``s3fs`` for S3, with the endpoint override for S3-compatible
stores), and pyarrow / Ray Data get the same filesystem wrapped, so a path that works locally works
on S3 unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import fsspec

from kolray.config import get_settings


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI (``s3://b/p`` + ``a``, ``b`` → ``s3://b/p/a/b``)."""
    clean = [str(p).strip("/") for p in parts if str(p).strip("/")]
    if is_remote(uri):
        return posixpath.join(uri.rstrip("/"), *clean)
    return str(Path(uri).joinpath(*clean))


def _options_for(uri: str, options: dict[str, Any] | None) -> dict[str, Any]:
    if options is not None:
        return options
    if not uri.startswith("s3://"):
        return {}

    return get_settings().storage_options()


@lru_cache(maxsize=16)
def _fs_cached(protocol: str, options_json: str) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem(protocol, **json.loads(options_json))


def filesystem(uri: str, options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for ``uri``."""
    if is_remote(uri):
        protocol, rest = uri.split("://", 1)
        opts = _options_for(uri, options)
        return _fs_cached(protocol, json.dumps(opts, sort_keys=True)), rest
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return _fs_cached("file", "{}"), str(Path(path).expanduser().resolve())


def arrow_filesystem(uri: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(pyarrow filesystem, path) for pyarrow and Ray Data readers/writers."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, options)
    if not is_remote(uri):
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        return handle.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object. Local writes go through a temporary file and a rename, so a reader
    never sees half a file; S3 PUTs are atomic already."""
    fs, path = filesystem(uri)
    if is_remote(uri):
        with fs.open(path, "wb") as handle:
            handle.write(data)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str, value: Any) -> None:
    write_bytes(uri, json.dumps(value, indent=1, sort_keys=True, default=str).encode())


def listdir(uri: str) -> list[str]:
    """Names (not paths) directly under ``uri``; empty if it does not exist."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def remove(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def check_writable(uri: str) -> None:
    """Write and delete a small probe object under ``uri`` (creating a local directory as a build
    would), so a command can refuse unwritable storage before it starts any work. Raises
    :class:`OSError`, whose ``strerror`` (or text) says why."""
    if not is_remote(uri):
        _, path = filesystem(uri)
        if Path(path).exists() and not Path(path).is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        Path(path).mkdir(parents=True, exist_ok=True)
    probe = join(uri, f".kolray-write-probe-{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"")
    except OSError:
        raise
    except Exception as error:  # s3fs/botocore: credentials, bucket, endpoint
        first_line = (str(error).splitlines() or [""])[0]
        raise OSError(f"{type(error).__name__}: {first_line}") from error
    with contextlib.suppress(Exception):  # written but not deletable: writing is what a build needs
        remove(probe)


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    if not is_remote(uri):
        fs.makedirs(path, exist_ok=True)
