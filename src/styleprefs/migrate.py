"""Upgrading a session that an older styleprefs wrote, once, when it is opened.

Version 1 grew while its number stayed: a version-1 session may lack what later ones record (a round's working side
and its sheet's photo, the choice model's posterior, the state before a refine, the manifest, the kept inputs, the
stroke-scale dial, ...). Each step below fills one of these in with what styleprefs used in its place, so the upgraded
session gives the same pictures; everything else reads the current version only. Version 3 records how training saw
edges (``TrainSettings.edges``); sessions of versions 1 and 2 were trained with VGG19's zero padding ("zero").

All or nothing: what an upgrade adds or changes is written into ``.upgrade/`` inside the session first, its
``config.json`` last. Only then do the files move into place, ``state.json`` is written with its manifest, and
``config.json``, which carries the version, moves in last. Interrupted before ``.upgrade/config.json`` is written, the
session is the older one, untouched (the next open starts again); after, the next open finishes the moves. A file
that cannot be read, or an input that has gone, stops the upgrade with one line, changing nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import asdict
from pathlib import Path, PurePosixPath

import torch

from . import checkpoints, controls, files, images, inputs, page, schema
from .config import ProposalSettings, TrainSettings
from .preference import PRIOR_SD, Choice, Posterior, fit
from .rounds import PASSED_GRAMS, picks_folder
from .store import CONFIG, SCHEMA_VERSION, SessionError, Store, sha256

STAGING = ".upgrade"  # hidden, so outside the manifest
# What settings saved before these keys existed were made with.
V1_SETTINGS = {"style_layers": ("relu1_1", "relu2_1", "relu3_1", "relu4_1"), "start": "scratch", "colour_centre": 0.0,
               "edges": "zero"}
V2_SETTINGS = {"edges": "zero"}
SCALE_1 = 0.0  # the stroke-scale dial's coordinate of looks from before the dial: controls.stroke_scale(0) is 1
PICKS_FILES = ("selection.json", "chosen_grams.safetensors", PASSED_GRAMS)
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)  # a read-only folder, file or file system
ACCEPTED = 2**62  # a recorded photo whose SHA-256 matches passed the pixel limit at init


def opened(path: Path, wait: float = 30.0) -> Store:
    """The session folder at ``path``, checked; upgraded first (under its lock) if an older styleprefs wrote it."""
    store = Store(Path(path))
    store.check()
    upgrade(store, wait)
    return store


def upgrade(store: Store, wait: float = 30.0) -> bool:
    """Bring the session to ``SCHEMA_VERSION`` in place if an older styleprefs wrote it, under its lock (waiting up to
    ``wait`` seconds for it); whether this call did. ``store.check`` has refused versions it does not know."""
    if store.version() == SCHEMA_VERSION and not store.path(STAGING).exists():
        return False
    try:
        with store.lock(wait):
            store.check()
            staged = Store(store.path(STAGING))
            if store.version() == SCHEMA_VERSION:  # upgraded meanwhile, or stopped just before its last cleanup
                shutil.rmtree(staged.root, ignore_errors=True)
                return False
            # One step at a time: an upgrade an older styleprefs staged and left half done moves in as the version it
            # was, and the next step starts from there.
            for _ in range(SCHEMA_VERSION):  # each step moves the version up: never more steps than versions
                if store.version() == SCHEMA_VERSION:
                    break
                if not staged.exists():  # not staged whole: start again from the session's own files
                    shutil.rmtree(staged.root, ignore_errors=True)
                    try:
                        (Version1(store) if store.version() == 1 else Version2(store)).stage(staged)
                    except BaseException:
                        shutil.rmtree(staged.root, ignore_errors=True)
                        raise
                _move_in(store, staged)
            store.append_history({"command": "upgrade", "schema_version": SCHEMA_VERSION})
    except OSError as exc:
        if exc.errno in UNWRITABLE:  # retrying changes nothing: say what will
            raise SessionError(f"{store.root}: an older styleprefs made this session, and it is upgraded once, in "
                               f"place, before use, but it cannot be written here ({exc.strerror or exc}); open it "
                               "once where it can be, or copy it") from None
        raise SessionError(f"{store.root}: upgrading the session failed ({exc.strerror or exc}); it is whole, and the "
                           "next command tries again") from None
    return True


class Version2:
    """A version-2 session as found, checked, and the step that makes it version 3: its settings say that it was
    trained inside VGG19's zero padding, as it was."""

    def __init__(self, store: Store):
        self.store = store
        self.config = schema.config(store)
        self.state = schema.state(store)
        store.check_damage(self.state["files"])

    def stage(self, staged: Store) -> None:
        """Write the version-3 ``state.json`` and ``config.json`` into ``staged``, ``config.json`` last."""
        staged.write_json("state.json", {**self.state, "files": {}})
        staged.write_json(CONFIG, {**self.config, "schema_version": SCHEMA_VERSION,
                                   "settings": {**self.config["settings"], **V2_SETTINGS}})


class Version1:
    """A version-1 session as found, checked, and the steps that make it the current version."""

    def __init__(self, store: Store):
        self.store = store
        self.config = schema.config(store, legacy=True)
        self.state = schema.state(store, legacy=True)
        store.check_damage(self.state.get("files") or {})
        self.dial = self.config["z_names"] == controls.dim_names(len(self.config["styles"]))  # z alone: add the dial
        self.dim = len(self.config["z_names"])
        self.settings = TrainSettings.from_dict({**V1_SETTINGS, **self.config["settings"]})
        self.proposals = ProposalSettings.from_dict(self.config.get("proposal_settings") or {})
        self.had_preview = store.path(inputs.PREVIEW).is_file()
        self.looks: dict[str, torch.Tensor] = {}  # each round's looks as version 1 stored them

    def stage(self, staged: Store) -> None:
        """Write into ``staged`` every file of the current version's session that the version-1 one lacks or has
        otherwise, ``config.json`` last."""
        self.kept_inputs(staged)
        for entry in self.state["rounds"]:
            self.round_files(entry, staged)
        state = self.upgraded(self.state)
        self.states_before(state, staged)
        self.posteriors(state, staged)
        staged.write_json("state.json", {**state, "files": {}})  # the manifest is made when the files are in place
        schema.state(staged)  # checked before the staged config marks the upgrade as one to finish on the next open
        staged.write_json(CONFIG, {
            **self.config, "schema_version": SCHEMA_VERSION,
            "settings": {**self.config["settings"], **self.settings.to_dict()},
            "proposal_settings": {**(self.config.get("proposal_settings") or {}), **asdict(self.proposals)},
            "z_names": controls.look_names(len(self.config["styles"]))})

    def kept_inputs(self, staged: Store) -> None:
        """``inputs.safetensors`` and ``preview.png``, for sessions made before they were kept: decoded from the
        recorded files as these sessions read them, and only while they are the files the session was made from."""
        if self.store.path(inputs.KEPT).is_file() and self.had_preview:
            return
        contents = [self.recorded(item) for item in self.config["contents"]]
        styles = [self.recorded(item) for item in self.config["styles"]]
        photos, paintings = inputs.decode(contents, styles, self.settings, max_pixels=ACCEPTED)
        preview = images.load_image(contents[0], max_side=inputs.PREVIEW_SIDE, max_pixels=ACCEPTED)
        inputs.keep(staged, photos, paintings, preview)

    def recorded(self, item: dict) -> Path:
        """A photo or painting where ``config.json`` recorded it, refused unless it is the file init read."""
        path = Path(item["path"])
        if not path.is_file():
            raise SessionError(f"{path}: gone since init; {self.store.root}, made before sessions kept their own "
                               "copy of their photos and paintings, needs it where it was to be upgraded")
        if sha256(path) != item["sha256"]:
            raise SessionError(f"{path}: changed since init (its SHA-256 differs from the one "
                               f"{self.store.path(CONFIG)} recorded); put the original back to upgrade the session")
        return path

    def round_files(self, entry: dict, staged: Store) -> None:
        """A round's files as version 2 keeps them: its looks with the stroke-scale dial, the photo its sheet shows,
        its picks' files in their own folder, its page."""
        folder = entry["folder"]
        name = f"{folder}/proposals.safetensors"
        looks = self.store.read_tensors(name, required=("z",))["z"]
        if looks.shape != (entry["n"], self.dim):
            raise SessionError(f"{self.store.path(name)}: damaged (looks of shape {tuple(looks.shape)}, expected "
                               f"({entry['n']}, {self.dim}))")
        self.looks[folder] = looks
        if self.dial:
            staged.write_tensors(name, {"z": torch.cat([looks, looks.new_full((len(looks), 1), SCALE_1)], 1)})
        preview, source = self.preview(entry)
        if source is not None:
            if not source.is_file():
                raise SessionError(f"{source}: gone since round {entry['index']} showed it; {self.store.root} needs "
                                   "it where it was to be upgraded")
            images.open_image(source)  # an image, or one line naming it
            files.atomic_write(staged.path(preview), lambda tmp: shutil.copyfile(source, tmp))
        elif not self.store.path(preview).is_file():
            raise SessionError(f"{self.store.path(preview)}: missing from the session")
        if entry.get("selection"):
            self.picks(entry, staged)
        if not self.store.path(f"{folder}/{page.PAGE}").is_file():  # proposed before rounds had a page
            for candidate in entry["candidates"]:
                if not self.store.path(f"{folder}/{candidate}").is_file():
                    raise SessionError(f"{self.store.path(f'{folder}/{candidate}')}: missing from the session")
            text = page.render(self.store.path(folder), entry["index"], entry["candidates"], self.store.root)
            files.atomic_write(staged.path(f"{folder}/{page.PAGE}"), lambda tmp: tmp.write_text(text, "utf-8"))

    def preview(self, entry: dict) -> tuple[str, Path | None]:
        """Where round ``entry``'s sheet photo is in version 2, and the file to copy there (None: it is in the session
        already). Rounds recorded the photo's own path before they kept a copy, and none before that: the session's
        preview was shown, or the first photo before the session kept one."""
        recorded = entry.get("preview") or (inputs.PREVIEW if self.had_preview else self.config["contents"][0]["path"])
        if not PurePosixPath(recorded).is_absolute():
            return recorded, None
        source = Path(recorded)
        suffix = source.suffix.lower() if source.suffix[1:].isalnum() else ""
        return f"{entry['folder']}/preview{suffix}", source

    def picks(self, entry: dict, staged: Store) -> None:
        """The picks' files in their own folder (at first they were in the round's), and their looks (picks made
        before the looks were measured have none, as they were read)."""
        own = f"{entry['folder']}/{picks_folder(entry['selection'])}"
        found = own if self.store.path(own).is_dir() else entry["folder"]
        selection = self.store.read_json(f"{found}/selection.json")
        if found != own or "looks" not in selection:
            staged.write_json(f"{own}/selection.json", {**selection, "looks": selection.get("looks") or {}})
        for name in PICKS_FILES[1:] if found != own else ():
            if self.store.path(f"{found}/{name}").is_file():
                source = self.store.path(f"{found}/{name}")
                files.atomic_write(staged.path(f"{own}/{name}"), lambda tmp: shutil.copyfile(source, tmp))

    def upgraded(self, state: dict) -> dict:
        """A version-1 state (``state.json`` or a refine's ``state_before.json``) in version 2's terms: a round without
        a working side was shown at the session's; one whose sheet an earlier version rendered (looks without the
        dial, or no photo recorded) has no checkpoint to render again from; refines kept their fine-tuning before it
        was a choice; the phase of an unfinished training is recorded, None when there is none."""
        rounds = [{**entry, "working_side": entry.get("working_side", self.proposals.working_side),
                   "preview": self.preview(entry)[0], "selection": entry.get("selection"),
                   "checkpoint": None if self.dial or not entry.get("preview") else entry.get("checkpoint")}
                  for entry in state["rounds"]]
        refines = []
        for refine in state["refines"]:
            previous = refines[-1]["checkpoint"] if refines else "checkpoints/000"
            refines.append({"previous": previous, "fine_tuning_kept": True, **refine})
        return {**state, "rounds": rounds, "refines": refines, "training": state.get("training")}

    def states_before(self, state: dict, staged: Store) -> None:
        """Each refine's ``state_before.json``, which undo restores: as saved, in version 2's terms; for refines made
        before undo kept it, rebuilt from the state after the refine as undo then rebuilt it."""
        after = state
        for k in reversed(range(len(state["refines"]))):
            refine = state["refines"][k]
            name = f"{refine['checkpoint']}/state_before.json"
            if self.store.path(name).is_file():
                before = self.upgraded(schema.state(self.store, name, legacy=True))
            else:
                learned = max(refine["rounds"])
                before = {**{key: v for key, v in after.items() if key != "files"}, "checkpoint": refine["previous"],
                          "refines": state["refines"][:k], "training": None,
                          "rounds": [r for r in after["rounds"] if r["index"] <= learned],
                          "steps": {**after["steps"], "refine": after["steps"]["refine"] - refine["steps"]}}
            staged.write_json(name, before)
            after = before

    def posteriors(self, state: dict, staged: Store) -> None:
        """Each checkpoint's choice model (``preference.safetensors``), over looks with the dial: as saved; for
        checkpoints made before it was stored, fitted to the rounds refined up to them, as it was each time it was
        needed."""
        made = ["checkpoints/000"] if state["checkpoint"] or state["refines"] else []
        learned: set[int] = set()
        for k, checkpoint in enumerate([*made, *(refine["checkpoint"] for refine in state["refines"])]):
            if k:
                learned |= set(state["refines"][k - 1]["rounds"])
            name = f"{checkpoint}/preference.safetensors"
            if self.store.path(name).is_file():
                posterior = checkpoints.load_posterior(self.store, checkpoint, self.dim)
                if not self.dial:
                    continue
            else:
                posterior = fit([Choice(self.looks[e["folder"]], [i - 1 for i in e["selection"]])
                                 for e in state["rounds"] if e["index"] in learned and e["selection"]], self.dim)
            staged.write_tensors(name, (with_dial(posterior) if self.dial else posterior).to_tensors())


def with_dial(posterior: Posterior) -> Posterior:
    """The choice model over looks with the stroke-scale dial, from one over z alone. Every look it learned from has
    the dial at 0, where both its features vanish: the picks say nothing of it, so its weights keep the prior,
    independent of the rest (what ``fit`` gives on those looks)."""
    d = posterior.dim
    kept = torch.cat([torch.arange(d), torch.arange(d, 2 * d) + 1])  # features [t, t²]: the dial's come after each
    mean = torch.zeros(2 * d + 2, dtype=torch.float64)
    cov = torch.eye(2 * d + 2, dtype=torch.float64) * PRIOR_SD**2
    mean[kept] = posterior.mean
    cov[kept[:, None], kept] = posterior.cov
    return Posterior(mean, cov, d + 1, posterior.picks)


def _move_in(store: Store, staged: Store) -> None:
    """Move the staged files into place and drop the version-1 picks' files that now have their own folder; then
    ``state.json`` with the manifest of what is there, and ``config.json``, which carries the version, last. Safe to
    repeat from any point."""
    state = schema.state(staged)
    root = store.root.resolve()
    for path in sorted(staged.root.rglob("*")):
        name = path.relative_to(staged.root).as_posix()
        if path.is_dir() or name in (CONFIG, "state.json") or path.name.startswith("."):
            continue
        target = store.path(name)
        if path.is_symlink() or not target.parent.resolve().is_relative_to(root):
            raise SessionError(f"{path}: not a file to move inside the session")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    for entry in state["rounds"]:
        if entry["selection"]:
            for name in PICKS_FILES:
                store.path(f"{entry['folder']}/{name}").unlink(missing_ok=True)
    manifest = store.manifest()
    manifest[CONFIG] = {"size": staged.path(CONFIG).stat().st_size, "sha256": sha256(staged.path(CONFIG))}
    store.write_json("state.json", {**state, "files": manifest})
    os.replace(staged.path(CONFIG), store.path(CONFIG))
    shutil.rmtree(staged.root, ignore_errors=True)
