"""Full-size rendering: a photo of any size becomes the candidate that was picked, seen at full size.

The generator's strokes are a fixed number of pixels, so run on the photo's own grid the same z gives a
different picture at every size (at 2000 px, a tinted photo with pixel-sized grain). Here the generator
runs at a *working resolution* instead: the photo scaled so its long side is the session's working side
(``side``), as the candidates on the contact sheet were rendered before being shrunk to the sheet. Strokes,
palette and strength are then fixed relative to the image, and ``stroke_scale`` F makes the strokes F× larger
(working side ÷ F) or smaller.

The working-resolution result is brought to full size with the full-resolution photo as the guide (He et
al.'s guided filter used for upsampling, as in the fast and deep guided filters): in every small window of
the working grid the output is fitted as a·L + b of the photo's luminance L; a and b are interpolated to full
size and applied to the full-resolution L, so the photo's edges, hair and text come through sharp, shaded
as the painting shades them. What the fit misses (brush texture that does not follow L) is interpolated and
added back, so shrunk to the sheet's size the output is what the sheet showed.

Memory stays bounded by the full-size output itself: the full-size composition runs in bands of rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .config import MIN_WORKING_SIDE  # also the generator's smallest input side worth running

MAX_ENLARGEMENT = 2.3   # a working side over the session's by at most this (the smallest strokes a look has)
RADIUS = 1              # guided filter window radius, in working-resolution px
EPS = 1e-3              # guided filter regulariser (variance units of L in [0, 1]): flat areas keep the painting's
                        # texture instead of amplifying the photo's noise
DETAIL = 1.0            # the photo's detail finer than the working grid keeps at least its own contrast
BAND = 256              # full-resolution rows composed at a time
ROWS_AT_ONCE = 16       # ... interpolated from the working grid in one matrix product (fewer source rows each)
LUMA = (0.299, 0.587, 0.114)

Stylise = Callable[[torch.Tensor], torch.Tensor]


def working_size(height: int, width: int, side: int, stroke_scale: float = 1.0) -> tuple[int, int]:
    """The grid the generator runs on for an image of ``height``×``width``: long side ``side / stroke_scale``,
    same aspect; the short side at least MIN_WORKING_SIDE. Strokes finer than the image's own pixels are not
    drawn: the long side is at most the image's, or MAX_ENLARGEMENT × ``side`` for images smaller than that
    (without the cap, ``--stroke-scale 0.015`` on a 500-px photo asked for a 21000-px grid)."""
    if stroke_scale <= 0:
        raise ValueError(f"stroke scale must be positive, got {stroke_scale}")
    long_side = min(side / stroke_scale, max(height, width, MAX_ENLARGEMENT * side))
    scale = long_side / max(height, width)
    return max(MIN_WORKING_SIDE, round(height * scale)), max(MIN_WORKING_SIDE, round(width * scale))


def resample(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] (or uint8, 0…255) to ``size``, bicubic (antialiased when shrinking, as Pillow's resize):
    close to the Lanczos resize that made the preview photo. Bytes come back as floats in [0, 1]; shrunk as bytes,
    channels last, which is 15× faster on a CPU than converting a 12-megapixel photo to floats first, and what
    the preview's own 8-bit resize gives."""
    if batch.dtype == torch.uint8:
        shrink = size[0] <= batch.shape[-2] and size[1] <= batch.shape[-1]
        if shrink and batch.device.type == "cpu" and tuple(batch.shape[-2:]) != tuple(size):
            batch = F.interpolate(batch.contiguous(memory_format=torch.channels_last), size=size, mode="bicubic",
                                  antialias=True, align_corners=False)
        return resample(batch.float().div_(255), size)
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    shrink = size[0] < batch.shape[-2] or size[1] < batch.shape[-1]
    if not shrink:  # enlarged one channel at a time: 1.7× faster than channels last (a decoded photo's), the same values
        batch = batch.contiguous()
    return F.interpolate(batch, size=size, mode="bicubic", antialias=shrink, align_corners=False).clamp_(0, 1)


def _byte_images(batch: int, height: int, width: int) -> torch.Tensor:
    """An empty (B, 3, H, W) uint8 batch stored channels last: each image an H×W×3 array as Pillow takes it."""
    return torch.empty(batch, height, width, 3, dtype=torch.uint8).permute(0, 3, 1, 2)


def to_bytes(batch: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → uint8, rounded, stored channels last (:func:`_byte_images`)."""
    return _byte_images(batch.shape[0], *batch.shape[2:]).copy_(batch.float().clamp(0, 1).mul_(255).round_())


def render(stylise: Stylise, batch: torch.Tensor, side: int, stroke_scale: float = 1.0,
           as_bytes: bool = False) -> torch.Tensor:
    """Stylise (B, 3, H, W) images in [0, 1] (or uint8, as decoded) of one size at the working resolution and bring
    the result to (B, 3, H, W), fp32 in [0, 1] on the CPU, or with ``as_bytes`` uint8 (:func:`to_bytes`: the
    full-size composition writes its bytes directly, with no full-size float image). ``stylise`` runs the generator
    on a (B, 3, h, w) batch at one z."""
    height, width = batch.shape[-2:]
    size = working_size(height, width, side, stroke_scale)
    small = resample(batch, size)
    styled = stylise(small).float()
    if size[0] * size[1] < height * width:
        out = _byte_images(len(batch), height, width) if as_bytes else torch.empty(len(batch), 3, height, width)
        for photo, low, high, image in zip(batch, small, styled, out, strict=True):
            guided_upsample(photo, low, high, out=image)
        return out
    if size != (height, width):  # a small photo: rendered larger, then scaled down
        styled = resample(styled, (height, width))
    return to_bytes(styled) if as_bytes else styled


def adjusted(styled: torch.Tensor, photo: torch.Tensor, strength: float = 1.0,
             keep_colours: bool = False) -> torch.Tensor:
    """The two dials every style-transfer tool has, exact on the full-size (…, 3, H, W) output in [0, 1]:
    ``keep_colours`` gives the picture the photo's own colours under the look's light and strokes (the photo plus the
    change in luminance, which leaves its chroma, B − Y and R − Y, as they were); ``strength`` F in [0, 1] lays the
    look over the photo at that opacity, F·styled + (1 − F)·photo."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    out = styled
    if keep_colours:
        out = photo + (luminance(styled) - luminance(photo))
    if strength < 1.0:
        out = torch.lerp(photo, out, strength)
    return out.clamp(0, 1)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) → (…, 1, H, W)."""
    weights = torch.tensor(LUMA, dtype=image.dtype, device=image.device)
    return torch.einsum("...chw,c->...hw", image, weights).unsqueeze(-3)


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)² window of (C, h, w) or (B, C, h, w), the window cut at the border."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_coefficients(guide: torch.Tensor, styled: torch.Tensor, radius: int = RADIUS,
                        eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel of the working grid, a and b (each (3, h, w), or (B, 3, h, w) for a batch) with styled ≈ a·guide + b in every window around
    it, averaged over the windows that cover the pixel (He et al., guided filter)."""
    mean_i, mean_p = _box(guide, radius), _box(styled, radius)
    cov = _box(guide * styled, radius) - mean_i * mean_p
    var = _box(guide * guide, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return _box(a, radius), _box(b, radius)


def _cubic(t: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """Keys' cubic convolution kernel; a = −0.75 as ``F.interpolate(mode="bicubic")`` uses (−0.5 with antialias)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def bicubic_taps(source: int | torch.Tensor, length: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.interpolate(mode="bicubic", align_corners=False)`` from ``source`` to ``length`` samples: for each output
    sample its four source samples (edge samples repeated), (length, 4), and their weights, (length, 4). Sizes may be
    a trace's tensors (:mod:`styleprefs.export`)."""
    source, length = torch.as_tensor(source), torch.as_tensor(length)
    position = (torch.arange(length, dtype=torch.float64) + 0.5) * (source.double() / length.double()) - 0.5
    first = position.floor()
    offsets = torch.arange(-1, 3, dtype=torch.float64)
    weights = _cubic(position[:, None] - (first[:, None] + offsets)).float()
    return torch.clamp(first[:, None].long() + offsets.long(), min=0, max=source - 1), weights


def _interpolated_rows(coefficients: torch.Tensor, taps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The rows of ``coefficients`` (h, …) whose source rows and weights (n, 4) are ``taps`` and ``weights``
    (:func:`bicubic_taps`), as (n, …): every ROWS_AT_ONCE of them one matrix product of their weights with the few
    source rows they read. At 12 megapixels 0.55× the time of gathering the four taps' rows as shifted copies; rows at
    the edge, whose taps repeat one source row, get the repeated weights' sum."""
    flat = coefficients.view(coefficients.shape[0], -1)
    rows = torch.empty(len(taps), flat.shape[1])
    for k in range(0, len(taps), ROWS_AT_ONCE):
        near, share = taps[k:k + ROWS_AT_ONCE], weights[k:k + ROWS_AT_ONCE]
        first, last = int(near.min()), int(near.max()) + 1
        mix = torch.zeros(len(near), last - first).scatter_add_(1, near - first, share)
        torch.mm(mix, flat[first:last], out=rows[k:k + len(near)])
    return rows.view(len(taps), *coefficients.shape[1:])


@torch.inference_mode()
def guided_upsample(photo: torch.Tensor, small: torch.Tensor, styled: torch.Tensor,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """The full-size (3, H, W) output for ``photo`` (3, H, W, uint8 or [0, 1]) from ``styled``, the generator's
    output for ``small`` (the photo at the working resolution), written into ``out`` if given (fp32 in [0, 1], or
    uint8, rounded). Composed in bands of BAND rows."""
    height, width = photo.shape[-2:]
    guide_small = luminance(small)
    a, _ = guided_coefficients(guide_small, styled)
    # styled = a·L + offset exactly on the working grid: offset is the fit's b plus what the fit misses (brush texture
    # that does not follow L), both brought up at their own scale.
    offset = styled - a * guide_small
    # Interpolate along the width once (h × W is small), then each band along the height. Stored (h, 7, W): each
    # source row's seven planes, which a band's rows take in matrix products (_interpolated_rows).
    coefficients = F.interpolate(torch.cat([a, offset, guide_small])[None], size=(a.shape[-2], width),
                                 mode="bicubic", align_corners=False)[0].transpose(0, 1).contiguous()
    luma = torch.tensor(LUMA)
    out = torch.empty(3, height, width) if out is None else out
    scale = 1 / 255 if photo.dtype == torch.uint8 else 1.0
    taps, weights = bicubic_taps(a.shape[-2], height)
    for start in range(0, height, BAND):
        end = min(start + BAND, height)
        rows = _interpolated_rows(coefficients, taps[start:end], weights[start:end]).transpose(0, 1)  # (7, n, W)
        guide = luminance(photo[:, start:end].float().mul_(scale))
        slope = rows[0:3]
        # The photo's luminance finer than the working grid, kept at least at its own contrast where the painting's
        # slope is lower.
        boost = (DETAIL - torch.einsum("c,cnw->nw", luma, slope)[None]).clamp_(min=0)
        band = torch.addcmul(rows[3:6], slope, guide).addcmul_(boost, guide - rows[6:7])
        band.clamp_(0, 1)
        out[:, start:end] = band.mul_(255).round_() if out.dtype == torch.uint8 else band
    return out
