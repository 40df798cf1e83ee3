"""What ``refine`` learns and how: the rounds it learns from, the personal style target built from their picks, the
batch plan that trains half of every batch near the preferred look (toward that target) and half from the prior
(toward the paintings), so the rest of z's space is not forgotten; the fine-tuning, whether it is kept, the checkpoint
it leaves, and the state ``undo`` goes back to.

:func:`personal_target` and :class:`BatchPlan` are pure functions of tensors; the rest reads and writes the session's
files, with its rounds seen as their sheets show them (``looks``). ``Session.refine`` tells the story.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import checkpoints, controls, images, inputs, schema
from .checkpoints import ProgressFn
from .config import TrainSettings
from .device import Runtime
from .errors import BadInput
from .guard import STYLISED, distance_to
from .looks import Looks
from .losses import Grams
from .networks import Discriminator, Generator
from .preference import NEAR_SPREAD, Posterior, recency_weights
from .rounds import PASSED_GRAMS, Round, picks_file
from .store import Store
from .training import (CropSampler, TargetFn, Trainer, aimed_grams, blended_targets, content_sampler, gram_stats,
                       picture_network)


def steps_to_run(training: dict | None, steps: int | None, resume: bool, default: int) -> int:
    """The steps a refine trains: with ``resume``, those of the interrupted refine that ``training`` (the state's)
    records; else ``steps`` (``default`` if None). Reads only: a refine refused here keeps an interrupted one's saved
    training for ``--resume``."""
    if resume:
        if (training or {}).get("phase") != "refine":
            raise BadInput("nothing to resume: no refine was interrupted")
        steps = training["steps"]
    steps = default if steps is None else steps
    if steps < 0:
        raise BadInput(f"refine steps must be at least 0, got {steps}", "steps")
    return steps


def rounds_to_learn(rounds: list[Round], learned: set[int]) -> list[Round]:
    """The rounds with picks, every one of them, once at least one (not in ``learned``) is new."""
    selected = [r for r in rounds if r.selection]
    if not selected or all(r.index in learned for r in selected):
        raise BadInput("no new selection to learn from: run `styleprefs propose`, then `styleprefs select N ...`")
    return selected


def passed_grams(store: Store, looks: Looks, entry: dict) -> Grams | None:
    """The mean Grams of round ``entry``'s passed-over candidates, layer → (1, C, C): as saved by its first refine,
    else computed from the candidates as refine learns from them (``Looks.learning_images``); None when every
    candidate was chosen."""
    saved = picks_file(entry, PASSED_GRAMS)
    if store.path(saved).exists():
        return store.read_tensors(saved)
    passed = [i for i in range(1, len(entry["candidates"]) + 1) if i not in entry["selection"]]
    if not passed:
        return None
    return {k: v.mean(0, keepdim=True) for k, v in looks.learning_grams(entry, passed).items()}


def keep_passed_grams(store: Store, looks: Looks, rounds: list[Round]) -> None:
    """Save each round's passed-over Grams where they are not saved yet: computed once per round, at its first
    refine."""
    for r in rounds:
        entry = looks.rounds[r.index - 1]
        if not store.path(picks_file(entry, PASSED_GRAMS)).exists():
            passed = passed_grams(store, looks, entry)
            if passed is not None:
                store.write_tensors(picks_file(entry, PASSED_GRAMS), passed)


def target_of(store: Store, looks: Looks, rounds: list[Round], z: torch.Tensor, runtime: Runtime,
              settings: TrainSettings) -> Grams:
    """What refine trains the looks near ``z`` toward (:func:`personal_target`): the Grams of the current look at the
    preferred ``z``, rendered on the latest picked round's photo as its sheet would show it (like the picks' Grams),
    moved along the direction the user has been choosing in ``rounds``, round by round."""
    layers = settings.style_layers
    net = picture_network(runtime, layers, settings.edges)
    latest = looks.rounds[rounds[-1].index - 1]
    chosen = [store.read_tensors(picks_file(looks.rounds[r.index - 1], "chosen_grams.safetensors")) for r in rounds]
    look = gram_stats(net, looks.on_sheet(latest, [z]), runtime, layers)
    return personal_target(look, chosen, [passed_grams(store, looks, looks.rounds[r.index - 1]) for r in rounds],
                           layers, settings.preference_step, settings.preference_reach)


def personal_target(look: Grams, chosen: Sequence[Grams], passed: Sequence[Grams | None], layers: tuple[str, ...],
                    step: float, reach: float) -> Grams:
    """Per layer, the current look's Grams moved by ``step`` (γ) along the direction the user has been choosing,

        P_l = G_l(current look) + γ·Σ_r ρ_r·(mean_chosen(r) G_l − mean_passed-over(r) G_l),

    ρ_r the recency weights over the rounds (oldest first). ``look`` and each round's ``chosen`` are layer →
    (N, C, C); ``passed`` is layer → (1, C, C), or None for a round whose every candidate was chosen (it adds no
    direction; rounds of both must pair up). Each layer moves by at most ``reach`` of its Gram's norm: a trust region,
    since unbounded, a taste that always wants "more" (warmer, …) compounded over rounds into a wash that had lost the
    photo. Aiming at the mean of the chosen images instead pulled the generator back from the preferred z toward the
    average pick and cost taste (benchmarks/preference.py, README)."""
    delta = {name: torch.zeros_like(look[name][0]) for name in layers}
    for weight, grams, others in zip(recency_weights(len(chosen)), chosen, passed, strict=True):
        if others is not None:
            for name in layers:
                delta[name] += weight * (grams[name].mean(0) - others[name][0])
    target = {}
    for name in layers:
        base, move = look[name].mean(0), step * delta[name]
        scale = min(1.0, reach * float(base.norm()) / max(float(move.norm()), 1e-12))
        target[name] = base + scale * move
    return target


@dataclass(frozen=True)
class BatchPlan:
    """One refine batch: its first ``batch - half`` samples near the preferred ``best_z`` and trained toward the
    ``personal`` target, the last ``half`` from the prior and trained toward the paintings (``base``)."""

    best_z: torch.Tensor          # (z_dim,) the preferred look's z, at stroke scale 1
    personal: Grams               # layer → (C, C)
    base: TargetFn                # the prior's targets: each z's blend of the paintings' Grams
    half: int                     # samples per batch from the prior
    n_layers: int
    n_styles: int
    colour_centre: float = 0.0

    def sample_z(self, batch: int, g: torch.Generator) -> torch.Tensor:
        near = self.best_z + NEAR_SPREAD * torch.randn(batch - self.half, self.best_z.numel(), generator=g)
        return torch.cat([near, torch.randn(self.half, self.best_z.numel(), generator=g)])

    def targets(self, z: torch.Tensor) -> Grams:
        base, near = self.base(z), z.shape[0] - self.half
        return {name: torch.cat([self.personal[name].to(z.device).expand(near, -1, -1), base[name][near:]])
                for name in base}

    def loss_weights(self, z: torch.Tensor) -> controls.LossWeights:
        """z's own loss weights, except that the near samples have no pull to the photo's colours: the target already
        carries the palette the user picked, and a strong chroma loss would only fight it. Their stroke dial (the
        layer weights) stays: uniform layer weights cost the "fine strokes" user 3 σ in the benchmark. So does their
        strength: from the pretrained start a low-strength z* looks much like the photo, and full style weight pulled
        a "subtle" user's look back toward the painting (P77 against P100 with z*'s own)."""
        weights = controls.loss_weights(z, self.n_layers, self.n_styles, self.colour_centre)
        weights.colour[: z.shape[0] - self.half] = 0.0
        return weights


def fine_tune(store: Store, config: dict, state: dict, settings: TrainSettings, runtime: Runtime, generator: Generator,
              picks: list[Path], best_z: torch.Tensor, personal: Grams, steps: int, working_side: int,
              write_state: Callable[[dict], None], on_progress: ProgressFn | None) -> tuple[Discriminator, float]:
    """Fine-tune ``generator`` and the current checkpoint's discriminator for ``steps``, resumably: each batch as the
    :class:`BatchPlan` toward ``personal`` near ``best_z`` says, the photos at ``working_side``, and for D the
    paintings and the ``picks``. Before the first step, ``write_state`` records the refine as under way (what
    ``--resume`` finds). The discriminator, and the seconds it took."""
    discriminator = Discriminator()
    checkpoints.load(discriminator, store, f"{state['checkpoint']}/discriminator.safetensors")
    # A batch holds at least one sample near the learned look and one from the prior (init may train on one large
    # crop a step).
    s, n_styles = replace(settings, batch=max(2, settings.batch)), len(config["styles"])
    trainer = Trainer(generator, runtime.module(discriminator), picture_network(runtime, s.style_layers, s.edges), s,
                      runtime, n_styles, s.refine_lr)
    contents, styles = inputs.load(store, config)
    chosen = [images.load_image(path) for path in picks]
    aimed = aimed_grams(store.read_tensors("style_grams.safetensors"), styles, runtime, s)
    plan = BatchPlan(best_z, personal, blended_targets(aimed, n_styles),
                     half=s.batch // 2, n_layers=len(s.style_layers), n_styles=n_styles, colour_centre=s.colour_centre)
    rng = torch.Generator().manual_seed(config["seed"] + 7919 * (len(state["refines"]) + 1))
    write_state({**state, "training": {"phase": "refine", "steps": steps}})
    seconds = checkpoints.train(store, trainer, "refine", steps, content_sampler(contents, s, working_side),
                                CropSampler(styles + chosen, s.size), plan.sample_z, plan.targets, rng, on_progress,
                                s.checkpoint_seconds, plan.loss_weights)
    return discriminator, seconds


def keeps_fine_tuning(unrefined: torch.Tensor, refined: torch.Tensor, ratio: float, personal: Grams,
                      runtime: Runtime, layers: tuple[str, ...], seen: str) -> tuple[bool, dict[str, float]]:
    """Whether the fine-tuning is kept, and the picture's style distance to the ``personal`` target before and after
    it (``unrefined``, ``refined``: what apply gives, as the sheet shows it; ``ratio``: the refined picture's distance
    to the painting over the photo's).

    It is kept only while the look it serves is still a stylisation, and only if what apply then gives is nearer the
    personal target than what it gave before. Tastes that want what the painting lacks (warm against a blue painting,
    "subtle") drove the generator toward the edge of the stylisations; the guard then pulled the look back, and the
    user got a picture further from their picks than with no fine-tuning at all (benchmarks/preference.py: warm
    −2.7 σ, subtle −1.1 σ against the choice model alone). The pictures are seen as training sees them (``seen``,
    ``TrainSettings.edges``), as the target was made."""
    net = picture_network(runtime, layers, seen)
    nearer = {"before": round(distance_to(net, runtime, unrefined, personal), 4),
              "after": round(distance_to(net, runtime, refined, personal), 4)}
    return ratio <= STYLISED and nearer["after"] < nearer["before"], nearer


def save(store: Store, state: dict, before: dict, generator: Generator, discriminator: Discriminator,
         posterior: Posterior, personal: Grams, refine: dict) -> tuple[dict, dict]:
    """Write a refine's checkpoint folder: its networks (as they were before it, where the fine-tuning is not kept),
    the choice model ``posterior``, the ``personal`` target and the state ``before`` it, for undo. The state that
    makes it current, and the record of the ``refine`` in it."""
    if not refine["fine_tuning_kept"]:
        checkpoints.load(generator, store, f"{state['checkpoint']}/generator.safetensors")
        checkpoints.load(discriminator, store, f"{state['checkpoint']}/discriminator.safetensors")
    name = f"checkpoints/{len(state['refines']) + 1:03d}"
    checkpoints.write(store, name, generator, discriminator, posterior)
    store.write_tensors(f"{name}/personal_grams.safetensors", personal)
    store.write_json(f"{name}/state_before.json", before)
    refine = {"checkpoint": name, **refine, "previous": state["checkpoint"]}
    return {**state, "checkpoint": name, "refines": [*state["refines"], refine], "training": None,
            "steps": {**state["steps"], "refine": state["steps"]["refine"] + refine["steps"]}}, refine


def undone(store: Store, state: dict) -> tuple[dict, dict]:
    """The state ``undo`` returns to and its event: without the refine that was interrupted (its saved training goes),
    else the state before the last refine."""
    if (state["training"] or {}).get("phase") == "refine":
        checkpoints.finished(store)
        return {**state, "training": None}, {"command": "undo", "undone": "interrupted refine"}
    if not state["refines"]:
        raise BadInput("nothing to undo: no refine has been made")
    last = state["refines"][-1]["checkpoint"]
    before = schema.state(store, f"{last}/state_before.json")
    return before, {"command": "undo", "undone": last, "checkpoint": before["checkpoint"]}
