"""One trainer per run directory: an OS lock held for as long as a trainer works on the run.

The lock is `fcntl.flock` on `RUN/trainer.lock`. The kernel releases it when its process ends,
however it ends (kill -9, a crash, a power cut), so a lock never outlives its holder and never
needs removing by hand. The file itself only names the holder (pid, host, start time) so that a
refused start can say who holds the run; it is left in place between runs.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

LOCK_FILE = "trainer.lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """Exclusive, non-blocking lock on a run directory; a context manager.

    Acquiring it when another process holds it raises `RunLockedError` naming the holder.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        self._lock(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd = fd
        return self

    def check(self) -> None:
        """Raise RunLockedError if another holder has the lock now, without taking it (to refuse
        early; only `acquire` makes the run this process's)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        self._lock(fd)
        os.close(fd)

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(f"run directory {self.run_dir} is in use by another trainer "
                                 f"({self._holder()}); wait for it to finish or stop it, then run again") from None

    def _holder(self) -> str:
        try:
            holder = json.loads(self.path.read_text())
            return f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return f"holder not recorded in {self.path} yet"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
