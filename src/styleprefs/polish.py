"""Finishing a picture: the generator's output, optimised toward the loss its look stands for.

A look's z sets the loss the generator was trained to minimise for it (:mod:`styleprefs.controls`):

    λ_c·L_content + λ_s·strength(z)·Σ_l w_l(z)·L_style,l(target) + λ_col·colour(z)·L_colour + λ_tv·L_tv

with the target Grams the paintings' blend for z, or, for the learned look, the personal target built from the
picks. A generator small enough to train on a CPU in minutes gets only part of the way down that loss. Minimising it
over the pixels themselves (Gatys et al., 2016), started from the generator's output rather than from the photo, gets
the rest in a few dozen evaluations: the look stays the one that was picked, only finished.

Three things differ from training's loss, because one picture can afford them or because optimising one picture's
pixels finds whatever the loss network answers to: the style layers reach on to relu5_1 (``POLISH_STYLE_LAYERS``;
faded out on grids too small for it, :func:`on_grid`), the style term weighs ``POLISH_STYLE_GAIN`` times as much,
and the loss network pads by reflection (PADDING).

Each evaluation is one forward and backward of the loss network over the picture; ``applying.stylise`` chooses the
grid it runs on (the output's own, or for large photos the look's working grid before the full-size composition),
so the cost is bounded whatever the photo's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from . import controls, losses
from .config import CONTENT_LAYER, MAX_POLISH_STEPS, POLISH_STEPS, POLISH_STYLE_GAIN, TrainSettings
from .device import Runtime
from .edges import Mirrored
from .errors import BadInput
from .vgg import FEATURE_NAMES

FIRST_STEP = 0.5  # the root mean square of the first step, in logits (a level of 8 bits is 0.016 at mid-grey)
HISTORY = 20       # L-BFGS's curvature pairs kept
EPSILON = 0.01  # the start is squeezed into [ε, 1 − ε]: its pure black and white stay off the sigmoid's flat tails
# relu5_1's weight fades in with the polished picture's short side, from nothing at 128 px (8 of its 16-px positions)
# to whole at 192 px (12). On fewer positions its Gram drew straight lines along its grid: a broad-stroke look's
# 160×107 working grid grew a line across the top and one down a cat's forehead; at 320×213, none.
DEEPEST, FADED_BELOW, WHOLE_FROM = "relu5_1", 128, 192
SMALLEST = 8  # px of a picture's short side: one position of the content layer, relu4_1

# How the loss network pads the pictures polish makes (``vgg.VGG19Features``): by reflection, so that beyond the
# 16-px mirror (``edges.framed``) relu5_1 reaches no zeros (against them, polish draws a faint line one relu5_1
# position inside the edges of a large photo's working grid).
PADDING = "reflect"

StepFn = Callable[[int, int], None]  # (step done, steps in all)


def check_steps(steps: int) -> int:
    """``steps`` if it is a usable number of polish steps, else BadInput."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_POLISH_STEPS:
        raise BadInput(f"polish steps must be a whole number from 1 to {MAX_POLISH_STEPS}, got {steps!r}",
                       "polish_steps")
    return steps


@dataclass(frozen=True)
class Objective:
    """The loss one look stands for: its target Grams (layer → (C, C)) and its weights from z."""

    grams: dict[str, torch.Tensor]
    layer_weights: torch.Tensor  # (L,) in ``grams`` order, mean 1
    style: float                 # λ_s · strength(z) · POLISH_STYLE_GAIN
    content: float               # λ_c
    colour: float                # λ_col · colour(z)
    tv: float                    # λ_tv


def objective(z: torch.Tensor, grams: dict[str, torch.Tensor], settings: TrainSettings, n_styles: int) -> Objective:
    """The objective of the look ``z`` (z_dim,), toward ``grams``: layer → (C, C), a target of its own (the personal
    target), or (K, C, C), the K paintings, blended by z as training blends them."""
    weights = controls.loss_weights(z.reshape(1, -1).float(), len(grams), n_styles, settings.colour_centre)
    targets = {}
    for name, gram in grams.items():
        gram = gram.float()
        targets[name] = torch.einsum("k,kij->ij", weights.blend[0], gram) if gram.ndim == 3 else gram
    return Objective(targets, weights.layers[0], POLISH_STYLE_GAIN * settings.style_weight * float(weights.strength[0]),
                     settings.content_weight, settings.colour_weight * float(weights.colour[0]), settings.tv_weight)


def on_grid(goal: Objective, height: int, width: int) -> torch.Tensor:
    """``goal``'s layer weights for a picture of ``height`` × ``width``: relu5_1's faded on small grids (DEEPEST)."""
    weights = goal.layer_weights.clone()
    if DEEPEST in goal.grams:
        fade = (min(height, width) - FADED_BELOW) / (WHOLE_FROM - FADED_BELOW)
        weights[list(goal.grams).index(DEEPEST)] *= min(max(fade, 0.0), 1.0)
    return weights


def loss(net: Mirrored, picture: torch.Tensor, photo: torch.Tensor, content_target: torch.Tensor,
         goal: Objective, runtime: Runtime) -> torch.Tensor:
    """The objective at ``picture`` (1, 3, h, w) in [0, 1], for ``photo`` whose content features (through ``net``)
    are ``content_target``: the training loss of :class:`styleprefs.training.Trainer` without its adversarial term.
    ``net`` sees the picture as polish does (``applying.polish_network``: inside its mirror, padded by reflection,
    PADDING), and stops at the deepest layer the goal keeps."""
    with runtime.autocast():
        features = net(picture, until=max((*goal.grams, CONTENT_LAYER), key=FEATURE_NAMES.index))
    grams = {name: target[None] for name, target in goal.grams.items()}
    total = (goal.content * losses.content_loss(features[CONTENT_LAYER], content_target)
             + goal.style * losses.style_loss(features, grams, goal.layer_weights[None])
             + goal.colour * losses.colour_loss(picture, photo) + goal.tv * losses.total_variation(picture))
    return total.sum()


def polish(net: Mirrored, runtime: Runtime, photo: torch.Tensor, start: torch.Tensor, goal: Objective,
           steps: int = POLISH_STEPS, on_step: StepFn | None = None) -> torch.Tensor:
    """``start`` (1, 3, h, w), a picture of ``photo`` (the same shape, in [0, 1]), after ``steps`` evaluations of the
    objective by L-BFGS (:func:`minimise`): the best picture evaluated, (1, 3, h, w) fp32 in [0, 1] on the CPU. Each
    evaluation is one forward and backward of the loss network over the picture, so the time is steps × that
    (``applying.stylise`` chooses a grid of bounded size, whatever the photo's).

    The pixels are optimised as logits, so every iterate is a picture without clamping (clamping between steps would
    corrupt L-BFGS's curvature pairs). A picture under SMALLEST px on its short side (a sheet's candidate of a very
    wide photo) has no position of the content layer, and is returned as it started, only squeezed into
    [EPSILON, 1 − EPSILON]."""
    check_steps(steps)
    start = start.float().clamp(EPSILON, 1 - EPSILON)
    if min(start.shape[-2:]) < SMALLEST:
        return start.cpu().contiguous()
    # Called from the inference-mode render: the optimisation needs autograd, and tensors of its own.
    with torch.inference_mode(False), torch.enable_grad():
        photo = runtime.images(photo.float().clone())
        with torch.no_grad(), runtime.autocast():
            content_target = net(photo, until=CONTENT_LAYER)[CONTENT_LAYER]
        goal = for_grid(goal, *start.shape[-2:], runtime.device)
        best = {"loss": float("inf"), "picture": start}  # the start, if no loss is finite
        done = 0

        def evaluate(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """The objective and its gradient at ``logits`` (1, h, w, 3): the pixels stored channels last, the layout
            the loss network is fastest in, seen as (1, 3, h, w) without a copy."""
            nonlocal done
            if done == steps:  # L-BFGS's line search may ask for more: the budget is kept exactly
                raise _Spent
            logits = logits.detach().requires_grad_()
            picture = torch.sigmoid(logits).permute(0, 3, 1, 2)
            value = loss(net, picture, photo, content_target, goal, runtime)
            value.backward()
            done += 1
            if (now := float(value.detach())) < best["loss"]:
                best.update(loss=now, picture=picture.detach().clone())
            if on_step:
                on_step(done, steps)
            return value.detach(), logits.grad

        pixels = torch.logit(start.to(runtime.device))
        minimise(evaluate, pixels.permute(0, 2, 3, 1).contiguous(), steps)  # contiguous, as L-BFGS needs
        return best["picture"].float().cpu().contiguous()


def for_grid(goal: Objective, height: int, width: int, device: torch.device) -> Objective:
    """``goal`` for a picture of ``height`` × ``width`` (:func:`on_grid`), on ``device``: a layer faded out is left
    out whole (on too small a grid relu5_1 has no position, and its Gram would be 0/0)."""
    weights = on_grid(goal, height, width)
    kept = [i for i, weight in enumerate(weights.tolist()) if weight > 0]
    return replace(goal, grams={name: gram.to(device).clone()
                                for i, (name, gram) in enumerate(goal.grams.items()) if i in kept},
                   layer_weights=weights[kept].to(device))


def minimise(evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], pixels: torch.Tensor,
             steps: int) -> None:
    """L-BFGS with a strong-Wolfe line search over ``pixels``, from them, until ``evaluate`` (the objective and its
    gradient at a point) raises _Spent or L-BFGS has taken ``steps`` iterations; ``evaluate`` keeps what it needs.

    The pixels are scaled so that the first step moves them by FIRST_STEP: L-BFGS's first step is the gradient over
    its L1 norm, a few millionths of a logit on a 320-px grid, which its line search then spent most of a small budget
    growing."""
    try:
        first, gradient = evaluate(pixels)
        # L-BFGS's first step is -gradient / ‖gradient‖₁ in the scaled pixels, scale × that in logits: its root mean
        # square is FIRST_STEP when scale = FIRST_STEP · ‖gradient‖₁ / rms(gradient).
        rms = max(float(gradient.norm()), 1e-30) / gradient.numel() ** 0.5
        scale = max(FIRST_STEP * float(gradient.abs().sum()) / rms, 1e-6)
        scaled = (pixels / scale).requires_grad_()
        optimiser = torch.optim.LBFGS([scaled], max_iter=steps, max_eval=2 * steps, tolerance_grad=0.0,
                                      tolerance_change=0.0, history_size=HISTORY, line_search_fn="strong_wolfe")
        known = [(first, gradient)]  # the start, evaluated already: L-BFGS's own first call need not repeat it

        def closure() -> torch.Tensor:
            value, grad = known.pop() if known else evaluate(scaled * scale)
            scaled.grad = grad * scale
            return value

        optimiser.step(closure)  # one step() of many iterations: a step() per iteration would evaluate again
    except _Spent:               # the point its line search has just left
        pass


class _Spent(Exception):
    """The budget of evaluations is used up."""
