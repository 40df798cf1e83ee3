"""Files on disk, written so that no reader sees half of one: atomic writes with the permissions a plain ``open()``
would give, the leftovers of writers that were killed, and whether a writer is still alive."""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path


def _umask_from_proc() -> int | None:
    """The umask as Linux shows it in /proc/self/status (kernel 4.7 on): read without changing it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _umask_by_setting() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


# Elsewhere the umask can only be read by setting it, for the whole process: done once, here at import, before
# any of our writer threads exist, rather than at each write, where it would race with files made on other threads.
_UMASK_AT_IMPORT = None if _umask_from_proc() is not None else _umask_by_setting()


def plain_mode(folder: bool = False) -> int:
    """The permissions a plain ``open()`` (0666) or ``mkdir()`` (0777) would give under the current umask."""
    mask = _umask_from_proc()
    return (0o777 if folder else 0o666) & ~(_UMASK_AT_IMPORT if mask is None else mask)


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename over ``path``.

    The file gets the permissions of a plain ``open()``: ``mkstemp`` makes it 0600 whatever the umask, which would
    keep a shared session or an ``--out`` served by a web server unreadable to everyone else."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name tells a killed writer's leftover from a live one's (``remove_leftovers``).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, plain_mode())  # after the write: a writer may replace the file (safetensors does)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftovers(path: Path) -> None:
    """Delete the temporary files that killed writers of ``path`` left beside it; a live writer's stay."""
    for leftover in Path(path).parent.glob(f".{glob.escape(Path(path).name)}.*.tmp"):
        pid = leftover.name[len(Path(path).name) + 2 :].split(".")[0]
        if not (pid.isdigit() and alive(int(pid))):
            leftover.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
