"""The session in words: what ``status`` and ``history`` show, from a :class:`Snapshot` of plain data that
``Session.snapshot`` reads (this module knows nothing of the Session, and changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import page


@dataclass(frozen=True)
class Snapshot:
    """What ``status`` and ``history`` show of a session, as read from it."""

    root: Path                    # the session folder, resolved
    state: dict                   # state.json
    config: dict                  # config.json
    device: str
    bf16: bool
    damaged: list[str]            # damaged or missing files, as ``Store.damage`` words them
    unfinished: dict | None       # an interrupted init or refine (``Session.training_progress``)
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
                         "taste": snap.tastes_after[refine["checkpoint"]]}})
    return rows
