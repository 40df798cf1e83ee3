"""What a session's JSON files must hold, checked when they are read.

A session someone hands you is data, not code. ``state.json`` names the folders and files that commands write and
delete through, and numbers that index lists; each is checked here before any command uses it. A wrong type, a
missing key, or a path that is absolute, climbs out with ``..`` or leads outside the session through a link is
refused with one line that names the file. Numbers are held to the bounds that ``config``'s checks hold the settings
and the commands' arguments to (``check_candidates``, ``check_sheet_side``, ``check_working_side``), worded as damage.

``legacy=True`` reads a version-1 file as the upgrade (``migrate.py``) finds it: without the keys version 1 added
over time, and with round previews outside the session.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from .config import (MAX_CANDIDATES, MAX_POLISH_STEPS, MAX_SHEET_SIDE, MAX_WORKING_SIDE, MIN_CANDIDATES,
                     MIN_SHEET_SIDE, MIN_WORKING_SIDE)
from . import controls
from .store import SessionError, Store

PHASES = ("init", "refine")


class _Reader:
    """Field access on one file's JSON that fails with the file's name and the field's place in it."""

    def __init__(self, store: Store, name: str):
        self.store, self.file = store, store.path(name)

    def fail(self, what: str):
        raise SessionError(f"{self.file}: damaged ({what})")

    def get(self, data: Any, key: str, kind: type | tuple[type, ...], where: str = "", optional: bool = False) -> Any:
        if not isinstance(data, dict):
            self.fail(f"{where or 'the file'} is not an object")
        if key not in data:
            if optional:
                return None
            self.fail(f"no {where}{key!r}")
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # JSON's true/false are not numbers here, though Python's bool is an int.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            self.fail(f"{where}{key!r} has the wrong type")
        return value

    def count(self, data: Any, key: str, low: int, high: int, where: str = "", optional: bool = False) -> int | None:
        value = self.get(data, key, int, where, optional)
        if value is not None and not low <= value <= high:
            self.fail(f"{where}{key!r} is {value}, outside {low}…{high}")
        return value

    def inside(self, value: str, where: str, plain: bool = False) -> str:
        """``value`` as a path inside the session: relative, no ``..``, no link out of it; a plain file name when
        ``plain``."""
        parts = PurePosixPath(value).parts
        if (not value or "\\" in value or "\0" in value or PurePosixPath(value).is_absolute() or ".." in parts
                or (plain and len(parts) != 1)):
            self.fail(f"{where} {value!r} is not a {'file name' if plain else 'path'} inside the session")
        root = self.store.root.resolve()
        if not (root / value).resolve().is_relative_to(root):
            self.fail(f"{where} {value!r} leads outside the session")
        return value


def state(store: Store, name: str = "state.json", legacy: bool = False) -> dict:
    """``state.json`` (or a refine's ``state_before.json``, whose manifest undo replaces), checked."""
    r = _Reader(store, name)
    data = store.read_json(name)
    checkpoint = r.get(data, "checkpoint", (str, type(None)))
    if checkpoint is not None:
        r.inside(checkpoint, "'checkpoint'")
    steps = r.get(data, "steps", dict)
    for key in ("init", "refine"):
        r.count(steps, key, 0, 10**9, "'steps'.")
    training = r.get(data, "training", (dict, type(None)), optional=legacy)
    if training is not None:
        if r.get(training, "phase", str, "'training'.") not in PHASES:
            r.fail(f"'training'.'phase' is not one of {', '.join(PHASES)}")
        r.count(training, "steps", 0, 10**9, "'training'.")
    # the manifest: name → size and SHA-256
    files = r.get(data, "files", dict, optional=legacy or name != "state.json") or {}
    for file, recorded in files.items():
        r.inside(file, "recorded file")
        r.count(recorded, "size", 0, 2**62, f"file {file!r}'s ")
        r.get(recorded, "sha256", str, f"file {file!r}'s ")
    rounds = r.get(data, "rounds", list)
    for i, entry in enumerate(rounds, 1):
        _round(r, entry, i, legacy)
    for i, refine in enumerate(r.get(data, "refines", list), 1):
        where = f"refine {i}'s "
        r.inside(r.get(refine, "checkpoint", str, where), f"{where}checkpoint")
        previous = r.get(refine, "previous", str, where, optional=legacy)
        if previous is not None:
            r.inside(previous, f"{where}previous checkpoint")
        r.get(refine, "fine_tuning_kept", bool, where, optional=legacy)
        r.count(refine, "steps", 0, 10**9, where)
        learned = r.get(refine, "rounds", list, where)
        if not all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= len(rounds) for k in learned):
            r.fail(f"{where}'rounds' names a round that does not exist")
    return data


def _round(r: _Reader, entry: Any, index: int, legacy: bool) -> None:
    where = f"round {index}'s "
    if r.get(entry, "index", int, where) != index:
        r.fail(f"{where}'index' is not {index}")
    r.inside(r.get(entry, "folder", str, where), f"{where}folder")
    candidates = r.get(entry, "candidates", list, where)
    for name in candidates:
        if not isinstance(name, str):
            r.fail(f"{where}'candidates' holds a non-name")
        r.inside(name, f"{where}candidate", plain=True)
    n = r.count(entry, "n", MIN_CANDIDATES, MAX_CANDIDATES, where)
    if n != len(candidates):
        r.fail(f"{where}'n' is {n} but it lists {len(candidates)} candidates")
    r.count(entry, "size", MIN_SHEET_SIDE, MAX_SHEET_SIDE, where)
    if entry.get("polish_steps") is not None:  # a round whose candidates were polished (propose --polish)
        r.count(entry, "polish_steps", 1, MAX_POLISH_STEPS, where)
    r.count(entry, "working_side", MIN_WORKING_SIDE, MAX_WORKING_SIDE, where, optional=legacy)
    preview = r.get(entry, "preview", str, where, optional=legacy)
    if preview is not None and not (legacy and PurePosixPath(preview).is_absolute()):  # version 1: a photo's path
        r.inside(preview, f"{where}preview")
    checkpoint = r.get(entry, "checkpoint", (str, type(None)), where, optional=legacy)
    if checkpoint is not None:
        r.inside(checkpoint, f"{where}checkpoint")
    selection = r.get(entry, "selection", (list, type(None)), where, optional=legacy)
    if selection is not None and (
            len(set(map(str, selection))) != len(selection)
            or not all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= n for k in selection)):
        r.fail(f"{where}'selection' is not distinct candidate numbers from 1 to {n}")


def config(store: Store, legacy: bool = False) -> dict:
    """``config.json``, checked."""
    r = _Reader(store, "config.json")
    data = store.read_json("config.json")
    r.get(data, "settings", dict)
    proposals = r.get(data, "proposal_settings", (dict, type(None)) if legacy else dict, optional=legacy)
    if proposals is not None:
        r.count(proposals, "working_side", MIN_WORKING_SIDE, MAX_WORKING_SIDE, "'proposal_settings'.", optional=True)
        r.count(proposals, "n", MIN_CANDIDATES, MAX_CANDIDATES, "'proposal_settings'.", optional=True)
        r.count(proposals, "size", MIN_SHEET_SIDE, MAX_SHEET_SIDE, "'proposal_settings'.", optional=True)
    r.get(data, "seed", int)
    if not all(isinstance(n, str) for n in r.get(data, "z_names", list)):
        r.fail("'z_names' holds a non-name")
    for key in ("styles", "contents"):
        inputs = r.get(data, key, list)
        if not inputs:
            r.fail(f"{key!r} is empty")
        for i, item in enumerate(inputs, 1):
            r.get(item, "path", str, f"{key} {i}'s ")
            r.get(item, "sha256", str, f"{key} {i}'s ")
    n_styles = len(data["styles"])
    # A look is z, then the stroke scale; version 1 also stored looks that were z alone (the upgrade adds the dial).
    fitting = [controls.look_names(n_styles), *([controls.dim_names(n_styles)] if legacy else [])]
    if data["z_names"] not in fitting:
        r.fail(f"'z_names' does not fit {n_styles} painting(s)")
    return data


def selection(store: Store, name: str) -> dict:
    """A round's ``selection.json``: the picks, and how they look against the rest (look → difference in sd)."""
    r = _Reader(store, name)
    data = store.read_json(name)
    looks = r.get(data, "looks", dict)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in looks.values()):
        r.fail("'looks' holds a non-number")
    return data


__all__ = ["config", "selection", "state"]
