"""Crash-safe settings for ``hugecalc verify``: a lock, a restore journal and the Restorer.

Before a verify run changes its first setting it writes a journal: the original value of every
setting it touches (and any scratch mount or file), with its pid and start time, atomically
(write, fsync, rename, fsync the directory).  It removes the journal only once everything is
restored.  A run killed with SIGKILL, by the OOM killer or by a crash of hugecalc leaves the
journal behind; the next verify run, or ``hugecalc verify --restore``, finds that its owner is
dead and puts the values back first.  (A reboot resets every setting by itself, which is why the
journal lives in ``/run``, a tmpfs: it does not outlive the boot it describes.)

The lock and the journal live in a directory only its owner (root) can write, opened without
following symlinks, so another user cannot redirect them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from typing import Callable

JOURNAL_LIMIT = 1 << 20  # a journal lists a few settings and scratch files: kilobytes

from hugecalc.errors import HostError, InputError
from hugecalc.files import read_text
from hugecalc.machine import kernelfs
from hugecalc.machine.kernelfs import setting, write_text

JOURNAL_VERSION = 1

#: Called with a one-line message when a run waits for another or restores an abandoned journal.
#: The CLI points it at stderr; None keeps the library silent.
on_notice: Callable[[str], None] | None = None


def _notice(message: str) -> None:
    if on_notice is not None:
        on_notice(message)


def state_dir() -> Path:
    """Where the lock and the journal live: ``$HUGECALC_STATE_DIR``, else ``/run/hugecalc`` for root
    (a tmpfs), else a per-user directory under ``$XDG_RUNTIME_DIR`` or the temp dir."""
    if os.environ.get("HUGECALC_STATE_DIR"):
        return Path(os.environ["HUGECALC_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/run/hugecalc")
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"hugecalc-{os.geteuid()}"


def _private_dir() -> Path:
    """The state directory, created 0700; refused unless it is a real directory that only we own."""
    path = state_dir()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise HostError(f"cannot create {path} for verify's lock and journal: {e.strerror}") from e
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise HostError(f"{path} is not a directory owned by uid {os.geteuid()} with mode 0700 (a symlink, or "
                        "another user's?): refusing to keep verify's lock and journal there")
    return path


def journal_path() -> Path:
    return state_dir() / "journal.json"


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None if it
    does not exist: with the pid it names one process, even after the pid is reused."""
    try:
        text = kernelfs.read(kernelfs.PROC / str(pid) / "stat")
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[19])


class _Lock:
    """An exclusive flock on ``verify.lock``; says who it waits for."""

    def __init__(self) -> None:
        self.fd: int | None = None

    def acquire(self) -> None:
        path = _private_dir() / "verify.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise HostError(f"cannot open {path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            _notice(f"waiting for another verify run (pid {holder}) to finish...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


def _write_journal(settings: list[tuple[Path, str]], scratch: list[tuple[str, str]]) -> None:
    """Atomically: a reader sees the previous journal or this one, never a part of one."""
    path = journal_path()
    data = {"version": JOURNAL_VERSION, "pid": os.getpid(), "start_time": _start_time(os.getpid()),
            "settings": [[str(p), v] for p, v in settings], "scratch": [[kind, p] for kind, p in scratch]}
    tmp = path.with_name(f".journal.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _remove_scratch(kind: str, path: str) -> bool:
    """A scratch mount is unmounted (lazily, so a dead probe's open file cannot hold it), and a
    scratch directory or file removed, never through a mount.  Whether there was anything to do."""
    if kind == "tracefs-instance":  # removing the directory frees its buffers and disables its events
        if not os.path.isdir(path):
            return False
        os.rmdir(path)
        return True
    if kind == "mount":
        if not os.path.ismount(path):
            return False
        if subprocess.run(["umount", "-l", path], capture_output=True).returncode:
            raise HostError(f"cannot unmount {path}")
        return True
    if any(os.path.ismount(os.path.join(root, d)) for root, dirs, _ in os.walk(path) for d in dirs):
        raise HostError(f"{path} still holds a mount: not removing it")
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    else:
        return False
    return True


def _put_back(settings: list[tuple[Path, str]], scratch: list) -> tuple[list[str], list[str]]:
    """Write the saved values back, last changed first, and remove the scratch mounts and files
    (the mount inside a scratch directory first): what was done, and what failed."""
    done, failures = [], []
    for path, value in reversed(settings):
        try:
            write_text(path, value)
            done.append(f"{path}={value}")
        except HostError as e:
            failures.append(str(e))
    for kind, name in reversed(scratch):
        try:
            if _remove_scratch(kind, name):
                done.append(f"removed its scratch {kind} {name}")
        except (OSError, HostError) as e:
            failures.append(str(e))
    return done, failures


def _recover_locked() -> list[str]:
    """With the lock held: restore what an abandoned journal lists; what was put back or removed."""
    path = journal_path()
    if not os.path.lexists(path):
        return []
    try:  # a regular file of at most 1 MiB, read without blocking (a FIFO planted there cannot hang it)
        data = json.loads(read_text(str(path), "the verify journal", JOURNAL_LIMIT))
        owner, settings, scratch = data["pid"], data["settings"], data["scratch"]
    except (InputError, ValueError, KeyError, TypeError) as e:
        raise HostError(f"{path} cannot be read ({e}): restore the settings it lists by hand, then delete it") from e
    if owner != os.getpid() and data.get("start_time") is not None and _start_time(owner) == data["start_time"]:
        raise HostError(f"{path} belongs to verify run pid {owner}, which is still running")
    restored, failures = _put_back([(Path(name), value) for name, value in settings], scratch)
    if failures:
        raise HostError(f"an abandoned verify journal ({path}) could not be restored: " + "; ".join(failures))
    path.unlink()
    if restored:
        _notice(f"verify run pid {owner} ended without restoring its settings; put back: " + ", ".join(restored))
    return restored


def recover_abandoned() -> list[str]:
    """Take the lock and restore an abandoned journal, if there is one (``verify --restore``)."""
    lock = _Lock()
    lock.acquire()
    try:
        return _recover_locked()
    finally:
        lock.release()


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by a signal
    raise _Terminated()


class Restorer:
    """Writes settings and restores every one of them, in reverse order, however the block ends;
    the journal covers the ends no ``finally`` reaches (SIGKILL, OOM kill, a crash).

    Holds the lock for its lifetime: two verify runs at once would each save the other's
    temporary settings and could leave them behind, so the second waits for the first.
    """

    def __init__(self) -> None:
        self._saved: list[tuple[Path, str]] = []
        self._scratch: list[tuple[str, str]] = []
        self._old_handler = None
        self._lock = _Lock()

    def set(self, path: Path, value: str) -> None:
        """Write ``value``; the first time a path is set, its original value goes into the journal
        before anything is written."""
        if not any(p == path for p, _ in self._saved):
            self._saved.append((path, setting(path)))
            _write_journal(self._saved, self._scratch)
        write_text(path, value)

    def scratch(self, kind: str, path: str) -> None:
        """Journal a scratch ``mount`` point, ``dir``/``file`` or ``tracefs-instance`` this run creates
        next, so that a recovery removes it; the run itself removes it as usual."""
        self._scratch.append((kind, path))
        _write_journal(self._saved, self._scratch)

    def __enter__(self) -> Restorer:
        self._lock.acquire()
        try:
            _recover_locked()
        except BaseException:
            self._lock.release()
            raise
        self._old_handler = signal.signal(signal.SIGTERM, _on_sigterm)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        # Ignore SIGINT/SIGTERM while restoring: a second Ctrl-C must not leave pages allocated.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        failures = []
        try:
            _, failures = _put_back(self._saved, self._scratch)
            if not failures:
                try:
                    journal_path().unlink()
                except FileNotFoundError:
                    pass
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, self._old_handler or signal.SIG_DFL)
            self._lock.release()
        if failures:
            raise HostError("could not restore settings (the journal is kept for 'hugecalc verify --restore'): "
                            + "; ".join(failures))
        if exc_type is _Terminated:
            raise HostError("terminated; every setting was restored")
        return False
