"""The rounds as stored in a session: each ``propose`` round's folder, its candidates' looks, its picks and where the
files about them live, and ``ROUND:INDEX`` as the user names a candidate.

    rounds/NNN/                 proposals.safetensors (the looks), candidate-XX.png, sheet.png, index.html, preview.png
    rounds/NNN/picks-A-B-C/     selection.json, chosen_grams.safetensors, passed_grams.safetensors

A round is rendered without the lock, into a folder of its own beside the rounds (:func:`rendering`), and numbered,
given its sheet and page and moved into place under the lock (:func:`place`). A set of picks is written to a folder of
its own (:func:`write_picks`), so an interrupted ``select`` leaves the earlier picks whole. The state that names these
files is ``Session``'s to commit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from . import files, images, inputs, page
from .errors import BadInput
from .preference import Choice, contrast_looks, looks
from .store import SessionError, Store, remove_abandoned

PASSED_GRAMS = "passed_grams.safetensors"  # in a round's picks folder: the mean Gram of the candidates passed over


@dataclass
class Round:
    """One propose round as stored: its folder, the look of every candidate and the picks (1-based)."""

    index: int
    folder: Path
    z: torch.Tensor
    candidates: list[Path]
    sheet: Path
    selection: list[int] | None = None


def load(store: Store, state: dict, look_dim: int) -> list[Round]:
    """Every round of ``state``, with its looks (checked to be (n, ``look_dim``))."""
    result = []
    for entry in state["rounds"]:
        folder = store.path(entry["folder"])
        z = store.read_tensors(f"{entry['folder']}/proposals.safetensors", required=("z",))["z"]
        if z.ndim != 2 or z.shape[1] != look_dim:
            raise SessionError(f"{folder}/proposals.safetensors: damaged (looks of shape {tuple(z.shape)}, expected "
                               f"(n, {look_dim}))")
        result.append(Round(entry["index"], folder, z, [folder / name for name in entry["candidates"]],
                            folder / "sheet.png", entry["selection"]))
    return result


def picks_folder(indices: list[int]) -> str:
    """The folder, inside a round's, of the files about one set of picks."""
    return "picks-" + "-".join(map(str, indices))


def picks_file(entry: dict, name: str) -> str:
    """The store name of a file about round ``entry``'s current picks, in their own folder."""
    return f"{entry['folder']}/{picks_folder(entry['selection'] or [])}/{name}"


def preview_of(store: Store, entry: dict) -> Path:
    """The photo a round's sheet shows, kept in the session."""
    return store.path(entry["preview"])


def chosen_and_passed(folder: Path, candidates: list[str],
                      chosen: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A round's candidate images, split into the chosen (1-based ``chosen``, in that order) and the passed over."""
    picked = [images.load_image(folder / candidates[i - 1]) for i in chosen]
    passed = [images.load_image(folder / name) for i, name in enumerate(candidates, 1) if i not in chosen]
    return picked, passed


def choices(rounds: list[Round]) -> list[Choice]:
    """The rounds with picks, as evidence for the choice model."""
    return [Choice(r.z, [i - 1 for i in r.selection]) for r in rounds if r.selection]


def pick_numbers(pick: str) -> tuple[int, int]:
    """``ROUND:INDEX`` as its two numbers, or BadInput."""
    try:
        round_index, candidate = (int(part) for part in pick.split(":"))
    except ValueError:
        raise BadInput(f"a pick must look like ROUND:INDEX (e.g. 2:7), got {pick!r}", "pick") from None
    return round_index, candidate


def parse_pick(pick: str, rounds: list[Round]) -> tuple[torch.Tensor, int]:
    """The look of ``ROUND:INDEX`` (both 1-based, as on the sheets) and its round's index."""
    round_index, candidate = pick_numbers(pick)
    if not 1 <= round_index <= len(rounds):
        raise BadInput(f"no round {round_index}: the session has {len(rounds)} round(s)")
    z = rounds[round_index - 1].z
    if not 1 <= candidate <= z.shape[0]:
        raise BadInput(f"no candidate {candidate} in round {round_index}: choose from 1 to {z.shape[0]}")
    return z[candidate - 1], round_index


def unpolished(state: dict, pick: str | None, pictures: str) -> list[str]:
    """What to say where ``pick`` (ROUND:INDEX, accepted by parse_pick) is from a round of polished candidates
    (``propose --polish``) and is given without polish (``pictures``: what is unpolished): the generator's pictures
    of that look, less finished than the candidate was. Nothing for other picks."""
    if pick is None:
        return []
    index = pick_numbers(pick)[0]
    steps = state["rounds"][index - 1].get("polish_steps")
    return [f"round {index}'s sheet showed its candidates finished with {steps} steps of polish; {pictures} "
            f"(styleprefs apply --pick {pick} --polish-steps {steps} finishes them)"] if steps else []


def learned(state: dict) -> set[int]:
    """The indices of the rounds a refine has learned from."""
    return {i for refine in state["refines"] for i in refine["rounds"]}


@contextmanager
def rendering(store: Store) -> Iterator[Path]:
    """A folder for a round being rendered, ``rounds/.pending-PID-*``: it becomes the round's folder (:func:`place`),
    or goes when the round fails."""
    store.path("rounds").mkdir(exist_ok=True)
    remove_abandoned(store.path("rounds"), ".pending-")
    pending = Path(tempfile.mkdtemp(prefix=f".pending-{os.getpid()}-", dir=store.path("rounds")))
    pending.chmod(files.plain_mode(folder=True))  # it becomes the round's folder; mkdtemp makes it 0700
    try:
        yield pending
    finally:
        shutil.rmtree(pending, ignore_errors=True)


def candidate_names(n: int) -> list[str]:
    return [f"candidate-{i:02d}.png" for i in range(1, n + 1)]


def write_looks(folder: Path, z: torch.Tensor, rendered: list[torch.Tensor]) -> None:
    """A round's looks (``proposals.safetensors``) and their pictures, the candidates."""
    Store(folder).write_tensors("proposals.safetensors", {"z": z})
    for image, file in zip(rendered, candidate_names(len(rendered)), strict=True):
        images.save_image(image, folder / file)


def place(store: Store, folder: Path, index: int, rendered: list[torch.Tensor], size: int, working: int,
          checkpoint: str, polish_steps: int | None = None) -> dict:
    """Under the lock: the numbered contact sheet and the page to pick from written into ``folder``, which then becomes
    round ``index``'s; the round's entry in the state (``polish_steps``: its candidates were polished so)."""
    n, name = len(rendered), f"rounds/{index:03d}"
    candidates = candidate_names(n)
    sheet = images.contact_sheet(rendered, [str(i) for i in range(1, n + 1)],
                                 title=f"round {index}: styleprefs select N [N ...]")
    images.save_image(sheet, folder / "sheet.png")
    page.write(folder, index, candidates, store.root)  # the sheet as a page to pick from
    # A folder with this number but no entry in the state is what a killed propose left.
    shutil.rmtree(store.path(name), ignore_errors=True)
    folder.rename(store.path(name))
    return {"index": index, "folder": name, "candidates": candidates, "n": n, "size": size, "working_side": working,
            "preview": f"{name}/{inputs.PREVIEW}", "checkpoint": checkpoint, "selection": None,
            **({"polish_steps": polish_steps} if polish_steps else {})}


def to_pick(state: dict, indices: list[int]) -> dict:
    """The latest round's entry, once ``indices`` are found to be picks it can take: its candidates (1-based), each
    once, in a round no refine has learned from yet."""
    if not state["rounds"]:
        raise BadInput("nothing to select from: run `styleprefs propose` first")
    entry = state["rounds"][-1]
    if not indices:
        raise BadInput("select needs at least one candidate number")
    bad = [i for i in indices if not 1 <= i <= entry["n"]]
    if bad:
        raise BadInput(f"no candidate {bad[0]} in round {entry['index']}: choose from 1 to {entry['n']}")
    if len(set(indices)) != len(indices):
        raise BadInput(f"candidate numbers repeat: {' '.join(map(str, indices))}")
    if entry["index"] in learned(state):
        raise BadInput(f"round {entry['index']} has already been learned from: `styleprefs propose` a new "
                       "round, or `styleprefs refine --undo` to change its picks")
    return entry


def write_picks(store: Store, entry: dict, indices: list[int], grams: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The files of round ``entry``'s picks ``indices``, beside any earlier picks' (still the state's until it is
    committed): the picks' Grams and ``selection.json`` (the picks, and how they look against the rest). The passed-over
    candidates' Grams are left to refine (a dozen more VGG passes, ~3 s here). The folders of earlier picks, for
    :func:`remove` once the state no longer names them."""
    folder = store.path(entry["folder"])
    chosen, passed = chosen_and_passed(folder, entry["candidates"], indices)
    picks = f"{entry['folder']}/{picks_folder(indices)}"
    store.write_tensors(f"{picks}/chosen_grams.safetensors", grams)
    contrast = contrast_looks([looks(x) for x in chosen], [looks(x) for x in passed])
    store.write_json(f"{picks}/selection.json", {"round": entry["index"], "chosen": indices, "looks": contrast})
    return tuple(f"{entry['folder']}/{p.name}/" for p in folder.glob("picks-*") if p.name != picks_folder(indices))


def remove(store: Store, folders: tuple[str, ...]) -> None:
    """Delete folders of the session that the state no longer names."""
    for name in folders:
        shutil.rmtree(store.path(name), ignore_errors=True)
