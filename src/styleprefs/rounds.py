"""The rounds as stored in a session: each ``propose`` round's folder, its candidates' looks, its picks and where the
files about them live, and ``ROUND:INDEX`` as the user names a candidate.

    rounds/NNN/                 proposals.safetensors (the looks), candidate-XX.png, sheet.png, index.html, preview.png
    rounds/NNN/picks-A-B-C/     selection.json, chosen_grams.safetensors, passed_grams.safetensors

Everything here reads; ``Session`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import images
from .errors import BadInput
from .preference import Choice
from .store import SessionError, Store

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


def parse_pick(pick: str, rounds: list[Round]) -> tuple[torch.Tensor, int]:
    """The look of ``ROUND:INDEX`` (both 1-based, as on the sheets) and its round's index."""
    try:
        round_index, candidate = (int(part) for part in pick.split(":"))
    except ValueError:
        raise BadInput(f"a pick must look like ROUND:INDEX (e.g. 2:7), got {pick!r}", "pick") from None
    if not 1 <= round_index <= len(rounds):
        raise BadInput(f"no round {round_index}: the session has {len(rounds)} round(s)")
    z = rounds[round_index - 1].z
    if not 1 <= candidate <= z.shape[0]:
        raise BadInput(f"no candidate {candidate} in round {round_index}: choose from 1 to {z.shape[0]}")
    return z[candidate - 1], round_index
