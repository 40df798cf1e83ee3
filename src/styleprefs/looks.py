"""A session's looks as its contact sheets show them, and the guard's verdict on them.

A look is the generator's z followed by its stroke scale (``controls``). It is judged (``guard``), drawn for a round
and learned from as a sheet shows it: rendered on the sheet's photo at the round's working side, then shrunk to the
sheet's size, as any output is for viewing. Rendering needs the session's generator, so it comes in as a callable
(:data:`Render`); the rest is the session's files and settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import controls, guard, images, inputs
from .config import ProposalSettings
from .device import Runtime
from .errors import BadInput
from .guard import Guard
from .preference import Posterior
from .rounds import Round, preview_of
from .store import Store
from .training import gram_stats, loss_network, picture_network

Render = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]  # (photo, look, working side) → the picture
CountFn = Callable[[int, int], None]  # (candidates done, candidates in all)
Finisher = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (look, its picture) → the picture finished


def split(look: torch.Tensor, z_dim: int, look_dim: int) -> tuple[torch.Tensor, float]:
    """A look → the generator's z and the stroke scale (1 for a z given alone)."""
    look = look.reshape(-1)
    if look.numel() not in (z_dim, look_dim):
        raise BadInput(f"a look of this session has {look_dim} numbers, got {look.numel()}")
    scale = controls.stroke_scale(float(look[z_dim])) if look.numel() > z_dim else 1.0
    return look[:z_dim], scale


def best_look(posterior: Posterior, rounds: list[Round]) -> torch.Tensor:
    """Of the looks picked in ``rounds``, the one with the highest posterior mean utility: a look the user was shown and
    chose, not the choice model's extrapolation to the edge of z (which each round offers as candidate 1, for the user
    to pick or pass over). Before any pick, the posterior's best: the centre."""
    picked = [r.z[i - 1] for r in rounds if r.selection for i in r.selection if 1 <= i <= len(r.z)]
    if posterior.picks == 0 or not picked:
        return posterior.best_z()
    picked = torch.stack(picked)
    return picked[int(posterior.utility(picked).argmax())].clone()


def sheet_photo(path: Path, size: int, working: int) -> torch.Tensor:
    """The photo a sheet of ``size`` px is rendered from: sharp enough for the smallest strokes a look has (a working
    grid over the session's). From a smaller copy, those candidates were made from an enlarged photo and showed less
    detail than apply then gave."""
    return images.load_image(path, max_side=max(size, math.ceil(working / controls.SMALLEST_STROKES)))


@dataclass(frozen=True)
class Looks:
    """One session's looks as its sheets show them. ``rounds`` are the state's entries; before any round, a look is
    seen at ``first``'s sheet size and working side. ``checkpoint`` is the current one (None before init finished)."""

    store: Store
    rounds: list[dict]
    first: ProposalSettings
    checkpoint: str | None
    runtime: Runtime
    style_layers: tuple[str, ...]
    edges: str  # how training sees pictures (TrainSettings.edges): the picks' Grams are seen so too
    z_dim: int
    look_dim: int
    render: Render

    def working_side(self, round_index: int | None = None) -> int:
        """The long side (px) the generator works at: where round ``round_index`` (1-based; default the latest) was
        rendered, so its picks look as they did on its sheet; before any round, the session's ``working_side``
        setting."""
        if not self.rounds:
            return self.first.working_side
        return self.rounds[-1 if round_index is None else round_index - 1]["working_side"]

    def preview(self, photo: torch.Tensor, look: torch.Tensor, size: int, working: int) -> torch.Tensor:
        """A candidate as the sheet shows it: ``photo`` rendered with ``look`` at the working side ``working``, then
        shrunk to the long side ``size`` as any output is for viewing (what apply gives at any size, seen small)."""
        return images.shrink(self.render(photo, look, working), size)

    def guard(self, photo: torch.Tensor) -> Guard:
        """What counts as a stylisation of ``photo`` (as a sheet shows it) in this session."""
        return Guard(loss_network(self.runtime, self.style_layers), self.runtime,
                     self.store.read_tensors("style_grams.safetensors"), photo)

    def judged_on(self) -> tuple[Path, int, int]:
        """Where a look is judged: the photo of the latest round's sheet (the session's preview photo before any
        round), the sheet's size and its working side."""
        entry = self.rounds[-1] if self.rounds else {"index": None, "size": self.first.size, "preview": inputs.PREVIEW}
        return preview_of(self.store, entry), entry["size"], self.working_side(entry["index"])

    def judged(self, look: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The look :meth:`stylised` gives (judged now), its picture as the sheet shows it and that picture's distance
        to the painting over the photo's."""
        preview, size, working = self.judged_on()
        photo = sheet_photo(preview, size, working)
        judge = self.guard(images.shrink(photo, size))
        look, picture = judge.stylised(look, lambda candidate: self.preview(photo, candidate, size, working),
                                       or_nearest=True)
        return look, picture, judge.ratio(picture)

    def stylised(self, look: torch.Tensor, remember: bool = True) -> torch.Tensor:
        """``look``, or the nearest look toward the centre whose picture is a stylisation (failing that, the one whose
        picture is nearest the painting), judged as the latest round's sheet shows it (the session's preview photo
        before any round). The verdict is recalled from the user's cache folder (``guard.recall``) and, with
        ``remember``, kept there for the next process while nothing it depends on changes: the look, the generator,
        the paintings, the photo, the sizes and the runtime."""
        preview, size, working = self.judged_on()
        key = guard.verdict_key(look, [self.store.path(f"{self.checkpoint}/generator.safetensors"),
                                       self.store.path("style_grams.safetensors"), preview],
                                {"size": size, "working": working, "device": self.runtime.device.type,
                                 "bf16": self.runtime.bf16})
        remembered = guard.recall(key)
        if remembered is not None:
            return look * remembered
        judged = self.judged(look)[0]
        fraction = guard.fraction_of(look, judged)
        if fraction is not None and remember:
            guard.remember(key, fraction)
        return judged

    def draw(self, posterior: Posterior, n: int, seed: int, photo: torch.Tensor, size: int, working: int,
             on_progress: CountFn | None = None,
             finish: Finisher | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A round's ``n`` looks (seeded by ``seed``; before any pick, ``controls.first_round``'s design) and their
        pictures on ``photo``, each a stylisation (``guard``), then ``finish(look, picture)``ed where given. After
        picks, candidate 1 is the choice model's own best look (``Posterior.best_z``, moved toward the centre as
        :meth:`stylised` moves a look), offered for the user to pick or pass over."""
        proposed = posterior.propose(n, seed=seed)
        if posterior.picks == 0:
            proposed = controls.first_round(proposed)
        judge = self.guard(images.shrink(photo, size))
        shown = []
        for i, look in enumerate(proposed):
            look, picture = judge.stylised(look, lambda candidate: self.preview(photo, candidate, size, working),
                                           or_nearest=i == 0 and posterior.picks > 0)
            shown.append((look, finish(look, picture) if finish else picture))
            if on_progress:
                on_progress(i + 1, n)
        return torch.stack([look for look, _ in shown]), [picture for _, picture in shown]  # as shown: learned from

    def on_sheet(self, entry: dict, looks: list[torch.Tensor]) -> list[torch.Tensor]:
        """``looks`` rendered on round ``entry``'s photo as its sheet shows a candidate (its working side and size)."""
        working = self.working_side(entry["index"])
        photo = images.load_image(preview_of(self.store, entry), max_side=max(entry["size"], working))
        return [self.preview(photo, look, entry["size"], working) for look in looks]

    def learning_images(self, entry: dict, indices: list[int]) -> list[torch.Tensor]:
        """Candidates ``indices`` (1-based) of round ``entry`` as refine learns from them: their z alone, rendered at
        stroke scale 1 as the sheet would have shown it. The scale is applied exactly at render time; learnt into G as
        well, a taste for small strokes was applied twice (benchmarks/preference.py: beats random on 3 of 5 tastes,
        against 4 this way). Measured on the working grid instead, fine-tuning moved G much further and the outputs
        stopped being stylisations (2 of 5). The candidate images themselves where the renders cannot be reproduced: a
        round proposed from another checkpoint, or rendered by an earlier version (its ``checkpoint`` is null), and
        polished candidates (``propose --polish``): the finished pictures, as they were picked, are what refine learns
        from."""
        folder = self.store.path(entry["folder"])
        if entry["checkpoint"] != self.checkpoint or entry.get("polish_steps"):
            return [images.load_image(folder / entry["candidates"][i - 1]) for i in indices]
        looks = self.store.read_tensors(f"{entry['folder']}/proposals.safetensors", required=("z",))["z"]
        return self.on_sheet(entry, [split(looks[i - 1], self.z_dim, self.look_dim)[0] for i in indices])

    def learning_grams(self, entry: dict, indices: list[int]) -> dict[str, torch.Tensor]:
        """The Grams of the :meth:`learning_images` of candidates ``indices`` of round ``entry``, layer → (N, C, C)."""
        return gram_stats(picture_network(self.runtime, self.style_layers, self.edges),
                          self.learning_images(entry, indices), self.runtime, self.style_layers)
