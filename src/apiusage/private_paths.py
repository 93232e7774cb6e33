"""Files that hold callers' data are created readable by their owner only.

The local store, the spool and the identity secret hold caller ids, organisations and the
key of credential hashes: a folder apiusage creates for them is ``0700`` and a database
file ``0600`` (SQLite gives its ``-wal`` and ``-shm`` files the database's mode), whatever
the process's umask. Folders and files that already exist are left as they are.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["owned_privately", "private_database", "private_directory"]


def private_directory(path: Path) -> None:
    """Create ``path`` (and missing parents) if it does not exist; the last one ``0700``."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first
            path.mkdir(mode=0o700)


def private_database(path: Path) -> None:
    """Create the (empty) database file ``0600`` before SQLite opens it."""
    private_directory(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def owned_privately(path: Path) -> bool:
    """True when ``path`` does not exist yet, or is a folder of this user that no one
    else may write to (a shared temporary folder's ``apiusage-<uid>`` must be ours)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return True
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # Windows: the temporary folder is the user's own
        return path.is_dir()
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )
