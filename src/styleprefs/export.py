"""Export: one look as a file that runs without styleprefs: ONNX for onnxruntime; for PyTorch, a torch.export
archive (pt2, for ``torch.export.load``) or TorchScript.

The file holds the whole full-size path of :mod:`styleprefs.render` for one fixed look (z and stroke scale), made of
render's own functions: the working size, the photo resized to the working grid, G at that z, and the guided
composition back to the photo's size (or, for a photo smaller than the working grid, the plain shrink). In and out:
float32 RGB, NCHW, values in [0, 1]; any height, width and batch size (one size per batch, as ``apply`` batches).

One model serves the three exporters, and one trace every size: the sizes come from the input's shape, which each
exporter keeps symbolic (:data:`render.Size`), and the branch for small photos is a count, not a condition, so no
branch is traced into a constant: the first images of the batch (all or none) take the shrink, the rest the guided
composition.

G's noise map is z's: :func:`networks.z_noise` draws it with PyTorch's CPU generator seeded by z's bytes, and
``torch.randn`` of n numbers is, apart from its last 16 when n is not a multiple of 16, the first n of a longer
draw from the same seed (its Box–Muller pairs numbers 8 apart in blocks of 16; a ragged end redraws the last 16
from the next uniforms). The file keeps the normals and the uniforms of one draw as long as the largest working
grid needs, and the graph takes the first n and remakes the last 16 for each size.

What differs from ``apply``: G runs in fp32 in one pass, where ``apply`` uses bf16 on CPUs and GPUs that have it
and tiles working grids over ``tiling.TILE_ABOVE`` pixels (only looks whose working side, ÷ the stroke scale, is
over 2048 px); the full-size composition is not banded, so memory grows with the photo (several full-size fp32
tensors); decoding, EXIF orientation, alpha and the 8-bit rounding of the written file are the caller's.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import files, render, rounds
from .applying import check_strength, check_stroke_scale
from .errors import BadInput
from .networks import Generator, z_noise, z_seed
from .session import Session

FORMATS = ("onnx", "pt2", "torchscript")
OPSET = 17
MAX_EXPORT_GRID = 8192  # the longest working grid a file is made for (its noise tables grow with its square)
TRACE_SIZE = (2, 3, 96, 128)  # the photos traced, any size: two, as torch.export would take a batch of one for a rule
BLOCK = 16               # torch.randn's Box–Muller block on the CPU


def noise_tables(z: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``length`` (a multiple of BLOCK) normals of z's noise draw, and the first ``length`` + BLOCK
    uniforms of the same generator, from which a ragged end is redrawn."""
    return (z_noise(z.reshape(1, -1), 1, length).reshape(-1),
            torch.rand(length + BLOCK, generator=torch.Generator().manual_seed(z_seed(z))))


def box_muller(uniforms: torch.Tensor) -> torch.Tensor:
    """torch.randn's CPU transform of a block of 16 uniforms: pairs (j, j + 8) become two normals."""
    radius = torch.sqrt(-2 * torch.log(1 - uniforms[:8]))
    theta = 2 * math.pi * uniforms[8:]
    return torch.cat([radius * torch.cos(theta), radius * torch.sin(theta)])


def noise_map(normals: torch.Tensor, uniforms: torch.Tensor, height: render.Size, width: render.Size) -> torch.Tensor:
    """``z_noise(z, height, width)`` for one z, (1, 1, height, width), from its :func:`noise_tables`."""
    n = height * width
    index = torch.arange(n)
    # The last BLOCK numbers are redrawn when n is not a multiple of BLOCK: from n − BLOCK on, else from n (none).
    # The maps here have at least 8 × 8 entries (MIN_WORKING_SIDE / 4).
    start = n - BLOCK * ((n % BLOCK + BLOCK - 1) // BLOCK)
    tail = box_muller(uniforms.index_select(0, torch.arange(BLOCK) + n))
    flat = torch.where(index >= start, tail.index_select(0, torch.clamp(index - start, min=0)),
                       normals.index_select(0, index))
    return flat.reshape(1, 1, height, width)


class LookModel(nn.Module):
    """A photo batch (B, 3, H, W) in [0, 1] → the look at (B, 3, H, W), as :meth:`Session.stylise_batch` renders it."""

    def __init__(self, generator: Generator, z: torch.Tensor, stroke_scale: float, side: int, strength: float = 1.0,
                 keep_colours: bool = False):
        super().__init__()
        self.strength, self.keep_colours = strength, keep_colours
        self.generator = copy.deepcopy(generator).float().to("cpu", memory_format=torch.contiguous_format).eval()
        self.generator.requires_grad_(False)
        self.side, self.stroke_scale = side, stroke_scale
        self.register_buffer("z", z.detach().float().reshape(1, -1).cpu().clone())
        longest = max(render.MIN_WORKING_SIDE, math.ceil(side / stroke_scale))
        length = -(-(-(-longest // 4)) ** 2 // BLOCK) * BLOCK
        normals, uniforms = noise_tables(self.z, length)
        self.register_buffer("normals", normals)
        self.register_buffer("uniforms", uniforms)

    def forward(self, photo: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = photo.shape
        # The working grid in tensor arithmetic, which every exporter keeps. Outside torch.jit.trace (and so ONNX) it
        # becomes numbers: under torch.export, sizes of their own, known to be at least MIN_WORKING_SIDE (its symbolic
        # arithmetic would carry the working-size formula into every shape after it, and cannot save a round).
        h, w = render.working_size(torch.full((), height), torch.full((), width), self.side, self.stroke_scale)
        if not torch.jit.is_tracing():
            h, w = h.item(), w.item()
            torch._check(h >= render.MIN_WORKING_SIDE)
            torch._check(w >= render.MIN_WORKING_SIDE)
        small = render.resample_exportable(photo, h, w)
        noise = noise_map(self.normals, self.uniforms, (h + 3) // 4, (w + 3) // 4)
        styled = self.generator(small, self.z.expand(batch, -1), noise=noise.expand(batch, -1, -1, -1))
        # A photo no larger than its working grid is the rendering shrunk (render.render); a larger one, guided.
        # times ≥ 1 when the grid has at least the photo's pixels; 2·times // (times + 1) is then 1, else 0.
        times = (h * w) // (height * width)
        shrunk = torch.arange(batch * (2 * times // (times + 1)))
        guided = torch.arange(shrunk.shape[0], batch)
        planes = render.guided_planes(small.index_select(0, guided), styled.index_select(0, guided))
        out = torch.cat([render.resample_exportable(styled.index_select(0, shrunk), height, width),
                         render.compose(F.interpolate(planes, size=(height, width), mode="bicubic",
                                                      align_corners=False), photo.index_select(0, guided))])
        if self.strength == 1.0 and not self.keep_colours:
            return out
        return render.adjusted(out, photo, self.strength, self.keep_colours)


def export(session: Session, fmt: str, out: Path, pick: str | None = None, stroke_scale: float = 1.0,
           strength: float = 1.0, keep_colours: bool = False) -> dict:
    """Write the look ``apply`` would use (``pick``'s, else the learned one, its strokes ``stroke_scale`` × larger,
    with apply's ``strength`` and ``keep_colours``) to ``out`` as ``fmt``; what was written, as the CLI reports it."""
    out = Path(out)
    if fmt not in FORMATS:
        raise BadInput(f"the format must be {', '.join(FORMATS[:-1])} or {FORMATS[-1]}, got {fmt!r}", "fmt")
    if out.is_dir():
        raise BadInput(f"{out}: is a folder; name the file to write", "out")
    check_stroke_scale(stroke_scale)
    check_strength(strength)
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise BadInput('the onnx format needs the onnx package: pip install "styleprefs[export]"', "fmt")
    look, side = session.look_to_apply(pick)
    z, scale = session.split(look)
    scale *= stroke_scale
    working = math.ceil(side / scale)
    if working > MAX_EXPORT_GRID:
        raise BadInput(f"this look works on a grid up to {working} px long (working side {side} ÷ stroke scale "
                       f"{scale:.3g}); export supports up to {MAX_EXPORT_GRID} px: raise --stroke-scale")
    size = write(LookModel(session.generator(), z, scale, side, strength, keep_colours), fmt, out)
    said = rounds.unpolished(session.state, pick, "an exported model gives the generator's pictures of that look, "
                                                  "unpolished")
    return {"format": fmt, "file": str(out), "bytes": size, "pick": pick, "working_side": side, "warnings": said,
            "stroke_scale": scale, "strength": strength, "keep_colours": keep_colours,
            "z": [round(float(v), 6) for v in z]}


@torch.inference_mode(False)
def write(model: LookModel, fmt: str, out: Path) -> int:
    """Trace ``model`` and write it to ``out`` atomically; returns the file's size in bytes."""
    example = torch.rand(*TRACE_SIZE, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        # Expected, and not the user's to act on: the look's constants are meant to be baked in, the exporter cannot
        # fold the slices of the noise tables, and PyTorch marks TorchScript and the ONNX exporter as deprecated.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        if fmt == "pt2":
            # With gradients on, G's layers take their plain route, as under a trace (kernels.cpu_inference); the
            # look's weights need none. The program is then lowered to ATen operations: the norms' autocast blocks
            # would otherwise stay, and torch.export.save cannot write them.
            dynamic = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
            with torch.enable_grad():
                program = torch.export.export(model, (example,), dynamic_shapes=(dynamic,)).run_decompositions({})
            files.atomic_write(out, lambda tmp: _save(program, tmp))
        elif fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, example, check_trace=False)
            files.atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp)))
        else:
            with torch.no_grad():
                files.atomic_write(out, lambda tmp: torch.onnx.export(
                    model, (example,), str(tmp), input_names=["photo"], output_names=["styled"],
                    opset_version=OPSET, dynamic_axes={"photo": {0: "batch", 2: "height", 3: "width"},
                                                       "styled": {0: "batch", 2: "height", 3: "width"}},
                    dynamo=False))
    return out.stat().st_size


def _save(program: torch.export.ExportedProgram, path: Path) -> None:
    """torch.export.save to ``path`` through a file object: given a name, it warns unless the name ends in .pt2."""
    with open(path, "wb") as f:
        torch.export.save(program, f)
