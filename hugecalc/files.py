"""Every file hugecalc writes or reads by name: nothing it writes can hurt the machine, nothing it
reads can hang it.

Writes (:func:`check_output` before the work, :func:`write_whole` after it): only to a regular
file or a new name; never onto a device, FIFO, socket or directory; never through a symlink or
onto another user's file unless ``force``; through a file created with an unpredictable name in the
target folder (``O_CREAT | O_EXCL``, so a link planted there is never followed), written whole,
synced, then renamed into place: a half-written file never sits under its final name.

Reads (:func:`read_bounded`): only a regular file (a FIFO, a device or a directory is refused
without blocking on it), at most ``limit`` bytes.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Callable

from hugecalc.errors import InputError

#: The most a capture, profile, touch file or occupancy file may be: far more than any real one.
READ_LIMIT = 256 << 20


def _kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def check_output(path: str, option: str = "--output", force: bool = False) -> None:
    """Refuse, before any work, an output path that is not a regular file or a new name in an
    existing folder; a symlink or another user's file unless ``force``."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{option} {path}: cannot write in {folder}: permission denied")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        if not force:
            raise InputError(f"{option} {path} is a symbolic link: refused (it could point anywhere); "
                             "remove it, or give --force to replace the link itself")
        return
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{option} {path} is {_kind(st.st_mode)}: hugecalc writes only regular files")
    if st.st_uid != os.geteuid() and not force:
        raise InputError(f"{option} {path} belongs to another user (uid {st.st_uid}): refused without --force")


def write_whole(path: str, write: Callable[[str], None] | bytes | str, option: str = "--output",
                force: bool = False, mode: int = 0o666) -> None:
    """Write ``path`` whole or not at all: ``write(temporary path)`` (or the bytes/text given) into a
    new file of an unpredictable name beside it, synced, then renamed onto ``path``."""
    check_output(path, option, force)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise InputError(f"{option} {path}: cannot write there: {e.strerror}") from None
    try:
        if callable(write):
            os.close(fd)
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        else:
            data = write.encode() if isinstance(write, str) else write
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, mode & ~umask)  # as open() would have made it, not mkstemp()'s 0600
        check_output(path, option, force)  # nothing appeared there meanwhile
        os.replace(tmp, path)
    except OSError as e:
        _discard(fd, tmp)
        raise InputError(f"{option} {path}: cannot write it: {e.strerror or e}") from None
    except BaseException:
        _discard(fd, tmp)
        raise


def _discard(fd: int, tmp: str) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.unlink(tmp)
    except OSError:
        pass


def read_bounded(path: str, option: str, limit: int = READ_LIMIT) -> bytes:
    """A regular file's bytes, at most ``limit``: anything else is refused without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(f"{option} {path}: cannot read it: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{option} {path} is {_kind(st.st_mode)}: give a regular file")
        if st.st_size > limit:
            raise InputError(f"{option} {path} is {st.st_size:,} bytes, more than the {limit:,} hugecalc reads")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise InputError(f"{option} {path} is more than the {limit:,} bytes hugecalc reads")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise InputError(f"{option} {path}: cannot read it: {e.strerror}") from None
    finally:
        os.close(fd)


def read_text(path: str, option: str, limit: int = READ_LIMIT) -> str:
    """A regular file as UTF-8 text (a binary or non-UTF-8 file is refused with its option)."""
    data = read_bounded(path, option, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{option} {path}: not UTF-8 text (byte {e.start}): is it the right file?") from None
