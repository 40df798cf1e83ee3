"""The session in words: what ``status`` and ``history`` show, read from a :class:`~styleprefs.session.Session`.

Nothing here changes the session; the taste is worded by ``preference.describe_taste``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import page
from .preference import Posterior, describe_taste

if TYPE_CHECKING:
    from .session import Session


def status(session: Session) -> dict:
    """The session as ``status`` shows it: rounds, picks, refines, steps, the look ``apply`` gives and the taste in
    words, an unfinished init or refine, and any damaged files (listed, as ``git fsck`` does; a damaged session has
    no look to describe)."""
    state, config = session.state, session.config
    rounds = state["rounds"]
    damaged = session.store.damage(state.get("files") or {})
    usable = state["checkpoint"] and not damaged
    z = session.preferred_z(remember=False) if usable else None  # a read: nothing written, not even to the cache
    scale = None if z is None else session.split(z)[1]
    posterior = session.preference() if usable else None
    return {
        "session": str(session.store.root.resolve()),
        "round": len(rounds),
        "proposals": sum(r["n"] for r in rounds),
        "selections": {r["index"]: r["selection"] for r in rounds if r.get("selection")},
        "refines": len(state["refines"]),
        "steps": state["steps"],
        "device": session.runtime.name,
        "bf16": session.runtime.bf16,
        "styles": [s["path"] for s in config["styles"]],
        "contents": len(config["contents"]),
        "checkpoint": state["checkpoint"],
        "preferred_z": None if z is None else dict(zip(config["z_names"], [round(v, 3) for v in z.tolist()])),
        "stroke_scale": None if scale is None else round(scale, 2),
        "taste": describe_taste(posterior, z, _styles(session), learned_looks(session) if usable else [], scale),
        "unfinished": session.training_progress(),
        "latest_sheet": str(session.store.path(rounds[-1]["folder"]) / "sheet.png") if rounds else None,
        "damaged": damaged,
    }


def history(session: Session) -> list[dict]:
    """Every round: its sheet and page, its picks, and the refine that learned from it (its steps, and the taste it had
    learned in words: the current refine's as ``status`` words it, earlier ones' from their choice model's best look,
    before the guard)."""
    styles = _styles(session)
    after = {max(refine["rounds"]): refine for refine in session.state["refines"]}  # a refine follows its last round
    rows = []
    for entry in session.state["rounds"]:
        folder = session.store.path(entry["folder"])
        refine = after.get(entry["index"])
        rows.append({"round": entry["index"], "candidates": entry["n"], "sheet": str(folder / "sheet.png"),
                     "page": str(folder / page.PAGE) if (folder / page.PAGE).is_file() else None,
                     "picks": entry.get("selection"), "refine": refine and {
                         "checkpoint": refine["checkpoint"], "steps": refine["steps"],
                         "fine_tuning_kept": refine.get("fine_tuning_kept", True),
                         "taste": _taste_after(session, refine, styles)["summary"]}})
    return rows


def learned_looks(session: Session, learned: set[int] | None = None) -> list[dict[str, float]]:
    """For each round a refine has learned from (or each of ``learned``), how its picks differ from the passed-over
    candidates (saved by ``select``; absent in sessions from before it was)."""
    if learned is None:
        learned = session.learned_rounds()
    out = []
    for r in session.rounds():
        saved = session.in_round(r.index, "selection.json")
        if r.index in learned and session.store.path(saved).exists():
            out.append(session.store.read_json(saved).get("looks") or {})
    return out


def _taste_after(session: Session, refine: dict, styles: list[str]) -> dict:
    """The taste a refine had learned, in words."""
    if refine["checkpoint"] == session.checkpoint:
        z = session.preferred_z()
        return describe_taste(session.preference(), z, styles, learned_looks(session), session.split(z)[1])
    name = f"{refine['checkpoint']}/preference.safetensors"
    if not session.store.path(name).exists():  # a refine from before the choice model was stored
        return {"summary": "not recorded"}
    posterior = Posterior.from_tensors(session.store.read_tensors(name, required=("mean", "cov", "picks")))
    z = posterior.best_z()
    return describe_taste(posterior, z, styles, learned_looks(session, set(refine["rounds"])), session.split(z)[1])


def _styles(session: Session) -> list[str]:
    """The paintings' names, as the taste words them."""
    return [Path(s["path"]).stem for s in session.config["styles"]]
