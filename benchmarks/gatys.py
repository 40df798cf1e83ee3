"""The Gatys et al. (2016) baseline: optimise the pixels of one image with L-BFGS.

The benchmarks' yardstick for quality and speed: how far, and how fast, plain optimisation takes a
photo towards a painting's Gram statistics with the same loss network and losses as the package.

    python benchmarks/gatys.py --style vangogh_starry_night --content gc_monument_eiffelTower
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from styleprefs import edges
from styleprefs.config import CONTENT_LAYER, METRIC_STYLE_LAYERS, TrainSettings
from styleprefs.images import load_image, save_image
from styleprefs.losses import content_distance, content_loss, gram, style_distance, style_loss
from styleprefs.vgg import VGG19Features

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"

STYLE_WEIGHT = 10.0   # λ_s on the mean relative Gram error over relu1_1…relu5_1
CONTENT_WEIGHT = 1.0  # λ_c on the relative feature error at CONTENT_LAYER
# Pixels are optimised as logits, so every iterate is a valid image without clamping (clamping
# between L-BFGS steps would corrupt its curvature pairs). Squeezing the photo into [ε, 1 − ε]
# first keeps pure black and white pixels off the flat tails of the sigmoid.
EPSILON = 0.02
# The margin of the measure that leaves the edges out (``interior``): edges.MARGIN's default, fixed here so that the
# measure stays the same whatever a probe sets edges.MARGIN to.
EDGE = 16

Record = tuple[int, float, float]  # (evaluation, seconds since start, style distance)


def loss_network() -> VGG19Features:
    """VGG19 up to relu5_1, giving the metric's style layers and the content layer."""
    net = VGG19Features(tuple(dict.fromkeys(METRIC_STYLE_LAYERS + (CONTENT_LAYER,))))
    return net.to(memory_format=torch.channels_last)  # faster convolutions on CPU, as in the package


def features(net: VGG19Features, image: torch.Tensor, interior: bool = False) -> dict[str, torch.Tensor]:
    """Activations of one (3, H, W) image, batch dimension kept. ``interior``: of the picture seen inside a mirror of
    itself, at its own positions (``edges.framed``, ``edges.inside``), so that no position lies beside VGG19's zero
    padding."""
    x = edges.framed(image[None], EDGE) if interior else image[None]
    activations = net(x.contiguous(memory_format=torch.channels_last))
    return edges.inside(activations, EDGE) if interior else activations


@torch.no_grad()
def targets(net: VGG19Features, content: torch.Tensor, style: torch.Tensor,
            interior: bool = False) -> tuple[dict, torch.Tensor]:
    """The painting's Grams at the metric's style layers and the photo's features at the content layer.
    ``interior``: the painting's Grams over its interior (``edges.Interior``), the photo's features inside a
    mirror of itself (:func:`features`)."""
    activations = features(net, style)
    if interior and min(style.shape[-2:]) >= 4 * EDGE:
        activations = edges.inside(activations, EDGE)
    style_grams = {name: gram(f) for name, f in activations.items() if name in METRIC_STYLE_LAYERS}
    return style_grams, features(net, content, interior)[CONTENT_LAYER]


def gatys(
    content: torch.Tensor,
    style: torch.Tensor,
    steps: int = 80,
    style_weight: float = STYLE_WEIGHT,
    content_weight: float = CONTENT_WEIGHT,
    net: VGG19Features | None = None,
    interior: bool = False,
) -> tuple[torch.Tensor, list[Record]]:
    """Minimise λ_c·content + λ_s·style over the image, from the photo, in ``steps`` loss evaluations
    (the last line search may overrun the budget by a few); ``interior``: with the losses over the pictures'
    interiors, as polish has them (:func:`targets`, :func:`features`).

    Returns the image and one record per evaluation, the first being the photo itself; the clock
    starts before the targets are computed, so it counts everything this image costs.
    """
    net = net or loss_network()
    start = time.perf_counter()
    style_grams, content_target = targets(net, content, style, interior)
    layer_weights = torch.full((1, len(style_grams)), 1.0 / len(style_grams), device=content.device)

    # contiguous: L-BFGS flattens the gradient with view(), and decoded images may be permuted views.
    logits = torch.logit(content.clamp(EPSILON, 1 - EPSILON))[None].contiguous().requires_grad_()
    # One step() call with a budget of evaluations: calling step() once per iteration would
    # re-evaluate the point the line search just left, doubling the cost.
    optimiser = torch.optim.LBFGS(
        [logits], max_iter=steps, max_eval=steps, tolerance_grad=0.0, tolerance_change=0.0,
        line_search_fn="strong_wolfe",  # without it L-BFGS can overshoot to a black image
    )
    history: list[Record] = []

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        activations = features(net, torch.sigmoid(logits)[0], interior)
        loss = (content_weight * content_loss(activations[CONTENT_LAYER], content_target)
                + style_weight * style_loss(activations, style_grams, layer_weights)).sum()
        loss.backward()
        with torch.no_grad():
            distance = style_distance(activations, style_grams).item()
        history.append((len(history), time.perf_counter() - start, distance))
        return loss

    optimiser.step(closure)
    return torch.sigmoid(logits).detach()[0], history


def time_to_reach(history: list[Record], target: float) -> float | None:
    """Seconds until an evaluated image first had a style distance ≤ ``target``; None if none did."""
    return next((seconds for _, seconds, distance in history if distance <= target), None)


def find_image(folder: Path, name: str) -> Path:
    """A file of ``folder`` by stem (``vangogh_starry_night``) or file name; a path is taken as is."""
    if Path(name).is_file():
        return Path(name)
    matches = sorted(p for p in folder.iterdir() if name in (p.stem, p.name))
    if not matches:
        raise SystemExit(f"no image named {name!r} in {folder}")
    return matches[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with style/ and content/")
    parser.add_argument("--style", default="vangogh_starry_night")
    parser.add_argument("--content", default="gc_monument_eiffelTower")
    parser.add_argument("--size", type=int, default=256, help="short side of the photo, px")
    parser.add_argument("--style-size", type=int, default=TrainSettings().style_size,
                        help="long side of the painting, px (default: as training sees it)")
    parser.add_argument("--steps", type=int, default=80, help="loss evaluations of L-BFGS")
    parser.add_argument("--style-weight", type=float, default=STYLE_WEIGHT)
    parser.add_argument("--content-weight", type=float, default=CONTENT_WEIGHT)
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "gatys", help="folder for the PNG")
    args = parser.parse_args(argv)

    if not (args.data / "style").is_dir() or not (args.data / "content").is_dir():
        print(f"skipped: no benchmark images at {args.data.resolve()} (use --data)")
        return 0
    style_path = find_image(args.data / "style", args.style)
    content_path = find_image(args.data / "content", args.content)
    content = load_image(content_path, short_side=args.size)
    style = load_image(style_path, max_side=args.style_size)

    net = loss_network()
    result, history = gatys(content, style, args.steps, args.style_weight, args.content_weight, net)
    _, content_target = targets(net, content, style)
    with torch.no_grad():
        distance = content_distance(features(net, result)[CONTENT_LAYER], content_target).item()
    first, last = history[0], history[-1]
    print(f"{style_path.stem} × {content_path.stem}, {content.shape[2]}×{content.shape[1]} px, "
          f"{len(history)} evaluations in {last[1]:.1f} s")
    print(f"style distance {first[2]:.3f} → {last[2]:.3f}, content distance {distance:.3f}")
    for level in (0.6, 0.5, 0.4, 0.3):
        reached = time_to_reach(history, level)
        print(f"  style distance ≤ {level}: " + (f"{reached:.1f} s" if reached is not None else "not reached"))

    path = args.out / f"{style_path.stem}__{content_path.stem}.png"
    save_image(torch.cat([content, result], dim=2), path)
    print(f"photo | result written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
