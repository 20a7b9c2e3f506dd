"""One Pantau process per data directory.

``pantau serve`` and ``pantau demo`` hold an exclusive lock on ``pantau.lock`` in
``PANTAU_DATA_DIR`` for as long as they run. Two services on one directory would write
the same recordings index and cameras file, and ``pantau import --direct`` would change
a cameras file that the running service then overwrites. The kernel drops the lock when
the process ends, ``kill -9`` included, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "pantau.lock"


class DataDirInUse(Exception):
    """Another process has the data directory's lock."""


def lock_data_dir(data_dir: Path) -> int:
    """Take the data directory's lock and return its file descriptor, to keep open.

    Raises DataDirInUse when another process has it, OSError when the file cannot be opened.
    """
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUse(str(data_dir)) from None
    return fd
