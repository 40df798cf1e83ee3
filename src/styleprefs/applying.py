"""What ``apply`` takes and gives, shared by ``Session.apply``, ``ray_apply`` and ``export``: its options checked at the
edge, the outputs it leaves alone (``--skip-existing``) and its result, gathered from the photo pipeline's items.

The stylising: files through ``pipeline.stylise_files`` (decoding, batching, writing), each batch through
:func:`stylise` (``render``'s full-size path, the dials, and ``--polish`` toward the :func:`goal_grams` of the look).
The generator itself comes in as a callable: the Session's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import edges, images, inputs, pipeline, polish, render
from .config import MAX_APPLY_SIDE, POLISH_MAX_PIXELS, POLISH_OWN_GRID, POLISH_STYLE_LAYERS
from .device import Runtime
from .errors import BadInput
from .losses import Grams
from .pipeline import Item
from .store import SessionError, Store
from .training import gram_stats, loss_network

MIN_STROKE_SCALE, MAX_STROKE_SCALE = 0.015, 8.0  # down to a 256-px preview's strokes on a 16000-px photo's own pixels

Pairs = list[tuple[Path, Path]]  # (input, output)
Finish = tuple[polish.Objective, int, polish.StepFn | None]  # polish each picture toward an objective, in so many steps


@dataclass
class ApplyResult:
    outputs: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (input, why)
    existing: list[Path] = field(default_factory=list)  # left alone by skip_existing
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, item: Item) -> None:
        """One input through the pipeline: written, or skipped and why."""
        self.warnings += item.warnings
        if item.error is None:
            self.outputs.append(item.target)
        else:
            self.skipped.append((item.source, item.error))


def check_stroke_scale(stroke_scale: float) -> None:
    if not MIN_STROKE_SCALE <= stroke_scale <= MAX_STROKE_SCALE:
        raise BadInput(f"the stroke scale must be between {MIN_STROKE_SCALE} and {MAX_STROKE_SCALE}, "
                       f"got {stroke_scale}", "stroke_scale")


def check_strength(strength: float) -> None:
    if not 0.0 <= strength <= 1.0:  # also refuses NaN
        raise BadInput(f"the strength must be between 0 and 1, got {strength}", "strength")


def check_options(fmt: str, size: int | None, max_batch: int, stroke_scale: float, strength: float = 1.0) -> None:
    """Refuse bad ``apply`` options before anything is read."""
    check_strength(strength)
    if fmt not in ("png", "jpg"):
        raise BadInput(f"the format must be png or jpg, got {fmt!r}", "fmt")
    if size is not None and not images.MIN_SIDE <= size <= MAX_APPLY_SIDE:
        raise BadInput(f"the long side must be between {images.MIN_SIDE} and {MAX_APPLY_SIDE} px, got {size}", "size")
    if not 1 <= max_batch <= 256:
        raise BadInput(f"the batch must be between 1 and 256 photos, got {max_batch}", "max_batch")
    check_stroke_scale(stroke_scale)


def check_polish_sheet(size: int) -> None:
    """Refuse to polish a sheet whose candidates (``size`` px long) could be more than polish works on at once."""
    if size * size > POLISH_MAX_PIXELS:
        raise BadInput(f"polish works on at most {POLISH_MAX_PIXELS} pixels at once; candidates {size} px long can "
                       f"have more: choose a sheet size of at most {int(POLISH_MAX_PIXELS ** 0.5)} px", "size")


def check_polish_grid(side: int, scale: float, stroke_scale: float) -> None:
    """Refuse to polish a look (working side ``side``, its own stroke scale ``scale``, times ``stroke_scale``) whose
    working grid could be more than polish works on at once, before any photo is read."""
    longest = side / (scale * stroke_scale)  # the longest working grid this look can have
    if longest * longest > POLISH_MAX_PIXELS:
        raise BadInput(f"polish works on at most {POLISH_MAX_PIXELS} pixels at once; this look's strokes at stroke "
                       f"scale {stroke_scale:g} need a grid up to {longest:.0f} px long: choose a larger stroke scale",
                       "stroke_scale")


def painting_grams(store: Store, config: dict, runtime: Runtime) -> Grams:
    """The paintings' Grams at polish's layers (``POLISH_STYLE_LAYERS``), over their interiors (``edges.Interior``),
    from the copies the session keeps: seen by VGG19 as it was trained, as training and the benchmarks see them
    (through :func:`polish_network`'s reflection, relu5_1's would differ by 0.13–0.26, and the polished pictures
    scored 0.02–0.04 further from the paintings over interiors)."""
    _, paintings = inputs.load(store, config, photos=False)
    return gram_stats(edges.Interior(loss_network(runtime, POLISH_STYLE_LAYERS)), paintings, runtime,
                      POLISH_STYLE_LAYERS)


def polish_network(runtime: Runtime) -> edges.Mirrored:
    """VGG19 as polish sees the pictures it makes: up to relu5_1, each picture inside a mirror of itself
    (``edges.Mirrored``) and each convolution padded by reflection (``polish.PADDING``)."""
    return edges.Mirrored(loss_network(runtime, POLISH_STYLE_LAYERS, polish.PADDING))


def goal_grams(store: Store, paintings: Grams, personal: str | None, layers: tuple[str, ...]) -> Grams:
    """What polish aims a look at: the ``paintings``' Grams, or where the session file ``personal`` (a refine's
    personal target) is given and there, that target at the ``layers`` it was built for (the paintings' at the
    others)."""
    grams = dict(paintings)
    if personal is not None and store.path(personal).is_file():
        target = store.read_tensors(personal)
        for name in layers:
            if name in grams:
                if name not in target or target[name].shape != grams[name].shape[-2:]:
                    raise SessionError(f"{store.path(personal)}: damaged (no {name} target of its shape)")
                grams[name] = target[name]
    return grams


def stylise_files(pairs: Pairs, stylise_batch: Callable[[torch.Tensor], torch.Tensor], side: int, scale: float,
                  size: int | None, max_pixels: int, max_batch: int, device: str) -> Iterator[Item]:
    """Each (input, output) pair through ``stylise_batch`` (uint8 batches of one size, as decoded) at the long side
    ``size`` (default the photo's own, up to ``MAX_APPLY_SIDE``), batched as the working grids of the side ``side``
    and stroke scale ``scale`` allow on ``device`` ("cpu", "cuda"), each output written atomically; yields each item,
    in order, once written or skipped."""
    return pipeline.stylise_files(
        pairs, stylise_batch, max_side=size or MAX_APPLY_SIDE, max_pixels=max_pixels, max_batch=max_batch,
        batch_pixels=pipeline.BATCH_PIXELS[device], photo_pixels=pipeline.BATCH_PHOTO_PIXELS[device],
        grid=lambda height, width: render.working_size(height, width, side, scale))


def stylise(batch: torch.Tensor, generate: render.Stylise, side: int, scale: float, runtime: Runtime,
            as_bytes: bool = False, finish: Finish | None = None, strength: float = 1.0,
            keep_colours: bool = False) -> torch.Tensor:
    """(B, 3, H, W) photos of one size, stylised by ``generate`` (the generator at its grid) at the working side
    ``side`` and stroke scale ``scale`` and brought to full size (``render.render``); ``finish``ed by polish at their
    own size up to ``POLISH_OWN_GRID`` times the working grid's pixels, else on the working grid before the
    full-size composition; then ``strength`` and ``keep_colours`` (``render.adjusted``) on the full-size picture."""
    if strength != 1.0 or keep_colours:
        out = stylise(batch, generate, side, scale, runtime, False, finish)
        out = render.adjusted(out, render.resample(batch, tuple(batch.shape[-2:])), strength, keep_colours)
        return render.to_bytes(out) if as_bytes else out
    if finish is None:
        return render.render(generate, batch, side, scale, as_bytes)
    height, width = batch.shape[-2:]
    grid = render.working_size(height, width, side, scale)
    if height * width > min(POLISH_OWN_GRID * grid[0] * grid[1], POLISH_MAX_PIXELS):  # on the working grid
        return render.render(lambda small: polished(runtime, small, generate(small), *finish), batch, side, scale,
                             as_bytes)
    started = render.render(generate, batch, side, scale)
    finished = polished(runtime, render.resample(batch, (height, width)), started, *finish)
    return render.to_bytes(finished) if as_bytes else finished


def polished(runtime: Runtime, photos: torch.Tensor, started: torch.Tensor, goal: polish.Objective, steps: int,
             on_step: polish.StepFn | None) -> torch.Tensor:
    """``started``, the generator's pictures of ``photos`` (B, 3, h, w), each finished by ``steps`` of polish."""
    net = polish_network(runtime)
    return torch.cat([polish.polish(net, runtime, photo[None], start[None], goal, steps, on_step)
                      for photo, start in zip(photos, started, strict=True)])


def partition(jobs: Pairs, skip_existing: bool) -> tuple[Pairs, Pairs]:
    """The pairs whose outputs are left alone (already there, with ``skip_existing``) and the pairs still to
    stylise."""
    existing, todo = [], []
    for source, target in jobs:
        (existing if skip_existing and target.exists() else todo).append((source, target))
    return existing, todo


def run(jobs: Pairs, skip_existing: bool, stylise: Callable[[Pairs], Iterable[Item]],
        on_progress: Callable[[int, int, Path], None] | None = None) -> ApplyResult:
    """``stylise`` the pairs of ``jobs`` whose outputs are still to make; every item's outcome, in order, reported to
    ``on_progress(done, total, input)`` as it comes (the outputs left alone first)."""
    started = time.perf_counter()
    existing, todo = partition(jobs, skip_existing)
    result = ApplyResult(existing=[target for _, target in existing])
    if on_progress:
        for k, (source, _) in enumerate(existing, start=1):
            on_progress(k, len(jobs), source)
    for k, item in enumerate(stylise(todo), start=len(existing) + 1):
        result.add(item)
        if on_progress:
            on_progress(k, len(jobs), item.source)
    result.seconds = time.perf_counter() - started
    return result
