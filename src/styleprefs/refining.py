"""What ``refine`` trains toward: the personal style target built from a user's picks, and the batch plan that
trains half of every batch near the preferred look (toward that target) and half from the prior (toward the
paintings), so the rest of z's space is not forgotten.

Both are pure functions of tensors; ``Session.refine`` gathers the Grams from the session and runs the training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import controls
from .preference import NEAR_SPREAD, recency_weights
from .training import TargetFn

Grams = dict[str, torch.Tensor]


def personal_target(look: Grams, chosen: Sequence[Grams], passed: Sequence[Grams | None], layers: tuple[str, ...],
                    step: float, reach: float) -> Grams:
    """Per layer, the current look's Grams moved by ``step`` (γ) along the direction the user has been choosing,

        P_l = G_l(current look) + γ·Σ_r ρ_r·(mean_chosen(r) G_l − mean_passed-over(r) G_l),

    ρ_r the recency weights over the rounds (oldest first). ``look`` and each round's ``chosen`` are layer →
    (N, C, C); ``passed`` is layer → (1, C, C), or None for a round whose every candidate was chosen (it adds no
    direction; rounds of both must pair up). Each layer moves by at most ``reach`` of its Gram's norm: a trust region, since unbounded, a taste
    that always wants "more" (warmer, …) compounded over rounds into a wash that had lost the photo. Aiming at the
    mean of the chosen images instead pulled the generator back from the preferred z toward the average pick and
    cost taste (benchmarks/preference.py, README)."""
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
