"""A disk that really fills: a small tmpfs (needs root, CAP_SYS_ADMIN), and a filler."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``12m``) at ``mount`` for the block; lazily unmounted."""
    mount.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(
            f"this test mounts a tmpfs, which needs root (CAP_SYS_ADMIN): {made.stderr.strip()}"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@contextlib.contextmanager
def tmpfs_or_fail(mount: Path, size: str) -> Iterator[Path]:
    """:func:`tmpfs` for a fixture: without root the test fails saying why, never skips."""
    import pytest

    try:
        with tmpfs(mount, size) as path:
            yield path
    except RuntimeError as exc:
        pytest.fail(str(exc))


def grow(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


def fill(path: Path) -> int:
    """Write ``path`` until its file system has no byte left; returns the bytes written."""
    chunk = bytes(1 << 20)
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while len(chunk) >= 512:
            try:
                written += os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]  # fill the last pages too
        os.fsync(fd)
    finally:
        os.close(fd)
    return written
