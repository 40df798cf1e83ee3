"""The session in words: what ``status`` and ``history`` show, from a :class:`Snapshot` of plain data that
``Session.snapshot`` reads, with the pieces of it that come from the session's files: the taste learned (now and
after each refine), the looks of each round's picks, an unfinished init or refine. This module knows nothing of the
Session, and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoints, controls, page, schema
from .looks import split
from .preference import Posterior, describe_taste
from .rounds import learned, picks_file
from .store import Store


@dataclass(frozen=True)
class Snapshot:
    """What ``status`` and ``history`` show of a session, as read from it."""

    root: Path                    # the session folder, resolved
    state: dict                   # state.json
    config: dict                  # config.json
    device: str
    bf16: bool
    damaged: list[str]            # damaged or missing files, as ``Store.damage`` words them
    unfinished: dict | None       # an interrupted init or refine (:func:`unfinished`)
    taste: dict                   # what was learned, in words (``preference.describe_taste``)
    look: torch.Tensor | None     # the look apply uses; None when the session cannot give one
    stroke_scale: float | None
    tastes_after: dict[str, str] = field(default_factory=dict)  # each refine's checkpoint → the taste it had learned


def status(snap: Snapshot) -> dict:
    """The session as ``status`` shows it: rounds, picks, refines, steps, the look ``apply`` gives and the taste in
    words, an unfinished init or refine, and any damaged files (listed, as ``git fsck`` does; a damaged session has
    no look to describe)."""
    state, config, rounds = snap.state, snap.config, snap.state["rounds"]
    return {
        "session": str(snap.root),
        "round": len(rounds),
        "proposals": sum(r["n"] for r in rounds),
        "selections": {r["index"]: r["selection"] for r in rounds if r["selection"]},
        "refines": len(state["refines"]),
        "steps": state["steps"],
        "device": snap.device,
        "bf16": snap.bf16,
        "styles": [s["path"] for s in config["styles"]],
        "contents": len(config["contents"]),
        "checkpoint": state["checkpoint"],
        "preferred_z": None if snap.look is None else dict(zip(config["z_names"],
                                                                [round(v, 3) for v in snap.look.tolist()])),
        "stroke_scale": None if snap.stroke_scale is None else round(snap.stroke_scale, 2),
        "taste": snap.taste,
        "unfinished": snap.unfinished,
        "latest_sheet": str(snap.root / rounds[-1]["folder"] / "sheet.png") if rounds else None,
        "damaged": snap.damaged,
    }


def history(snap: Snapshot) -> list[dict]:
    """Every round: its sheet and page, its picks, and the refine that learned from it (its steps, and the taste it had
    learned in words)."""
    after = {max(refine["rounds"]): refine for refine in snap.state["refines"]}  # a refine follows its last round
    rows = []
    for entry in snap.state["rounds"]:
        folder = snap.root / entry["folder"]
        refine = after.get(entry["index"])
        rows.append({"round": entry["index"], "candidates": entry["n"], "sheet": str(folder / "sheet.png"),
                     "page": str(folder / page.PAGE), "picks": entry["selection"], "refine": refine and {
                         "checkpoint": refine["checkpoint"], "steps": refine["steps"],
                         "fine_tuning_kept": refine["fine_tuning_kept"],
                         "taste": snap.tastes_after.get(refine["checkpoint"], "unknown: the session is damaged")}})
    return rows


def unfinished(store: Store, state: dict) -> dict | None:
    """The unfinished init or refine, if any: its phase, the steps saved so far, and the total."""
    training = state["training"]
    if not training:
        return None
    return {**training, "completed": checkpoints.saved_steps(store),
            "resume": f"styleprefs {training['phase']} --resume"}


def taste(store: Store, state: dict, config: dict, posterior: Posterior | None, look: torch.Tensor | None) -> dict:
    """The taste in words (``preference.describe_taste``): the choice model's ``posterior`` and the ``look`` apply
    gives, with the looks of the picks it has learned from. Both are None where the session cannot give a look."""
    scale = None if look is None else _stroke_scale(config, look)
    return describe_taste(posterior, look, style_names(config),
                          learned_looks(store, state) if posterior is not None else [], scale)


def tastes_after(store: Store, state: dict, config: dict, current: dict) -> dict[str, str]:
    """Each refine's checkpoint → the taste it had learned, in words (``current``'s, the taste now, for the current
    checkpoint's)."""
    return {refine["checkpoint"]: (current if refine["checkpoint"] == state["checkpoint"] else
                                   taste_after(store, state, config, refine))["summary"]
            for refine in state["refines"]}


def taste_after(store: Store, state: dict, config: dict, refine: dict) -> dict:
    """The taste an earlier refine had learned, in words: its choice model's best look."""
    name = f"{refine['checkpoint']}/preference.safetensors"
    posterior = Posterior.from_tensors(store.read_tensors(name, required=("mean", "cov", "picks")))
    z = posterior.best_z()
    return describe_taste(posterior, z, style_names(config), learned_looks(store, state, set(refine["rounds"])),
                          _stroke_scale(config, z))


def learned_looks(store: Store, state: dict, rounds: set[int] | None = None) -> list[dict[str, float]]:
    """For each round a refine has learned from (or each of ``rounds``), how its picks differ from the passed-over
    candidates (saved by ``select``)."""
    rounds = learned(state) if rounds is None else rounds
    saved = [picks_file(entry, "selection.json") for entry in state["rounds"] if entry["index"] in rounds]
    return [schema.selection(store, name)["looks"] for name in saved]


def style_names(config: dict) -> list[str]:
    """The paintings' names, as the taste words them."""
    return [Path(s["path"]).stem for s in config["styles"]]


def _stroke_scale(config: dict, look: torch.Tensor) -> float:
    return split(look, controls.z_dim(len(config["styles"])), len(config["z_names"]))[1]
