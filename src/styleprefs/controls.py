"""What z means: the map from a latent z to the loss weights it trains for (Babaeizadeh & Ghiasi, 2020).

Each sample's z sets its own loss weights, so the generator learns a whole family of stylisations
and z becomes the dial the user explores:

* ``stroke``   shifts weight between shallow and deep style layers: small, fine strokes ↔ large ones;
* ``strength`` scales the style loss against the content loss: subtle ↔ bold;
* ``colour``   weights a chroma loss to the photo: the painting's palette ↔ the photo's own colours
  (its centre is a setting, ``TrainSettings.colour_centre``);
* ``blend``    (two or more paintings) mixes the paintings' Gram targets.

z ~ N(0, I) is the prior; every dimension passes through a bounded squashing, so any z is valid.

A *look*, what a candidate is and what the choice model learns over, is z plus one exact dial that needs no
training: ``scale``, the size of the strokes relative to the image (the working resolution of ``render``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NAMED_DIMS = ("stroke", "strength", "colour")


def z_dim(n_styles: int) -> int:
    """Dimensions of z for a session with ``n_styles`` paintings (a blend axis per painting when > 1)."""
    return len(NAMED_DIMS) + (n_styles if n_styles > 1 else 0)


def dim_names(n_styles: int) -> list[str]:
    return list(NAMED_DIMS) + ([f"blend{k + 1}" for k in range(n_styles)] if n_styles > 1 else [])


SCALE = "scale"  # the look's last dimension: strokes relative to the image


def look_names(n_styles: int) -> list[str]:
    """The dimensions of a look: z's, then the stroke scale."""
    return [*dim_names(n_styles), SCALE]


STRENGTH_REACH = 1.6  # the style weight of a look runs from e^−1.6 to e^1.6 (0.2 to 4.95) times the centre's
SMALLEST_STROKES = 2.0 ** -1.2  # the least ``stroke_scale`` gives: the largest working grid, 2.297× the session's


def stroke_scale(value: float) -> float:
    """The look's scale coordinate (prior N(0, 1)) → strokes that many times the preview's: 1 at 0, about 0.6 to
    1.6 over ±1 sd, bounded to (0.43, 2.3). Smaller strokes than that read as a photo on the 256-px sheet."""
    return float(2.0 ** (1.2 * torch.tanh(torch.tensor(0.6 * float(value)))))


FIRST_ROUND_SPREAD = 1.5  # round 1's stroke, colour and stroke-scale dials, in the prior's standard deviations


def first_round(looks: torch.Tensor) -> torch.Tensor:
    """Round 1's looks from an N(0, I) design (B, look_dim): pictures worth hanging that differ. Strength is folded
    onto the bold half, so no candidate is weaker than the default look (on the example session the subtle half were
    tinted photos on the sheet: 0.65–0.71 of the photo's style distance to the painting, against 0.47–0.60); the
    stroke and colour dials and the stroke scale (the last coordinate) spread 1.5× wider, which gives back the variety
    the weak half had (docs/benchmarks.md, *Round 1's design*). Blend coordinates stay as drawn."""
    looks = looks.clone()
    strength, spread = NAMED_DIMS.index("strength"), [NAMED_DIMS.index("stroke"), NAMED_DIMS.index("colour")]
    looks[:, strength] = looks[:, strength].abs()
    looks[:, spread] *= FIRST_ROUND_SPREAD
    looks[:, -1] *= FIRST_ROUND_SPREAD  # the stroke scale
    return looks


@dataclass
class LossWeights:
    """Per-sample loss weights derived from z; every field has batch size B first."""

    layers: torch.Tensor    # (B, L) style-layer weights, mean 1
    strength: torch.Tensor  # (B,) style-loss multiplier
    colour: torch.Tensor    # (B,) chroma-loss multiplier in (0, 1)
    blend: torch.Tensor     # (B, K) mixture of the paintings, rows sum to 1


def loss_weights(z: torch.Tensor, n_layers: int, n_styles: int, colour_centre: float = 0.0) -> LossWeights:
    """Map z (B, z_dim) to the loss weights each sample is trained with. ``colour_centre`` is where on its dial the
    colour pull is half on: above 0, the prior's centre (z = 0, apply's default) keeps the painting's palette."""
    z = z.float()
    position = torch.linspace(-1.0, 1.0, n_layers, device=z.device)
    tilt = 2.0 * torch.tanh(z[:, 0:1])
    layers = torch.softmax(tilt * position, dim=1) * n_layers
    strength = torch.exp(STRENGTH_REACH * torch.tanh(z[:, 1]))
    colour = torch.sigmoid(2.0 * (z[:, 2] - colour_centre))
    if n_styles > 1:
        blend = torch.softmax(1.5 * z[:, 3 : 3 + n_styles], dim=1)
    else:
        blend = torch.ones(z.shape[0], 1, device=z.device)
    return LossWeights(layers, strength, colour, blend)


def strength_z(weight: float) -> float:
    """The strength coordinate of z whose style weight is ``weight`` times the centre's (0.2 to 4.95)."""
    if not math.exp(-STRENGTH_REACH) < weight < math.exp(STRENGTH_REACH):
        raise ValueError(f"a look's style weight is between {math.exp(-STRENGTH_REACH):.2f} and "
                         f"{math.exp(STRENGTH_REACH):.2f} times the centre's, not {weight}")
    return math.atanh(math.log(weight) / STRENGTH_REACH)
