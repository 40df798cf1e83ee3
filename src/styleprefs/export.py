"""Export: one look as a file that runs without styleprefs (ONNX for onnxruntime, TorchScript for PyTorch).

The file holds the whole full-size path of :mod:`styleprefs.render` for one fixed look (z and stroke scale): the
photo resized to the working grid, G at that z, and the guided upsampling back to the photo's size (or, for a photo
smaller than the working grid, the plain shrink). In and out: float32 RGB, NCHW, values in [0, 1]; any height,
width and batch size (one size per batch, as ``apply`` batches).

Every step is written here in tensor operations whose sizes come from the input's shape, so one trace serves
every size: the working size is computed as :func:`render.working_size` does (in float64, rounding half to even
as Python's ``round``); the resizes are matrices built from the sizes (the bicubic and antialiased-bicubic weights
``F.interpolate`` uses; ONNX's Resize has neither the antialiased kernel nor its normalisation); the branch for
small photos runs on the part of the batch that takes it (all or none), so no branch is traced into a constant.

G's noise map is z's: :func:`networks.z_noise` draws it with PyTorch's CPU generator seeded by z's bytes, and
``torch.randn`` of n numbers is, apart from its last 16 when n is not a multiple of 16, the first n of a longer
draw from the same seed (its Box–Muller pairs numbers 8 apart in blocks of 16; a ragged end redraws the last 16
from the next uniforms). The file keeps the normals and the uniforms of one draw as long as the largest working
grid needs, and the graph takes the first n and remakes the last 16 for each size.

What differs from ``apply``: G runs in fp32 in one pass, where ``apply`` uses bf16 on CPUs and GPUs that have it
and tiles working grids over ``tiling.TILE_ABOVE`` pixels (only looks whose working side, ÷ the stroke scale, is
over 2048 px); the full-size composition is not banded, so memory grows with the photo (several full-size fp32 tensors);
decoding, EXIF orientation, alpha and the 8-bit rounding of the written file are the caller's.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from . import images, render
from .applying import check_strength, check_stroke_scale
from .errors import BadInput
from .networks import Generator, z_seed
from .session import Session

FORMATS = ("onnx", "torchscript")
OPSET = 17
MAX_EXPORT_GRID = 8192  # the longest working grid a file is made for (its noise tables grow with its square)
TRACE_SIZE = (96, 128)   # the photo traced: smaller than every working grid, any size would do
BLOCK = 16               # torch.randn's Box–Muller block on the CPU


def _sizes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Height and width of (B, C, H, W) as int64 scalars that a trace keeps symbolic."""
    shape = torch._shape_as_tensor(x)
    return shape[2], shape[3]


def working_size(height: torch.Tensor, width: torch.Tensor, side: int,
                 stroke_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`render.working_size` on int64 scalars: the same float64 arithmetic, rounding half to even."""
    height, width = height.double(), width.double()
    longest = torch.maximum(height, width)
    long_side = torch.clamp(torch.clamp(longest, min=render.MAX_ENLARGEMENT * side), max=side / stroke_scale)
    scale = long_side / longest
    return (torch.clamp(torch.round(height * scale), min=render.MIN_WORKING_SIDE).long(),
            torch.clamp(torch.round(width * scale), min=render.MIN_WORKING_SIDE).long())


def bicubic_matrix(source: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """The (length, source) matrix of :func:`render.bicubic_taps`."""
    taps, weights = render.bicubic_taps(source, length)
    hits = (taps[:, :, None] == torch.arange(source)[None, None, :]).float()
    return (hits * weights[:, :, None]).sum(1)


def antialiased_matrix(source: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """The (length, source) matrix of ``F.interpolate(mode="bicubic", antialias=True)``: Keys' kernel with a = −0.5
    (as Pillow), stretched by the shrink factor when shrinking, each row normalised to sum to 1."""
    scale = source.double() / length.double()
    stretch = torch.clamp(scale, min=1.0)
    center = (torch.arange(length, dtype=torch.float64) + 0.5) * scale
    x = (torch.arange(source, dtype=torch.float64)[None, :] - center[:, None] + 0.5) / stretch
    weights = render._cubic(x, a=-0.5)
    return (weights / weights.sum(1, keepdim=True)).float()


def resample(batch: torch.Tensor, height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """:func:`render.resample` with sizes from a trace: (B, C, H, W) to (B, C, height, width), antialiased on both
    axes when either shrinks; dense matrices, rows first (the cheaper order for a large photo)."""
    source_h, source_w = _sizes(batch)
    shrink = (height < source_h) | (width < source_w)
    rows = torch.where(shrink, antialiased_matrix(source_h, height), bicubic_matrix(source_h, height))
    cols = torch.where(shrink, antialiased_matrix(source_w, width), bicubic_matrix(source_w, width))
    return torch.matmul(torch.matmul(rows, batch), cols.t()).clamp(0, 1)


def _upsample(x: torch.Tensor, height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Bicubic (B, C, h, w) → (B, C, height, width) by four taps along each axis: ``guided_upsample``'s
    interpolation (which takes the rows' taps in matrix products)."""
    source_h, source_w = _sizes(x)
    taps, weights = render.bicubic_taps(source_w, width)
    x = sum(x.index_select(3, taps[:, k]) * weights[:, k] for k in range(4))
    taps, weights = render.bicubic_taps(source_h, height)
    return sum(x.index_select(2, taps[:, k]) * weights[:, k, None] for k in range(4))


def guided_upsample(photo: torch.Tensor, small: torch.Tensor, styled: torch.Tensor) -> torch.Tensor:
    """:func:`render.guided_upsample` for a batch, in one piece rather than in bands."""
    height, width = _sizes(photo)
    guide_small = render.luminance(small)
    a, _ = render.guided_coefficients(guide_small, styled)
    offset = styled - a * guide_small
    up = _upsample(torch.cat([a, offset, guide_small], 1), height, width)
    slope, offset, guide_up = up[:, 0:3], up[:, 3:6], up[:, 6:7]
    guide = render.luminance(photo)
    luma = torch.tensor(render.LUMA).view(1, 3, 1, 1)
    boost = (render.DETAIL - (luma * slope).sum(1, keepdim=True)).clamp(min=0)
    return (offset + slope * guide + boost * (guide - guide_up)).clamp(0, 1)


def noise_tables(z: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``length`` (a multiple of BLOCK) normals of z's noise draw, and the first ``length`` + BLOCK
    uniforms of the same generator, from which a ragged end is redrawn."""
    return (torch.randn(length, generator=torch.Generator().manual_seed(z_seed(z))),
            torch.rand(length + BLOCK, generator=torch.Generator().manual_seed(z_seed(z))))


def box_muller(uniforms: torch.Tensor) -> torch.Tensor:
    """torch.randn's CPU transform of a block of 16 uniforms: pairs (j, j + 8) become two normals."""
    radius = torch.sqrt(-2 * torch.log(1 - uniforms[:8]))
    theta = 2 * math.pi * uniforms[8:]
    return torch.cat([radius * torch.cos(theta), radius * torch.sin(theta)])


def noise_map(normals: torch.Tensor, uniforms: torch.Tensor, height: torch.Tensor,
              width: torch.Tensor) -> torch.Tensor:
    """``z_noise(z, height, width)`` for one z, (1, 1, height, width), from its :func:`noise_tables`."""
    n = height * width
    index = torch.arange(n)
    start = n - BLOCK  # the maps here have at least 8 × 8 entries (MIN_WORKING_SIDE / 4)
    tail = box_muller(uniforms.index_select(0, n + torch.arange(BLOCK)))
    redrawn = (index >= start) & (n % BLOCK != 0)
    flat = torch.where(redrawn, tail.index_select(0, torch.clamp(index - start, min=0)), normals.index_select(0, index))
    return flat.reshape(1, 1, height, width)


class LookModel(nn.Module):
    """A photo batch (B, 3, H, W) in [0, 1] → the look at (B, 3, H, W), as :meth:`Session.stylise_batch` renders it."""

    def __init__(self, generator: Generator, z: torch.Tensor, stroke_scale: float, side: int, strength: float = 1.0,
                 keep_colours: bool = False):
        super().__init__()
        self.strength, self.keep_colours = strength, keep_colours
        self.generator = copy.deepcopy(generator).float().to("cpu", memory_format=torch.contiguous_format).eval()
        self.side, self.stroke_scale = side, stroke_scale
        self.register_buffer("z", z.detach().float().reshape(1, -1).cpu().clone())
        longest = max(render.MIN_WORKING_SIDE, math.ceil(side / stroke_scale))
        length = -(-(-(-longest // 4)) ** 2 // BLOCK) * BLOCK
        normals, uniforms = noise_tables(self.z, length)
        self.register_buffer("normals", normals)
        self.register_buffer("uniforms", uniforms)

    def forward(self, photo: torch.Tensor) -> torch.Tensor:
        height, width = _sizes(photo)
        batch = photo.shape[0]
        h, w = working_size(height, width, self.side, self.stroke_scale)
        small = resample(photo, h, w)
        noise = noise_map(self.normals, self.uniforms, (h + 3) // 4, (w + 3) // 4)
        styled = self.generator(small, self.z.expand(batch, -1), noise=noise.expand(batch, -1, -1, -1))
        # A photo no larger than its working grid is the rendering shrunk (render.render); a larger one, guided.
        # The batch is of one size, so all of it goes one way: each branch runs on its part, the other on none.
        shrunk = torch.arange(batch * (h * w >= height * width).long())
        guided = torch.arange(shrunk.shape[0], batch)
        out = torch.cat([resample(styled.index_select(0, shrunk), height, width),
                         guided_upsample(photo.index_select(0, guided), small.index_select(0, guided),
                                         styled.index_select(0, guided))])
        if self.strength == 1.0 and not self.keep_colours:
            return out
        return render.adjusted(out, photo, self.strength, self.keep_colours)


def export(session: Session, fmt: str, out: Path, pick: str | None = None, stroke_scale: float = 1.0,
           strength: float = 1.0, keep_colours: bool = False) -> dict:
    """Write the look ``apply`` would use (``pick``'s, else the learned one, its strokes ``stroke_scale`` × larger,
    with apply's ``strength`` and ``keep_colours``) to ``out`` as ``fmt``; what was written, as the CLI reports it."""
    out = Path(out)
    if fmt not in FORMATS:
        raise BadInput(f"the format must be onnx or torchscript, got {fmt!r}", "fmt")
    if out.is_dir():
        raise BadInput(f"--out {out}: is a folder; name the file to write")
    check_stroke_scale(stroke_scale)
    check_strength(strength)
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise BadInput('--format onnx needs the onnx package: pip install "styleprefs[export]"')
    look, side = session.look_to_apply(pick)
    z, scale = session.split(look)
    scale *= stroke_scale
    working = math.ceil(side / scale)
    if working > MAX_EXPORT_GRID:
        raise BadInput(f"this look works on a grid up to {working} px long (working side {side} ÷ stroke scale "
                       f"{scale:.3g}); export supports up to {MAX_EXPORT_GRID} px: raise --stroke-scale")
    size = write(LookModel(session.generator(), z, scale, side, strength, keep_colours), fmt, out)
    return {"format": fmt, "file": str(out), "bytes": size, "pick": pick, "working_side": side,
            "stroke_scale": scale, "strength": strength, "keep_colours": keep_colours,
            "z": [round(float(v), 6) for v in z]}


@torch.inference_mode(False)
def write(model: LookModel, fmt: str, out: Path) -> int:
    """Trace ``model`` and write it to ``out`` atomically; returns the file's size in bytes."""
    example = torch.rand(1, 3, *TRACE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        # Expected, and not the user's to act on: the look's constants are meant to be baked in, the exporter cannot
        # fold the slices of the noise tables, and PyTorch marks TorchScript and this exporter as deprecated.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        if fmt == "torchscript":
            traced = torch.jit.trace(model, example, check_trace=False)
            images.atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp)))
        else:
            images.atomic_write(out, lambda tmp: torch.onnx.export(
                model, (example,), str(tmp), input_names=["photo"], output_names=["styled"], opset_version=OPSET,
                dynamic_axes={"photo": {0: "batch", 2: "height", 3: "width"},
                              "styled": {0: "batch", 2: "height", 3: "width"}}, dynamo=False))
    return out.stat().st_size
