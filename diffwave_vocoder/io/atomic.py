"""Atomic writes: a crash or kill at any moment leaves either the old target or the new one, never half.

Files are written to a temporary sibling, flushed to disk and renamed over the target. Directories
(checkpoints) are written to a temporary sibling too and swapped with the target in one atomic
renameat2(RENAME_EXCHANGE) on Linux; elsewhere with two renames, where a crash between the two
leaves the previous version intact beside the target under a `.<name>.old-*` name.

The temporaries are created private (mkstemp/mkdtemp: 0600/0700); before they take the target's
place they get the permissions an ordinary `open`/`mkdir` would give under the process umask, so
a checkpoint, SavedModel or wav is readable by whoever the umask lets read it. A crash leaves only
hidden `.<name>.*` temporaries, which `remove_leftovers` deletes.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import sys
import shutil
import tempfile
from pathlib import Path
from typing import Collection, Iterable, Iterator


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask (read from /proc on Linux, where changing it to read it would race threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish_file(path: Path, umask: int) -> None:
    os.chmod(path, 0o666 & ~umask)


def _publish_directory(path: Path, umask: int) -> None:
    os.chmod(path, 0o777 & ~umask)


def _make_parent(target: Path) -> None:
    for parent in (target.parent, *target.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write {target}: {parent} is a file, not a directory")
            break
    target.parent.mkdir(parents=True, exist_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` atomically.

    `suffix` lets writers that insist on a file extension (soundfile, numpy) see one.
    """
    target = Path(path)
    _make_parent(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        _publish_file(tmp_path, current_umask())
        os.replace(tmp_path, target)
        _fsync_directory(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, owned: Collection[str] | None = None) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it takes the place of `path`.

    `owned` names the entries the writer makes. An existing `path` holding anything else is refused
    before anything is written, so pointing a writer at a folder of one's own never deletes it;
    None replaces whatever is there (for callers that already asked the user)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ValueError(f"cannot write a checkpoint directory at {target}: a file is in the way")
    if owned is not None and target.is_dir():
        foreign = sorted(child.name for child in target.iterdir() if child.name not in owned)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise FileExistsError(f"{target} exists and holds what this writer did not make ({shown}); "
                                  f"refusing to replace it: choose a new directory or empty this one")
    _make_parent(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _publish_directory(tmp, current_umask())  # what the writers created inside already follows the umask
        for child in tmp.rglob("*"):  # nested too: an exported SavedModel has variables/, assets/
            if child.is_dir():
                _fsync_directory(child)
                continue
            with open(child, "rb") as f:
                os.fsync(f.fileno())
        _fsync_directory(tmp)
        if target.exists() and _exchange(tmp, target):
            shutil.rmtree(tmp)  # now holds the previous version
        elif target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "previous")
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
        _fsync_directory(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_leftovers(directory: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporaries a killed atomic write of `directory/<name>` left (`.<name>.*.tmp*`,
    `.<name>.old-*`); returns what was removed."""
    root = Path(directory)
    if not root.is_dir():
        return []
    removed = []
    for name in names:
        for child in root.glob(f".{glob.escape(name)}.*"):
            rest = child.name[len(name) + 2:]
            if ".tmp" in rest or rest.startswith("old-"):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
                removed.append(child)
    return removed
