"""What ``apply`` takes and gives, shared by ``Session.apply``, ``ray_apply`` and ``export``: its options checked at the
edge, the outputs it leaves alone (``--skip-existing``) and its result, gathered from the photo pipeline's items.

The stylising itself is ``Session.stylise_files`` (the look at its working side) over ``pipeline.stylise_files``
(decoding, batching, writing) and ``render`` (the full-size path).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import images
from .errors import BadInput
from .pipeline import Item

MAX_APPLY_SIDE = 8192  # apply keeps a photo's own size up to this long side
MIN_STROKE_SCALE, MAX_STROKE_SCALE = 0.015, 8.0  # down to a 256-px preview's strokes on a 16000-px photo's own pixels

Pairs = list[tuple[Path, Path]]  # (input, output)


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
