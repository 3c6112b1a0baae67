"""Crash-safe files, written one way everywhere: checkpoints, replay files, collector status files.

:func:`atomic_write` lets a writer fill a hidden temp file next to the target (:func:`temp_path`: the
``.<final name>.<8 hex>.<host>.<pid>.tmp`` layout of :data:`TMP_RE`), optionally ``fsync``\\ s it, ``os.replace``\\ s
it onto the final name and ``fsync``\\ s the directory. A crash at any moment (even ``SIGKILL``) leaves the old file or
the new one, plus at most an orphaned temp file that :func:`clean_temp_files` deletes later; it deletes nothing else.
A full disk (``ENOSPC`` / ``EDQUOT`` / ``EFBIG``) raises a :class:`DiskFullError` after removing the temp file.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DISK_FULL_ERRNOS", "DiskFullError", "TMP_RE", "atomic_write", "clean_temp_files", "fsync_path",
           "host_tag", "pid_alive", "temp_path"]

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Temp files this project writes (and the only ones its cleanups delete): ``.<final name>.<8 hex>.<host>.<pid>.tmp``,
# and ``.traj_<...>.npz.<host>.<pid>.tmp`` (replay files of earlier versions).
TMP_RE = re.compile(r"^\.(?P<name>traj_[A-Za-z0-9_-]+\.npz|[A-Za-z0-9_.-]+\.[0-9a-f]{8})"
                    r"\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.tmp$")


class DiskFullError(OSError):
    """The disk, a quota or the file-size limit ran out while writing; nothing partial was left."""


def host_tag() -> str:
    """This host's name reduced to ``[A-Za-z0-9-]`` (it is part of file and temp names)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host (zombies included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def temp_path(final: Path) -> Path:
    """A fresh hidden temp name next to ``final`` in the :data:`TMP_RE` layout."""
    return final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.{host_tag()}.{os.getpid()}.tmp"


def fsync_path(path: Path, directory: bool = False) -> None:
    """``fsync`` a file, or a directory (its entries: a rename is durable once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike | Callable[[Path], Path], write: Callable[[Path], Any], *,
                 fsync: bool = True, directory: str | os.PathLike | None = None,
                 disk_full_error: type[DiskFullError] = DiskFullError, what: str = "file") -> Path:
    """Let ``write(tmp_path)`` create the file, then move it onto its final name atomically; return that name.

    Args:
        path: the final file name, or a function of the written temp file that returns it (a name that depends on
            the content, e.g. its size); ``directory`` is then where the temp file goes.
        write: writes the whole file at the given temp path.
        fsync: flush the file and the directory to disk (survives a power loss, not only a killed process).
        disk_full_error, what: the error type raised on a full disk (a :class:`DiskFullError`) and the kind of file
            its message names.

    Raises:
        DiskFullError: the disk, quota or file-size limit ran out (the temp file is removed; an existing file at the
            final name is unchanged).
    """
    if callable(path):
        if directory is None:
            raise TypeError("atomic_write: a computed final name needs the directory of the temp file.")
        final_of, parent = path, Path(directory)
        tmp = temp_path(parent / "file")
    else:
        final_fixed = Path(path)
        parent = final_fixed.parent
        final_of, tmp = (lambda _tmp: final_fixed), temp_path(final_fixed)
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / "?"
    try:
        write(tmp)
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_write: the writer did not create {tmp} (did it add a suffix to the name?).")
        if fsync:
            fsync_path(tmp)
        final = Path(final_of(tmp))
        os.replace(tmp, final)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(
                e.errno,
                f"Disk full while writing {what} {final if final.name != '?' else parent} ({e.strerror}); no partial "
                "file was left and the previous checkpoints and replay files are intact; free disk space (or lower the "
                "checkpoints kept / the replay's buffer_size) and resume.",
            ) from e
        raise
    if fsync:
        fsync_path(parent, directory=True)
    return final


def clean_temp_files(directory: str | os.PathLike, stale_seconds: float = 3600.0) -> list[Path]:
    """Delete temp files left by crashed writers of this project: names in the :data:`TMP_RE` layout whose writer is
    dead (its pid on this host) or that are older than ``stale_seconds``. Any other file, whatever its name, is kept.

    Returns the deleted paths.
    """
    d = Path(directory)
    removed: list[Path] = []
    host, now = host_tag(), time.time()
    try:
        entries = list(os.scandir(d))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        m = TMP_RE.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue  # its writer just renamed it
        if age < stale_seconds and (m.group("host") != host or pid_alive(int(m.group("pid")))):
            continue  # a live writer (or one on another host of a shared file system)
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except FileNotFoundError:
            pass
    return removed
