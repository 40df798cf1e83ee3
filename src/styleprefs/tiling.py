"""Large images in bounded memory: overlapping tiles normalised with one set of statistics.

Instance norm makes every output pixel depend on the whole image's per-channel mean and variance, so
tiles normalised on their own come out in different tones and the seams show. Here G first runs once
on a downscaled copy of the whole image, recording every FiLMNorm's statistics (``shared_norm_stats``);
the tiles then run with those statistics, so a tile's pixels are the whole image's, except within the
generator's receptive field of the tile's edge. Tiles overlap by more than that margin on each side,
the margin is dropped, and a linear feather across the rest of the overlap blends neighbours.

Tiles start at multiples of 4 (the generator's two stride-2 convolutions) and are given their crop of
the whole image's noise map, so where the statistics are the whole image's the result equals one pass.
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F

from .device import Runtime
from .networks import Generator, shared_norm_stats, z_noise

TILE_ABOVE = 2048 * 2048     # images with more pixels are stylised in tiles
TILE = 1024                  # tile side, px, margins included
FEATHER = 32                 # px over which neighbouring tiles are cross-faded
STATS_PIXELS = 1024 * 1024   # the statistics pass sees a copy of the image scaled to at most this many pixels
ALIGN = 4                    # the generator's total stride

_radius: weakref.WeakKeyDictionary[Generator, int] = weakref.WeakKeyDictionary()


def needs_tiles(height: int, width: int) -> bool:
    return height * width > TILE_ABOVE


def generate(generator: Generator, batch: torch.Tensor, z: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """``generator`` with one ``z`` on (B, 3, H, W) at its own grid, fp32 on the CPU; over ``TILE_ABOVE`` pixels in
    tiles, in bounded memory."""
    if needs_tiles(*batch.shape[-2:]):
        return torch.stack([stylise_tiled(generator, image, z, runtime) for image in batch])
    with runtime.autocast():
        z = z.reshape(1, -1).expand(len(batch), -1).to(runtime.device)
        return generator(runtime.images(batch), z).float().cpu()


@torch.inference_mode()
def receptive_radius(generator: Generator, runtime: Runtime, probe: int = 320) -> int:
    """How far (px) a change in the input reaches in the output, with the norm statistics fixed; measured
    once per generator by changing one pixel, so it follows the layer layout."""
    if generator not in _radius:
        z = torch.zeros(1, generator.z_dim, device=runtime.device)
        image = torch.rand(1, 3, probe, probe, generator=torch.Generator().manual_seed(0))
        poked = image.clone()
        poked[..., probe // 2, probe // 2] = 1 - poked[..., probe // 2, probe // 2]
        with shared_norm_stats(generator), runtime.autocast():
            changed = (generator(runtime.images(image), z) - generator(runtime.images(poked), z)).abs().amax(1)[0]
        rows, cols = torch.nonzero(changed > 0, as_tuple=True)
        offsets = torch.cat([rows - probe // 2, cols - probe // 2]).abs()
        _radius[generator] = int(offsets.max()) if len(offsets) else 0
    return _radius[generator]


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of tiles covering ``range(length)``: starts at multiples of ALIGN, neighbours overlapping
    by at least ``overlap`` px."""
    if length <= tile:
        return [(0, length)]
    step = (tile - overlap) // ALIGN * ALIGN
    if step <= 0:
        raise ValueError(f"tile {tile} px is too small for an overlap of {overlap} px")
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + step)
    return [(s, min(s + tile, length)) for s in starts]


def feather_weights(span: tuple[int, int], length: int, margin: int, feather: int) -> torch.Tensor:
    """A tile's blend weight along one axis: 0 within ``margin`` of an edge inside the image, then a linear
    ramp over ``feather`` px to 1; edges on the image's border are trusted as they are."""
    start, end = span
    pos = torch.arange(start, end, dtype=torch.float32) + 0.5
    rise = ((pos - start - margin) / feather).clamp(0, 1) if start > 0 else torch.ones_like(pos)
    fall = ((end - margin - pos) / feather).clamp(0, 1) if end < length else torch.ones_like(pos)
    return rise * fall


@torch.inference_mode()
def stylise_tiled(generator: Generator, image: torch.Tensor, z: torch.Tensor, runtime: Runtime,
                  tile: int | None = None, stats_image: torch.Tensor | None = None) -> torch.Tensor:
    """Stylise one (3, H, W) image in [0, 1] in tiles of ``tile`` px (default ``TILE``); ``stats_image`` is what
    the norm statistics are taken from (default: the image scaled to ``STATS_PIXELS``). Returns (3, H, W), fp32,
    on the CPU."""
    height, width = image.shape[-2:]
    tile, feather = tile or TILE, FEATHER
    if stats_image is None:
        scale = min(1.0, math.sqrt(STATS_PIXELS / (height * width)))
        size = (max(16, round(height * scale)), max(16, round(width * scale)))
        stats_image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    z = z.reshape(1, -1).to(runtime.device)
    margin = -(-receptive_radius(generator, runtime) // ALIGN) * ALIGN + ALIGN
    noise = z_noise(z, -(-height // ALIGN), -(-width // ALIGN))
    rows = tile_spans(height, tile, 2 * margin + feather)
    cols = tile_spans(width, tile, 2 * margin + feather)
    row_weights = [feather_weights(s, height, margin, feather) for s in rows]
    col_weights = [feather_weights(s, width, margin, feather) for s in cols]
    out = torch.zeros(3, height, width)
    with shared_norm_stats(generator), runtime.autocast():
        generator(runtime.images(stats_image[None]), z)  # records the statistics every tile then uses
        for (y0, y1), wy in zip(rows, row_weights):
            for (x0, x1), wx in zip(cols, col_weights):
                crop_noise = noise[..., y0 // ALIGN:-(-y1 // ALIGN), x0 // ALIGN:-(-x1 // ALIGN)]
                styled = generator(runtime.images(image[None, :, y0:y1, x0:x1]), z, noise=crop_noise)
                out[:, y0:y1, x0:x1] += styled[0].float().cpu() * (wy[:, None] * wx[None, :])
    # The 2-D weights are outer products on a grid of tiles, so their sum is the outer product of the sums.
    total_y, total_x = torch.zeros(height), torch.zeros(width)
    for (y0, y1), wy in zip(rows, row_weights):
        total_y[y0:y1] += wy
    for (x0, x1), wx in zip(cols, col_weights):
        total_x[x0:x1] += wx
    return out.div_(total_y[:, None] * total_x[None, :])
