"""The session folder on disk: atomic JSON and safetensors writes, schema version, the lock.

Tensors only ever go through safetensors and settings through JSON, so a session someone hands
you cannot run code when it is opened.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import BadInput, StyleprefsError
from .files import alive, atomic_write, plain_mode

SCHEMA_VERSION = 3
OLDER_SCHEMAS = (1, 2)  # read only to be upgraded to SCHEMA_VERSION when opened (migrate.py)
CONFIG = "config.json"
# Not in the manifest: the state that holds it, the log written after it, and training's own resumable file.
UNRECORDED = frozenset({"state.json", "history.json", "training.safetensors"})


class SessionError(StyleprefsError):
    """A session file is missing, damaged or from a newer version; the message names the file."""


class NoSession(BadInput):
    """There is no session where one was expected."""


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Store:
    """Reads and writes the files of one session folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self) -> bool:
        return self.path(CONFIG).is_file()

    def check(self) -> None:
        """Refuse a folder that is not a styleprefs session, or one of a schema this styleprefs does not read."""
        if self.root.exists() and not self.root.is_dir():
            raise NoSession(f"{self.root}: is a file, not a session folder")
        if not self.exists():
            raise NoSession(f"no session at {self.root} (run `styleprefs init` first, or pass --session)")
        version = self.version()
        if type(version) is int and version > SCHEMA_VERSION:
            raise SessionError(f"{self.path(CONFIG)}: schema version {version!r} is newer than this "
                               f"styleprefs understands ({SCHEMA_VERSION}); upgrade styleprefs")
        if type(version) is not int or version not in (*OLDER_SCHEMAS, SCHEMA_VERSION):  # JSON's true is no number
            raise SessionError(f"{self.path(CONFIG)}: damaged (schema version {version!r} is not one styleprefs "
                               "has written)")

    def version(self) -> object:
        """``config.json``'s schema version, as found."""
        return self.read_json(CONFIG).get("schema_version")

    def read_json(self, name: str) -> dict:
        path = self.path(name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SessionError(f"{path}: missing from the session") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SessionError(f"{path}: damaged JSON ({exc})") from None
        if not isinstance(data, dict):
            raise SessionError(f"{path}: damaged (expected a JSON object)")
        return data

    def write_json(self, name: str, data: dict) -> None:
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        atomic_write(self.path(name), lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def read_tensors(self, name: str, required: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """The tensors of a safetensors file; one line naming it if it is missing, damaged or lacks a ``required``
        tensor."""
        path = self.path(name)
        if not path.is_file():
            raise SessionError(f"{path}: missing from the session")
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise SessionError(f"{path}: damaged safetensors file ({exc})") from None
        missing = [key for key in required if key not in tensors]
        if missing:
            raise SessionError(f"{path}: damaged (no {missing[0]!r})")
        return tensors

    def write_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        atomic_write(self.path(name), lambda tmp: save_file(data, tmp))

    def manifest(self) -> dict[str, dict]:
        """Size and SHA-256 of every session file (hidden files and ``UNRECORDED`` aside), name → {size, sha256}:
        ``state.json`` carries it, so it is written in the same atomic step as the state it describes."""
        files = {}
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if path.is_file() and name not in UNRECORDED and not any(p.startswith(".") for p in name.split("/")):
                files[name] = {"size": path.stat().st_size, "sha256": sha256(path)}
        return files

    def check_damage(self, manifest: dict[str, dict], names: list[str] | None = None) -> None:
        """Refuse to build on damage: the files of ``manifest`` (those under ``names``, default all) must be as the
        last command left them."""
        damage = self.damage(manifest, names)
        if damage:
            raise SessionError(f"{self.root}: damaged session files: {', '.join(damage)}; restore them from a copy of "
                               "the session")

    def damage(self, manifest: dict[str, dict], names: list[str] | None = None) -> list[str]:
        """Files of ``manifest`` (those starting with one of ``names``, default all) that are missing or changed, each
        as 'NAME (what)'."""
        found = []
        for name, recorded in manifest.items():
            if names is not None and not any(name == n or name.startswith(n.rstrip("/") + "/") for n in names):
                continue
            path = self.path(name)
            if not path.is_file():
                found.append(f"{name} (missing)")
            elif path.stat().st_size != recorded["size"]:
                found.append(f"{name} ({path.stat().st_size} bytes, recorded {recorded['size']})")
            elif sha256(path) != recorded["sha256"]:
                found.append(f"{name} (content changed)")
        return found

    def commit(self, state: dict, event: dict, leaving: tuple[str, ...] = ()) -> dict:
        """Write ``state`` with the manifest of the files it uses (those under the folders ``leaving`` are about to
        go) as ``state.json``, atomically and after every file it names, then log ``event``; the state written."""
        files = {name: f for name, f in self.manifest().items() if not name.startswith(leaving)}
        state = {**state, "files": files}  # committed with the state it describes
        self.write_json("state.json", state)
        self.append_history(event)
        return state

    def append_history(self, entry: dict) -> None:
        history = self.read_json("history.json") if self.path("history.json").exists() else {"events": []}
        if not isinstance(history.get("events"), list):
            raise SessionError(f"{self.path('history.json')}: damaged (no list of 'events')")
        history["events"].append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry})
        self.write_json("history.json", history)

    def _remove_leftovers(self) -> None:
        """Delete the temporary files of writers killed mid-write (``atomic_write``'s ``.NAME.PID.*.tmp``). Every
        writer of the session's files holds the lock, so with it held none of these is in use; the one exception, a
        ``propose`` rendering its round in ``rounds/.pending-*`` without the lock, is left alone."""
        for leftover in self.root.rglob(".*.tmp"):
            if not any(part.startswith(".pending-") for part in leftover.relative_to(self.root).parts[:-1]):
                leftover.unlink(missing_ok=True)

    @contextmanager
    def lock(self, timeout: float = 30.0):
        """Exclusive lock for commands that change the session; waits up to ``timeout`` seconds."""
        fd = os.open(self.path(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                        raise StyleprefsError(f"{self.root} is locked by {holder}; try again when it finishes")
                    time.sleep(0.2)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
            self._remove_leftovers()
            yield
        finally:
            os.close(fd)


def create(root: Path, write: Callable[[Store], None], force: bool) -> Path | None:
    """Make a session at ``root`` whole or not at all: ``write`` fills a folder beside it, which then moves in with
    one rename, so a kill mid-write leaves nothing half-made there. A session already at ``root`` (``force`` only)
    is moved aside first; its new place is returned, to delete once the new one is complete or to ``restore``."""
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(root.parent, f".{root.name}.creating-")
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.creating-{os.getpid()}-", dir=root.parent))
    replaced = None
    try:
        write(Store(staging))
        staging.chmod(plain_mode(folder=True))  # mkdtemp makes it 0700
        if Store(root).exists():
            if not force:  # made by another init while this one decoded
                raise BadInput(f"a session was created at {root} while this init started; use --force to replace it")
            replaced = Path(tempfile.mkdtemp(prefix=f".{root.name}.replaced-", dir=root.parent)) / "session"
            with Store(root).lock(timeout=5):
                root.rename(replaced)
        try:
            staging.rename(root)  # onto nothing, or an empty folder
        except OSError:
            raise BadInput(f"{root}: another process filled it while this init started; choose another "
                           "--session") from None
    except BaseException as failure:
        shutil.rmtree(staging, ignore_errors=True)
        if replaced is None:
            raise
        restore(replaced, root, failure, ours=False)
    return replaced


def restore(replaced: Path, root: Path, failure: BaseException, ours: bool) -> None:
    """Put the session an init was replacing back in place after the init failed (``ours``: what is at ``root`` now
    is the failed init's, to delete), and say so; or say where it is."""
    try:
        if ours:
            shutil.rmtree(root, ignore_errors=True)
        replaced.rename(root)
        replaced.parent.rmdir()
    except OSError as exc:
        raise StyleprefsError(f"init failed ({failure}); the session it was replacing is in {replaced} "
                              f"(moving it back failed: {exc.strerror})") from failure
    if not isinstance(failure, Exception):  # Ctrl-C outside training, SystemExit: as they were
        raise failure
    kind = type(failure) if isinstance(failure, StyleprefsError) else StyleprefsError
    raise kind(f"{failure}; the session it was replacing is back at {root}, as it was") from failure


def remove_abandoned(folder: Path, prefix: str) -> None:
    """Delete the folders ``PREFIX<pid>-*`` that killed processes left (a propose's rendering, an init's new session
    being written); a live process's stays."""
    for found in folder.glob(f"{glob.escape(prefix)}*"):
        pid = found.name[len(prefix) :].split("-")[0]
        if not (pid.isdigit() and alive(int(pid))):
            shutil.rmtree(found, ignore_errors=True)
