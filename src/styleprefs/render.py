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

:mod:`styleprefs.export` traces this path into a model file, in one piece rather than in bands, with the functions
here: :func:`working_size` and :func:`resample_exportable` on the sizes a trace keeps (:data:`Size`), and the
composition the bands run, :func:`guided_planes` and :func:`compose`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .config import MIN_WORKING_SIDE  # also the generator's smallest input side worth running
from .controls import SMALLEST_STROKES

MAX_ENLARGEMENT = 1 / SMALLEST_STROKES  # a working side over the session's by at most this: the smallest strokes
RADIUS = 1              # guided filter window radius, in working-resolution px
EPS = 1e-3              # guided filter regulariser (variance units of L in [0, 1]): flat areas keep the painting's
                        # texture instead of amplifying the photo's noise
DETAIL = 1.0            # the photo's detail finer than the working grid keeps at least its own contrast
BAND = 256              # full-resolution rows composed at a time
ROWS_AT_ONCE = 16       # ... interpolated from the working grid in one matrix product (fewer source rows each)
LUMA = (0.299, 0.587, 0.114)

Stylise = Callable[[torch.Tensor], torch.Tensor]
# A size: an int, or a trace's, which Python's own max, min and round would fix as a constant: an int64 scalar tensor
# (torch.jit.trace, and so ONNX) or a symbolic int (torch.export).
Size = int | torch.Tensor | torch.SymInt


def working_size(height: int | torch.Tensor, width: int | torch.Tensor, side: int,
                 stroke_scale: float = 1.0) -> tuple[int, int] | tuple[torch.Tensor, torch.Tensor]:
    """The grid the generator runs on for an image of ``height``×``width``: long side ``side / stroke_scale``,
    same aspect; the short side at least MIN_WORKING_SIDE. Strokes finer than the image's own pixels are not
    drawn: the long side is at most the image's, or MAX_ENLARGEMENT × ``side`` for images smaller than that
    (without the cap, ``--stroke-scale 0.015`` on a 500-px photo asked for a 21000-px grid). The sizes may be int64
    scalar tensors, as a trace keeps them: the same float64 arithmetic, rounding half to even."""
    if stroke_scale <= 0:
        raise ValueError(f"stroke scale must be positive, got {stroke_scale}")
    longest = _max(height, width)
    long_side = _min(side / stroke_scale, _max(longest, MAX_ENLARGEMENT * side))
    scale = long_side / longest
    # Rounded last (the same as max(MIN_WORKING_SIDE, round(·))), so that a trace's sizes come back as integers too.
    return _round(_max(MIN_WORKING_SIDE, height * scale)), _round(_max(MIN_WORKING_SIDE, width * scale))


def _max(a: int | float | torch.Tensor, b: int | float | torch.Tensor) -> int | float | torch.Tensor:
    """max(a, b) of numbers, or of a trace's int64 scalar tensors, compared in float64 (as Python compares an int
    with a float)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.maximum(_float64(a), _float64(b))
    return max(a, b)


def _min(a: int | float | torch.Tensor, b: int | float | torch.Tensor) -> int | float | torch.Tensor:
    """min(a, b), as :func:`_max`."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.minimum(_float64(a), _float64(b))
    return min(a, b)


def _round(x: float | torch.Tensor) -> int | torch.Tensor:
    """round(x), half to even: a float64 scalar tensor to an int64 one."""
    return torch.round(x).long() if isinstance(x, torch.Tensor) else round(x)


def _float64(size: Size | float) -> torch.Tensor:
    """A size as a float64 scalar tensor that stays a trace's (``torch.tensor`` would make it a constant)."""
    return torch.full((), size, dtype=torch.float64)


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
    if not shrink:  # enlarged one channel at a time: 1.7× faster than channels last (a decoded photo's), same values
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
    """Per pixel of the working grid, a and b (each (3, h, w), or (B, 3, h, w) for a batch) with styled ≈ a·guide + b
    in every window around it, averaged over the windows that cover the pixel (He et al., guided filter)."""
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


def bicubic_taps(source: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.interpolate(mode="bicubic", align_corners=False)`` from ``source`` to ``length`` samples: for each output
    sample its four source samples (edge samples repeated), (length, 4), and their weights, (length, 4)."""
    position = (torch.arange(length, dtype=torch.float64) + 0.5) * (source / length) - 0.5
    first = position.floor()
    offsets = torch.arange(-1, 3, dtype=torch.float64)
    weights = _cubic(position[:, None] - (first[:, None] + offsets)).float()
    return torch.clamp(first[:, None].long() + offsets.long(), min=0, max=source - 1), weights


def antialiased_matrix(source: Size, length: Size) -> torch.Tensor:
    """The (length, source) matrix of ``F.interpolate(mode="bicubic", antialias=True)`` along one axis: Keys' kernel
    with a = −0.5 (as Pillow), stretched by the shrink factor when shrinking, each row normalised to sum to 1."""
    scale = _float64(source) / length
    stretch = torch.clamp(scale, min=1.0)
    center = (torch.arange(length, dtype=torch.float64) + 0.5) * scale
    x = (torch.arange(source, dtype=torch.float64)[None, :] - center[:, None] + 0.5) / stretch
    weights = _cubic(x, a=-0.5)
    return (weights / weights.sum(1, keepdim=True)).float()


def resample_exportable(batch: torch.Tensor, height: Size, width: Size) -> torch.Tensor:
    """:func:`resample` for (B, C, H, W) floats in operations every exporter keeps, to sizes that may be a trace's:
    antialiased on both axes when either shrinks, by matrix products (ONNX's Resize has no antialiasing); both
    results are made (the plain one is as small as the working grid) and the trace picks one."""
    source_h, source_w = batch.shape[-2:]
    plain = F.interpolate(batch, size=(height, width), mode="bicubic", align_corners=False)
    smooth = antialiased_matrix(source_h, height) @ batch @ antialiased_matrix(source_w, width).t()
    shrink = (_float64(height) < source_h) | (_float64(width) < source_w)
    return torch.where(shrink, smooth, plain).clamp(0, 1)


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


def guided_planes(small: torch.Tensor, styled: torch.Tensor) -> torch.Tensor:
    """The seven planes, (…, 7, h, w), that bring ``styled``, the generator's output for ``small`` (…, 3, h, w), to
    full size: the guided filter's slope a (3), the offset (3) with styled = a·L + offset exactly on the working grid,
    and the working grid's luminance L (1). The offset is the fit's b plus what the fit misses (brush texture that
    does not follow L), both brought up at their own scale."""
    guide_small = luminance(small)
    a, _ = guided_coefficients(guide_small, styled)
    return torch.cat([a, styled - a * guide_small, guide_small], dim=-3)


def compose(planes: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """The full-size picture, (…, 3, n, W) in [0, 1], from :func:`guided_planes` interpolated to the photo's size
    (…, 7, n, W) and the photo (…, 3, n, W) in [0, 1]: a·L + offset with the photo's own luminance L, plus L finer than
    the working grid, kept at least at its own contrast where the painting's slope is lower."""
    guide = luminance(photo)
    slope = planes[..., 0:3, :, :]
    boost = (DETAIL - torch.einsum("c,...cnw->...nw", torch.tensor(LUMA), slope).unsqueeze(-3)).clamp_(min=0)
    band = torch.addcmul(planes[..., 3:6, :, :], slope, guide).addcmul_(boost, guide - planes[..., 6:7, :, :])
    return band.clamp_(0, 1)


@torch.inference_mode()
def guided_upsample(photo: torch.Tensor, small: torch.Tensor, styled: torch.Tensor,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """The full-size (3, H, W) output for ``photo`` (3, H, W, uint8 or [0, 1]) from ``styled``, the generator's
    output for ``small`` (the photo at the working resolution), written into ``out`` if given (fp32 in [0, 1], or
    uint8, rounded). Composed in bands of BAND rows."""
    height, width = photo.shape[-2:]
    planes = guided_planes(small, styled)
    # Interpolate along the width once (h × W is small), then each band along the height. Stored (h, 7, W): each
    # source row's seven planes, which a band's rows take in matrix products (_interpolated_rows).
    coefficients = F.interpolate(planes[None], size=(planes.shape[-2], width), mode="bicubic",
                                 align_corners=False)[0].transpose(0, 1).contiguous()
    out = torch.empty(3, height, width) if out is None else out
    scale = 1 / 255 if photo.dtype == torch.uint8 else 1.0
    taps, weights = bicubic_taps(planes.shape[-2], height)
    for start in range(0, height, BAND):
        end = min(start + BAND, height)
        rows = _interpolated_rows(coefficients, taps[start:end], weights[start:end]).transpose(0, 1)  # (7, n, W)
        band = compose(rows, photo[:, start:end].float().mul_(scale))
        out[:, start:end] = band.mul_(255).round_() if out.dtype == torch.uint8 else band
    return out
